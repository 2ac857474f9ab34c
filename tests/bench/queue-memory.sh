#!/usr/bin/env bash
# Peak RSS of a connector whose memory queue fills while ThingsBoard is unreachable
# (drop-oldest), from FRAMES frames of the load generator sent at RATE (0: as fast as possible)
# over CONNECTIONS connections, BATCH frames per write.
#
#   cargo build --release -p socket-connector --bins
#   tests/bench/queue-memory.sh target/release 2500000 0 1 64
#   tests/bench/queue-memory.sh target/release 700000 25000 50 1
set -euo pipefail
BIN_DIR=$1 FRAMES=$2 RATE=${3:-0} CONNECTIONS=${4:-1} BATCH=${5:-64}
PORT=$((20000 + RANDOM % 20000)) METRICS=$((PORT + 1))
config=$(mktemp)
trap 'rm -f "$config"; kill "$pid" 2>/dev/null || true' EXIT
"$BIN_DIR/socket-simulate" --target "127.0.0.1:$PORT" --print-config > "$config"
# Port 1 on loopback: ThingsBoard is unreachable, everything stays queued.
"$BIN_DIR/socket-connector" run --config "$config" --tb-host 127.0.0.1 --tb-port 1 --token x \
  --queue-full-policy drop-oldest --metrics-address "127.0.0.1:$METRICS" 2>/dev/null &
pid=$!
sleep 0.5
"$BIN_DIR/socket-simulate" --target "127.0.0.1:$PORT" --rate "$RATE" --count "$FRAMES" \
  --connections "$CONNECTIONS" --batch "$BATCH" > /dev/null
sleep 2
awk '/VmHWM/ {print "peak_rss_kib", $2}' "/proc/$pid/status"
curl -s "127.0.0.1:$METRICS/metrics" \
  | grep -E '^socket_connector_(queue_bytes|queue_records|dropped_total\{reason="queue_full_drop_oldest)'
