#!/usr/bin/env bash
# Controller replicas (BENCHMARKS.md §10): N simulated devices (`edgefleet sim`: real enrollment,
# one MQTT connection each, signed status every 30 s, telemetry every 60 s with 10 samples)
# through an external Mosquitto, handled by 1 or by 2 controller replicas sharing one data
# directory with a shared subscription for telemetry ([mqtt] shared_group), on its SQLite or,
# with DATABASE=postgres, on a PostgreSQL cluster of their own (tests/postgres-cluster.sh). Measures enroll + connect
# time, status and telemetry recorded per second by each replica, a rollout to 100% (waves
# 1,10,50,100, bake 0; stepped by the lease holder), and CPU and RSS of each replica and of the
# broker. Mosquitto here takes any login on loopback (the benchmark measures load, not access
# control; tests/tests/replicas.rs covers the dynamic-security set-up).
#
# Usage: [DATABASE=postgres] [REPLICAS="1 2"] controller/benches/replicas_scale.sh [N...]
#        (default: 2000 5000 10000)
# Uses the binaries in $BIN (default target/debug; cargo build --workspace), Debian's mosquitto
# and, for DATABASE=postgres, Debian's postgresql.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/debug}
TOKEN=replicas-scale-admin-token-0123
counts=("$@"); (( ${#counts[@]} )) || counts=(2000 5000 10000)
ulimit -n "$(ulimit -Hn)"
MOSQUITTO=$(command -v mosquitto || echo /usr/sbin/mosquitto)

source controller/benches/sim-lib.sh
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

for n in "${counts[@]}"; do
  for replicas in ${REPLICAS:-1 2}; do
    work=$(mktemp -d)
    port=$(free_port)
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nmax_queued_messages 10000\nuser root\n' "$port" >"$work/mosquitto.conf"
    "$MOSQUITTO" -c "$work/mosquitto.conf" 2>"$work/mosquitto.log" &
    mpid=$!
    until (exec 3<>/dev/tcp/127.0.0.1/"$port") 2>/dev/null; do sleep 0.1; done
    database=""
    if [[ ${DATABASE:-sqlite} == postgres ]]; then
      chmod 755 "$work"
      cluster=$(tests/postgres-cluster.sh start "$work/pg")
      psql "$cluster" -qc 'CREATE DATABASE edgefleet'
      database=$(printf '[database]\nurl = "%s"\n' "${cluster%/postgres}/edgefleet")
    fi
    pids=(); urls=()
    for r in $(seq 1 "$replicas"); do
      printf '[server]\nreplica_id = "r%s"\n[mqtt]\nurl = "mqtt://127.0.0.1:%s"\nclient_id = "replica-%s"\nshared_group = "edgefleet"\n%s\n' \
        "$r" "$port" "$r" "$database" >"$work/r$r.toml"
      EDGEFLEET_ADMIN_TOKEN=$TOKEN $BIN/edgefleet-controller serve --data-dir "$work/c" --listen 127.0.0.1:0 \
        --config "$work/r$r.toml" >"$work/r$r.out" 2>"$work/r$r.log" &
      pids+=($!)
      urls+=("$(controller_url "$work/r$r.out")")
    done
    # Devices enroll through the first replica; operators (the rollout below) use the last.
    export EDGEFLEET_CONTROLLER=${urls[0]} EDGEFLEET_TOKEN=$TOKEN
    start_sim "$n" "$work/sim.out"
    # Steady state: 60 s of status and telemetry, per replica.
    declare -A s0 t0 c0
    for i in "${!pids[@]}"; do
      s0[$i]=$(metric "${urls[$i]}" edgefleet_controller_status_reports_total)
      t0[$i]=$(metric "${urls[$i]}" 'edgefleet_controller_telemetry_batches_total{result="accepted"}')
      c0[$i]=$(cpu_secs "${pids[$i]}")
    done
    m0=$(cpu_secs $mpid)
    sleep 60
    line="devices=$n replicas=$replicas |"
    for i in "${!pids[@]}"; do
      s1=$(metric "${urls[$i]}" edgefleet_controller_status_reports_total)
      t1=$(metric "${urls[$i]}" 'edgefleet_controller_telemetry_batches_total{result="accepted"}')
      c1=$(cpu_secs "${pids[$i]}")
      line+=$(awk -v r="$((i + 1))" -v s="$(echo "${s1:-0} - ${s0[$i]:-0}" | bc)" -v t="$(echo "${t1:-0} - ${t0[$i]:-0}" | bc)" \
        -v c="$(echo "$c1 - ${c0[$i]}" | bc)" -v rss="$(rss_mb "${pids[$i]}")" \
        'BEGIN { printf " r%d: status_per_s=%.0f telemetry_per_s=%.0f cpu=%.0f%% rss_mb=%.0f |", r, s/60, t/60, c/60*100, rss }')
    done
    m1=$(cpu_secs $mpid)
    line+=$(awk -v c="$(echo "$m1 - $m0" | bc)" -v rss="$(rss_mb $mpid)" 'BEGIN { printf " mosquitto: cpu=%.0f%% rss_mb=%.0f", c/60*100, rss }')
    # A rollout to every simulated device.
    export EDGEFLEET_CONTROLLER=${urls[-1]}
    $BIN/edgefleet model push tests/testdata/iris_logreg.onnx --name iris --baseline tests/testdata/iris_baseline.csv >/dev/null
    r0=$(date +%s.%N)
    id=$($BIN/edgefleet --output json rollout create iris:1 --selector sim=true --waves 1,10,50,100 --bake 0s | sed -n 's/^  "id": \([0-9]*\),*/\1/p' | head -1)
    until [[ $($BIN/edgefleet --output json rollout status "$id") == *'"state": "completed"'* ]]; do sleep 0.5; done
    r1=$(date +%s.%N)
    echo "devices=$n replicas=$replicas | $connected"
    echo "$line"
    shed=""
    for i in "${!pids[@]}"; do shed+=" r$((i + 1))=$(metric "${urls[$i]}" edgefleet_controller_status_shed_total)"; done
    echo "devices=$n replicas=$replicas rollout_to_100pct_s=$(echo "$r1 - $r0" | bc) status_shed:$shed"
    if [[ -n $database ]]; then
      # What the database holds now: bytes (with indexes) and rows of its largest tables.
      echo "devices=$n replicas=$replicas database_bytes=$(psql "${cluster%/postgres}/edgefleet" -Atc 'SELECT pg_database_size(current_database())')" \
        "$(psql "${cluster%/postgres}/edgefleet" -Atc "SELECT string_agg(format('%s=%s rows/%s bytes', relname, n_live_tup,
           pg_total_relation_size(relid)), ' ' ORDER BY pg_total_relation_size(relid) DESC) FROM pg_stat_user_tables")"
    fi
    kill $spid "${pids[@]}"; wait $spid "${pids[@]}" 2>/dev/null || true
    kill $mpid; wait $mpid 2>/dev/null || true
    [[ -n $database ]] && tests/postgres-cluster.sh stop "$work/pg"
    [[ -n ${KEEP:-} ]] && echo "kept $work" || rm -rf "$work"
  done
done
