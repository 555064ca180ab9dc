//! mmap-writer, mmap-reader and mmap-anon run as a user runs them: a log
//! followed live and replayed after both exit, a ring, a writer killed
//! mid-stream, a file truncated under the mapping, and unsafe paths.

use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, parse_summary, wait_until};
use mmap_demo::{CLOSED_AT, COMMITTED_AT, HEADER_LEN, RING_READER_AT, VERSION_AT, WRITER_PID_AT};

const WRITER: &str = env!("CARGO_BIN_EXE_mmap-writer");
const READER: &str = env!("CARGO_BIN_EXE_mmap-reader");
const ANON: &str = env!("CARGO_BIN_EXE_mmap-anon");
/// uid of `nobody`, the "someone else" of these tests (they run as root).
const NOBODY: u32 = 65534;

fn spawn(dir: &TestDir, bin: &str, args: &[&str]) -> Running {
    Running::spawn(dir.command(bin).args(args).stdin(Stdio::null()), LIMIT)
}

fn spawn_piped(dir: &TestDir, bin: &str, args: &[&str]) -> Running {
    Running::spawn(dir.command(bin).args(args).stdin(Stdio::piped()), LIMIT)
}

/// A reader that has started and is waiting for the file.
fn waiting_reader(dir: &TestDir, args: &[&str]) -> Running {
    let mut r = spawn(dir, READER, args);
    r.wait_for("mmap-reader: waiting for ");
    r
}

fn log_path(dir: &TestDir) -> PathBuf {
    dir.private().join("mmap.log")
}

/// The 4 or 8 bytes at `at` in the file, read with pread, as a tool would.
fn word<const N: usize>(path: &Path, at: usize) -> [u8; N] {
    let mut word = [0u8; N];
    let file = fs::File::open(path).expect("open log");
    file.read_exact_at(&mut word, at as u64).expect("read the header");
    word
}

/// `committed` as the file's header holds it now (0 while there is no file).
fn committed(path: &Path) -> u64 {
    if !path.exists() {
        return 0;
    }
    u64::from_ne_bytes(word(path, COMMITTED_AT))
}

/// Stores `bytes` at `at` in the file, as another process of ours could.
fn plant(path: &Path, at: usize, bytes: &[u8]) {
    let file = fs::OpenOptions::new().write(true).open(path).expect("open log");
    file.write_all_at(bytes, at as u64).expect("plant");
}

/// The system call process `pid` is blocked in now (`/proc/PID/syscall`), if any.
fn blocked_in(pid: i32) -> Option<i64> {
    let text = fs::read_to_string(format!("/proc/{pid}/syscall")).ok()?;
    text.split(' ').next()?.parse().ok()
}

/// Deletes the file with the reader's `--remove`, after a replay that must match `expected`.
fn replay_and_remove(dir: &TestDir, count: &str, expected: &Outcome) {
    let replay = spawn(dir, READER, &["--replay", "--count", count, "--remove"]).finish();
    replay.expect(0).expect_stderr("mmap-reader: removed ");
    assert_eq!(replay.summary(), expected.summary(), "the replay reads the same stream");
}

// ---- the stream, live and replayed

#[test]
fn hundred_thousand_frames_live_and_replayed_after_both_exit_give_one_digest() {
    let dir = TestDir::new("mmap-100k");
    let r = waiting_reader(&dir, &["--count", "100000"]);
    let w = spawn(
        &dir,
        WRITER,
        &["--count", "100000", "--size", "0..20000", "--capacity", "1100M", "--seed", "7"],
    );
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0).expect_stderr("mmap-reader: ready: following log ");
    assert_eq!(w.summary(), r.summary());
    assert_eq!(w.summary().messages, 100_000);
    // Both have exited: the file is still there, listed by ipc-clean...
    let path = log_path(&dir);
    let left = ipc_common::clean::scan_with(&dir.private(), dir.prefix()).expect("scan");
    assert!(left.iter().any(|l| l.name == path.display().to_string()), "{left:?}");
    // ...and reading it again gives the same digest.
    replay_and_remove(&dir, "100000", &w);
    dir.assert_clean();
}

