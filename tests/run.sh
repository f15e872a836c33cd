#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine with Rust: installs what the tests need,
# then runs them. This is the README's test command and exactly what .ci/run runs.
#
#   ./tests/run.sh                 # everything: the suite on SQLite, then its registry, fleet,
#                                  # rollout and telemetry tests again on PostgreSQL
#   ./tests/run.sh -E 'binary(fleet)'   # extra arguments go to cargo nextest run
#   EDGEFLEET_TEST_DATABASE=postgres ./tests/run.sh -E 'binary(fleet)'   # those on PostgreSQL
#
# Installs (each only when missing): Debian packages — mosquitto (the external-broker tests
# start their own), postgresql (tests/postgres-cluster.sh starts throwaway clusters), prometheus (promtool and a server for tests/tests/ops_kit.rs), chromium (headless, for the
# console's browser test tests/tests/console.rs), python3-venv (a virtual environment with tests/clients/requirements.txt —
# tritonclient, pandas, polars, MLflow, scikit-learn, skl2onnx, SeaweedFS (`weed`), Playwright (driving
# the system Chromium; its own browser download is not used) — in target/test-venv), and with EDGEFLEET_IMAGE_TEST=1 debootstrap, e2fsprogs, qemu-utils and
# qemu-system-x86 for the device-image test; cargo-nextest; libonnxruntime.so from the PyPI
# onnxruntime wheel (agent/scripts/fetch-onnxruntime.sh) for the ONNX Runtime suite. It builds
# the agent's release-edge profile too (the profile devices ship), for the engine fault test.
# apt-get runs through sudo when not root.
# How many tests run at once, which take two slots and which start first: .config/nextest.toml.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=()
if (( EUID != 0 )); then
  sudo=(sudo)
fi
have() { command -v "$1" >/dev/null 2>&1 || [[ -x "/usr/sbin/$1" ]]; }

need=()
have mosquitto || need+=(mosquitto)
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && have psql || need+=(postgresql)
have promtool || need+=(prometheus)
have chromium || need+=(chromium)
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
  # The tests start their own Prometheus and PostgreSQL; the packages' services are not wanted.
  if command -v systemctl >/dev/null 2>&1; then
    for service in prometheus postgresql; do
      if [[ " ${need[*]} " == *" $service "* ]]; then
        "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
      fi
    done
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

# The suites that run on PostgreSQL too: everything that stores registry, fleet, rollout or
# telemetry state through a controller.
postgres_suites='binary(controller_registry) | binary(controller_fleet) | binary(fleet) | binary(rollout)
  | binary(rollout_edges) | binary(device_lifecycle) | binary(key_rotation) | binary(delta_updates)
  | binary(telemetry_drift) | binary(telemetry_outage) | binary(telemetry_security) | binary(hostile_requests)
  | binary(replicas_postgres)'

# The PostgreSQL pass: a throwaway cluster in the target directory, a schema in it for each
# controller data directory (tests/tests/common/controller.rs).
target="${CARGO_TARGET_DIR:-$PWD/target}"
with_postgres() {
  local cluster="$target/test-postgres"
  rm -rf "$cluster"
  EDGEFLEET_TEST_POSTGRES="$(tests/postgres-cluster.sh start "$cluster")"
  export EDGEFLEET_TEST_POSTGRES
  # Expanded now: the function's locals are gone when the trap runs.
  trap "tests/postgres-cluster.sh stop '$cluster' >/dev/null 2>&1 || true; rm -rf '$cluster'" EXIT
  cargo nextest run --workspace --all-features "$@"
}

if [[ "${EDGEFLEET_TEST_DATABASE:-}" == postgres ]]; then
  with_postgres "$@"
elif (( $# )); then
  exec cargo nextest run --workspace --all-features "$@"
else
  cargo nextest run --workspace --all-features
  echo "tests/run.sh: the registry, fleet, rollout and telemetry tests again, on PostgreSQL" >&2
  with_postgres -E "$postgres_suites"
fi
