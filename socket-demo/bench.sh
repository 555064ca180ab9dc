#!/bin/sh
# Socket throughput: framed transfers on each transport, and payloads passed as
# descriptors (memfd) next to payloads copied through the socket.
# Usage: sh socket-demo/bench.sh [BIN_DIR]      (from the workspace root)
set -u
B=${1:-target/release}
N=200000
PORT=${PORT:-47123}
export XDG_RUNTIME_DIR=${TMPDIR:-/tmp}/ipc-demos-bench-$$
mkdir -m 700 "$XDG_RUNTIME_DIR" || exit 1
trap 'rm -rf "$XDG_RUNTIME_DIR"' EXIT

# secs CMD: wall-clock seconds of `sh -c CMD`, best of 3 runs
secs() {
    best=
    for _ in 1 2 3; do
        t0=$(date +%s.%N); sh -c "$1" 2>/dev/null; t1=$(date +%s.%N)
        t=$(awk "BEGIN{print $t1 - $t0}")
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN{print (b < a) ? b : a}')
    done
    echo "$best"
}
mbs() { awk -v bytes="$1" -v s="$2" 'BEGIN{printf "%7.0f MB/s", bytes / s / 1e6}'; }

# pair TRANSPORT N SIZE [WRITER FLAGS]: the reader in the background, the writer
# at once (it retries connect until the reader listens); both must finish.
pair() {
    t=$1; n=$2; size=$3; shift 3
    addr=; [ "$t" = tcp ] && addr="--addr 127.0.0.1:$PORT"
    echo "$B/socket-reader --transport $t $addr --count $n --quiet & \
          $B/socket-writer --transport $t $addr --count $n --size $size $*; wait"
}

printf '%-64s %s\n' "what (best of 3)" "throughput"
for t in unix unix-dgram tcp; do
    for size in 4096 65536; do
        n=$((N * 4096 / size))
        s=$(secs "$(pair $t $n $size)")
        printf '%-64s %s\n' "socket-writer --transport $t --count $n --size $size" "$(mbs $((n * size)) "$s")"
    done
done
for size in 1048576 16777216; do
    n=$((2048 * 1048576 / size))
    s=$(secs "$(pair unix $n $size)")
    printf '%-64s %s\n' "socket-writer --count $n --size $size   (copied)" "$(mbs $((n * size)) "$s")"
    s=$(secs "$(pair unix $n $size --send-memfd)")
    printf '%-64s %s\n' "socket-writer --send-memfd --count $n --size $size" "$(mbs $((n * size)) "$s")"
done