#[test]
fn text_typed_into_the_writer_is_printed_by_a_live_reader_and_by_a_replay() {
    let dir = TestDir::new("mmap-text");
    let r = waiting_reader(&dir, &[]);
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"hello\nmapped file\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "hello\nmapped file\n");
    assert_eq!(w.summary(), r.summary());
    let again = spawn(&dir, READER, &["--replay", "--remove"]).finish();
    again.expect(0);
    assert_eq!(again.stdout_text(), "hello\nmapped file\n");
    dir.assert_clean();
}

#[test]
fn a_ring_carries_an_unbounded_stream_through_a_small_file() {
    let dir = TestDir::new("mmap-ring");
    let r = waiting_reader(&dir, &["--count", "100000", "--remove"]);
    let w = spawn(&dir, WRITER, &["--ring", "64K", "--count", "100000", "--size", "0..20000"]);
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0).expect_stderr("ready: following ring ");
    assert_eq!(w.summary(), r.summary());
    assert!(w.summary().bytes > 900 << 20, "about 1 GB went through");
    // The file is a page of header, the ring's control block and 64 KiB.
    let ready = w.stderr.lines().find(|l| l.contains("ready: writing ring ")).unwrap_or_default();
    let size: u64 = after(ready, " (")
        .parse()
        .unwrap_or_else(|_| panic!("a size in the ready line:\n{}", w.stderr));
    assert!(size < 70 << 10, "{size}");
    dir.assert_clean();
}

#[test]
fn several_readers_follow_one_log() {
    let dir = TestDir::new("mmap-readers");
    let readers: Vec<Running> =
        (0..3).map(|_| waiting_reader(&dir, &["--count", "20000"])).collect();
    let w = spawn(&dir, WRITER, &["--count", "20000", "--size", "0..4K"]).finish();
    w.expect(0);
    for r in readers {
        let r = r.finish();
        r.expect(0);
        assert_eq!(r.summary(), w.summary());
    }
    replay_and_remove(&dir, "20000", &w);
    dir.assert_clean();
}

/// Pages of the first `len` bytes of the file that the page cache holds, and
/// how many of them are dirty (not yet on the disk), from cachestat(2).
fn page_cache(path: &Path, len: u64) -> (u64, u64) {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    #[allow(clippy::struct_field_names)] // the kernel's names (struct cachestat)
    struct CacheStat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    // cachestat has one number on every architecture (Linux 6.5); libc lacks it here.
    const SYS_CACHESTAT: libc::c_long = 451;
    let file = fs::File::open(path).expect("open log");
    let range = Range { off: 0, len };
    let mut stat = CacheStat::default();
    // SAFETY: cachestat reads `range` and writes `stat`, both ours and repr(C)
    // as the kernel defines them; the descriptor is open.
    let rc = unsafe {
        libc::syscall(SYS_CACHESTAT, file.as_raw_fd(), &raw const range, &raw mut stat, 0)
    };
    assert_eq!(rc, 0, "cachestat {}: {}", path.display(), std::io::Error::last_os_error());
    (stat.nr_cache, stat.nr_dirty)
}

/// A directory for logs on a file system that writes back to a disk: tmpfs
/// has no disk, and msync does nothing there.
fn disk_dir(dir: &TestDir) -> PathBuf {
    let tmpfs = nix::sys::statfs::statfs(dir.root())
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC);
    if !tmpfs {
        return private_dir(dir);
    }
    let disk = Path::new(env!("CARGO_TARGET_TMPDIR")).join(dir.prefix());
    fs::create_dir_all(&disk).expect("mkdir");
    fs::set_permissions(&disk, fs::Permissions::from_mode(0o700)).expect("chmod");
    disk
}

