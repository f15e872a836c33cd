#!/usr/bin/env bash
# Controller scale (BENCHMARKS.md §8): one controller (embedded broker, SQLite) against N
# simulated devices from `edgefleet sim` (real enrollment, one MQTT connection each, signed
# status every 30 s and telemetry every 60 s with 10 samples). Measures enroll + connect time,
# status and telemetry throughput the controller records, a rollout to 100% (waves 1,10,50,100,
# bake 0), the controller's CPU time and RSS, and then - after 65 s of iris:1 telemetry (each
# batch counts 100 rows and carries 10 samples) - the time of a drift report over it.
#
# Usage: controller/benches/fleet_scale.sh [N...]   (default: 1000 5000 10000)
# Uses the binaries in target/debug (cargo build --workspace); needs `ulimit -n` above N + 100.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=target/debug
TOKEN=fleet-scale-admin-token-0123
counts=("$@"); (( ${#counts[@]} )) || counts=(1000 5000 10000)

source controller/benches/sim-lib.sh

for n in "${counts[@]}"; do
  work=$(mktemp -d)
  EDGEFLEET_ADMIN_TOKEN=$TOKEN $BIN/edgefleet-controller serve --data-dir "$work/c" --listen 127.0.0.1:0 \
    --mqtt-listen 127.0.0.1:0 >"$work/controller.out" 2>"$work/controller.log" &
  cpid=$!
  URL=$(controller_url "$work/controller.out")
  export EDGEFLEET_CONTROLLER=$URL EDGEFLEET_TOKEN=$TOKEN
  start_sim "$n" "$work/sim.out"
  # Steady state: 60 s of status and telemetry.
  s0=$(metric "$URL" 'edgefleet_controller_status_reports_total'); t0=$(metric "$URL" 'edgefleet_controller_telemetry_batches_total{result="accepted"}')
  c0=$(cpu_secs $cpid); sleep 60
  s1=$(metric "$URL" 'edgefleet_controller_status_reports_total'); t1=$(metric "$URL" 'edgefleet_controller_telemetry_batches_total{result="accepted"}')
  c1=$(cpu_secs $cpid)
  # A rollout to every simulated device.
  $BIN/edgefleet model push tests/testdata/iris_logreg.onnx --name iris --baseline tests/testdata/iris_baseline.csv >/dev/null
  r0=$(date +%s.%N)
  id=$($BIN/edgefleet --output json rollout create iris:1 --selector sim=true --waves 1,10,50,100 --bake 0s | sed -n 's/^  "id": \([0-9]*\),*/\1/p' | head -1)
  until [[ $($BIN/edgefleet --output json rollout status "$id") == *'"state": "completed"'* ]]; do sleep 0.5; done
  r1=$(date +%s.%N)
  sleep 65
  d0=$(date +%s.%N)
  report=$($BIN/edgefleet --output json drift report iris:1 --window 1h)
  d1=$(date +%s.%N)
  rows=$(sed -n 's/^  "rows": \([0-9]*\),*/\1/p' <<<"$report"); samples=$(sed -n 's/^  "samples": \([0-9]*\),*/\1/p' <<<"$report")
  echo "devices=$n | $connected"
  echo "devices=$n drift_report_s=$(echo "$d1 - $d0" | bc) over rows=$rows samples=$samples"
  awk -v n="$n" -v s="$((${s1%.*} - ${s0%.*}))" -v t="$((${t1%.*} - ${t0%.*}))" -v c="$(echo "$c1 - $c0" | bc)" \
    -v r="$(echo "$r1 - $r0" | bc)" -v rss="$(rss_mb $cpid)" \
    'BEGIN { printf "devices=%d status_per_s=%.0f telemetry_batches_per_s=%.0f controller_cpu=%.0f%% rollout_to_100pct_s=%.1f controller_rss_mb=%.0f\n", n, s/60, t/60, c/60*100, r, rss }'
  kill $spid $cpid; wait $spid $cpid 2>/dev/null || true
  rm -rf "$work"
done
