#!/usr/bin/env bash
# Records docs/rollout-status-watch.txt: `edgefleet rollout status --watch` through a two-wave
# rollout to three agents, one of which goes offline first. Real binaries, embedded broker, no
# network beyond loopback. Run from the repository root after `cargo build --workspace`:
#   docs/record-rollout-watch.sh [target/debug]
set -euo pipefail
bin=$(cd "${1:-target/debug}" && pwd)
out=$(pwd)/docs/rollout-status-watch.txt
work=$(mktemp -d)
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
keep_logs() { echo "logs:"; tail -n 5 "$work"/*.log; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
wait_for() { # wait_for SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    for _ in $(seq $((secs * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
    echo "record-rollout-watch: timed out waiting for $what" >&2; keep_logs >&2; exit 1
}

export EDGEFLEET_ADMIN_TOKEN=docs-recording-admin-token EDGEFLEET_TOKEN=docs-recording-admin-token
api=$(free_port) mqtt=$(free_port)
export EDGEFLEET_CONTROLLER=http://127.0.0.1:$api
"$bin/edgefleet-controller" serve --data-dir "$work/controller" --listen "127.0.0.1:$api" \
    --mqtt-listen "127.0.0.1:$mqtt" >"$work/controller.log" 2>&1 &
pids+=($!)
wait_for 30 "the controller" curl -sf "$EDGEFLEET_CONTROLLER/healthz"
for _ in 1 2; do "$bin/edgefleet" model push tests/testdata/iris_logreg.onnx --name iris >/dev/null 2>&1; done
"$bin/edgefleet-controller" public-key --data-dir "$work/controller" --out "$work/trust.json"
token=$("$bin/edgefleet" --output json device token create --uses 3 --label site=docs | json '["token"]')
agents=()
for i in 1 2 3; do
    "$bin/edgefleet-agent" run --controller "$EDGEFLEET_CONTROLLER" --trust "$work/trust.json" \
        --data-dir "$work/agent-$i" --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --enroll-token "$token" --backend tract \
        --poll-interval-secs 1 --status-interval-secs 1 --watch-window-secs 1 >"$work/agent-$i.log" 2>&1 &
    pids+=($!) agents+=($!)
done
count() { "$bin/edgefleet" --output json device list "$@" | json '.__len__()'; }
has() { test "$(count "${@:2}")" = "$1"; }   # has N FILTERS...: that many devices match
wait_for 60 "three devices" has 3 --label site=docs
"$bin/edgefleet" deploy iris:1 --selector site=docs >/dev/null
wait_for 60 "iris:1 everywhere" has 3 --active iris:1
# One device loses power: its broker connection drops and the controller marks it offline.
kill "${agents[2]}"
wait_for 60 "one device offline" has 1 --state offline
id=$("$bin/edgefleet" --output json rollout create iris:2 --selector site=docs --waves 33,100 \
    --bake 5s --wave-timeout 20s --on-timeout pause | json '["id"]')
{
    echo "\$ edgefleet rollout create iris:2 --selector site=docs --waves 33,100 --bake 5s --wave-timeout 20s --on-timeout pause"
    echo "\$ edgefleet rollout status $id --watch --interval 3s   # one of the three devices is offline"
    "$bin/edgefleet" rollout status "$id" --watch --interval 3s
} >"$out"
echo "wrote $out"