#[test]
fn sync_leaves_no_committed_page_dirty_where_without_it_the_page_cache_still_holds_them() {
    let dir = TestDir::new("mmap-sync");
    let disk = disk_dir(&dir);
    for sync in [true, false] {
        let path = disk.join(if sync { "synced.log" } else { "lazy.log" });
        let p = path.to_str().expect("utf-8 path");
        let mut args = vec!["--path", p, "--count", "300", "--size", "0..9000", "--capacity", "4M"];
        if sync {
            args.push("--sync");
        }
        let w = spawn(&dir, WRITER, &args).finish();
        w.expect(0);
        // Every committed byte, header included (prefaulted pages past it may be dirty).
        let (cached, dirty) = page_cache(&path, HEADER_LEN as u64 + committed(&path));
        assert!(cached > 0, "the log's pages are in the page cache");
        if sync {
            assert_eq!(dirty, 0, "--sync: every commit waited for the disk");
        } else {
            // The control: the writer has exited, and its stores are still
            // only in memory — nothing forces them out at munmap or exit.
            assert!(dirty > 0, "without --sync the kernel writes back later");
        }
        let replay = spawn(&dir, READER, &["--path", p, "--replay", "--count", "300", "--remove"]);
        let replay = replay.finish();
        replay.expect(0);
        assert_eq!(replay.summary(), w.summary());
    }
    let _ = fs::remove_dir(&disk);
    dir.assert_clean();
}

// ---- faults

#[test]
fn writer_killed_mid_stream_live_reader_exits_3_at_once_and_replay_stops_at_the_last_whole_frame() {
    let dir = TestDir::new("mmap-kill");
    let r = waiting_reader(&dir, &["--quiet"]);
    let w =
        spawn(&dir, WRITER, &["--count", "1000000000", "--size", "0..20000", "--capacity", "1G"]);
    let path = log_path(&dir);
    wait_until("the writer to commit 8 MB", LIMIT, || path.exists() && committed(&path) > 8 << 20);
    w.kill(libc::SIGKILL);
    let killed = Instant::now();
    let r = r.finish();
    let noticed = killed.elapsed();
    drop(w.finish());
    r.expect(3).expect_stderr("mmap: writer 0 vanished after ");
    assert!(noticed < Duration::from_secs(1), "the reader took {noticed:?} to notice");
    let live = r.stderr.lines().find(|l| l.contains("vanished after ")).unwrap_or_default();

    // The file outlived the writer: a replay reads every whole frame, and stops.
    let replay = spawn(&dir, READER, &["--replay", "--quiet"]).finish();
    replay.expect(3).expect_stderr("the log ends without an end frame");
    let n: u64 = after(&replay.stderr, "vanished after ").parse().expect("count");
    let seq: u64 = after(&replay.stderr, "last complete frame: seq ").parse().expect("seq");
    assert_eq!(seq + 1, n, "{}", replay.stderr);
    assert!(live.contains(&format!("vanished after {n} of ? messages")), "{live}");
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

/// The number that follows `needle` in `text`.
fn after<'t>(text: &'t str, needle: &str) -> &'t str {
    let at =
        text.find(needle).unwrap_or_else(|| panic!("no {needle:?} in:\n{text}")) + needle.len();
    let rest = &text[at..];
    &rest[..rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len())]
}

