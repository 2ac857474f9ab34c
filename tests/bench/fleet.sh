#!/usr/bin/env bash
# Fleet benchmarks side by side: the same `bench` drives two socket-connector binaries in turns
# (A, B, A, B, ...), so the ratios hold on a noisy machine. Prints one JSON line per run, each
# with "case" and "binary" added. docs/benchmarks.md#fleets-of-slow-devices quotes its output.
#
#   tests/bench/fleet.sh BENCH A_BINARY B_BINARY [ROUNDS] [CASE...]
#
# Cases: fleet10k (10,000 TCP devices x 1 frame/s), fleet1k (1,000 x 10/s), unframed
# (ThingsBoard's config with an attribute, 50 x 200/s), udp (1,000 UDP devices x 10/s),
# peak (one framed connection as fast as it goes), framed300k (one framed connection at 300,000
# frames/s: the CPU per frame of conversion and publishing, below the ceiling). Every fleet
# device sends one frame per write.
set -euo pipefail
bench=${1:?bench binary}
a=${2:?first socket-connector}
b=${3:?second socket-connector}
rounds=${4:-1}
shift 3
[ $# -gt 0 ] && shift
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(fleet10k fleet1k unframed udp peak)
ulimit -n "$(ulimit -Hn)"  # 10,000 connections need more than the usual soft limit

args_of() {
  case $1 in
    fleet10k) echo "--connections 10000 --rate 10000 --batch 1 --duration 20 --connect-rate 2000" ;;
    fleet1k) echo "--connections 1000 --rate 10000 --batch 1 --duration 20" ;;
    unframed) echo "--unframed --connections 50 --rate 10000 --batch 1 --duration 20" ;;
    udp) echo "--protocol udp --connections 1000 --rate 10000 --batch 1 --duration 20" ;;
    peak) echo "--rate 0 --connections 1 --duration 10" ;;
    framed300k) echo "--rate 300000 --connections 1 --duration 10" ;;
    *) echo "unknown case $1" >&2; exit 2 ;;
  esac
}

for ((round = 1; round <= rounds; round++)); do
  for case in "${cases[@]}"; do
    for binary in "$a" "$b"; do
      # shellcheck disable=SC2046
      line=$(SOCKET_CONNECTOR_BIN=$binary "$bench" $(args_of "$case"))
      echo "{\"case\":\"$case\",\"binary\":\"$binary\",\"round\":$round,${line#\{}"
    done
  done
done
