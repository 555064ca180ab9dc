//! fifo-reader and fifo-writer run as a user runs them: several writers, the
//! PIPE_BUF rule, faults, and unsafe paths.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::Path;
use std::process::{Command, Stdio};

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, bytes_read, wait_until};

const WRITER: &str = env!("CARGO_BIN_EXE_fifo-writer");
const READER: &str = env!("CARGO_BIN_EXE_fifo-reader");
/// uid of `nobody`, the "someone else" of these tests (they run as root).
const NOBODY: u32 = 65534;

fn reader(dir: &TestDir, args: &[&str]) -> Running {
    let mut r = Running::spawn(dir.command(READER).args(args).stdin(Stdio::null()), LIMIT);
    r.ready();
    r
}

fn writer(dir: &TestDir, args: &[&str]) -> Running {
    Running::spawn(dir.command(WRITER).args(args).stdin(Stdio::null()), LIMIT)
}

fn fifo(dir: &TestDir) -> std::path::PathBuf {
    dir.private().join("fifo")
}

#[test]
fn four_writers_at_once_every_frame_intact() {
    let dir = TestDir::new("fifo-four");
    let r = reader(&dir, &["--writers", "4", "--count", "8000"]);
    let ws: Vec<(u16, Running)> = (1..=4u16)
        .map(|k| {
            let (id, seed) = (k.to_string(), (100 + k).to_string());
            (
                k,
                writer(
                    &dir,
                    &["--id", &id, "--seed", &seed, "--count", "2000", "--size", "0..4000"],
                ),
            )
        })
        .collect();
    let sent: Vec<(u16, Outcome)> = ws.into_iter().map(|(k, w)| (k, w.finish())).collect();
    let r = r.finish();
    r.expect(0);
    for (k, w) in &sent {
        w.expect(0);
        assert_eq!(w.summary(), r.writer_summary(*k), "writer {k}");
        assert!(!w.stderr.contains("PIPE_BUF"), "frames up to 4024 bytes need no note");
    }
    let digests: std::collections::HashSet<_> =
        sent.iter().map(|(_, w)| w.summary().digest).collect();
    assert_eq!(digests.len(), 4, "different seeds, different streams");
    r.expect_stderr("fifo-reader: received 8000 messages, ");
    dir.assert_clean();
}

#[test]
fn a_writer_that_starts_after_the_first_has_left_is_still_read() {
    let dir = TestDir::new("fifo-late");
    let mut r = reader(&dir, &["--writers", "2"]);
    let first = writer(&dir, &["--id", "1", "--count", "500"]).finish();
    first.expect(0);
    // End of file with one of two writers done is not the end: the reader reopens.
    r.wait_for("every writer has closed the FIFO; reopened it to wait for the next");
    let second = writer(&dir, &["--id", "2", "--count", "700", "--seed", "9"]).finish();
    second.expect(0);
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.writer_summary(1), first.summary());
    assert_eq!(r.writer_summary(2), second.summary());
    dir.assert_clean();
}

