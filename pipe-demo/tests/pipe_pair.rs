//! pipe-writer | pipe-reader, pipe-writer --spawn and pipe-duplex, run as a user runs them.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_common::testkit::{
    LIMIT, Running, TestDir, bytes_read, end_bytes, frame_bytes, wait_until,
};

const WRITER: &str = env!("CARGO_BIN_EXE_pipe-writer");
const READER: &str = env!("CARGO_BIN_EXE_pipe-reader");
const DUPLEX: &str = env!("CARGO_BIN_EXE_pipe-duplex");
/// Bad input must be refused at once; generous for a loaded 2-CPU machine.
const PROMPT: Duration = Duration::from_secs(3);

/// Runs `writer args | reader args` and returns both outcomes.
fn pipeline(
    dir: &TestDir,
    writer: &[&str],
    reader: &[&str],
) -> (ipc_common::testkit::Outcome, ipc_common::testkit::Outcome) {
    let (w, pipe) =
        Running::spawn_upstream(dir.command(WRITER).args(writer).stdin(Stdio::null()), LIMIT);
    let r = Running::spawn(dir.command(READER).args(reader).stdin(pipe), LIMIT);
    (w.finish(), r.finish())
}

/// Feeds `bytes` to a fresh pipe-reader (text mode unless `args` say otherwise).
fn read_bytes(bytes: &[u8], args: &[&str]) -> ipc_common::testkit::Outcome {
    let dir = TestDir::new("pipe-bad");
    let mut r = Running::spawn(dir.command(READER).args(args).stdin(Stdio::piped()), LIMIT);
    r.write_stdin(bytes);
    r.close_stdin();
    let out = r.finish();
    assert!(out.elapsed < PROMPT, "bad input must be refused at once, took {:?}", out.elapsed);
    out
}

#[test]
fn three_thousand_frames_of_0_to_70000_bytes_arrive_intact() {
    let dir = TestDir::new("pipe-big");
    let (w, r) = pipeline(
        &dir,
        &["--count", "3000", "--size", "0..70000", "--seed", "7"],
        &["--count", "3000"],
    );
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    assert_eq!(r.summary().messages, 3000);
    assert!(r.summary().bytes > 3000 * 20_000, "sizes spread over 0..70000");
    assert!(r.stdout.is_empty(), "--count prints only the summary");
}

#[test]
fn text_mode_prints_the_lines_typed() {
    let dir = TestDir::new("pipe-text");
    let (mut w, pipe) = Running::spawn_upstream(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    let r = Running::spawn(dir.command(READER).stdin(pipe), LIMIT);
    w.write_stdin(b"hello\nworld\n\nlast line without newline");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "hello\nworld\n\nlast line without newline\n");
    assert_eq!(r.summary().messages, 4);
    assert_eq!(w.summary(), r.summary());
}

#[test]
fn spawn_makes_the_pipe_and_runs_the_reader_on_it() {
    let dir = TestDir::new("pipe-spawn");
    let w = Running::spawn(
        dir.command(WRITER)
            .args(["--spawn", "--count", "5000", "--size", "0..9000"])
            .stdin(Stdio::null()),
        LIMIT,
    )
    .finish();
    w.expect(0);
    let sent =
        w.stderr.lines().find(|l| l.starts_with("pipe-writer: sent")).expect("writer summary");
    let got =
        w.stderr.lines().find(|l| l.starts_with("pipe-reader: received")).expect("reader summary");
    assert_eq!(sent.split("sent").nth(1), got.split("received").nth(1), "{}", w.stderr);
}

#[test]
fn spawn_exits_with_the_readers_code_when_the_reader_fails() {
    let dir = TestDir::new("pipe-spawn-bad");
    // A 17 MiB payload is above the child's default --max-frame (16 MiB): it exits 4,
    // we lose our reader (EPIPE), and report its failure as the cause.
    let args = ["--spawn", "--count", "1", "--size", "17M"];
    let w = Running::spawn(dir.command(WRITER).args(args).stdin(Stdio::null()), LIMIT).finish();
    w.expect(4)
        .expect_stderr("pipe-reader: pipe: frame #1: length 17825792 is above --max-frame")
        .expect_stderr("pipe-writer: reader went away after 0 messages")
        .expect_stderr("pipe-writer: pipe-reader (pid ");
}

#[test]
fn duplex_verifies_every_round_trip_and_prints_percentiles() {
    let dir = TestDir::new("pipe-duplex");
    let d =
        Running::spawn(dir.command(DUPLEX).args(["--count", "2000", "--size", "1..5000"]), LIMIT)
            .finish();
    d.expect(0);
    let child = d
        .stderr
        .lines()
        .find(|l| l.starts_with("pipe-duplex child: received"))
        .expect("child summary");
    let parent =
        d.stderr.lines().find(|l| l.starts_with("pipe-duplex: sent")).expect("parent summary");
    assert_eq!(child.split("received").nth(1), parent.split("sent").nth(1));
    d.expect_stderr("2000 round trips of 1..5000 bytes: p50 ");
}