#[test]
fn a_torn_frame_past_the_committed_length_is_never_printed() {
    let dir = TestDir::new("mmap-torn");
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"one\ntwo\n");
    let path = log_path(&dir);
    wait_until("two frames committed", LIMIT, || path.exists() && committed(&path) == 2 * 27);
    w.kill(libc::SIGKILL);
    drop(w.finish());
    // What a writer killed mid-copy leaves: a frame header and part of its payload.
    let mut torn = ipc_common::testkit::frame_bytes(0, 2, b"three, and more that never came");
    torn.truncate(30);
    let file = fs::OpenOptions::new().write(true).open(&path).expect("open");
    file.write_all_at(&torn, mmap_demo::HEADER_LEN as u64 + 54).expect("plant torn frame");
    let replay = spawn(&dir, READER, &["--replay"]).finish();
    replay.expect(3).expect_stderr("last complete frame: seq 1, ending at byte 54 of 54");
    assert_eq!(replay.stdout_text(), "one\ntwo\n");
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_crashed_writers_pid_reused_by_a_live_process_does_not_keep_a_reader_waiting() {
    let dir = TestDir::new("mmap-pid-reuse");
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.ready();
    w.write_stdin(b"one\ntwo\n");
    let path = log_path(&dir);
    wait_until("two frames committed", LIMIT, || committed(&path) == 2 * 27);
    w.kill(libc::SIGKILL);
    drop(w.finish());
    // The kernel gives the dead writer's pid to another process: ours, alive.
    let me = i32::try_from(std::process::id()).expect("pid");
    plant(&path, WRITER_PID_AT, &me.to_ne_bytes());

    // A reader that comes now still sees a dead writer: its lock is gone.
    let mut r = Running::spawn(dir.command(READER).stdin(Stdio::null()), Duration::from_secs(10));
    r.ready();
    let ready = Instant::now();
    let r = r.finish();
    let noticed = ready.elapsed();
    r.expect(3)
        .expect_stderr(&format!("(writer pid {me}, "))
        .expect_stderr("vanished after 2 of ? messages (the writer's process is gone");
    assert!(noticed < Duration::from_secs(1), "the reader took {noticed:?} to notice");
    assert_eq!(r.stdout_text(), "one\ntwo\n");
    // And a replay calls it a crash, not a writer still at work.
    let replay = spawn(&dir, READER, &["--replay"]).finish();
    replay.expect(3).expect_stderr("the log ends without an end frame: its writer did not finish");
    assert!(!replay.stderr.contains("still running"), "{}", replay.stderr);
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn replay_while_the_writer_runs_says_so_and_exits_3() {
    let dir = TestDir::new("mmap-replay-live");
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"so far\n");
    let path = log_path(&dir);
    wait_until("one frame committed", LIMIT, || committed(&path) == 30);
    let replay = spawn(&dir, READER, &["--replay"]).finish();
    replay.expect(3).expect_stderr("the log has no end frame yet: its writer is still running");
    assert_eq!(replay.stdout_text(), "so far\n");
    w.write_stdin(b"and the rest\n");
    w.finish().expect(0);
    let replay = spawn(&dir, READER, &["--replay", "--remove"]).finish();
    replay.expect(0);
    assert_eq!(replay.stdout_text(), "so far\nand the rest\n");
    dir.assert_clean();
}

