//! sem-race under faults: stop signals sent to the parent alone, and a parent
//! killed with SIGKILL. Apart from `sem_race.rs` on purpose: these races keep
//! four processes busy until stopped, which would starve the lost-update test
//! of the overlap it needs if they ran beside it (tests of one binary run in
//! parallel; binaries run one after another).

use std::process::Stdio;

use ipc_common::testkit::{LIMIT, Running, TestDir, wait_until};
use sem_demo::process_alive;

const RACE: &str = env!("CARGO_BIN_EXE_sem-race");

/// A race that runs until stopped, with its 4 processes started.
fn long_race(dir: &TestDir, lock: &str) -> (Running, Vec<i32>) {
    let mut r = Running::spawn(
        dir.command(RACE).args(["--lock", lock, "--iterations", "1000000000"]).stdin(Stdio::null()),
        LIMIT,
    );
    r.wait_for("expected");
    let pid = r.pid();
    let children = || {
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .map(|c| c.split_whitespace().filter_map(|p| p.parse().ok()).collect::<Vec<i32>>())
            .unwrap_or_default()
    };
    wait_until("the processes to start", LIMIT, || children().len() == 4);
    (r, children())
}

#[test]
fn a_stop_signal_stops_every_process_and_removes_the_set() {
    for (sig, code, name) in [(libc::SIGINT, 130, "SIGINT"), (libc::SIGTERM, 143, "SIGTERM")] {
        let dir = TestDir::new(&format!("race-{name}"));
        let (r, _) = long_race(&dir, "sysv");
        // To the parent only (`kill PID`, not Ctrl-C's whole group): it tells the others.
        r.kill(sig);
        let out = r.finish();
        out.expect(code).expect_stderr(&format!("sem-race: interrupted by {name}"));
        // One line says so: the processes it stopped stay quiet, and never name another signal.
        assert_eq!(out.stderr.matches("interrupted").count(), 1, "{}", out.stderr);
        dir.assert_clean();
    }
}

/// Review finding: the processes outlived a parent killed with SIGKILL (the
/// one signal it cannot pass on), spinning on for ever. They die with it now
/// (`PR_SET_PDEATHSIG`).
#[test]
fn the_processes_die_with_a_parent_killed_by_sigkill() {
    let dir = TestDir::new("race-orphans");
    let (r, children) = long_race(&dir, "posix");
    r.kill(libc::SIGKILL);
    assert_eq!(r.finish().signal, Some(libc::SIGKILL));
    wait_until("every process to die with its parent", LIMIT, || {
        children.iter().all(|&c| !process_alive(c))
    });
    // An anonymous mapping and an unnamed semaphore: nothing of it outlives the processes.
    dir.assert_clean();
}
