# ipc-demos: a thin layer over cargo. `make help` lists the targets.
CARGO ?= cargo
BIN := target/release

.PHONY: all build demo test lint clean-ipc bench crash-matrix fuzz soak help

# make soak MINUTES=N: how long the soak runs (make test runs it for 1).
MINUTES ?= 10

all: build

build: ## build every binary (release)
	$(CARGO) build --release --workspace

demo: build ## run every pair once, small: one line per mechanism, with the commands
	@sh scripts/demo.sh $(BIN)

test: build ## cargo test (real processes in pairs), the demo, a 1-minute soak, then check nothing of ours is left
	$(CARGO) test --release --workspace
	@sh scripts/demo.sh $(BIN)
	$(BIN)/ipc-soak --minutes 1
	@$(BIN)/ipc-clean --check

lint: ## rustfmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --all-features -- -D warnings

clean-ipc: build ## remove whatever a killed run left (FIFOs, queues, segments...)
	$(BIN)/ipc-clean --remove

bench: build ## every mechanism side by side (ipc-bench, 3-7 min on 2 CPUs): tables, then target/ipc-bench/*.{json,csv,svg}
	@sh scripts/bench.sh $(BIN)

crash-matrix: build ## SIGKILL writer, reader, both, on every mechanism: print what survives (the README table)
	$(CARGO) test --release -p ipc-faults --test crash_matrix -- --nocapture

fuzz: ## the frame decoder under cargo-fuzz (installs nightly and cargo-fuzz if missing; FUZZ_SECONDS=60 a target)
	@sh scripts/fuzz.sh

soak: build ## random pairs, sizes and injected faults for MINUTES (default 10): transfers, faults, leaks
	$(BIN)/ipc-soak --minutes $(MINUTES)

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 14
