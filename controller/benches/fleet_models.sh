#!/usr/bin/env bash
# Several models per device and declarative fleets (BENCHMARKS.md §12), with real agents:
#  1. one `release-edge` agent's resident memory (VmRSS) enrolled with no model, then serving
#     1, 2, ... 5 small models given to it one by one (iris, mlp, breast_cancer_mlp, wine_forest,
#     and iris again under another name: five engines), each measured once the agent serves it;
#  2. N agents (default 20) in a fleet: `fleet update` adding a model -> every agent serves it,
#     and `rollout create --fleet` of a new version (direct, bake 0) -> every agent serves it.
#
# Usage: controller/benches/fleet_models.sh [N]
# Needs target/debug (cargo build --workspace) and target/release-edge/edgefleet-agent
# (cargo build -p edgefleet-agent --profile release-edge).
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/debug
AGENT=target/release-edge/edgefleet-agent
TOKEN=fleet-models-admin-token-0123
N=${1:-20}
DATA=tests/testdata
source controller/benches/sim-lib.sh

work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

EDGEFLEET_ADMIN_TOKEN=$TOKEN $BIN/edgefleet-controller serve --data-dir "$work/c" --listen 127.0.0.1:0 \
  --mqtt-listen 127.0.0.1:0 >"$work/controller.out" 2>"$work/controller.log" &
pids+=($!)
URL=$(controller_url "$work/controller.out")
export EDGEFLEET_CONTROLLER=$URL EDGEFLEET_TOKEN=$TOKEN
$BIN/edgefleet-controller public-key --data-dir "$work/c" --out "$work/trust.json" >/dev/null
push() { $BIN/edgefleet model push "$DATA/$1.onnx" --name "$2" --baseline "$DATA/$3" >/dev/null; }
push iris_logreg iris iris_baseline.csv
push iris_logreg iris iris_baseline.csv
push mlp mlp mlp_baseline.csv
push breast_cancer_mlp cancer breast_cancer_baseline.csv
push wine_forest wine wine_baseline.csv
push iris_logreg iris-b iris_baseline.csv

# Starts agent $1 with labels $2 (comma-separated k=v); its URL in agent_url[$1], pid in agent_pid[$1].
declare -A agent_url agent_pid
start_agent() {
  local token labels=() l
  IFS=, read -ra l <<<"$2"
  for kv in "${l[@]}"; do labels+=(--label "$kv"); done
  token=$($BIN/edgefleet --output json device token create "${labels[@]}" | sed -n 's/^  "token": "\(.*\)",*/\1/p')
  $AGENT run --controller "$URL" --trust "$work/trust.json" --data-dir "$work/a$1" --listen 127.0.0.1:0 \
    --grpc-listen 127.0.0.1:0 --poll-interval-secs 1 --status-interval-secs 1 --watch-window-secs 1 \
    --backend tract --enroll-token "$token" >"$work/a$1.out" 2>"$work/a$1.log" &
  agent_pid[$1]=$!
  pids+=($!)
  until agent_url[$1]=$(sed -n 's/^edgefleet-agent listening on //p' "$work/a$1.out" 2>/dev/null) && [[ -n ${agent_url[$1]} ]]; do
    sleep 0.05
  done
}
# The id of the device enrolled by agent $1.
device_id() { until [[ -s "$work/a$1/state.json" ]] && grep -q '"device_id": "dev-' "$work/a$1/state.json"; do sleep 0.05; done
  sed -n 's/^  "device_id": "\(.*\)",*/\1/p' "$work/a$1/state.json"; }
# Whether agent $1 serves model $2 at version $3 (the version header of an answer).
serves() {
  local body
  case $2 in
    mlp) body='{"inputs":[{"name":"x","shape":[1,16],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}' ;;
    cancer) body=$(python3 -c 'import json;print(json.dumps({"inputs":[{"name":"X","shape":[1,30],"datatype":"FP32","data":[0.0]*30}]}))') ;;
    wine) body=$(python3 -c 'import json;print(json.dumps({"inputs":[{"name":"X","shape":[1,13],"datatype":"FP32","data":[0.0]*13}]}))') ;;
    *) body='{"inputs":[{"name":"X","shape":[1,4],"datatype":"FP32","data":[5.1,3.5,1.4,0.2]}]}' ;;
  esac
  curl -s -o /dev/null -D - -H 'content-type: application/json' -d "$body" "${agent_url[$1]}/v2/models/$2/infer" \
    | tr -d '\r' | grep -qi "^x-edgefleet-model-version: $3$"
}

echo "== 1. per-model memory: one release-edge agent ($(stat -c %s $AGENT) bytes) =="
start_agent 0 "bench=rss"
id=$(device_id 0)
until curl -sf "${agent_url[0]}/v2/health/live" >/dev/null; do sleep 0.05; done
sleep 2
echo "models=0 rss_mb=$(rss_mb "${agent_pid[0]}")"
count=0
for m in iris:2 mlp:1 cancer:1 wine:1 iris-b:1; do
  $BIN/edgefleet deploy "$m" --device "$id" >/dev/null
  until serves 0 "${m%%:*}" "${m##*:}"; do sleep 0.1; done
  count=$((count + 1))
  sleep 2
  echo "models=$count (+$m) rss_mb=$(rss_mb "${agent_pid[0]}")"
done
kill "${agent_pid[0]}"

echo "== 2. a fleet of $N agents =="
$BIN/edgefleet fleet create bench --selector fleet=bench --model iris:1 >/dev/null
for i in $(seq 1 "$N"); do start_agent "$i" "fleet=bench,site=s$((i % 3))"; done
for i in $(seq 1 "$N"); do until serves "$i" iris 1; do sleep 0.1; done; done
t0=$(date +%s.%N)
$BIN/edgefleet fleet update bench --model iris:1 --model mlp:1 >/dev/null
for i in $(seq 1 "$N"); do until serves "$i" mlp 1; do sleep 0.05; done; done
t1=$(date +%s.%N)
echo "agents=$N fleet_update_add_model_to_all_serving_s=$(echo "$t1 - $t0" | bc)"
t0=$(date +%s.%N)
rid=$($BIN/edgefleet --output json rollout create iris:2 --fleet bench --strategy direct --bake 0s --min-requests 0 \
  | sed -n 's/^  "id": \([0-9]*\),*/\1/p' | head -1)
for i in $(seq 1 "$N"); do until serves "$i" iris 2; do sleep 0.05; done; done
t1=$(date +%s.%N)
until [[ $($BIN/edgefleet --output json rollout status "$rid") == *'"state": "completed"'* ]]; do sleep 0.2; done
t2=$(date +%s.%N)
echo "agents=$N fleet_rollout_to_all_serving_s=$(echo "$t1 - $t0" | bc) to_completed_s=$(echo "$t2 - $t0" | bc)"
t0=$(date +%s.%N)
$BIN/edgefleet --output json rollout create iris:1 --fleet bench --strategy direct --bake 0s --min-requests 0 \
  --group-by site --max-unavailable 1 >/dev/null
for i in $(seq 1 "$N"); do until serves "$i" iris 1; do sleep 0.05; done; done
t1=$(date +%s.%N)
echo "agents=$N fleet_rollout_budget_1_per_site_3_sites_to_all_serving_s=$(echo "$t1 - $t0" | bc)"
echo "controller_rss_mb=$(rss_mb "${pids[0]}") controller_cpu_s=$(cpu_secs "${pids[0]}")"
