#!/usr/bin/env bash
# The console with a large fleet (BENCHMARKS.md §11): one controller (SQLite) behind Mosquitto
# (10,000 connections through the embedded broker's gate need more file descriptors than this
# machine's hard limit of 20,000; Mosquitto here takes any login on loopback) and N simulated
# devices from `edgefleet sim` (default 10,000), iris:1 rolled out to all of
# them; then every console page loaded in headless Chromium with an empty cache
# (tests/clients/console_pages.py: first paint, content on screen, bytes), and the API calls
# the overview and the device list make, timed with curl.
#
# Usage: controller/benches/console_scale.sh [N]
# Uses target/debug (cargo build --workspace) and target/test-venv (./tests/run.sh makes it);
# needs Debian's chromium and mosquitto.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/debug
TOKEN=console-scale-admin-token-01
n=${1:-10000}
ulimit -n "$(ulimit -Hn)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)
source controller/benches/sim-lib.sh

work=$(mktemp -d)
spid=""
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nuser root\n' "$port" >"$work/mosquitto.conf"
"$MOSQUITTO" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
mpid=$!
until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.1; done
printf '[mqtt]\nurl = "mqtt://127.0.0.1:%s"\n' "$port" >"$work/controller.toml"
EDGEFLEET_ADMIN_TOKEN=$TOKEN $BIN/edgefleet-controller serve --data-dir "$work/c" --listen 127.0.0.1:0 \
  --config "$work/controller.toml" >"$work/controller.out" 2>"$work/controller.log" &
cpid=$!
trap 'kill $spid $cpid $mpid 2>/dev/null; wait 2>/dev/null; rm -rf "$work"' EXIT
URL=$(controller_url "$work/controller.out")
export EDGEFLEET_CONTROLLER=$URL EDGEFLEET_TOKEN=$TOKEN
start_sim "$n" "$work/sim.out"
echo "devices=$n | $connected"
$BIN/edgefleet model push tests/testdata/iris_logreg.onnx --name iris --baseline tests/testdata/iris_baseline.csv >/dev/null
id=$($BIN/edgefleet --output json rollout create iris:1 --selector sim=true --waves 1,10,50,100 --bake 0s | sed -n 's/^  "id": \([0-9]*\),*/\1/p' | head -1)
until [[ $($BIN/edgefleet --output json rollout status "$id") == *'"state": "completed"'* ]]; do sleep 0.5; done
for path in /api/v1/overview "/api/v1/devices?limit=50" "/api/v1/rollouts/$id" /api/v1/sessions/current; do
  curl -s -o /dev/null -H "Authorization: Bearer $TOKEN" -w "GET $path %{time_total} s %{size_download} bytes\n" "$URL$path"
done
target/test-venv/bin/python tests/clients/console_pages.py "$URL" "$TOKEN"
