//! `ipc-bench --quick`, the whole bench made tiny, run as `make test` runs
//! it: it must finish, print its tables, write its files, and leave nothing
//! of ours behind. No figure is asserted: timing belongs to `make bench`.

use std::fs;
use std::time::Duration;

use ipc_common::testkit::{Running, TestDir};

const BIN: &str = env!("CARGO_BIN_EXE_ipc-bench");
/// The quick run takes a few seconds; a loaded machine may stretch that.
const LIMIT: Duration = Duration::from_secs(120);

#[test]
fn quick_run_measures_every_mechanism_writes_its_files_and_leaves_nothing() {
    let dir = TestDir::new("bench");
    let out = dir.root().join("out");
    // The bench makes its private root under XDG_RUNTIME_DIR: here, the test's directory.
    let mut cmd = dir.command(BIN);
    cmd.arg("--quick").arg("--out").arg(&out);
    let run = Running::spawn(&mut cmd, LIMIT);
    let pid = run.pid();
    let outcome = run.finish();
    outcome.expect(0);

    let text = outcome.stdout_text();
    for heading in [
        "### Floors",
        "### Throughput, 64 B payloads",
        "### Throughput, 1 MiB payloads",
        "### Latency, 64 B payloads",
        "### Latency, 4 KiB payloads",
        "### Targets",
    ] {
        assert!(text.contains(heading), "no {heading:?} in:\n{text}");
    }
    // A row for every mechanism and API, in the throughput and latency tables.
    for row in [
        "| pipe |",
        "| fifo |",
        "| mq posix |",
        "| mq sysv |",
        "| shm posix |",
        "| shm sysv |",
        "| mmap ring |",
        "| unix |",
        "| unix-dgram |",
        "| tcp |",
        "| sem buffer |",
    ] {
        assert!(text.matches(row).count() >= 2, "{row} is not in both workloads:\n{text}");
    }
    assert!(text.contains("| shm posix --spin |"), "no spinning row:\n{text}");
    // The three round-trip floors, each measured: p50, p99 and p99.9 are
    // figures (in whatever unit a busy machine gives), not "—".
    for floor in ["| cache line: ", "| frame lines: ", "| futex: "] {
        let row = text.lines().find(|l| l.starts_with(floor)).unwrap_or_default();
        let cells: Vec<&str> = row.split('|').map(str::trim).filter(|c| !c.is_empty()).collect();
        let measured = cells.len() == 5
            && cells[1..4].iter().all(|c| c.starts_with(|ch: char| ch.is_ascii_digit()));
        assert!(measured, "floor {floor:?} not measured: {row:?}");
    }
    // Limits are said, not hidden: 64 KiB frames do not fit a queue's message.
    assert!(text.contains("| mq posix | not possible: a message holds at most"), "{text}");
    // Nothing failed: every frame passed the reader's checks, every echo
    // matched its request, and every throughput run's digest matched the
    // writer's (a mismatch fails that row, and the run with exit 4).
    assert!(!text.contains("failed:"), "a measurement failed:\n{text}");
    assert!(text.contains("digest compared with the writer's"), "{text}");

    let json = fs::read_to_string(out.join("results.json")).expect("results.json");
    assert!(json.starts_with('{') && json.trim_end().ends_with('}'), "{json}");
    for key in ["\"machine\"", "\"results\"", "\"targets\"", "\"p50_ns\"", "\"bytes_per_sec\""] {
        assert!(json.contains(key), "results.json lacks {key}");
    }
    let csv = fs::read_to_string(out.join("results.csv")).expect("results.csv");
    assert!(csv.starts_with("workload,subject,size,variant,"), "{csv}");
    assert!(csv.lines().count() > 100, "results.csv has {} lines", csv.lines().count());
    assert_eq!(fs::read_to_string(out.join("results.md")).expect("results.md"), text);
    for chart in ["throughput.svg", "latency.svg"] {
        let svg = fs::read_to_string(out.join(chart)).expect(chart);
        assert!(svg.starts_with("<svg") && svg.contains("shm posix"), "{chart} is not a chart");
    }

    // Its private root (XDG_RUNTIME_DIR/ipc-bench.<pid>) is gone, and no POSIX
    // object of its prefix is left in /dev/shm (the bench itself checked every
    // namespace, System V included, before exiting 0).
    let left: Vec<String> = fs::read_dir(dir.root())
        .expect("read test dir")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name != "out")
        .collect();
    assert!(left.is_empty(), "left in XDG_RUNTIME_DIR: {left:?}");
    let prefix = format!("ipc-bench.{pid}.");
    let shm: Vec<String> = fs::read_dir("/dev/shm")
        .expect("read /dev/shm")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
        .filter(|name| name.contains(&prefix))
        .collect();
    assert!(shm.is_empty(), "left in /dev/shm: {shm:?}");
    dir.assert_clean();
}

#[test]
fn bad_options_are_usage_errors_before_anything_runs() {
    let dir = TestDir::new("bench-usage");
    for (args, needle) in [
        (&["--pin", "0"][..], "--pin"),
        (&["--round-trips", "100"][..], "at least 10000"),
        (&["--only", "carrier-pigeon"][..], "no mechanism"),
        (&["--workload", "both"][..], "throughput or latency"),
        (&["--secs", "0"][..], "--secs"),
    ] {
        let mut cmd = dir.command(BIN);
        cmd.args(args);
        let outcome = Running::spawn(&mut cmd, LIMIT).finish();
        outcome.expect(2).expect_stderr(needle);
    }
    // Nothing was created: not even the private root.
    assert_eq!(fs::read_dir(dir.root()).expect("read").count(), 0);
}

#[test]
fn only_and_workload_pick_the_rows() {
    let dir = TestDir::new("bench-only");
    let out = dir.root().join("out");
    let mut cmd = dir.command(BIN);
    cmd.args(["--quick", "--only", "pipe", "--workload", "latency", "--out"]).arg(&out);
    let outcome = Running::spawn(&mut cmd, LIMIT).finish();
    outcome.expect(0);
    let text = outcome.stdout_text();
    assert!(text.contains("### Latency, 64 B payloads"), "{text}");
    assert!(!text.contains("### Throughput, 64 B payloads"), "throughput ran:\n{text}");
    assert!(text.contains("| pipe |") && !text.contains("| fifo |"), "{text}");
}
