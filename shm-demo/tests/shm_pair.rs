//! shm-reader and shm-writer, both APIs, run as a user runs them: volume through
//! a ring, one writer only, crash-safe cleanup, stale and foreign segments.

use std::fs;
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_common::clean::scan_with;
use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, wait_until};

const WRITER: &str = env!("CARGO_BIN_EXE_shm-writer");
const READER: &str = env!("CARGO_BIN_EXE_shm-reader");
const NOBODY: u32 = 65534;

fn reader(dir: &TestDir, api: &str, args: &[&str]) -> (Running, String) {
    let mut r = Running::spawn(
        dir.command(READER).args(["--api", api]).args(args).stdin(Stdio::null()),
        LIMIT,
    );
    let line = r.ready();
    (r, line)
}

fn writer(dir: &TestDir, api: &str, args: &[&str]) -> Running {
    Running::spawn(dir.command(WRITER).args(["--api", api]).args(args).stdin(Stdio::null()), LIMIT)
}

fn run(dir: &TestDir, bin: &str, args: &[&str]) -> Outcome {
    Running::spawn(dir.command(bin).args(args).stdin(Stdio::null()), LIMIT).finish()
}

/// The POSIX object's file in /dev/shm.
fn dev_shm(dir: &TestDir) -> String {
    format!("/dev/shm{}", dir.posix_name("shm"))
}

/// `(key, id)` from a System V ready line.
fn sysv_ids(ready: &str) -> (i32, i32) {
    let words: Vec<&str> = ready.split_whitespace().collect();
    let at =
        |w: &str| words.iter().position(|x| *x == w).map(|i| words[i + 1]).expect("in ready line");
    let key = u32::from_str_radix(at("key").trim_start_matches("0x"), 16).expect("hex key");
    (i32::from_ne_bytes(key.to_ne_bytes()), at("id").parse().expect("id"))
}

fn segment_exists(id: i32) -> bool {
    // SAFETY: IPC_STAT into a zeroed struct we own.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::shmctl(id, libc::IPC_STAT, &raw mut ds) == 0 }
}

/// Nothing of the run is left: private directory, /dev/shm, System V.
fn assert_gone(dir: &TestDir, api: &str, ready: &str) {
    dir.assert_clean();
    if api == "posix" {
        assert!(fs::symlink_metadata(dev_shm(dir)).is_err(), "POSIX segment left behind");
    } else {
        assert!(!segment_exists(sysv_ids(ready).1), "System V segment left behind");
    }
}

