#!/bin/sh
# Every mechanism side by side, against the machine's own floors (issue 8):
# throughput and round trips through each crate's library code, two real
# processes on two CPUs. Markdown tables on stdout; results.json, results.csv,
# results.md, throughput.svg and latency.svg in target/ipc-bench/.
# Usage: sh scripts/bench.sh [BIN_DIR [ipc-bench options...]]      (make bench)
set -u
B=${1:-target/release}
[ $# -gt 0 ] && shift
# --pin 0,1: the reader on CPU 0, the writer (or echo side) on CPU 1, so every
# run has the same placement, and spinning rows never share a CPU.
pin=
[ "$(nproc 2>/dev/null || echo 1)" -ge 2 ] && pin="--pin 0,1"
exec "$B/ipc-bench" $pin --out target/ipc-bench "$@"
