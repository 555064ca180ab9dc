# ipc-demos: a thin layer over cargo. `make help` lists the targets.
CARGO ?= cargo
BIN := target/release

.PHONY: all build demo test lint clean-ipc bench help

all: build

build: ## build every binary (release)
	$(CARGO) build --release --workspace

demo: build ## run every pair once, small: one line per mechanism, with the commands
	@sh scripts/demo.sh $(BIN)

test: build ## cargo test (real processes in pairs), the demo, then check nothing of ours is left
	$(CARGO) test --release --workspace
	@sh scripts/demo.sh $(BIN)
	@$(BIN)/ipc-clean --check

lint: ## rustfmt --check and clippy -D warnings
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --release --workspace --all-targets --all-features -- -D warnings

clean-ipc: build ## remove whatever a killed run left (FIFOs, queues, segments...)
	$(BIN)/ipc-clean --remove

bench: build ## measure: pipe vs dd, round trips, queues and shared memory vs the pipe
	@sh scripts/bench.sh $(BIN)

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | expand -t 12