fn frames_through_a_one_mib_ring(api: &str) {
    let dir = TestDir::new(&format!("shm-volume-{api}"));
    let (r, ready) = reader(&dir, api, &["--count", "200000"]);
    let w =
        writer(&dir, api, &["--count", "200000", "--size", "0..100000", "--seed", "4"]).finish();
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    assert_eq!(r.summary().messages, 200_000);
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_200000_frames_of_up_to_100000_bytes_through_a_1_mib_ring() {
    frames_through_a_one_mib_ring("posix");
}

#[test]
fn sysv_200000_frames_of_up_to_100000_bytes_through_a_1_mib_ring() {
    frames_through_a_one_mib_ring("sysv");
}

#[test]
fn text_and_spinning_work_too() {
    let dir = TestDir::new("shm-text");
    let (r, ready) = reader(&dir, "posix", &["--spin", "1000"]);
    let mut w =
        Running::spawn(dir.command(WRITER).args(["--spin", "1000"]).stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"shared\nmemory\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "shared\nmemory\n");
    assert_eq!(w.summary(), r.summary());
    assert_gone(&dir, "posix", &ready);
}

fn a_frame_larger_than_the_ring_is_refused_at_start(api: &str) {
    let dir = TestDir::new(&format!("shm-big-{api}"));
    let (r, ready) = reader(&dir, api, &["--ring", "64K"]);
    let w = writer(&dir, api, &["--count", "1", "--size", "100K"]).finish();
    w.expect(2).expect_stderr(
        "--size 102400: a frame of 102424 bytes is larger than the ring (65536 bytes",
    );
    r.finish()
        .expect(3)
        .expect_stderr("shm: the writer closed the stream without sending anything");
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_a_frame_larger_than_the_ring_is_refused_at_start() {
    a_frame_larger_than_the_ring_is_refused_at_start("posix");
}

#[test]
fn sysv_a_frame_larger_than_the_ring_is_refused_at_start() {
    a_frame_larger_than_the_ring_is_refused_at_start("sysv");
}

fn writer_killed_mid_stream_is_noticed_within_a_second(api: &str) {
    let dir = TestDir::new(&format!("shm-wkill-{api}"));
    let (r, ready) = reader(&dir, api, &["--quiet", "--ring", "64K"]);
    // Mid-stream for sure: the reader paused, the writer fills the ring and waits.
    r.kill(libc::SIGSTOP);
    let w = writer(&dir, api, &["--count", "1000000000", "--size", "1K"]);
    let wpid = w.pid();
    wait_until("the writer to wait on a full ring", LIMIT, || {
        wchan(wpid).contains("futex") || wchan(wpid).contains("sem")
    });
    w.kill(libc::SIGKILL);
    drop(w.finish());
    let killed = Instant::now();
    r.kill(libc::SIGCONT);
    let r = r.finish();
    r.expect(3)
        .expect_stderr("shm: writer 0 vanished after ")
        .expect_stderr("the writer's process is gone");
    assert!(killed.elapsed() < Duration::from_secs(3), "noticed after {:?}", killed.elapsed());
    assert_gone(&dir, api, &ready);
}

/// The kernel function process `pid` sleeps in.
fn wchan(pid: i32) -> String {
    fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

#[test]
fn posix_writer_killed_mid_stream_is_noticed_within_a_second() {
    writer_killed_mid_stream_is_noticed_within_a_second("posix");
}

#[test]
fn sysv_writer_killed_mid_stream_is_noticed_within_a_second() {
    writer_killed_mid_stream_is_noticed_within_a_second("sysv");
}

fn reader_killed_makes_the_writer_exit_3(api: &str) {
    let dir = TestDir::new(&format!("shm-rkill-{api}"));
    let (r, ready) = reader(&dir, api, &["--quiet", "--ring", "64K"]);
    r.kill(libc::SIGSTOP);
    let w = writer(&dir, api, &["--count", "1000000000", "--size", "1K"]);
    let wpid = w.pid();
    wait_until("the writer to wait on a full ring", LIMIT, || {
        wchan(wpid).contains("futex") || wchan(wpid).contains("sem")
    });
    r.kill(libc::SIGKILL);
    drop(r.finish());
    w.finish().expect(3).expect_stderr("shm-writer: reader went away after ");
    if api == "sysv" {
        // A killed reader cannot remove its semaphore set: System V has no
        // unlink-while-in-use. The set and its lock file stay, listed and removable.
        let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
        assert!(left.iter().any(|l| l.kind == "sysv semaphore set"), "{left:?}");
        for item in &left {
            item.remove().expect("remove");
        }
    }
    assert_gone(&dir, api, &ready);
}

#[test]
fn posix_reader_killed_makes_the_writer_exit_3() {
    reader_killed_makes_the_writer_exit_3("posix");
}

#[test]
fn sysv_reader_killed_makes_the_writer_exit_3() {
    reader_killed_makes_the_writer_exit_3("sysv");
}

fn sigkill_of_both_sides(api: &str) -> (TestDir, String) {
    let dir = TestDir::new(&format!("shm-both-{api}"));
    let (r, ready) = reader(&dir, api, &["--quiet"]);
    let w = writer(&dir, api, &["--count", "1000000000", "--size", "4K"]);
    let rpid = r.pid();
    // Both attached (the writer claims its slot and removes the name): data flows.
    wait_until("data to flow", LIMIT, || voluntary_switches(rpid) > 10);
    w.kill(libc::SIGKILL);
    r.kill(libc::SIGKILL);
    drop((w.finish(), r.finish()));
    (dir, ready)
}

fn voluntary_switches(pid: i32) -> u64 {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let line = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"));
    line.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[test]
fn posix_sigkill_of_both_sides_leaves_nothing() {
    let (dir, ready) = sigkill_of_both_sides("posix");
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    assert!(left.is_empty(), "the segment goes with its last process: {left:?}");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn sysv_sigkill_of_both_sides_leaves_only_the_semaphore_set() {
    let (dir, ready) = sigkill_of_both_sides("sysv");
    assert!(!segment_exists(sysv_ids(&ready).1), "the segment goes with its last process");
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    let kinds: Vec<&str> = left.iter().map(|l| l.kind).collect();
    assert!(
        kinds.contains(&"sysv semaphore set") && !kinds.contains(&"sysv shm segment"),
        "{left:?}"
    );
    for item in &left {
        item.remove().expect("remove");
    }
    assert_gone(&dir, "sysv", &ready);
}

#[test]
fn a_second_writer_is_refused() {
    let dir = TestDir::new("shm-second");
    // --keep leaves the name, so a second writer can find the segment at all.
    let (r, ready) = reader(&dir, "posix", &["--keep", "--count", "1000"]);
    let first = writer(&dir, "posix", &["--count", "1000"]);
    let second = writer(&dir, "posix", &["--count", "1000"]).finish();
    // Whichever came second was refused; the other one finishes.
    let first = first.finish();
    let (ok, refused) = if second.code == Some(1) { (first, second) } else { (second, first) };
    refused
        .expect(1)
        .expect_stderr("already has a writer (pid ")
        .expect_stderr("carries one writer");
    ok.expect(0);
    r.finish().expect(0);
    // --keep kept the name: remove it ourselves.
    fs::remove_file(dev_shm(&dir)).expect("kept name");
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn writers_beyond_one_are_a_usage_error_on_the_reader() {
    let dir = TestDir::new("shm-writers");
    run(&dir, READER, &["--writers", "2"])
        .expect(2)
        .expect_stderr("carries one writer (single producer, single consumer)");
    run(&dir, READER, &["--name", "x"]).expect(2).expect_stderr("starts with '/'");
    run(&dir, READER, &["--ring", "100"]).expect(2).expect_stderr("at least 4096 bytes");
    dir.assert_clean();
}

#[test]
fn a_reader_killed_before_any_writer_leaves_a_stale_segment_that_force_replaces() {
    let dir = TestDir::new("shm-stale");
    let (r, _) = reader(&dir, "posix", &[]);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    let again = run(&dir, READER, &[]);
    again.expect(1).expect_stderr("is stale (its reader, pid ").expect_stderr("rm /dev/shm/");
    let (forced, ready) = reader(&dir, "posix", &["--force"]);
    forced.kill(libc::SIGTERM);
    forced.finish().expect(143);
    assert_gone(&dir, "posix", &ready);
}

#[test]
fn a_segment_not_ours_by_magic_owner_or_size_is_refused_and_untouched() {
    let dir = TestDir::new("shm-foreign");
    let path = dev_shm(&dir);
    // Wrong magic, right size for nothing: both sides refuse.
    fs::write(&path, vec![0x5a; 8192]).expect("plant");
    fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).expect("chmod");
    run(&dir, READER, &[]).expect(1).expect_stderr("is not an ipc-demos segment (magic");
    run(&dir, WRITER, &["--count", "1", "--timeout", "2"])
        .expect(1)
        .expect_stderr("is not an ipc-demos segment");
    // Right magic, wrong version.
    let mut bytes = vec![0u8; 8192];
    bytes[..8].copy_from_slice(b"IPCSHM\0\0");
    bytes[8] = 9;
    fs::write(&path, &bytes).expect("plant");
    run(&dir, READER, &[]).expect(1).expect_stderr("has layout version 9, not 1");
    // Someone else's.
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown");
    run(&dir, READER, &[]).expect(1).expect_stderr(&format!("is owned by uid {NOBODY}, not by us"));
    assert_eq!(fs::read(&path).expect("untouched").len(), 8192);
    fs::remove_file(&path).expect("remove");
    dir.assert_clean();
}

fn sigint_while_waiting(api: &str) {
    let dir = TestDir::new(&format!("shm-sigint-{api}"));
    let (r, ready) = reader(&dir, api, &[]);
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("shm-reader: interrupted by SIGINT");
    assert_gone(&dir, api, &ready);
    let left = scan_with(&dir.private(), dir.prefix()).expect("scan");
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn posix_sigint_while_waiting_exits_130_and_leaves_nothing() {
    sigint_while_waiting("posix");
}

#[test]
fn sysv_sigint_while_waiting_exits_130_and_leaves_nothing() {
    sigint_while_waiting("sysv");
}
