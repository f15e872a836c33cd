#!/usr/bin/env bash
# gRPC vs HTTP benchmark (BENCHMARKS.md §1): the same agent, the same request (first row of the
# committed reference input), the same load generator (h2load from nghttp2: HTTP/1.1 keep-alive
# for the KServe JSON and binary bodies, HTTP/2 for gRPC ModelInfer), side by side in one run, at
# concurrency 1 and 8, on the tiny MLP and on Magika. p50/p99 come from h2load's per-request
# log; every gRPC answer is checked afterwards on the agent's grpc_requests_total{code="Ok"}
# (h2load does not read gRPC trailers).
#
# Needs: h2load (apt-get install nghttp2-client; installed when missing), python3 with
# tests/clients/requirements.txt (tritonclient's generated messages; the venv tests/run.sh makes,
# created here when absent).
# Usage: agent/benches/grpc.sh [DURATION_SECS]   (default 10 per load point)
set -euo pipefail

secs="${1:-10}"
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

if ! command -v h2load >/dev/null; then
  sudo=(); (( EUID != 0 )) && sudo=(sudo)
  "${sudo[@]}" apt-get install -y -qq nghttp2-client
fi
venv="${CARGO_TARGET_DIR:-$root/target}/test-venv"
if ! "$venv/bin/python" -c 'import tritonclient.grpc' >/dev/null 2>&1; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q -r tests/clients/requirements.txt
fi

echo "== build (release, default features: tract only)"
cargo build --release -q -p edgefleet-agent
agent_bin="target/release/edgefleet-agent"
"$venv/bin/python" agent/benches/make_bodies.py tests/testdata "$work"
"$venv/bin/python" agent/benches/make_grpc_bodies.py tests/testdata "$work"

"$agent_bin" serve --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --backend tract --workers 1 \
  --model mlp=tests/testdata/mlp.onnx --model magika=tests/testdata/magika.onnx >"$work/agent.out" 2>"$work/agent.err" &
pids+=($!)
for _ in $(seq 1 600); do grep -q "listening on http" "$work/agent.out" 2>/dev/null && break; sleep 0.1; done
http="$(sed -n 's/^edgefleet-agent listening on //p' "$work/agent.out")"
grpc="$(sed -n 's/^edgefleet-agent gRPC listening on //p' "$work/agent.out")"
for _ in $(seq 1 600); do curl -sf "$http/v2/models/magika/ready" >/dev/null && break; sleep 0.1; done
echo "agent: HTTP $http, gRPC $grpc"

load() { # label conns url body [headers...]
  local label="$1" conns="$2" url="$3" body="$4"
  shift 4
  local args=() h
  for h in "$@"; do
    if [[ "$h" == --* ]]; then args+=("$h"); else args+=(-H "$h"); fi
  done
  local out log="$work/requests.log"
  rm -f "$log"
  out="$(h2load -t"$(( conns < 2 ? 1 : 2 ))" -c"$conns" -m1 -D"$secs" --warm-up-time=1 -d "$body" \
    "${args[@]}" --log-file="$log" "$url" 2>&1)"
  local rps failed p50 p99
  rps="$(awk '/^finished in/{for(i=1;i<=NF;i++) if($i=="req/s,") print $(i-1)}' <<<"$out")"
  failed="$(awk '/^requests:/{for(i=1;i<=NF;i++) if($(i+1)=="failed,") print $i}' <<<"$out")"
  read -r p50 p99 < <(awk -F'\t' '$2==200 {print $3}' "$log" | sort -n |
    awk '{v[NR]=$1} END {printf "%d %d\n", v[int(NR*0.5)+1], v[int(NR*0.99)+1]}')
  printf '%-22s c=%-2s req/s=%-9s p50=%-6sus p99=%-6sus failed=%s\n' "$label" "$conns" "$rps" "$p50" "$p99" "${failed:-?}"
}

grpc_headers=("content-type: application/grpc" "te: trailers")
for model in mlp magika; do
  echo "== $model (batch 1)"
  for c in 1 8; do
    load "http/1.1 json" "$c" "$http/v2/models/$model/infer" "$work/$model.json" "content-type: application/json" --h1
    load "http/1.1 binary" "$c" "$http/v2/models/$model/infer" "$work/$model.bin" \
      "Inference-Header-Content-Length: $(cat "$work/$model.bin.len")" --h1
    load "grpc (h2)" "$c" "http://$grpc/inference.GRPCInferenceService/ModelInfer" "$work/$model.grpc" "${grpc_headers[@]}"
  done
done
ok="$(curl -s "$http/metrics" | awk '/^edgefleet_agent_grpc_requests_total/ && /code="Ok"/ {s+=$NF} END {print s+0}')"
bad="$(curl -s "$http/metrics" | awk '/^edgefleet_agent_grpc_requests_total/ && !/code="Ok"/ {s+=$NF} END {print s+0}')"
echo "gRPC answers on the agent: ok=$ok not_ok=$bad"
