//! sem-holder: what the kernel does with a lock whose holder is killed with
//! SIGKILL — a POSIX semaphore stays taken, a System V semaphore taken with
//! SEM_UNDO is given back, a robust mutex reports EOWNERDEAD to the next locker.

use std::path::PathBuf;
use std::process::Stdio;

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir};

const HOLDER: &str = env!("CARGO_BIN_EXE_sem-holder");
const NOBODY: u32 = 65534;

fn spawn(dir: &TestDir, args: &[&str]) -> Running {
    Running::spawn(dir.command(HOLDER).args(args).stdin(Stdio::null()), LIMIT)
}

/// A holder that has taken the lock and holds it, mid-update.
fn holder(dir: &TestDir, lock: &str, extra: &[&str]) -> Running {
    let mut args = vec!["--lock", lock, "--hold"];
    args.extend_from_slice(extra);
    let mut h = spawn(dir, &args);
    h.wait_for("holding it as pid ");
    h
}

/// The next locker, already waiting when the holder is killed.
fn holder_killed_while_next_waits(dir: &TestDir, lock: &str, extra: &[&str]) -> Outcome {
    let h = holder(dir, lock, extra);
    let mut args = vec!["--lock", lock, "--timeout", "2"];
    args.extend_from_slice(
        extra.iter().filter(|a| **a != "--no-undo").copied().collect::<Vec<_>>().as_slice(),
    );
    let mut next = spawn(dir, &args);
    next.wait_for(": taking it (up to 2 s)");
    h.kill(libc::SIGKILL);
    let h = h.finish();
    assert_eq!(h.signal, Some(libc::SIGKILL), "{}", h.stderr);
    next.finish()
}

#[test]
fn a_posix_semaphore_stays_taken_when_its_holder_dies() {
    let dir = TestDir::new("holder-posix");
    let next = holder_killed_while_next_waits(&dir, "posix", &[]);
    next.expect(3)
        .expect_stderr("is still taken (value 0) after 2 s")
        .expect_stderr("a POSIX semaphore has no owner")
        .expect_stderr("no SEM_UNDO");
    dir.assert_clean();
}

#[test]
fn a_system_v_semaphore_with_sem_undo_is_given_back_by_the_kernel() {
    let dir = TestDir::new("holder-sysv");
    let next = holder_killed_while_next_waits(&dir, "sysv", &[]);
    next.expect(0)
        .expect_stderr("took it (semop SEM_UNDO)")
        .expect_stderr("the kernel reversed its P at its exit (SEM_UNDO adjustment)");
    dir.assert_clean();
}

#[test]
fn a_system_v_semaphore_without_sem_undo_stays_taken() {
    let dir = TestDir::new("holder-sysv-noundo");
    let next = holder_killed_while_next_waits(&dir, "sysv", &["--no-undo"]);
    next.expect(3)
        .expect_stderr("is still taken (value 0) after 2 s")
        .expect_stderr("no longer running")
        .expect_stderr("without SEM_UNDO");
    dir.assert_clean();
}

#[test]
fn a_robust_mutex_reports_eownerdead_and_the_next_locker_repairs_it() {
    let dir = TestDir::new("holder-mutex");
    let next = holder_killed_while_next_waits(&dir, "mutex", &[]);
    next.expect(0)
        .expect_stderr("EOWNERDEAD: pid ")
        .expect_stderr("left mid-update: debit 1, credit 0")
        .expect_stderr("repaired (credit = debit = 1), called pthread_mutex_consistent");
    dir.assert_clean();
}

#[test]
fn die_after_kills_the_holder_and_the_next_run_finds_what_it_left() {
    for (lock, code, needle) in [
        ("posix", 3, "a POSIX semaphore has no owner"),
        ("sysv", 0, "is gone: the kernel reversed its P"),
        ("mutex", 0, "EOWNERDEAD"),
    ] {
        let dir = TestDir::new(&format!("holder-die-{lock}"));
        let h = spawn(&dir, &["--lock", lock, "--die-after", "100"]).finish();
        assert_eq!(h.signal, Some(libc::SIGKILL), "{}", h.stderr);
        let next = spawn(&dir, &["--lock", lock, "--timeout", "1"]).finish();
        next.expect(code).expect_stderr(needle).expect_stderr("found ");
        dir.assert_clean();
    }
}