#[test]
fn text_written_by_a_writer_is_printed_by_the_reader() {
    let dir = TestDir::new("fifo-text");
    let r = reader(&dir, &[]);
    let mut w = Running::spawn(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"hello\nfifo\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "hello\nfifo\n");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

/// Frames above PIPE_BUF from concurrent writers interleave; the reader catches
/// it, exits 4, and no mixed line is ever printed.
#[test]
fn frames_above_pipe_buf_interleave_and_the_reader_rejects_them() {
    let dir = TestDir::new("fifo-pipebuf");
    let r = reader(&dir, &["--writers", "4"]);
    let mut ws = Vec::new();
    for (k, letter) in [(1u8, b'A'), (2, b'B'), (3, b'C'), (4, b'D')] {
        let args = ["--id", &k.to_string(), "--timeout", "2"];
        let mut w = Running::spawn(dir.command(WRITER).args(args).stdin(Stdio::piped()), LIMIT);
        let mut text = Vec::new();
        for _ in 0..200 {
            text.extend(std::iter::repeat_n(letter, 50_000));
            text.push(b'\n');
        }
        ws.push(std::thread::spawn(move || {
            // The reader stops at the first bad frame; later writes may fail.
            let _ = w.try_write_stdin(&text);
            w.finish()
        }));
    }
    let r = r.finish();
    r.expect(4);
    assert!(
        r.stderr.contains("checksum mismatch")
            || r.stderr.contains("bad magic")
            || r.stderr.contains("sequence gap"),
        "{}",
        r.stderr
    );
    for line in r.stdout_text().lines() {
        let first = line.as_bytes()[0];
        assert!(
            line.len() == 50_000 && line.bytes().all(|b| b == first),
            "a mixed line was printed"
        );
    }
    let mut noted = 0;
    for t in ws {
        let w = t.join().expect("writer thread");
        assert!(matches!(w.code, Some(0 | 3)), "writer: {:?} {}", w.code, w.stderr);
        // Every writer that got to send warned; one that came after the reader
        // had already stopped never opened the FIFO.
        let warned = w.stderr.contains("is above PIPE_BUF (4096)");
        assert!(warned || w.stderr.contains("no fifo-reader opened"), "{}", w.stderr);
        noted += usize::from(warned);
    }
    assert!(noted >= 2, "it takes two writers to interleave");
    dir.assert_clean();
}

#[test]
fn writer_killed_mid_stream_makes_the_reader_exit_3() {
    let dir = TestDir::new("fifo-kill");
    let r = reader(&dir, &["--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    let pid = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(pid) > 1 << 20);
    w.kill(libc::SIGKILL);
    let r = r.finish();
    r.expect(3).expect_stderr("fifo: writer 0 vanished after ");
    assert!(r.elapsed < LIMIT);
    drop(w.finish());
    dir.assert_clean();
}

#[test]
fn reader_killed_mid_stream_makes_the_writer_exit_3_and_leaves_a_stale_fifo() {
    let dir = TestDir::new("fifo-reader-kill");
    let r = reader(&dir, &["--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    let pid = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(pid) > 1 << 20);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    w.finish().expect(3).expect_stderr("fifo-writer: reader went away after ");
    // SIGKILL left the node: the next reader names it and how to remove it...
    let path = fifo(&dir);
    let again = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    again
        .expect(1)
        .expect_stderr(&format!("FIFO {} is stale", path.display()))
        .expect_stderr("rm ");
    assert!(path.exists(), "refusing leaves it in place");
    // ...and --force removes it and goes on.
    let forced = reader(&dir, &["--force"]);

    forced.kill(libc::SIGTERM);
    forced.finish().expect(143);
    dir.assert_clean();
}

#[test]
fn sigint_to_a_waiting_reader_exits_130_and_removes_the_fifo() {
    let dir = TestDir::new("fifo-sigint");
    let r = reader(&dir, &[]);
    assert!(fifo(&dir).exists());
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("fifo-reader: interrupted by SIGINT");
    assert!(!fifo(&dir).exists());
    dir.assert_clean();
}

#[test]
fn a_second_reader_on_a_live_fifo_is_refused() {
    let dir = TestDir::new("fifo-busy");
    let first = reader(&dir, &[]);
    let second = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    second.expect(1).expect_stderr("is in use by another fifo-reader");
    assert!(fifo(&dir).exists(), "the live reader's FIFO is untouched");
    first.kill(libc::SIGTERM);
    first.finish().expect(143);
    dir.assert_clean();
}

#[test]
fn timeouts_give_up_with_exit_3() {
    let dir = TestDir::new("fifo-timeout");
    let w = writer(&dir, &["--timeout", "1", "--count", "1"]).finish();
    w.expect(3).expect_stderr("no fifo-reader opened ").expect_stderr("within 1 s");
    let r =
        Running::spawn(dir.command(READER).args(["--timeout", "1"]).stdin(Stdio::null()), LIMIT)
            .finish();
    r.expect(3).expect_stderr("no writer came to FIFO ").expect_stderr("within 1 s");
    dir.assert_clean();
}

/// Makes the private directory, as a reader would, so tests can plant things in it.
fn private_dir(dir: &TestDir) -> std::path::PathBuf {
    let p = dir.private();
    fs::create_dir(&p).expect("mkdir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
    p
}

fn both_refuse(dir: &TestDir, needle: &str) {
    let r = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    r.expect(1).expect_stderr(needle);
    let w = writer(dir, &["--count", "1"]).finish();
    w.expect(1).expect_stderr(needle);
}

#[test]
fn a_symlink_at_the_fifo_path_is_refused_and_untouched() {
    let dir = TestDir::new("fifo-symlink");
    let target = dir.root().join("target-file");
    fs::write(&target, b"precious").expect("write target");
    symlink(&target, private_dir(&dir).join("fifo")).expect("symlink");
    both_refuse(&dir, "is a symbolic link; refusing to follow it");
    assert!(fs::symlink_metadata(fifo(&dir)).expect("still there").file_type().is_symlink());
    assert_eq!(fs::read(&target).expect("target"), b"precious");
}

#[test]
fn a_regular_file_at_the_fifo_path_is_refused_and_untouched() {
    let dir = TestDir::new("fifo-regular");
    let path = private_dir(&dir).join("fifo");
    fs::write(&path, b"precious").expect("write");
    both_refuse(&dir, "is a regular file, not a FIFO; refusing to touch it");
    assert_eq!(fs::read(&path).expect("file"), b"precious");
}

fn mkfifo(path: &Path, mode: u32) {
    let status = Command::new("mkfifo")
        .arg("-m")
        .arg(format!("{mode:o}"))
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

#[test]
fn a_fifo_owned_by_someone_else_is_refused() {
    let dir = TestDir::new("fifo-foreign");
    let path = private_dir(&dir).join("fifo");
    mkfifo(&path, 0o600);
    std::os::unix::fs::chown(&path, Some(NOBODY), Some(NOBODY)).expect("chown nobody");
    both_refuse(&dir, &format!("is owned by uid {NOBODY}, not by us"));
    assert_eq!(fs::symlink_metadata(&path).expect("kept").uid(), NOBODY);
}

#[test]
fn a_fifo_open_to_others_is_refused() {
    let dir = TestDir::new("fifo-open");
    let path = private_dir(&dir).join("fifo");
    mkfifo(&path, 0o666);
    both_refuse(&dir, "has mode 0666, open to other users");
}

#[test]
fn a_private_directory_not_ours_or_open_to_others_is_refused() {
    let dir = TestDir::new("fifo-dir-nobody");
    let p = private_dir(&dir);
    std::os::unix::fs::chown(&p, Some(NOBODY), None).expect("chown");
    both_refuse(&dir, &format!("private directory {} is owned by uid {NOBODY}", p.display()));

    let dir = TestDir::new("fifo-dir-0777");
    let p = private_dir(&dir);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).expect("chmod");
    both_refuse(&dir, "has mode 0777, open to other users; refusing to use it");

    let dir = TestDir::new("fifo-dir-link");
    let elsewhere = dir.root().join("elsewhere");
    fs::create_dir(&elsewhere).expect("mkdir");
    symlink(&elsewhere, dir.private()).expect("symlink");
    both_refuse(&dir, "is a symbolic link, not a directory");
}

#[test]
fn raw_mode_lets_shell_redirection_be_the_writer() {
    let dir = TestDir::new("fifo-raw-echo");
    let r = reader(&dir, &["--raw"]);
    let path = fifo(&dir);
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("echo hi > {}", path.display()))
        .status()
        .expect("sh");
    assert!(status.success());
    let r = r.finish();
    r.expect(0).expect_stderr("fifo-reader: received 1 messages, 3 bytes, digest ");
    assert_eq!(r.stdout_text(), "hi\n");
    dir.assert_clean();
}

#[test]
fn raw_mode_lets_cat_be_the_reader() {
    let dir = TestDir::new("fifo-raw-cat");
    let path = dir.root().join("f");
    mkfifo(&path, 0o600);
    let cat = Running::spawn(Command::new("cat").arg(&path), LIMIT);
    let mut w = Running::spawn(
        dir.command(WRITER).arg("--raw").arg("--path").arg(&path).stdin(Stdio::piped()),
        LIMIT,
    );
    w.write_stdin(b"raw bytes\n");
    w.finish().expect(0).expect_stderr("fifo-writer: sent 1 messages, 10 bytes, digest ");
    assert_eq!(cat.finish().stdout_text(), "raw bytes\n");
}

#[test]
fn pipe_size_is_raised_up_to_the_system_limit_only() {
    let dir = TestDir::new("fifo-pipesize");
    let r = reader(&dir, &["--pipe-size", "1M", "--count", "100"]);
    writer(&dir, &["--count", "100", "--size", "200K"]).finish().expect(0);
    r.finish().expect(0);
    let max: usize = fs::read_to_string("/proc/sys/fs/pipe-max-size")
        .expect("read")
        .trim()
        .parse()
        .expect("num");
    let too_big = (max * 2).to_string();
    let r = Running::spawn(
        dir.command(READER).args(["--pipe-size", &too_big]).stdin(Stdio::null()),
        LIMIT,
    )
    .finish();
    r.expect(1)
        .expect_stderr("is above /proc/sys/fs/pipe-max-size")
        .expect_stderr("sysctl fs.pipe-max-size=");
    dir.assert_clean();
}

#[test]
fn the_reader_never_cuts_off_a_writer_it_has_heard_from() {
    let dir = TestDir::new("fifo-cutoff");
    // --writers 1 (the default), but two writers come: the first end frame must
    // not end the run while the other writer is mid-stream.
    let r = reader(&dir, &["--quiet"]);
    let long = writer(&dir, &["--id", "1", "--count", "200000", "--size", "0..2000"]);
    let pid = r.pid();
    wait_until("the long writer to be under way", LIMIT, || bytes_read(pid) > 1 << 20);
    // The short writer's end frame arrives while the long one is mid-stream.
    let short = writer(&dir, &["--id", "2", "--count", "200", "--seed", "5"]).finish();
    let long = long.finish();
    let r = r.finish();
    short.expect(0);
    long.expect(0);
    r.expect(0);
    assert_eq!(r.writer_summary(1), long.summary());
    assert_eq!(r.writer_summary(2), short.summary());
    dir.assert_clean();
}

#[test]
fn two_writers_sharing_an_id_are_told_to_use_different_ids() {
    let dir = TestDir::new("fifo-same-id");
    let r = reader(&dir, &["--writers", "2", "--quiet"]);
    writer(&dir, &["--count", "3"]).finish().expect(0);
    // The second writer may see the reader go (exit 3) or finish first (0).
    let second = writer(&dir, &["--count", "3"]).finish();
    assert!(matches!(second.code, Some(0 | 3)), "{}", second.stderr);
    r.finish().expect(4).expect_stderr("several writers need different --id");
    dir.assert_clean();
}