#[test]
fn a_closed_flag_without_the_end_frame_does_not_end_a_live_stream() {
    let dir = TestDir::new("mmap-closed");
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"one\n");
    let path = log_path(&dir);
    wait_until("one frame committed", LIMIT, || committed(&path) == 27);
    // What a reader could once see between the writer's two stores: closed
    // already set, committed not yet covering the end frame.
    plant(&path, CLOSED_AT, &1u32.to_ne_bytes());
    let mut r = spawn(&dir, READER, &[]);
    r.ready();
    // The reader has read "one" and sleeps for more: the flag did not end it.
    wait_until("the reader to sleep on its futex", LIMIT, || {
        blocked_in(r.pid()) == Some(libc::SYS_futex)
    });
    w.write_stdin(b"two\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "one\ntwo\n");
    assert_eq!(r.summary(), w.summary());
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_file_truncated_under_an_idle_reader_and_writer_is_exit_1_not_sigbus() {
    let dir = TestDir::new("mmap-trunc-idle");
    let mut r = waiting_reader(&dir, &[]);
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"before\n");
    r.ready();
    let path = log_path(&dir);
    wait_until("one frame committed", LIMIT, || committed(&path) > 0);
    // A third party shortens the file to its header page.
    fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(4096).expect("truncate");
    let r = r.finish();
    r.expect(1).expect_stderr("file truncated under the mapping");
    assert_eq!(r.signal, None);
    // The writer's next frame lands on a page the file no longer has.
    w.write_stdin(b"after\n");
    let w = w.finish();
    w.expect(1).expect_stderr("file truncated under the mapping");
    assert_eq!(w.signal, None);
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_file_truncated_mid_stream_stops_both_sides_with_exit_1_not_sigbus() {
    let dir = TestDir::new("mmap-trunc-busy");
    let mut r = waiting_reader(&dir, &["--quiet"]);
    let w = spawn(&dir, WRITER, &["--count", "1000000000", "--size", "4K", "--capacity", "1G"]);
    r.ready();
    let path = log_path(&dir);
    wait_until("the writer to commit 4 MB", LIMIT, || committed(&path) > 4 << 20);
    fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(0).expect("truncate");
    let (w, r) = (w.finish(), r.finish());
    for side in [&w, &r] {
        side.expect(1).expect_stderr("file truncated under the mapping");
        assert_eq!(side.signal, None);
    }
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_full_log_is_a_clear_error_and_keeps_what_fit() {
    let dir = TestDir::new("mmap-full");
    let w = spawn(&dir, WRITER, &["--capacity", "4K", "--count", "10", "--size", "1000"]).finish();
    w.expect(1).expect_stderr("log full: use --capacity or --ring");
    // Three frames of 1024 bytes fit, with room kept for an end frame that never came.
    let replay = spawn(&dir, READER, &["--replay", "--quiet"]).finish();
    replay.expect(3).expect_stderr("vanished after 3 of ? messages");
    fs::remove_file(log_path(&dir)).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_full_ring_with_no_reader_gives_up_after_the_timeout() {
    let dir = TestDir::new("mmap-ring-alone");
    let w =
        spawn(&dir, WRITER, &["--ring", "4K", "--count", "100", "--size", "1K", "--timeout", "1"]);
    let w = w.finish();
    w.expect(3).expect_stderr("no mmap-reader came to read ").expect_stderr("within 1 s");
    // A ring file cannot be replayed: it keeps only unread frames.
    let replay = spawn(&dir, READER, &["--replay"]).finish();
    replay.expect(2).expect_stderr("holds a ring");
    fs::remove_file(log_path(&dir)).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_ring_refuses_a_second_reader() {
    let dir = TestDir::new("mmap-ring-two");
    let mut first = waiting_reader(&dir, &["--remove"]);
    let mut w = spawn_piped(&dir, WRITER, &["--ring", "64K"]);
    first.ready(); // it has claimed the ring
    let second = spawn(&dir, READER, &["--timeout", "5"]).finish();
    second.expect(1).expect_stderr(&format!(
        "is being read by mmap-reader pid {}; a ring has one reader",
        first.pid()
    ));
    w.write_stdin(b"for the first reader\n");
    let (w, first) = (w.finish(), first.finish());
    w.expect(0);
    first.expect(0);
    assert_eq!(first.stdout_text(), "for the first reader\n");
    assert_eq!(first.summary(), w.summary());
    dir.assert_clean();
}

#[test]
fn a_ring_writer_notices_its_reader_killed_and_the_ring_is_not_read_again() {
    let dir = TestDir::new("mmap-ring-kill");
    let mut r = waiting_reader(&dir, &["--quiet"]);
    let w = spawn(&dir, WRITER, &["--ring", "64K", "--count", "1000000000", "--size", "1K"]);
    r.ready();
    let path = log_path(&dir);
    wait_until("the reader to claim the ring", LIMIT, || {
        i32::from_ne_bytes(word(&path, RING_READER_AT)) == r.pid()
    });
    r.kill(libc::SIGKILL);
    drop(r.finish());
    let w = w.finish();
    w.expect(3).expect_stderr("reader went away");
    let again = spawn(&dir, READER, &["--timeout", "5"]).finish();
    again.expect(1).expect_stderr("which is gone: the frames it took are not in the ring any more");
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn sigterm_stops_both_sides_with_143_and_the_log_stays() {
    let dir = TestDir::new("mmap-sigterm");
    let mut r = waiting_reader(&dir, &[]);
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.write_stdin(b"before\n");
    r.ready();
    let path = log_path(&dir);
    wait_until("one frame committed", LIMIT, || committed(&path) == 30);
    // The reader first: a writer stopped first would end its stream (exit 3).
    r.kill(libc::SIGTERM);
    let r = r.finish();
    r.expect(143).expect_stderr("mmap-reader: interrupted by SIGTERM");
    w.kill(libc::SIGTERM);
    // (finish() closes the writer's stdin, an end of input: wait for the stop first.)
    w.wait_for("mmap-writer: interrupted by SIGTERM");
    w.finish().expect(143);
    // The file is the point: it stays, with what was committed, unfinished.
    let replay = spawn(&dir, READER, &["--replay"]).finish();
    replay.expect(3).expect_stderr("its writer did not finish");
    assert_eq!(replay.stdout_text(), "before\n");
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn sigint_to_a_waiting_reader_exits_130_and_a_timeout_exits_3() {
    let dir = TestDir::new("mmap-sigint");
    let r = waiting_reader(&dir, &[]);
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("mmap-reader: interrupted by SIGINT");
    let r = spawn(&dir, READER, &["--timeout", "1"]).finish();
    r.expect(3).expect_stderr("no mmap-writer created ").expect_stderr("within 1 s");
    dir.assert_clean();
}

// ---- leftovers and unsafe paths

#[test]
fn a_leftover_log_is_named_with_what_to_do_and_force_replaces_it() {
    let dir = TestDir::new("mmap-leftover");
    spawn(&dir, WRITER, &["--count", "5"]).finish().expect(0);
    let path = log_path(&dir);
    let again = spawn(&dir, WRITER, &["--count", "5"]).finish();
    again
        .expect(1)
        .expect_stderr(&format!("{} already exists: a log from an earlier run", path.display()))
        .expect_stderr("mmap-reader --path ")
        .expect_stderr(&format!("rm {}", path.display()));
    let forced = spawn(&dir, WRITER, &["--count", "7", "--force"]).finish();
    forced.expect(0);
    replay_and_remove(&dir, "7", &forced);
    dir.assert_clean();
}

#[test]
fn a_log_in_use_is_never_replaced_even_with_force() {
    let dir = TestDir::new("mmap-busy");
    let mut w = spawn_piped(&dir, WRITER, &[]);
    w.ready();
    let second = spawn(&dir, WRITER, &["--count", "1", "--force"]).finish();
    second.expect(1).expect_stderr("is in use by a running mmap-writer or mmap-reader");
    w.write_stdin(b"still mine\n");
    w.finish().expect(0);
    let replay = spawn(&dir, READER, &["--replay", "--remove"]).finish();
    replay.expect(0);
    assert_eq!(replay.stdout_text(), "still mine\n");
    dir.assert_clean();
}

/// Makes the private directory, as the binaries would, so tests can plant things in it.
fn private_dir(dir: &TestDir) -> PathBuf {
    let p = dir.private();
    fs::create_dir(&p).expect("mkdir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
    p
}

fn both_refuse(dir: &TestDir, needle: &str) {
    let w = spawn(dir, WRITER, &["--count", "1", "--force"]).finish();
    w.expect(1).expect_stderr(needle);
    let r = spawn(dir, READER, &["--timeout", "1"]).finish();
    r.expect(1).expect_stderr(needle);
}

#[test]
fn a_symlink_at_the_path_is_refused_and_untouched() {
    let dir = TestDir::new("mmap-symlink");
    let target = dir.root().join("target-file");
    fs::write(&target, b"precious").expect("write target");
    symlink(&target, private_dir(&dir).join("mmap.log")).expect("symlink");
    both_refuse(&dir, "is a symbolic link; refusing to follow it");
    assert!(fs::symlink_metadata(log_path(&dir)).expect("still there").file_type().is_symlink());
    assert_eq!(fs::read(&target).expect("target"), b"precious");
}

#[test]
fn a_file_with_the_wrong_magic_is_refused_and_untouched() {
    let dir = TestDir::new("mmap-magic");
    let path = private_dir(&dir).join("mmap.log");
    fs::write(&path, vec![b'x'; 8192]).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    both_refuse(&dir, "is not an mmap-demo file (it starts with 78 78 78");
    assert_eq!(fs::read(&path).expect("kept"), vec![b'x'; 8192]);
}

#[test]
fn a_file_with_another_layout_version_is_refused_and_untouched() {
    let dir = TestDir::new("mmap-version");
    spawn(&dir, WRITER, &["--capacity", "4K", "--count", "1"]).finish().expect(0);
    let path = log_path(&dir);
    plant(&path, VERSION_AT, &99u32.to_ne_bytes());
    let before = fs::read(&path).expect("read");
    both_refuse(&dir, "has layout version 99; this build reads version 1");
    assert_eq!(fs::read(&path).expect("kept"), before);
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_file_too_short_for_its_header_or_its_data_is_refused_and_untouched() {
    let dir = TestDir::new("mmap-short");
    // Our magic, then nothing much: a header cut short.
    let path = private_dir(&dir).join("mmap.log");
    let mut short = mmap_demo::MAGIC.to_vec();
    short.resize(100, 0);
    fs::write(&path, &short).expect("write");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let w = spawn(&dir, WRITER, &["--count", "1", "--force"]).finish();
    w.expect(1).expect_stderr("exists and is too short to be an mmap-demo file");
    let r = spawn(&dir, READER, &["--timeout", "1"]).finish();
    r.expect(1).expect_stderr("is 100 bytes, too short for an mmap-demo header");
    assert_eq!(fs::read(&path).expect("kept"), short);
    fs::remove_file(&path).expect("rm");

    // A whole header, and less data than it promises.
    spawn(&dir, WRITER, &["--capacity", "8K", "--count", "1"]).finish().expect(0);
    fs::OpenOptions::new().write(true).open(&path).expect("open").set_len(4196).expect("cut");
    let r = spawn(&dir, READER, &["--replay"]).finish();
    r.expect(1).expect_stderr("is truncated: 4196 bytes, where its header says 12288");
    assert_eq!(fs::metadata(&path).expect("kept").len(), 4196);
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn a_file_of_someone_else_or_open_to_others_is_refused() {
    let dir = TestDir::new("mmap-foreign");
    spawn(&dir, WRITER, &["--count", "1"]).finish().expect(0);
    let path = log_path(&dir);
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
    both_refuse(&dir, &format!("is owned by uid {NOBODY}, not by us"));
    assert_eq!(fs::symlink_metadata(&path).expect("kept").uid(), NOBODY);
    std::os::unix::fs::chown(&path, Some(0), Some(0)).expect("chown back");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
    both_refuse(&dir, "has mode 0644, open to other users");
    fs::remove_file(&path).expect("rm");
    dir.assert_clean();
}

#[test]
fn bad_options_are_usage_errors() {
    let dir = TestDir::new("mmap-usage");
    for (bin, args, needle) in [
        (WRITER, &["--ring", "1M", "--capacity", "1M"][..], "a ring has no log capacity"),
        (WRITER, &["--ring", "1M", "--sync"][..], "--sync makes a log durable"),
        (WRITER, &["--capacity", "100"][..], "at least 4096 bytes"),
        (READER, &["--writers", "2"][..], "exactly one writer"),
        (ANON, &["--ring", "10"][..], "at least 4096 bytes"),
        // Sizes that overflow the arithmetic, or an address space.
        (WRITER, &["--ring", "18446744073709551615"][..], "--ring 18446744073709551615: too large"),
        (WRITER, &["--ring", "9223372036854775807"][..], "--ring 9223372036854775807: too large"),
        (
            WRITER,
            &["--capacity", "18446744073709551615"][..],
            "--capacity 18446744073709551615: too large",
        ),
        (ANON, &["--ring", "18446744073709551615"][..], "--ring 18446744073709551615: too large"),
    ] {
        spawn(&dir, bin, args).finish().expect(2).expect_stderr(needle);
    }
    dir.assert_clean();
}

// ---- related processes: no file at all

#[test]
fn parent_and_child_share_anonymous_memory() {
    let dir = TestDir::new("mmap-anon");
    let run = spawn(&dir, ANON, &["--count", "50000", "--size", "0..8K", "--ring", "64K"]).finish();
    run.expect(0);
    let line = |who: &str| {
        run.stderr
            .lines()
            .find(|l| l.starts_with(who))
            .and_then(parse_summary)
            .unwrap_or_else(|| panic!("no {who} summary:\n{}", run.stderr))
    };
    let (sent, received) = (line("mmap-anon child: sent"), line("mmap-anon: received"));
    assert_eq!(sent, received);
    assert_eq!(sent.messages, 50_000);

    let mut text = spawn_piped(&dir, ANON, &[]);
    text.write_stdin(b"from the child\n");
    let text = text.finish();
    text.expect(0);
    assert_eq!(text.stdout_text(), "from the child\n");
    dir.assert_clean();
}
