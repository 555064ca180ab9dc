#!/bin/sh
# mmap-demo throughput: the log and the ring in a mapped file, next to the
# pipe pair, in the same run; the file on the private directory's file system
# and on tmpfs (/dev/shm).
# Usage: sh mmap-demo/bench.sh [BIN_DIR]      (from the workspace root)
set -u
B=${1:-target/release}
N=200000
export XDG_RUNTIME_DIR=${TMPDIR:-/tmp}/ipc-demos-bench-$$
mkdir -m 700 "$XDG_RUNTIME_DIR" || exit 1
SHM=/dev/shm/ipc-demos-bench-$$.log
trap 'rm -rf "$XDG_RUNTIME_DIR" "$SHM"' EXIT

# secs FILE CMD: wall-clock seconds of `sh -c CMD`, best of 3. FILE, the log
# CMD makes, is removed before each run and after the last (a writer refuses a
# leftover, and removal is not what we time); '' when CMD makes no file.
# (Never /dev/null: this runs as root, and rm would delete the device.)
secs() {
    best=
    for _ in 1 2 3; do
        if [ -n "$1" ]; then rm -f "$1"; fi
        t0=$(date +%s.%N); sh -c "$2" 2>/dev/null || echo "FAILED: $2" >&2; t1=$(date +%s.%N)
        t=$(awk "BEGIN{print $t1 - $t0}")
        best=$(awk -v a="${best:-$t}" -v b="$t" 'BEGIN{print (b < a) ? b : a}')
    done
    if [ -n "$1" ]; then rm -f "$1"; fi
    echo "$best"
}
mbs() { awk -v bytes="$1" -v s="$2" -v size="$3" 'BEGIN{printf "%6.0f MB/s  %6.3f M msg/s", bytes / s / 1e6, bytes / size / s / 1e6}'; }

DISK="$XDG_RUNTIME_DIR/ipc-demos/mmap.log"
printf '%-78s %s\n' "what (best of 3, ~800 MB each)" "throughput"
for size in 4096 65536; do
    n=$((N * 4096 / size))
    bytes=$((n * size))
    t=$(secs '' "$B/pipe-writer --count $n --size $size | $B/pipe-reader --count $n")
    printf '%-78s %s\n' "pipe-writer --count $n --size $size | pipe-reader" "$(mbs $bytes "$t" $size)"
    for where in disk shm; do
        if [ $where = disk ]; then f=$DISK; p=; else f=$SHM; p="--path $SHM"; fi
        t=$(secs "$f" "$B/mmap-reader $p --count $n --quiet & $B/mmap-writer $p --capacity 1G --count $n --size $size; wait \$!")
        printf '%-78s %s\n' "mmap log ($where): mmap-writer --capacity 1G --count $n --size $size" "$(mbs $bytes "$t" $size)"
        t=$(secs "$f" "$B/mmap-reader $p --count $n --quiet & $B/mmap-writer $p --ring 1M --count $n --size $size; wait \$!")
        printf '%-78s %s\n' "mmap ring ($where): mmap-writer --ring 1M --count $n --size $size" "$(mbs $bytes "$t" $size)"
    done
    t=$(secs "$SHM" "$B/mmap-writer --path $SHM --capacity 1G --count $n --size $size; $B/mmap-reader --path $SHM --replay --count $n")
    printf '%-78s %s\n' "mmap log (shm), writer alone then --replay" "$(mbs $bytes "$t" $size)"
    # The replay alone: the log written once (not timed), then read again from
    # the page cache, checked in place, nothing written.
    rm -f "$SHM"
    "$B/mmap-writer" --path "$SHM" --capacity 1G --count $n --size $size 2>/dev/null || echo "FAILED: mmap-writer --path $SHM" >&2
    t=$(secs '' "$B/mmap-reader --path $SHM --replay --count $n")
    rm -f "$SHM"
    printf '%-78s %s\n' "mmap log (shm): mmap-reader --replay --count $n alone" "$(mbs $bytes "$t" $size)  $t s"
    t=$(secs '' "$B/mmap-anon --count $n --size $size")
    printf '%-78s %s\n' "mmap-anon --count $n --size $size (MAP_SHARED|MAP_ANONYMOUS, fork)" "$(mbs $bytes "$t" $size)"
done
