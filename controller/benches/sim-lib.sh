# Shared by the `edgefleet sim` benchmarks (fleet_scale.sh, replicas_scale.sh); sourced.

# A metric's value on the /metrics of the controller at URL $1.
metric() { curl -s "$1/metrics" | awk -v m="$2" '$1 == m {print $2}' | head -1; }
# CPU seconds (user + system) of process $1.
cpu_secs() { awk -v t="$(getconf CLK_TCK)" '{print ($14 + $15) / t}' "/proc/$1/stat"; }
# Resident memory of process $1, MB.
rss_mb() { awk '/VmRSS/ {print $2 / 1024}' "/proc/$1/status"; }
# Waits for the controller whose stdout is in file $1 to listen, and prints its URL.
controller_url() {
  local url
  until url=$(sed -n 's/^edgefleet-controller listening on //p' "$1" 2>/dev/null) && [[ -n $url ]]; do sleep 0.1; done
  echo "$url"
}
# Starts `edgefleet sim --devices $1` against $EDGEFLEET_CONTROLLER, its output in file $2, and
# waits until every device is connected; its pid in $spid, its connect line in $connected.
start_sim() {
  $BIN/edgefleet sim --devices "$1" --duration 0 >"$2" 2>&1 &
  spid=$!
  until grep -q "connected over MQTT" "$2" 2>/dev/null; do
    kill -0 $spid 2>/dev/null || { cat "$2"; exit 1; }
    sleep 0.5
  done
  connected=$(grep "connected over MQTT" "$2")
}