// ---- bad input: each refused with its exit code and one line, nothing corrupt printed

fn good_then(bad: &[u8]) -> Vec<u8> {
    let mut s = frame_bytes(0, 0, b"first");
    s.extend_from_slice(bad);
    s
}

#[test]
fn corrupt_checksum_exits_4_and_prints_nothing_of_it() {
    let mut bad = frame_bytes(0, 1, b"second");
    let last = bad.len() - 1;
    bad[last] ^= 0x20;
    let r = read_bytes(&good_then(&bad), &[]);
    r.expect(4).expect_stderr("pipe: writer 0 seq 1: checksum mismatch");
    assert_eq!(r.stdout_text(), "first\n", "the good frame printed, the corrupt one not");
    assert!(r.elapsed < PROMPT);
    assert_eq!(r.stderr.lines().count(), 1, "one line: {}", r.stderr);
}

#[test]
fn bad_magic_exits_4() {
    let mut bad = frame_bytes(0, 1, b"x");
    bad[0] = b'J';
    read_bytes(&good_then(&bad), &[]).expect(4).expect_stderr("frame #2: bad magic 4a 50 43 31");
}

#[test]
fn reserved_flags_exit_4() {
    let mut bad = frame_bytes(0, 1, b"x");
    bad[5] = 0x80;
    read_bytes(&good_then(&bad), &[]).expect(4).expect_stderr("reserved flags set: 0x80");
}

#[test]
fn unknown_kind_exits_4() {
    let mut bad = frame_bytes(0, 1, b"x");
    bad[4] = 7;
    read_bytes(&good_then(&bad), &[]).expect(4).expect_stderr("unknown kind 7");
}

#[test]
fn length_0xfffffff0_is_refused_before_allocating() {
    let mut bad = frame_bytes(0, 1, b"");
    bad[16..20].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    let dir = TestDir::new("pipe-oversize");
    let mut cmd = dir.command(READER);
    cmd.stdin(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; 256 MiB of address space is far
    // below the 4 GiB an allocation for this length would need.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit { rlim_cur: 256 << 20, rlim_max: 256 << 20 };
            if libc::setrlimit(libc::RLIMIT_AS, &raw const lim) == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut r = Running::spawn(&mut cmd, LIMIT);
    r.write_stdin(&good_then(&bad));
    r.close_stdin();
    let r = r.finish();
    r.expect(4).expect_stderr("length 4294967280 is above --max-frame 16777216");
    assert!(r.elapsed < PROMPT);
}

#[test]
fn sequence_gap_exits_4() {
    let r = read_bytes(&good_then(&frame_bytes(0, 3, b"x")), &[]);
    r.expect(4).expect_stderr("writer 0 seq 3: sequence gap: expected seq 1, 2 message(s) missing");
}

#[test]
fn duplicate_frame_exits_4() {
    let r = read_bytes(&good_then(&frame_bytes(0, 0, b"first")), &[]);
    r.expect(4).expect_stderr("duplicate: seq 0 arrived again (expected 1; ");
    assert_eq!(r.stdout_text(), "first\n");
}

#[test]
fn end_of_file_without_end_frame_is_a_vanished_writer_exit_3() {
    let mut s = good_then(&frame_bytes(0, 1, b"second"));
    read_bytes(&s, &[]).expect(3).expect_stderr("pipe: writer 0 vanished after 2 of ? messages");
    s.extend_from_slice(&end_bytes(0, 2));
    let ok = read_bytes(&s, &[]);
    ok.expect(0);
    assert_eq!(ok.stdout_text(), "first\nsecond\n");
}

#[test]
fn end_of_file_inside_a_frame_exits_3() {
    let whole = frame_bytes(0, 1, b"second frame");
    let r = read_bytes(&good_then(&whole[..30]), &[]);
    r.expect(3).expect_stderr(
        "writer 0 vanished after 1 of ? messages (end of file inside a frame (30 of 36 bytes))",
    );
}

#[test]
fn count_mismatch_exits_4() {
    let mut s = good_then(&end_bytes(0, 1));
    read_bytes(&s, &["--count", "2"])
        .expect(4)
        .expect_stderr("expected --count 2 messages, the writers sent 1");
    s = good_then(&frame_bytes(0, 1, b"x"));
    read_bytes(&s, &["--count", "1"]).expect(4).expect_stderr("more than --count 1 messages");
}

#[test]
fn bad_flag_values_are_usage_errors_exit_2() {
    let dir = TestDir::new("pipe-usage");
    let cases: [(&str, &[&str], &str); 5] = [
        (WRITER, &["--size", "5..2", "--count", "1"], "MIN 5 is above MAX 2"),
        (READER, &["--count", "abc"], "--count"),
        (WRITER, &["--bogus"], "Unrecognized argument: --bogus"),
        (WRITER, &["--size", "64"], "give --count N too"),
        (READER, &["--writers", "0"], "--writers 0"),
    ];
    for (bin, args, needle) in cases {
        let out = Running::spawn(dir.command(bin).args(args).stdin(Stdio::null()), LIMIT).finish();
        out.expect(2).expect_stderr(needle);
        assert_eq!(out.stderr.lines().count(), 1, "one line: {}", out.stderr);
    }
}

#[test]
fn help_and_version_exit_0() {
    let dir = TestDir::new("pipe-help");
    let help = Running::spawn(dir.command(WRITER).arg("--help"), LIMIT).finish();
    help.expect(0);
    assert!(help.stdout_text().contains("Examples:"), "{}", help.stdout_text());
    let v = Running::spawn(dir.command(READER).arg("--version"), LIMIT).finish();
    v.expect(0);
    assert!(v.stdout_text().starts_with("pipe-reader 0."));
}

// ---- faults

#[test]
fn reader_that_exits_early_makes_the_writer_exit_3() {
    let dir = TestDir::new("pipe-early");
    let (w, pipe) = Running::spawn_upstream(
        dir.command(WRITER).args(["--count", "1000000000", "--size", "4K"]),
        LIMIT,
    );
    let head =
        Running::spawn(Command::new("head").args(["-c", "100000"]).stdin(pipe), LIMIT).finish();
    head.expect(0);
    let w = w.finish();
    w.expect(3).expect_stderr("pipe-writer: reader went away after ");
}

#[test]
fn writer_killed_mid_stream_makes_the_reader_exit_3() {
    let dir = TestDir::new("pipe-kill");
    let (w, pipe) = Running::spawn_upstream(
        dir.command(WRITER).args(["--count", "1000000000", "--size", "1K"]),
        LIMIT,
    );
    let r = Running::spawn(dir.command(READER).args(["--quiet"]).stdin(pipe), LIMIT);
    let reader = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(reader) > 1 << 20);
    w.kill(libc::SIGKILL);
    let r = r.finish();
    r.expect(3).expect_stderr("pipe: writer 0 vanished after ");
    drop(w.finish());
}

