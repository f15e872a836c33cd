#!/usr/bin/env bash
# Takes libonnxruntime.so out of the `onnxruntime` wheel on PyPI, for the agent's `ort` backend.
#
# The ort crate is built with `load-dynamic`, so nothing is downloaded at build time; this script
# is the one place the library comes from. It writes target/onnxruntime/libonnxruntime.so (a
# symlink to the versioned file) and prints that path; export it as ORT_DYLIB_PATH or set
# `ort.library_path` in the agent's config. Re-running is a no-op once the file exists.
#
# Usage: agent/scripts/fetch-onnxruntime.sh [VERSION]   (default 1.32.0; the ort crate needs >= 1.31)
set -euo pipefail

version="${1:-1.32.0}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="${CARGO_TARGET_DIR:-$root/target}/onnxruntime"
lib="$dest/libonnxruntime.so.$version"

if [[ ! -f "$lib" ]]; then
  mkdir -p "$dest"
  wheels="$(mktemp -d)"
  trap 'rm -rf "$wheels"' EXIT
  python3 -m pip download --quiet --no-deps --only-binary=:all: \
    --dest "$wheels" "onnxruntime==$version" >&2
  wheel="$(ls "$wheels"/onnxruntime-*.whl)"
  python3 - "$wheel" "$lib" <<'PY'
import shutil, sys, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as z:
    names = [n for n in z.namelist() if n.startswith("onnxruntime/capi/libonnxruntime.so.")]
    if len(names) != 1:
        sys.exit(f"expected one libonnxruntime.so.* in {wheel}, found {names}")
    with z.open(names[0]) as src, open(out + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$lib.part" "$lib"
fi
ln -sf "$(basename "$lib")" "$dest/libonnxruntime.so"
echo "$dest/libonnxruntime.so"
