#!/bin/sh
# make fuzz: the frame decoders under libFuzzer, FUZZ_SECONDS (default 60) each.
#
#   stream_decoder   StreamSource (pipes, FIFOs, stream sockets), through a real pipe
#   message_decoder  frame::parse_message (queues, datagrams)
#
# Each target asserts: no panic, exactly the frames SPEC §3 allows, every
# accepted checksum right, no allocation above 24 + --max-frame. Installs what a
# fresh machine lacks (nightly, cargo-fuzz), then prints the inputs tried.
# A crash leaves its input in fuzz/artifacts/<target>/; replay it with
#   cd fuzz && cargo +nightly fuzz run <target> artifacts/<target>/crash-...
set -eu
cd "$(dirname "$0")/../fuzz"
FUZZ_SECONDS=${FUZZ_SECONDS:-60}
TARGETS=${FUZZ_TARGETS:-"stream_decoder message_decoder"}

if ! command -v rustup >/dev/null 2>&1; then
    echo "fuzz.sh: rustup is needed to install the nightly toolchain (https://rustup.rs)" >&2
    exit 1
fi
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "fuzz.sh: rustup toolchain install nightly --profile minimal"
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: cargo install cargo-fuzz --locked"
    cargo install cargo-fuzz --locked
fi

total=0
for target in $TARGETS; do
    mkdir -p "corpus/$target" target
    log="target/$target.log"
    echo "fuzz.sh: cargo +nightly fuzz run $target corpus/$target seeds/$target -- -max_total_time=$FUZZ_SECONDS"
    # -max_len: a default pipe (64 KiB) must hold a whole stream input;
    # -timeout: one input taking 10 s is a hang, and a failure.
    if ! cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
        -max_total_time="$FUZZ_SECONDS" -max_len=65536 -timeout=10 \
        -print_final_stats=1 >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        echo "fuzz.sh: $target FAILED (log: fuzz/$log; input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
    corpus=$(find "corpus/$target" -type f | wc -l)
    echo "fuzz.sh: $target: ${runs:-?} inputs in ${FUZZ_SECONDS} s, no crash; corpus $corpus inputs"
    total=$((total + ${runs:-0}))
done
echo "fuzz.sh: $total inputs tried in all, no crash, no leak, no allocation above --max-frame"