#[test]
fn sigint_stops_a_waiting_reader_with_130() {
    let dir = TestDir::new("pipe-sigint");
    let (w, pipe) =
        Running::spawn_upstream(Command::new("sleep").arg("30").stdin(Stdio::null()), LIMIT);
    let r = Running::spawn(dir.command(READER).stdin(pipe), LIMIT);
    // Wait until the reader is asleep in poll on its pipe, then interrupt it.
    wait_until("the reader to wait", LIMIT, || wchan(r.pid()).contains("poll"));
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("pipe-reader: interrupted by SIGINT");
    w.kill(libc::SIGKILL);
    drop(w.finish());
}

/// Bytes process `pid` has written so far (`wchar` in /proc/PID/io).
fn bytes_written(pid: i32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    let wchar = io.lines().find_map(|l| l.strip_prefix("wchar: "));
    wchar.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// The kernel function process `pid` sleeps in.
fn wchan(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Opens a pseudo-terminal and returns its slave side, a real terminal device.
fn pseudo_terminal() -> std::fs::File {
    use std::ffi::CStr;
    // SAFETY: posix_openpt/grantpt/unlockpt/ptsname on the descriptor just opened;
    // ptsname's static buffer is copied before any other call.
    let path = unsafe {
        // O_CLOEXEC: the processes other tests spawn meanwhile must not inherit it.
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(master >= 0, "posix_openpt failed");
        assert_eq!(libc::grantpt(master), 0);
        assert_eq!(libc::unlockpt(master), 0);
        let name = libc::ptsname(master);
        assert!(!name.is_null());
        // The master stays open (leaked) for the test's life, or the slave hangs up.
        CStr::from_ptr(name).to_string_lossy().into_owned()
    };
    std::fs::OpenOptions::new().read(true).write(true).open(path).expect("open pty slave")
}

#[test]
fn a_terminal_is_refused_where_a_pipe_belongs() {
    let dir = TestDir::new("pipe-tty");
    let tty = pseudo_terminal();
    // stdout a terminal: pipe-writer refuses (its frames would garble the screen).
    let mut cmd = Command::new(WRITER);
    cmd.env("XDG_RUNTIME_DIR", dir.root())
        .stdin(Stdio::null())
        .stdout(tty.try_clone().expect("dup"));
    let out = cmd.stderr(Stdio::piped()).output().expect("run pipe-writer");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("standard output is a terminal, not a pipe")
    );
    // stdin a terminal: pipe-reader refuses.
    let r = Running::spawn(dir.command(READER).stdin(tty), LIMIT).finish();
    r.expect(2)
        .expect_stderr("standard input is a terminal, not a pipe; run: pipe-writer | pipe-reader");
}

/// Text lines of `n` bytes each, `count` of them.
fn lines(count: usize, n: usize) -> Vec<u8> {
    let mut text = Vec::with_capacity(count * (n + 1));
    for i in 0..count {
        text.extend(std::iter::repeat_n(b'a' + (i % 26) as u8, n));
        text.push(b'\n');
    }
    text
}

#[test]
fn sigterm_stops_a_reader_blocked_on_a_full_stdout() {
    let dir = TestDir::new("pipe-stdout-full");
    // The reader's stdout is a pipe nobody reads: it fills, and the reader waits.
    let (_unread, stdout) = std::io::pipe().expect("pipe");
    let (mut w, pipe) = Running::spawn_upstream(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    let mut cmd = dir.command(READER);
    cmd.stdin(pipe).stdout(stdout).stderr(Stdio::piped());
    let reader = cmd.spawn().expect("spawn reader");
    drop(cmd); // or our copy of the pipe's read end would keep the writer from EPIPE
    let pid = i32::try_from(reader.id()).expect("pid");
    // 100 KB: more than the reader's stdout pipe holds (64 KiB), less than the
    // pipes upstream of it do, so the writer never blocks us.
    assert!(w.try_write_stdin(&lines(1000, 100)));
    wait_until("the reader's stdout to fill", LIMIT, || wchan(pid).contains("poll"));
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = reader.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(143), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pipe-reader: interrupted by SIGTERM"));
    w.close_stdin();
    drop(w.finish());
}

#[test]
fn sigterm_to_a_spawning_writer_stops_its_reader_too() {
    let dir = TestDir::new("pipe-spawn-term");
    // The child reader prints to a pipe nobody reads, so it blocks; so does the
    // writer, on the full pipe between them. SIGTERM to the writer alone must end both.
    let (_unread, stdout) = std::io::pipe().expect("pipe");
    let mut cmd = dir.command(WRITER);
    cmd.arg("--spawn").stdin(Stdio::piped()).stdout(stdout).stderr(Stdio::piped());
    let mut writer = cmd.spawn().expect("spawn writer");
    let pid = i32::try_from(writer.id()).expect("pid");
    let mut stdin = writer.stdin.take().expect("stdin");
    let feeder = std::thread::spawn(move || {
        use std::io::Write;
        let _ = stdin.write_all(&lines(20_000, 100));
    });
    // The child reader has (nearly) filled its stdout pipe and sleeps: stuck on it.
    let child = || {
        let path = format!("/proc/{pid}/task/{pid}/children");
        std::fs::read_to_string(path).unwrap_or_default().trim().parse::<i32>().ok()
    };
    let full = || child().is_some_and(|c| bytes_written(c) > 48 << 10 && wchan(c).contains("poll"));
    wait_until("the reader to fill its stdout", LIMIT, full);
    // SAFETY: kill(2) on the child we spawned and have not reaped.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let out = writer.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("pipe-writer: interrupted by SIGTERM"), "{stderr}");
    assert!(
        stderr.contains("pipe-reader: interrupted by SIGTERM"),
        "the child got it too: {stderr}"
    );
    drop(feeder);
}

#[test]
fn a_text_line_longer_than_any_frame_is_refused_not_buffered_forever() {
    let dir = TestDir::new("pipe-long-line");
    let mut w = Running::spawn(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    let _ = w.try_write_stdin(&vec![b'x'; 17 << 20]);
    w.finish().expect(4).expect_stderr("line 1 of standard input is longer than 16777216 bytes");
}

#[test]
fn absurd_timeouts_and_counts_are_not_a_crash() {
    let dir = TestDir::new("pipe-absurd");
    let (w, pipe) =
        Running::spawn_upstream(Command::new("sleep").arg("30").stdin(Stdio::null()), LIMIT);
    let r = Running::spawn(
        dir.command(READER).args(["--timeout", "18446744073709551615"]).stdin(pipe),
        LIMIT,
    );
    wait_until("the reader to wait", LIMIT, || wchan(r.pid()).contains("poll"));
    r.kill(libc::SIGTERM);
    r.finish().expect(143);
    w.kill(libc::SIGKILL);
    drop(w.finish());
    let d = Running::spawn(dir.command(DUPLEX).args(["--count", "18446744073709551615"]), LIMIT);
    wait_until("round trips to run", LIMIT, || bytes_read(d.pid()) > 1 << 16);
    d.kill(libc::SIGTERM);
    d.finish().expect(143);
}
