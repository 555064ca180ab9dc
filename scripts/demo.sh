#!/bin/sh
# Runs every pair once, small, and prints one line per mechanism: whether the two
# summary digests agree, and the commands to paste into two terminals.
# Usage: sh scripts/demo.sh [BIN_DIR]      (make demo)
set -u
B=${1:-target/release}
tmp=$(mktemp -d) || exit 1
trap 'rm -rf "$tmp"' EXIT
failed=0

# digest FILE: the digest of the last summary line in FILE
digest() { sed -n 's/.*digest \([0-9a-f]\{8\}\)$/\1/p' "$1" | tail -n 1; }
# counts FILE: "N messages, B bytes" of the last summary line
counts() { sed -n 's/.*: \(sent\|received\) \([0-9]* messages, [0-9]* bytes\).*/\2/p' "$1" | tail -n 1; }

# report NAME STATUS COMMANDS: one line; on failure, what each side said
report() {
    w=$(digest "$tmp/w"); r=$(digest "$tmp/r")
    if [ "$2" = 0 ] && [ -n "$w" ] && [ "$w" = "$r" ]; then
        printf '%-9s ok    %-30s digest %s   $ %s\n' "$1" "$(counts "$tmp/r")" "$r" "$3"
    else
        printf '%-9s FAIL  $ %s\n' "$1" "$3"
        sed 's/^/        /' "$tmp/w" "$tmp/r"
        failed=1
    fi
}

# pair NAME "READER ARGS" "WRITER ARGS": the reader in the background, then the
# writer (whichever makes the object, the other waits for it); then one line.
pair() {
    # The two argument strings are split into words on purpose.
    "$B/"$2 --timeout 10 2>"$tmp/r" &
    reader=$!
    "$B/"$3 2>"$tmp/w"
    st=$?
    wait $reader || st=1
    report "$1" $st "$2   and   $3"
}

# pipe: the shell makes the pipe.
"$B/pipe-writer" --count 1000 --size 0..4K 2>"$tmp/w" | "$B/pipe-reader" --count 1000 2>"$tmp/r"
report pipe $? "pipe-writer --count 1000 --size 0..4K | pipe-reader --count 1000"

# pipe --spawn: pipe2 + fork + exec; both summaries on one stderr.
"$B/pipe-writer" --spawn --count 1000 --size 0..4K 2>"$tmp/both"
st=$?
grep '^pipe-writer' "$tmp/both" >"$tmp/w"; grep '^pipe-reader' "$tmp/both" >"$tmp/r"
report spawn $st "pipe-writer --spawn --count 1000 --size 0..4K"

# pipe-duplex: two pipes, parent and child; digests of both directions.
"$B/pipe-duplex" --count 2000 2>"$tmp/both"
st=$?
grep '^pipe-duplex: sent' "$tmp/both" >"$tmp/w"; grep '^pipe-duplex child' "$tmp/both" >"$tmp/r"
report duplex $st "pipe-duplex --count 2000   ($(sed -n 's/.*round trips of [0-9]* bytes: \(p50 [^,]*\).*/\1/p' "$tmp/both") a round trip)"

# fifo: the reader makes the FIFO; the writer waits for it (no sleep needed).
pair fifo "fifo-reader --count 1000" "fifo-writer --count 1000 --size 0..4K"

# mq: the reader makes the queue; the writer waits for it. Both standards.
for api in posix sysv; do
    pair "mq-$api" "mq-reader --api $api --count 1000" "mq-writer --api $api --count 1000 --size 0..4K"
done

# sem: the bounded buffer (8 slots in POSIX shm; empty/full named semaphores, a robust mutex as the lock); the writer waits for the reader.
pair sem "sem-reader --count 1000" "sem-writer --count 1000 --size 0..4K"

# sem, System V: the same buffer guarded by one System V set of three semaphores.
pair sem-v "sem-reader --lock sysv --count 1000" "sem-writer --count 1000 --size 0..4K"

# shm: the reader makes the segment and its ring; the writer attaches and
# removes the name (crash-safe). Both standards.
for api in posix sysv; do
    pair "shm-$api" "shm-reader --api $api --count 1000" "shm-writer --api $api --count 1000 --size 0..64K"
done

# mmap: the writer makes the file and the reader waits for it (roles swapped);
# the reader follows the log live. Then, both gone, a replay reads the file
# again — same digest — and removes it.
pair mmap "mmap-reader --count 1000" "mmap-writer --count 1000 --size 0..4K"
"$B/mmap-reader" --replay --count 1000 --remove 2>"$tmp/r"
report replay $? "mmap-reader --replay --count 1000 --remove   (after both exited: the file stayed)"

# mmap --ring: the same ring as shm-demo, in a small file; the stream is ten times its size.
pair mmap-ring "mmap-reader --count 1000 --remove" "mmap-writer --ring 256K --count 1000 --size 0..4K"

# mmap-anon: MAP_SHARED|MAP_ANONYMOUS, parent and forked child, no file at all.
"$B/mmap-anon" --count 1000 --size 0..4K 2>"$tmp/both"
st=$?
grep '^mmap-anon child' "$tmp/both" >"$tmp/w"; grep '^mmap-anon: received' "$tmp/both" >"$tmp/r"
report mmap-anon $st "mmap-anon --count 1000 --size 0..4K"

# socket: the reader binds and listens; the writer retries connect until it does.
pair socket "socket-reader --count 1000" "socket-writer --count 1000 --size 0..4K"

# tcp: the kernel picks the port (127.0.0.1:0); the ready line says which.
"$B/socket-reader" --transport tcp --count 1000 --timeout 10 2>"$tmp/r" &
reader=$!
addr= tries=0
while [ -z "$addr" ] && [ $tries -lt 200 ] && kill -0 $reader 2>/dev/null; do
    addr=$(sed -n 's/.*: ready: listening on tcp //p' "$tmp/r"); tries=$((tries + 1)); sleep 0.05
done
"$B/socket-writer" --transport tcp --addr "${addr:-127.0.0.1:1}" --count 1000 --size 0..4K 2>"$tmp/w"
st=$?
wait $reader || st=1
report tcp $st "socket-reader --transport tcp   and   socket-writer --transport tcp --addr ${addr:-?} --count 1000 --size 0..4K"

# unix-dgram (SOCK_SEQPACKET): one frame per message.
pair dgram "socket-reader --transport unix-dgram --count 1000" "socket-writer --transport unix-dgram --count 1000 --size 0..4K"

exit $failed
