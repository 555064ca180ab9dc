#!/bin/sh
# Framed pipe throughput next to the raw pipe, measured in the same run, plus
# round-trip latency, and messages per second through each queue next to the
# pipe's. (ipc-bench, issue 8, will cover every mechanism.)
# Usage: sh scripts/bench.sh [BIN_DIR]      (make bench)
set -u
B=${1:-target/release}
N=200000

# secs CMD: wall-clock seconds of `sh -c CMD`, best of 3 runs
secs() {
    best=
    for _ in 1 2 3; do
        t0=$(date +%s.%N); sh -c "$1" 2>/dev/null; t1=$(date +%s.%N)
        t=$(echo "$t1 - $t0" | bc -l 2>/dev/null || awk "BEGIN{print $t1 - $t0}")
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN{print (b < a) ? b : a}')
    done
    echo "$best"
}
mbs() { awk -v bytes="$1" -v s="$2" 'BEGIN{printf "%7.0f MB/s", bytes / s / 1e6}'; }

printf '%-58s %s\n' "what (best of 3, $N messages)" "throughput"
for size in 4096 65536; do
    n=$((N * 4096 / size))
    bytes=$((n * size))
    raw=$(secs "dd if=/dev/zero bs=$size count=$n status=none | cat > /dev/null")
    printf '%-58s %s\n' "dd bs=$size count=$n | cat   (raw pipe)" "$(mbs $bytes "$raw")"
    framed=$(secs "$B/pipe-writer --count $n --size $size | $B/pipe-reader --count $n")
    printf '%-58s %s  (%s)\n' "pipe-writer --size $size | pipe-reader" "$(mbs $bytes "$framed")" \
        "$(awk -v r="$raw" -v f="$framed" 'BEGIN{printf "%.2fx the raw pipe", r / f}')"
    big=$(secs "$B/pipe-writer --pipe-size 1M --count $n --size $size | $B/pipe-reader --count $n")
    printf '%-58s %s\n' "pipe-writer --pipe-size 1M --size $size | pipe-reader" "$(mbs $bytes "$big")"
done
echo
"$B/pipe-duplex" --count 20000 2>&1 | grep 'round trips'
taskset -c 0 "$B/pipe-duplex" --count 20000 2>&1 | grep 'round trips' | sed 's/$/   (both on CPU 0)/'

echo
# Messages per second: queues next to the pipe, same run. The reader is started
# first and the writer waits for its queue, as in the two-terminal use.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
printf '%-10s %-22s %s\n' frames what "messages/s (best of 3)"
for size in 64 4096; do
    n=$N
    rate() { awk -v n="$n" -v s="$1" 'BEGIN{printf "%.2f M/s", n / s / 1e6}'; }
    t=$(secs "$B/pipe-writer --count $n --size $size | $B/pipe-reader --count $n")
    printf '%-10s %-22s %s\n' "$size B" "pipe" "$(rate "$t")"
    for api in posix sysv; do
        t=$(secs "$B/mq-reader --api $api --count $n & $B/mq-writer --api $api --count $n --size $size; wait")
        printf '%-10s %-22s %s\n' "$size B" "mq $api" "$(rate "$t")"
    done
done

echo
# Throughput of 64 KiB frames: the copying pipe next to the shared memory ring.
n=50000
bytes=$((n * 65536))
printf '%-40s %s\n' "64 KiB frames, $n of them" "throughput (best of 3)"
t=$(secs "$B/pipe-writer --count $n --size 64K | $B/pipe-reader --count $n")
printf '%-40s %s\n' "pipe" "$(mbs $bytes "$t")"
for api in posix sysv; do
    t=$(secs "$B/shm-reader --api $api --count $n & $B/shm-writer --api $api --count $n --size 64K; wait")
    printf '%-40s %s\n' "shm $api (1 MiB ring)" "$(mbs $bytes "$t")"
done
