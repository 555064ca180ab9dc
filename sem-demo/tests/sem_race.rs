//! sem-race: lost updates without a lock, none with each lock, and a counting
//! semaphore that lets exactly K processes in.

use std::process::Stdio;
use std::sync::{Mutex, MutexGuard};

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir};

const RACE: &str = env!("CARGO_BIN_EXE_sem-race");

/// Every race keeps its processes busy on both CPUs: run one at a time, or a
/// race beside another may never see its own processes overlap.
static CPUS: Mutex<()> = Mutex::new(());

fn cpus() -> MutexGuard<'static, ()> {
    CPUS.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn race(dir: &TestDir, args: &[&str]) -> Outcome {
    let _cpus = cpus();
    Running::spawn(dir.command(RACE).args(args).stdin(Stdio::null()), LIMIT).finish()
}

/// "got N" of the line for `lock`.
fn got(out: &Outcome, lock: &str) -> u64 {
    let tag = format!("sem-race: {lock:<7} got ");
    out.stderr
        .lines()
        .find_map(|l| l.strip_prefix(&tag))
        .and_then(|rest| rest.split(':').next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no result for {lock}:\n{}", out.stderr))
}

/// Processes doing load-then-store on one counter lose updates. Scheduling
/// decides how many: at the defaults a process may finish its 200000
/// increments within one time slice, before another runs, and on a machine
/// busy with other work the processes may take turns on one CPU and never
/// interleave. So a run that loses none is retried with more processes and
/// more increments, as `sem-race` itself advises, a few times at most (each
/// try shown) before the test fails.
#[test]
fn without_a_lock_updates_are_lost() {
    let dir = TestDir::new("race-none");
    let mut tries = Vec::new();
    let plan = [(4u64, 200_000u64), (4, 200_000), (4, 1_000_000), (8, 1_000_000), (8, 4_000_000)];
    let last = [(16, 4_000_000), (16, 16_000_000), (16, 16_000_000), (16, 16_000_000)];
    for (p, m) in plan.into_iter().chain(last) {
        let expected = p * m;
        let args = ["--lock", "none", "--procs", &p.to_string(), "--iterations", &m.to_string()];
        let out = race(&dir, &args);
        out.expect(0).expect_stderr(&format!("= {expected} expected"));
        let n = got(&out, "none");
        assert!(n <= expected, "more than P x M: {}", out.stderr);
        tries.push((n, expected));
        if n < expected {
            out.expect_stderr("LOST ");
            dir.assert_clean();
            return;
        }
    }
    panic!(
        "no update lost in {} tries (got {tries:?}): the processes never overlapped",
        tries.len()
    );
}

#[test]
fn every_lock_gives_exactly_p_times_m() {
    let dir = TestDir::new("race-locks");
    for lock in ["atomic", "mutex", "posix", "sysv"] {
        let out = race(&dir, &["--lock", lock, "--iterations", "50000"]);
        out.expect(0).expect_stderr("none lost");
        assert_eq!(got(&out, lock), 200_000, "{lock}");
        assert!(
            out.stderr.contains(" ns per lock/unlock pair")
                || out.stderr.contains(" ns per increment"),
            "{}",
            out.stderr
        );
    }
    dir.assert_clean();
}

#[test]
fn all_runs_every_kind_and_reports_each() {
    let dir = TestDir::new("race-all");
    let out = race(&dir, &["--iterations", "20000"]);
    out.expect(0);
    for lock in ["none", "atomic", "mutex", "posix", "sysv"] {
        let n = got(&out, lock);
        if lock != "none" {
            assert_eq!(n, 80_000, "{lock}");
        }
    }
    dir.assert_clean();
}

/// The measured maximum of processes inside at once: never above K, and with
/// P > K processes that linger inside, K is reached — a binary semaphore would
/// fail the second half, no semaphore the first.
#[test]
fn a_counting_semaphore_lets_at_most_k_processes_in() {
    let dir = TestDir::new("race-permits");
    for (lock, k) in [("posix", "2"), ("sysv", "3")] {
        let out =
            race(&dir, &["--lock", lock, "--permits", k, "--procs", "4", "--iterations", "20000"]);
        out.expect(0).expect_stderr(&format!(
            "sem-race: {lock}, {k} permits: at most {k} processes inside at once (measured: {k})"
        ));
    }
    dir.assert_clean();
}

#[test]
fn bad_values_are_usage_errors() {
    let dir = TestDir::new("race-usage");
    for (args, needle) in [
        (&["--lock", "spin"][..], "expected none, atomic, mutex, posix, sysv or all"),
        (&["--lock", "mutex", "--permits", "2"][..], "--permits counts with a semaphore"),
        (&["--permits", "2"][..], "--permits counts with a semaphore"),
        (&["--procs", "0"][..], "--procs 0: from 1 to 64"),
        (&["--iterations", "0"][..], "--iterations 0"),
    ] {
        race(&dir, args).expect(2).expect_stderr(needle);
    }
}