#[test]
fn unlocking_without_pthread_mutex_consistent_makes_it_unrecoverable() {
    let dir = TestDir::new("holder-norepair");
    let h = spawn(&dir, &["--lock", "mutex", "--die-after", "50"]).finish();
    assert_eq!(h.signal, Some(libc::SIGKILL));
    spawn(&dir, &["--lock", "mutex", "--no-repair"])
        .finish()
        .expect(1)
        .expect_stderr("EOWNERDEAD")
        .expect_stderr("ENOTRECOVERABLE")
        .expect_stderr("can never be locked again");
    dir.assert_clean();
}

#[test]
fn sigint_to_a_holder_gives_the_lock_back_and_removes_it() {
    for lock in ["posix", "sysv", "mutex"] {
        let dir = TestDir::new(&format!("holder-sigint-{lock}"));
        let h = holder(&dir, lock, &[]);
        h.kill(libc::SIGINT);
        h.finish().expect(130).expect_stderr("interrupted by SIGINT");
        dir.assert_clean();
        // A lock given back, not one left taken: a fresh run takes it at once.
        spawn(&dir, &["--lock", lock, "--timeout", "1"])
            .finish()
            .expect(0)
            .expect_stderr("created ");
        dir.assert_clean();
    }
}

#[test]
fn a_lock_object_of_another_user_is_refused_and_untouched() {
    let dir = TestDir::new("holder-foreign");
    let sem = PathBuf::from(format!("/dev/shm/sem.{}", &dir.posix_name("sem-holder")[1..]));
    std::fs::write(&sem, vec![0u8; 32]).expect("plant");
    std::os::unix::fs::chown(&sem, Some(NOBODY), Some(NOBODY)).expect("chown");
    spawn(&dir, &["--lock", "posix"])
        .finish()
        .expect(1)
        .expect_stderr(&format!("is owned by uid {NOBODY}, not by us"));
    assert!(sem.exists());
    std::fs::remove_file(&sem).expect("rm");
    dir.assert_clean();
}

#[test]
fn bad_values_are_usage_errors() {
    let dir = TestDir::new("holder-usage");
    for (args, needle) in [
        (&["--lock", "futex"][..], "expected posix, sysv or mutex"),
        (&["--lock", "posix", "--no-undo"][..], "give --lock sysv"),
        (&["--lock", "sysv", "--no-repair"][..], "give --lock mutex"),
        (&["--lock", "posix", "--name", "x"][..], "starts with '/'"),
    ] {
        spawn(&dir, args).finish().expect(2).expect_stderr(needle);
    }
}

/// The System V set is found through what its creator recorded in the key
/// file, never through the `ftok` key alone (keys collide). A key file without
/// a record (its creator died first) is named with the command that removes it.
#[test]
fn a_key_file_without_a_record_is_named_not_trusted() {
    let dir = TestDir::new("holder-norecord");
    std::fs::create_dir(dir.private()).expect("mkdir");
    std::fs::set_permissions(dir.private(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    let key_file = dir.private().join("sem-holder.key");
    std::fs::write(&key_file, b"").expect("plant");
    std::fs::set_permissions(&key_file, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    spawn(&dir, &["--lock", "sysv", "--timeout", "1"])
        .finish()
        .expect(1)
        .expect_stderr("records no System V set: its creator died before recording one")
        .expect_stderr(&format!("remove it: rm {}", key_file.display()));
    std::fs::remove_file(&key_file).expect("rm");
    dir.assert_clean();
}

/// A killed holder's set removed by hand since (ipcrm, a reboot): the key file
/// that recorded it is stale, and the next run starts afresh.
#[test]
fn a_key_file_whose_set_is_gone_is_replaced() {
    let dir = TestDir::new("holder-gone");
    let h = spawn(&dir, &["--lock", "sysv", "--die-after", "50"]).finish();
    assert_eq!(h.signal, Some(libc::SIGKILL), "{}", h.stderr);
    let left = ipc_common::clean::scan_with(&dir.private(), dir.prefix()).expect("scan");
    let sets: Vec<_> = left.iter().filter(|l| l.kind == "sysv semaphore set").collect();
    assert_eq!(sets.len(), 1, "{left:?}");
    sets[0].remove().expect("ipcrm");
    spawn(&dir, &["--lock", "sysv", "--timeout", "1"]).finish().expect(0).expect_stderr("created ");
    dir.assert_clean();
}
