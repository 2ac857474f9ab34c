#!/usr/bin/env bash
# Fills a disk queue while ThingsBoard is away (FRAMES frames of the load generator), SIGKILLs
# the connector, restarts it against a Mosquitto and reports the restarted process's peak RSS
# and how long the replay took until the queue was empty.
#
#   cargo build --release -p socket-connector --bins
#   tests/bench/replay.sh target/release 12000000      # about 1 GiB queued
set -euo pipefail
BIN_DIR=$1 FRAMES=$2
PORT=$((20000 + RANDOM % 20000)) METRICS=$((PORT + 1)) BROKER=$((PORT + 2))
work=$(mktemp -d "${TMPDIR:-/var/tmp}/replay.XXXX")
trap 'kill "${pid:-}" "${broker:-}" 2>/dev/null || true; rm -rf "$work"' EXIT
"$BIN_DIR/socket-simulate" --target "127.0.0.1:$PORT" --print-config > "$work/socket.json"
run() {
  "$BIN_DIR/socket-connector" run --config "$work/socket.json" --tb-host 127.0.0.1 \
    --tb-port "$BROKER" --token x --queue-directory "$work/queue" --queue-max-bytes 4000000000 \
    --metrics-address "127.0.0.1:$METRICS" 2>/dev/null &
  pid=$!
  sleep 0.5
}
records() {
  curl -s "127.0.0.1:$METRICS/metrics" | awk '/^socket_connector_queue_records / {print $2}'
}
run
"$BIN_DIR/socket-simulate" --target "127.0.0.1:$PORT" --rate 0 --count "$FRAMES" > /dev/null
sleep 2
curl -s "127.0.0.1:$METRICS/metrics" | grep -E '^socket_connector_queue_(bytes|records) '
kill -9 "$pid"; wait "$pid" 2>/dev/null || true
du -sh "$work/queue"
printf 'listener %s 127.0.0.1\nallow_anonymous true\nmax_queued_messages 1000000\n' "$BROKER" \
  > "$work/mosquitto.conf"
"${MOSQUITTO:-/usr/sbin/mosquitto}" -c "$work/mosquitto.conf" > /dev/null 2>&1 &
broker=$!
sleep 0.3
start=$(date +%s.%N)
run
for _ in $(seq 1 1200); do
  sleep 0.5
  [ "$(records)" = "0" ] && break
done
end=$(date +%s.%N)
awk '/VmHWM/ {print "replay_peak_rss_kib", $2}' "/proc/$pid/status"
echo "replay_seconds $(echo "$end - $start" | bc)"
