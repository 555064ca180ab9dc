//! socket-reader and socket-writer run as a user runs them: large transfers on
//! every transport, eight writers at once, bad and silent clients, stale and
//! unsafe paths, killed peers, peer credentials, descriptor passing, raw mode.

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use ipc_common::testkit::{LIMIT, Outcome, Running, TestDir, bytes_read, wait_until};

const WRITER: &str = env!("CARGO_BIN_EXE_socket-writer");
const READER: &str = env!("CARGO_BIN_EXE_socket-reader");
/// uid of `nobody`, the "someone else" of these tests (they run as root).
const NOBODY: u32 = 65534;

fn reader(dir: &TestDir, args: &[&str]) -> (Running, String) {
    let mut r = Running::spawn(dir.command(READER).args(args).stdin(Stdio::null()), LIMIT);
    let ready = r.ready();
    (r, ready)
}

fn writer(dir: &TestDir, args: &[&str]) -> Running {
    Running::spawn(dir.command(WRITER).args(args).stdin(Stdio::null()), LIMIT)
}

fn run_writer(dir: &TestDir, args: &[&str]) -> Outcome {
    writer(dir, args).finish()
}

fn socket_path(dir: &TestDir) -> PathBuf {
    dir.private().join("socket")
}

/// `HOST:PORT` from `socket-reader: ready: listening on tcp 127.0.0.1:41234`.
fn tcp_addr(ready: &str) -> String {
    ready.rsplit("listening on tcp ").next().expect("tcp ready line").trim().to_string()
}

/// A pair: the reader with `reader_args`, one writer with `writer_args` (plus
/// `--addr` for TCP); both must exit 0 with equal summaries.
fn pair(tag: &str, transport: &str, reader_args: &[&str], writer_args: &[&str]) -> Outcome {
    let dir = TestDir::new(tag);
    let mut rargs = vec!["--transport", transport];
    rargs.extend_from_slice(reader_args);
    let (r, ready) = reader(&dir, &rargs);
    let addr = tcp_addr(&ready);
    let mut wargs = vec!["--transport", transport];
    if transport == "tcp" {
        wargs.extend_from_slice(&["--addr", &addr]);
    }
    wargs.extend_from_slice(writer_args);
    let w = run_writer(&dir, &wargs);
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
    r
}

#[test]
fn fifty_thousand_frames_cross_a_unix_stream_intact() {
    let r = pair(
        "sock-unix-50k",
        "unix",
        &["--count", "50000"],
        &["--count", "50000", "--size", "0..70000", "--seed", "5"],
    );
    assert_eq!(r.summary().messages, 50_000);
}

#[test]
fn fifty_thousand_frames_cross_tcp_intact() {
    let r = pair(
        "sock-tcp-50k",
        "tcp",
        &["--count", "50000"],
        &["--count", "50000", "--size", "0..70000", "--seed", "6"],
    );
    assert_eq!(r.summary().messages, 50_000);
}

#[test]
fn twenty_thousand_messages_cross_unix_dgram_intact() {
    let r = pair(
        "sock-dgram-20k",
        "unix-dgram",
        &["--count", "20000"],
        &["--count", "20000", "--size", "0..60000", "--seed", "7"],
    );
    assert_eq!(r.summary().messages, 20_000);
}

/// A deterministic stream of "random" bytes that does not start with a frame.
fn garbage(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut out = b"GARBAGE!".to_vec();
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out
}

/// A hand-made client (this test process) on a stream socket.
trait Client: Read + Write {}
impl Client for UnixStream {}
impl Client for TcpStream {}

fn read_line(c: &mut dyn Client) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while c.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
        line.push(byte[0]);
    }
    String::from_utf8_lossy(&line).into_owned()
}

fn unix_client(path: &Path) -> UnixStream {
    let c = UnixStream::connect(path).expect("connect");
    c.set_read_timeout(Some(LIMIT)).expect("timeout");
    c
}

fn tcp_client(addr: &str) -> TcpStream {
    let c = TcpStream::connect(addr).expect("connect");
    c.set_read_timeout(Some(LIMIT)).expect("timeout");
    c
}

fn eight_writers_and_a_garbage_client(tag: &str, transport: &str) {
    let dir = TestDir::new(tag);
    let (r, ready) =
        reader(&dir, &["--transport", transport, "--writers", "8", "--count", "16000", "--quiet"]);
    let addr = tcp_addr(&ready);
    // The ninth client is connected (and admitted) before the writers start...
    let mut bad: Box<dyn Client> = if transport == "tcp" {
        Box::new(tcp_client(&addr))
    } else {
        Box::new(unix_client(&socket_path(&dir)))
    };
    assert_eq!(read_line(bad.as_mut()), "0 ready");
    let ws: Vec<(u16, Running)> = (1..=8u16)
        .map(|k| {
            let (id, seed) = (k.to_string(), (100 + k).to_string());
            let mut args = vec!["--transport", transport, "--id", &id, "--seed", &seed];
            args.extend_from_slice(&["--count", "2000", "--size", "0..70000"]);
            if transport == "tcp" {
                args.extend_from_slice(&["--addr", &addr]);
            }
            (k, writer(&dir, &args))
        })
        .collect();
    // ...and sends its random bytes while they run: it alone is dropped.
    bad.write_all(&garbage(64 << 10)).expect("send garbage");
    let verdict = read_line(bad.as_mut());
    assert!(verdict.starts_with(&format!("4 {transport}: frame #1: bad magic")), "{verdict}");
    let sent: Vec<(u16, Outcome)> = ws.into_iter().map(|(k, w)| (k, w.finish())).collect();
    let r = r.finish();
    r.expect(0)
        .expect_stderr("socket-reader: dropped connection 1 (")
        .expect_stderr("bad magic 47 41 52 42")
        .expect_stderr("socket-reader: received 16000 messages, ");
    for (k, w) in &sent {
        w.expect(0);
        assert_eq!(w.summary(), r.writer_summary(*k), "writer {k}");
        assert_eq!(w.summary().messages, 2000);
    }
    let digests: std::collections::HashSet<_> =
        sent.iter().map(|(_, w)| w.summary().digest).collect();
    assert_eq!(digests.len(), 8, "different seeds, different streams");
    dir.assert_clean();
}

#[test]
fn eight_writers_at_once_on_unix_and_a_ninth_sending_garbage_is_dropped() {
    eight_writers_and_a_garbage_client("sock-eight-unix", "unix");
}

#[test]
fn eight_writers_at_once_on_tcp_and_a_ninth_sending_garbage_is_dropped() {
    eight_writers_and_a_garbage_client("sock-eight-tcp", "tcp");
}

/// A client that says nothing is a stray: dropped, never counted. One that
/// sends half a header and stops is a writer (its first bytes are a frame
/// magic) that fails as silent: it counts toward `--writers`.
#[test]
fn silent_clients_are_dropped_after_idle_timeout_and_the_writer_completes() {
    let dir = TestDir::new("sock-idle");
    let (r, _) = reader(&dir, &["--idle-timeout", "1", "--writers", "2", "--quiet"]);
    let path = socket_path(&dir);
    let mut quiet = unix_client(&path);
    assert_eq!(read_line(&mut quiet), "0 ready");
    // Half a header, then nothing: a frame never completes.
    let mut dribbler = unix_client(&path);
    assert_eq!(read_line(&mut dribbler), "0 ready");
    dribbler.write_all(b"IPC1\0\0\0\0\0\0").expect("send");
    for c in [&mut quiet, &mut dribbler] {
        let verdict = read_line(c);
        assert_eq!(verdict, "3 unix: silent for 1 s, dropped (--idle-timeout)");
    }
    let w = run_writer(&dir, &["--id", "1", "--count", "100"]);
    let r = r.finish();
    w.expect(0);
    r.expect(3)
        .expect_stderr("dropped connection 1 (pid ")
        .expect_stderr("connection 2 (pid ")
        .expect_stderr(
            "1 of 2 writers failed; the first: unix: silent for 1 s, dropped (--idle-timeout)",
        );
    assert!(!r.stderr.contains("dropped connection 2"), "{}", r.stderr);
    assert_eq!(w.summary(), r.writer_summary(1));
    dir.assert_clean();
}

#[test]
fn a_writer_stopped_mid_stream_is_dropped_as_silent() {
    let dir = TestDir::new("sock-stopped");
    let (r, _) = reader(&dir, &["--idle-timeout", "1", "--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    let pid = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(pid) > 1 << 20);
    w.kill(libc::SIGSTOP);
    let r = r.finish();
    r.expect(3)
        .expect_stderr("unix: writer 0 vanished after ")
        .expect_stderr("(silent for 1 s, dropped (--idle-timeout))");
    w.kill(libc::SIGCONT);
    w.finish()
        .expect(3)
        .expect_stderr("socket-writer: socket-reader dropped us: unix: writer 0 vanished");
    dir.assert_clean();
}

#[test]
fn a_socket_file_left_by_a_killed_server_is_replaced() {
    let dir = TestDir::new("sock-stale");
    let (first, _) = reader(&dir, &[]);
    first.kill(libc::SIGKILL);
    first.finish();
    let path = socket_path(&dir);
    let lock = dir.private().join("socket.lock");
    assert!(path.exists() && lock.exists(), "SIGKILL leaves both files");
    let (r, _) = reader(&dir, &["--count", "10"]);
    assert!(
        r.stderr_so_far()
            .contains("note: removed the socket file of a server that is gone (its lock was free)"),
        "{}",
        r.stderr_so_far()
    );
    let w = run_writer(&dir, &["--count", "10"]);
    let r = r.finish();
    w.expect(0);
    r.expect(0);
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn a_live_servers_path_is_never_taken_over() {
    let dir = TestDir::new("sock-live");
    let (first, _) = reader(&dir, &["--count", "5"]);
    let path = socket_path(&dir);
    let ino = fs::symlink_metadata(&path).expect("socket").ino();
    let second = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    second.expect(1).expect_stderr(&format!(
        "socket {} is in use by a live socket-reader (pid {})",
        path.display(),
        first.pid()
    ));
    assert_eq!(fs::symlink_metadata(&path).expect("still there").ino(), ino);
    // The first server still serves.
    let w = run_writer(&dir, &["--count", "5"]);
    w.expect(0);
    let first = first.finish();
    first.expect(0);
    assert_eq!(w.summary(), first.summary());
    dir.assert_clean();
}

/// Makes the private directory, as a reader would, so tests can plant things in it.
fn private_dir(dir: &TestDir) -> PathBuf {
    let p = dir.private();
    fs::create_dir(&p).expect("mkdir");
    fs::set_permissions(&p, fs::Permissions::from_mode(0o700)).expect("chmod");
    p
}

#[test]
fn a_symlink_at_the_socket_path_is_refused_and_untouched() {
    let dir = TestDir::new("sock-symlink");
    let target = dir.root().join("target-file");
    fs::write(&target, b"precious").expect("write target");
    let path = private_dir(&dir).join("socket");
    symlink(&target, &path).expect("symlink");
    let r = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    r.expect(1).expect_stderr("is a symbolic link; refusing to follow it");
    let w = run_writer(&dir, &["--count", "1"]);
    w.expect(1).expect_stderr("is a symbolic link; refusing to follow it");
    assert!(fs::symlink_metadata(&path).expect("kept").file_type().is_symlink());
    assert_eq!(fs::read(&target).expect("target"), b"precious");
    let left: Vec<_> =
        fs::read_dir(dir.private()).expect("ls").map(|e| e.expect("entry").file_name()).collect();
    assert_eq!(left, ["socket"], "the reader removed its lock file");

    // A link where the lock file goes is refused too.
    fs::remove_file(&path).expect("rm");
    symlink(&target, dir.private().join("socket.lock")).expect("symlink");
    let r = Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT).finish();
    r.expect(1).expect_stderr("socket.lock is a symbolic link; refusing to follow it");
    assert_eq!(fs::read(&target).expect("target"), b"precious");
}

#[test]
fn a_path_too_long_for_sun_path_is_refused_with_exit_2_before_any_call() {
    let dir = TestDir::new("sock-long");
    let long = dir.root().join("x".repeat(120));
    let long = long.to_str().expect("utf-8");
    for bin in [READER, WRITER] {
        let out =
            Running::spawn(dir.command(bin).args(["--path", long]).stdin(Stdio::null()), LIMIT)
                .finish();
        out.expect(2).expect_stderr("sun_path holds at most 107 (plus the NUL)");
    }
    let left: Vec<_> = fs::read_dir(dir.root()).expect("ls").collect();
    assert!(left.is_empty(), "nothing was created: {left:?}");
}

/// The state letter of process `pid` (`R`, `S`, `T`...), from `/proc/PID/stat`.
fn proc_state(pid: i32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?')
}

/// Stops `r` with SIGSTOP and waits until the kernel says it is stopped.
fn stop(r: &Running) {
    r.kill(libc::SIGSTOP);
    wait_until("the process to stop", LIMIT, || proc_state(r.pid()) == 'T');
}

/// A pipe to feed a process's standard input, and the bytes it has not read yet.
struct Feed(fs::File);

impl Feed {
    fn new() -> (Stdio, Feed) {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        (Stdio::from(read_end), Feed(fs::File::from(write_end)))
    }

    /// Bytes in the pipe that the process has not read (`FIONREAD`).
    fn unread(&self) -> usize {
        use std::os::fd::AsRawFd;
        let mut n: libc::c_int = 0;
        // SAFETY: FIONREAD writes one int through the pointer, which is ours.
        let rc = unsafe { libc::ioctl(self.0.as_raw_fd(), libc::FIONREAD, &raw mut n) };
        assert_eq!(rc, 0, "ioctl FIONREAD");
        usize::try_from(n).expect("count")
    }

    /// Writes `bytes` and waits until the process has read every one.
    fn feed(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).expect("feed stdin");
        wait_until("the process to read its input", LIMIT, || self.unread() == 0);
    }
}

/// A text-mode writer killed while it is blocked inside a 15 MiB frame, after
/// `lines` whole frames: the reader is stopped, so the frame cannot complete
/// (the socket holds a few hundred KiB). Returns the reader's outcome.
fn kill_a_writer_inside_a_frame(tag: &str, lines: &[u8]) -> Outcome {
    let dir = TestDir::new(tag);
    let (r, _) = reader(&dir, &["--quiet"]);
    let (stdin, mut input) = Feed::new();
    let w = Running::spawn(dir.command(WRITER).stdin(stdin), LIMIT);
    // 1. The whole lines, and the first byte of the long one: the writer reads
    //    its input only once the reader has admitted it ("0 ready").
    input.feed(&[lines, b"x"].concat());
    // 2. Reader stopped, the rest of the long line: the writer starts the frame
    //    and blocks in it (it sleeps only in poll for the full socket now).
    stop(&r);
    let mut rest = vec![b'x'; (15 << 20) - 1];
    rest.push(b'\n');
    input.feed(&rest);
    wait_until("the writer to block inside the frame", LIMIT, || proc_state(w.pid()) == 'S');
    // 3. Killed there; the reader wakes to the frame's first part and end of file.
    w.kill(libc::SIGKILL);
    assert_eq!(w.finish().signal, Some(libc::SIGKILL));
    r.kill(libc::SIGCONT);
    let r = r.finish();
    dir.assert_clean();
    r
}

#[test]
fn a_writer_killed_mid_frame_makes_a_single_writer_reader_exit_3() {
    let r = kill_a_writer_inside_a_frame("sock-wkill", b"one\ntwo\nthree\n");
    r.expect(3).expect_stderr(
        "socket-reader: unix: writer 0 vanished after 3 of ? messages (end of file inside a frame (",
    );
}

/// A writer is a writer from its first header, not its first whole frame: one
/// killed inside that frame is still the writer the reader waited for.
#[test]
fn a_writer_killed_inside_its_first_frame_counts_and_the_reader_exits_3() {
    let r = kill_a_writer_inside_a_frame("sock-wkill-first", b"");
    r.expect(3).expect_stderr(
        "socket-reader: unix: writer 0 vanished after 0 of ? messages (end of file inside a frame (",
    );
    assert!(!r.stderr.contains("dropped connection"), "{}", r.stderr);
}

#[test]
fn a_writer_killed_among_two_is_reported_and_the_other_completes() {
    let dir = TestDir::new("sock-wkill2");
    let (r, _) = reader(&dir, &["--writers", "2", "--quiet"]);
    let doomed = writer(&dir, &["--id", "1", "--count", "1000000000", "--size", "64K"]);
    let good = run_writer(&dir, &["--id", "2", "--count", "2000"]);
    good.expect(0);
    let pid = r.pid();
    wait_until("the reader to receive 4 MB", LIMIT, || bytes_read(pid) > 4 << 20);
    doomed.kill(libc::SIGKILL);
    let r = r.finish();
    r.expect(3)
        .expect_stderr("unix: writer 1 vanished after ")
        .expect_stderr("socket-reader: 1 of 2 writers failed; the first: unix: writer 1 vanished");
    assert_eq!(r.writer_summary(2), good.summary());
    drop(doomed.finish());
    dir.assert_clean();
}

#[test]
fn the_writer_exits_3_when_the_reader_is_killed() {
    let dir = TestDir::new("sock-rkill");
    let (r, _) = reader(&dir, &["--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    let pid = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(pid) > 1 << 20);
    r.kill(libc::SIGKILL);
    drop(r.finish());
    w.finish().expect(3).expect_stderr("socket-writer: reader went away after ");
    // The next reader cleans up after the killed one.
    let (again, _) = reader(&dir, &[]);
    again.kill(libc::SIGTERM);
    again.finish().expect(143);
    dir.assert_clean();
}

/// A writer running as `nobody` (uid and gid 65534, no supplementary groups).
fn writer_as_nobody(dir: &TestDir, args: &[&str]) -> Running {
    let mut cmd = dir.command(WRITER);
    cmd.args(args).stdin(Stdio::null());
    // SAFETY: between fork and exec only async-signal-safe calls (setgroups,
    // setgid, setuid), touching no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setgroups(0, std::ptr::null()) != 0
                || libc::setgid(NOBODY) != 0
                || libc::setuid(NOBODY) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Running::spawn(&mut cmd, LIMIT)
}

/// The abstract namespace has no file permissions: `nobody` can reach a root
/// server there, so the uid check is all that stands between them.
#[test]
fn a_peer_of_another_uid_is_refused_unless_allowed() {
    let dir = TestDir::new("sock-uid");
    let name = format!("{}-uid", dir.prefix());
    let (r, _) = reader(&dir, &["--abstract", &name, "--verbose", "--quiet"]);
    // The writer checks the server too: root is not nobody.
    writer_as_nobody(&dir, &["--abstract", &name, "--count", "1"])
        .finish()
        .expect(1)
        .expect_stderr("is not us (uid 65534); refusing to talk to it; --allow-uid 0 trusts it");
    // Trusting root, it is refused by the server, which says why.
    writer_as_nobody(&dir, &["--abstract", &name, "--count", "1", "--allow-uid", "0"])
        .finish()
        .expect(1)
        .expect_stderr(
            "socket-reader refused the connection: peer uid 65534 is not the server's uid 0",
        );
    // The server went on; one of ours finishes it.
    run_writer(&dir, &["--abstract", &name, "--count", "3"]).expect(0);
    r.finish()
        .expect(0)
        .expect_stderr(" uid 65534 gid 65534: peer uid 65534 is not the server's uid 0")
        .expect_stderr(" uid 0 gid 0");

    // With --allow-uid, nobody's frames are accepted.
    let (r, _) =
        reader(&dir, &["--abstract", &name, "--allow-uid", "65534", "--verbose", "--quiet"]);
    let w = writer_as_nobody(&dir, &["--abstract", &name, "--count", "50", "--allow-uid", "0"]);
    let wpid = w.pid();
    let w = w.finish();
    w.expect(0);
    let r = r.finish();
    r.expect(0).expect_stderr(&format!("connection 1 from pid {wpid} uid 65534 gid 65534"));
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn a_descriptor_passed_with_send_fd_is_read_through() {
    let dir = TestDir::new("sock-sendfd");
    let file = dir.root().join("payload.bin");
    let content = garbage(300_000);
    fs::write(&file, &content).expect("write");
    let (r, _) = reader(&dir, &["--verbose", "--quiet"]);
    let w = run_writer(&dir, &["--send-fd", file.to_str().expect("utf-8")]);
    let r = r.finish();
    w.expect(0);
    r.expect(0).expect_stderr("payload.bin (300000 bytes; read through it with pread)");
    let s = r.summary();
    assert_eq!((s.messages, s.bytes), (1, 300_000));
    assert_eq!(s.digest, format!("{:08x}", ipc_common::frame::crc32(&content)));
    assert_eq!(w.summary(), s);
    dir.assert_clean();
}

#[test]
fn payloads_in_sealed_memfds_are_mapped_by_the_reader() {
    let dir = TestDir::new("sock-memfd");
    let (r, _) = reader(&dir, &["--verbose", "--count", "300"]);
    let w = run_writer(&dir, &["--send-memfd", "--count", "300", "--size", "0..200K"]);
    let r = r.finish();
    w.expect(0);
    r.expect(0)
        .expect_stderr("memfd:ipc-demos-payload (deleted)")
        .expect_stderr("sealed: mapped, not copied");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn text_lines_arrive_as_messages_and_ctrl_d_ends() {
    let dir = TestDir::new("sock-text");
    let (r, _) = reader(&dir, &[]);
    let mut w = Running::spawn(dir.command(WRITER).stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"hello\nsocket\n");
    let (w, r) = (w.finish(), r.finish());
    w.expect(0);
    r.expect(0);
    assert_eq!(r.stdout_text(), "hello\nsocket\n");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn sigint_to_a_waiting_reader_exits_130_and_removes_socket_and_lock() {
    let dir = TestDir::new("sock-sigint");
    let (r, _) = reader(&dir, &[]);
    assert!(socket_path(&dir).exists());
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("socket-reader: interrupted by SIGINT");
    dir.assert_clean();
}

#[test]
fn timeouts_give_up_with_exit_3() {
    let dir = TestDir::new("sock-timeout");
    run_writer(&dir, &["--timeout", "1", "--count", "1"])
        .expect(3)
        .expect_stderr("no socket-reader is listening on unix ")
        .expect_stderr("within 1 s (--timeout)");
    Running::spawn(dir.command(READER).args(["--timeout", "1"]).stdin(Stdio::null()), LIMIT)
        .finish()
        .expect(3)
        .expect_stderr("no writer connected to unix ")
        .expect_stderr("within 1 s (--timeout)");
    dir.assert_clean();
}

/// `--timeout` waits for a writer: a client that connects and closes at once,
/// and one the reader refuses, do not stop the clock.
#[test]
fn the_timeout_waits_for_a_writer_not_for_any_client() {
    use std::os::linux::net::SocketAddrExt;
    let dir = TestDir::new("sock-timeout-writer");
    let name = format!("{}-t", dir.prefix());
    let (r, _) = reader(&dir, &["--abstract", &name, "--timeout", "2", "--quiet"]);
    let at = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).expect("addr");
    let mut client = UnixStream::connect_addr(&at).expect("connect");
    assert_eq!(read_line(&mut client), "0 ready");
    drop(client);
    writer_as_nobody(&dir, &["--abstract", &name, "--count", "1", "--allow-uid", "0"])
        .finish()
        .expect(1)
        .expect_stderr("socket-reader refused the connection: peer uid 65534");
    r.finish()
        .expect(3)
        .expect_stderr("dropped connection 1 (pid ")
        .expect_stderr("refused connection 2 from pid ")
        .expect_stderr(&format!("no writer connected to unix @{name} (abstract) within 2 s"));
}

/// A writer in text mode with id `id`: it sends a frame per line written to it.
fn text_writer(dir: &TestDir, id: &str) -> Running {
    Running::spawn(dir.command(WRITER).args(["--id", id]).stdin(Stdio::piped()), LIMIT)
}

/// `--writers K` counts writers that ended, failed ones too; once K have, no
/// new client is admitted, and a writer still sending is never cut off.
#[test]
fn once_k_writers_ended_newcomers_are_refused_and_writers_under_way_finish() {
    let dir = TestDir::new("sock-k");
    let (mut r, _) = reader(&dir, &["--writers", "2", "--verbose", "--quiet"]);
    // Writer 9 sends one good frame, then garbage: the first writer to end (failed).
    let mut bad = unix_client(&socket_path(&dir));
    assert_eq!(read_line(&mut bad), "0 ready");
    bad.write_all(&[ipc_common::testkit::frame_bytes(9, 0, b"ok"), garbage(100)].concat())
        .expect("send");
    assert!(read_line(&mut bad).starts_with("4 unix: frame #2: bad magic"));
    r.wait_for("connection 1 is writer 9");
    // Two more writers, both under way.
    let (mut one, mut two) = (text_writer(&dir, "1"), text_writer(&dir, "2"));
    one.write_stdin(b"first\n");
    two.write_stdin(b"first\n");
    let mut started: Vec<String> = (0..2)
        .map(|_| r.wait_for(" is writer ").rsplit(' ').next().unwrap_or_default().to_string())
        .collect();
    started.sort();
    assert_eq!(started, ["1", "2"]);
    // Writer 1 ends: that is K = 2 writers ended.
    one.close_stdin();
    let one = one.finish();
    one.expect(0);
    r.wait_for("writer 1 done");
    // A newcomer is turned away...
    run_writer(&dir, &["--id", "3", "--count", "1"]).expect(3).expect_stderr(
        "socket-reader refused the connection: unix: 2 writers have ended (--writers 2): \
         the reader is finishing and admits no new writers",
    );
    // ...while writer 2, under way, goes on to the end.
    two.write_stdin(b"second\n");
    two.close_stdin();
    let two = two.finish();
    two.expect(0);
    let r = r.finish();
    r.expect(4).expect_stderr("1 of 3 writers failed; the first: unix: frame #2: bad magic");
    assert_eq!(r.writer_summary(1), one.summary());
    assert_eq!(r.writer_summary(2), two.summary());
    assert_eq!(two.summary().messages, 2);
    dir.assert_clean();
}

/// A TCP client that connects and resets while it waits in the backlog fails
/// `getpeername` once accepted: that connection is dropped, not the server.
#[test]
fn a_client_that_resets_before_it_is_accepted_is_dropped_and_the_server_goes_on() {
    use nix::sys::socket::{setsockopt, sockopt};
    let dir = TestDir::new("sock-reset");
    let (r, ready) = reader(&dir, &["--transport", "tcp", "--count", "5"]);
    let addr = tcp_addr(&ready);
    stop(&r);
    let client = TcpStream::connect(&addr).expect("connect");
    // SO_LINGER 0: close sends a reset instead of an orderly end.
    setsockopt(&client, sockopt::Linger, &libc::linger { l_onoff: 1, l_linger: 0 })
        .expect("SO_LINGER");
    drop(client);
    r.kill(libc::SIGCONT);
    let w = run_writer(&dir, &["--transport", "tcp", "--addr", &addr, "--count", "5"]);
    w.expect(0);
    let r = r.finish();
    r.expect(0).expect_stderr("dropped connection 1 as it was accepted: getpeername: ENOTCONN");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

/// Out of descriptors (`ulimit -n`), accept fails with `EMFILE` while clients
/// wait: noted once, and served as soon as descriptors are free again.
#[test]
fn running_out_of_descriptors_is_noted_once_and_the_server_goes_on() {
    let dir = TestDir::new("sock-emfile");
    let mut cmd = dir.command(READER);
    cmd.args(["--count", "10"]).stdin(Stdio::null());
    // SAFETY: between fork and exec only setrlimit, async-signal-safe, on a
    // struct of our own.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit { rlim_cur: 16, rlim_max: 16 };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut r = Running::spawn(&mut cmd, LIMIT);
    r.ready();
    // More idle clients than the reader has descriptors left...
    let path = socket_path(&dir);
    let idle: Vec<UnixStream> = (0..16).map(|_| unix_client(&path)).collect();
    r.wait_for("accept on unix ");
    // ...and once they leave, a writer is served.
    drop(idle);
    let w = run_writer(&dir, &["--count", "10"]);
    w.expect(0);
    let r = r.finish();
    r.expect(0).expect_stderr("EMFILE: Too many open files; raise ulimit -n");
    assert_eq!(r.stderr.matches("EMFILE").count(), 1, "noted once:\n{}", r.stderr);
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

#[test]
fn contradictory_options_are_usage_errors() {
    let dir = TestDir::new("sock-usage");
    let cases: [(&str, &[&str], &str); 6] = [
        (READER, &["--raw", "--transport", "unix-dgram"], "--raw needs a byte stream"),
        (
            WRITER,
            &["--send-fd", "/etc/hostname", "--transport", "tcp", "--addr", "127.0.0.1:1"],
            "descriptors pass only over a Unix stream socket",
        ),
        (WRITER, &["--transport", "tcp"], "--transport tcp needs --addr HOST:PORT"),
        (
            READER,
            &["--transport", "tcp", "--path", "/x"],
            "--path and --abstract name Unix sockets",
        ),
        (READER, &["--abstract", &"a".repeat(108)], "--abstract: the name is 108 bytes"),
        (WRITER, &["--transport", "udp"], "expected unix, unix-dgram or tcp"),
    ];
    for (bin, args, needle) in cases {
        Running::spawn(dir.command(bin).args(args).stdin(Stdio::null()), LIMIT)
            .finish()
            .expect(2)
            .expect_stderr(needle);
    }
}

#[test]
fn a_message_too_big_for_the_socket_buffer_is_refused_clearly_and_a_large_one_fits() {
    let dir = TestDir::new("sock-dgram-size");
    let wmem_max: usize = fs::read_to_string("/proc/sys/net/core/wmem_max")
        .expect("wmem_max")
        .trim()
        .parse()
        .expect("number");
    let too_big = 2 * wmem_max; // the kernel caps SO_SNDBUF at 2 × wmem_max
    if too_big > 15 << 20 {
        println!("skipped: net.core.wmem_max {wmem_max} allows messages above --max-frame");
        return;
    }
    let (r, _) = reader(&dir, &["--transport", "unix-dgram", "--count", "20"]);
    run_writer(
        &dir,
        &["--transport", "unix-dgram", "--count", "1", "--size", &too_big.to_string()],
    )
    .expect(1)
    .expect_stderr("does not fit one message: SO_SNDBUF is ")
    .expect_stderr("sysctl -w net.core.wmem_max=");
    // 1 MiB is above the default SO_SNDBUF (212992): raised, and it fits.
    let w = run_writer(&dir, &["--transport", "unix-dgram", "--count", "20", "--size", "1M"]);
    w.expect(0);
    let r = r.finish();
    r.expect(0).expect_stderr("closed the connection without sending anything");
    assert_eq!(w.summary(), r.summary());
    dir.assert_clean();
}

/// Sends raw messages on a `SOCK_SEQPACKET` connection from this process.
fn seqpacket_client(path: &Path) -> std::os::fd::OwnedFd {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, connect, socket};
    use std::os::fd::AsRawFd;
    let fd = socket(AddressFamily::Unix, SockType::SeqPacket, SockFlag::SOCK_CLOEXEC, None)
        .expect("socket");
    connect(fd.as_raw_fd(), &UnixAddr::new(path).expect("addr")).expect("connect");
    fd
}

fn seqpacket_reply(fd: &std::os::fd::OwnedFd) -> String {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 1024];
    let n = nix::sys::socket::recv(fd.as_raw_fd(), &mut buf, nix::sys::socket::MsgFlags::empty())
        .expect("recv");
    String::from_utf8_lossy(&buf[..n]).trim_end().to_string()
}

#[test]
fn a_message_whose_length_differs_from_its_frame_is_bad_data() {
    use std::os::fd::AsRawFd;
    let dir = TestDir::new("sock-dgram-len");
    let (r, _) = reader(&dir, &["--transport", "unix-dgram", "--writers", "2", "--quiet"]);
    let client = seqpacket_client(&dir.private().join("socket-dgram"));
    assert_eq!(seqpacket_reply(&client), "0 ready");
    // A frame claiming 10 payload bytes, in a message carrying 5.
    let mut msg = ipc_common::testkit::frame_bytes(0, 0, b"0123456789");
    msg.truncate(ipc_common::frame::HEADER_LEN + 5);
    nix::sys::socket::send(client.as_raw_fd(), &msg, nix::sys::socket::MsgFlags::empty())
        .expect("send");
    assert_eq!(
        seqpacket_reply(&client),
        "4 unix-dgram: frame #1: message of 29 bytes holds a frame of 34 bytes"
    );
    // It began with a valid header, so it was a writer, and a failed one.
    let w = run_writer(&dir, &["--transport", "unix-dgram", "--count", "10"]);
    w.expect(0);
    let r = r.finish();
    r.expect(4).expect_stderr(
        "1 of 2 writers failed; the first: unix-dgram: frame #1: message of 29 bytes holds a frame of 34 bytes",
    );
    assert_eq!(w.summary(), r.writer_summary(0));
    dir.assert_clean();
}

#[test]
fn raw_mode_lets_bash_and_python_be_the_other_end() {
    // bash's /dev/tcp as the writer of a raw TCP reader.
    let dir = TestDir::new("sock-raw-bash");
    let (r, ready) = reader(&dir, &["--raw", "--transport", "tcp"]);
    let (host, port) = tcp_addr(&ready)
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .expect("addr");
    let status = Command::new("bash")
        .arg("-c")
        .arg(format!("echo hi > /dev/tcp/{host}/{port}"))
        .status()
        .expect("bash");
    assert!(status.success());
    let r = r.finish();
    r.expect(0).expect_stderr("socket-reader: received 1 messages, 3 bytes, digest ed6f7a7a");
    assert_eq!(r.stdout_text(), "hi\n");

    // Our raw writer into our raw reader over a Unix socket.
    let (r, _) = reader(&dir, &["--raw"]);
    let mut w = Running::spawn(dir.command(WRITER).arg("--raw").stdin(Stdio::piped()), LIMIT);
    w.write_stdin(b"raw bytes\n");
    let w = w.finish();
    w.expect(0).expect_stderr("socket-writer: sent 1 messages, 10 bytes, digest ");
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.stdout_text(), "raw bytes\n");
    dir.assert_clean();

    // python3 as a raw reader for our raw writer (skipped without python3).
    if Command::new("python3").arg("-c").arg("pass").status().map_or(true, |s| !s.success()) {
        println!("skipped the python3 part: python3 is not available");
        return;
    }
    let path = dir.root().join("py.sock");
    let script = format!(
        "import socket,sys\ns=socket.socket(socket.AF_UNIX)\ns.bind({p:?})\ns.listen(1)\n\
         print('listening',file=sys.stderr,flush=True)\nc,_=s.accept()\ndata=b''\n\
         while True:\n  b=c.recv(65536)\n  if not b: break\n  data+=b\nsys.stdout.buffer.write(data)\n",
        p = path.to_str().expect("utf-8")
    );
    let mut py = Running::spawn(Command::new("python3").arg("-c").arg(script), LIMIT);
    py.wait_for("listening");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
    let mut w = Running::spawn(
        dir.command(WRITER)
            .args(["--raw", "--path", path.to_str().expect("utf-8")])
            .stdin(Stdio::piped()),
        LIMIT,
    );
    w.write_stdin(b"to python\n");
    w.finish().expect(0);
    let py = py.finish();
    py.expect(0);
    assert_eq!(py.stdout_text(), "to python\n");
}

/// The second connection claiming a writer id is a writer that failed: with
/// `--writers 1` that ends the reader's wait, but the first, still sending, is
/// not cut off.
#[test]
fn two_connections_cannot_share_a_writer_id() {
    let dir = TestDir::new("sock-dup-id");
    let (mut r, _) = reader(&dir, &["--writers", "1", "--verbose", "--quiet"]);
    let path = socket_path(&dir);
    // Connection 1 takes writer id 7 with its first frame and stays open...
    let mut first = unix_client(&path);
    assert_eq!(read_line(&mut first), "0 ready");
    first.write_all(&ipc_common::testkit::frame_bytes(7, 0, b"mine")).expect("send");
    r.wait_for("socket-reader: connection 1 is writer 7");
    // ...so a writer claiming id 7 too is turned away, with the reason.
    let dup = run_writer(&dir, &["--id", "7", "--count", "3"]);
    dup.expect(4).expect_stderr(
        "writer id 7 is already used by connection 1; give each writer its own --id",
    );
    first.write_all(&ipc_common::testkit::end_bytes(7, 1)).expect("send end");
    assert_eq!(read_line(&mut first), "0 received 1 messages, 4 bytes, digest 69a8d393");
    let r = r.finish();
    r.expect(4).expect_stderr(
        "1 of 2 writers failed; the first: unix: writer id 7 is already used by connection 1",
    );
    let s = r.writer_summary(7);
    assert_eq!((s.messages, s.bytes, s.digest.as_str()), (1, 4, "69a8d393"));
    dir.assert_clean();
}

#[test]
fn a_foreign_frame_stream_from_python_is_read_like_ours() {
    let dir = TestDir::new("sock-python");
    if Command::new("python3").arg("-c").arg("pass").status().map_or(true, |s| !s.success()) {
        println!("skipped: python3 is not available");
        return;
    }
    let (r, _) = reader(&dir, &[]);
    let script = format!(
        "import socket,struct,zlib\ns=socket.socket(socket.AF_UNIX)\ns.connect({p:?})\n\
         f=s.makefile('rb')\nassert f.readline()==b'0 ready\\n'\np=b'hi'\n\
         s.sendall(struct.pack('<4sBBHQII',b'IPC1',0,0,0,0,len(p),zlib.crc32(p))+p\n\
                   +struct.pack('<4sBBHQII',b'IPC1',1,0,0,1,0,0))\nprint(f.readline().decode().strip())\n",
        p = socket_path(&dir).to_str().expect("utf-8")
    );
    let py = Running::spawn(Command::new("python3").arg("-c").arg(script), LIMIT).finish();
    py.expect(0);
    assert_eq!(py.stdout_text(), "0 received 1 messages, 2 bytes, digest d8932aac\n");
    let r = r.finish();
    r.expect(0);
    assert_eq!(r.stdout_text(), "hi\n");
    dir.assert_clean();
}

#[test]
fn sigint_to_a_serving_reader_tells_its_writer_why() {
    let dir = TestDir::new("sock-sigint-busy");
    let (r, _) = reader(&dir, &["--quiet"]);
    let w = writer(&dir, &["--count", "1000000000", "--size", "1K"]);
    let pid = r.pid();
    wait_until("the reader to receive 1 MB", LIMIT, || bytes_read(pid) > 1 << 20);
    r.kill(libc::SIGINT);
    r.finish().expect(130).expect_stderr("socket-reader: interrupted by SIGINT");
    w.finish()
        .expect(3)
        .expect_stderr("socket-writer: socket-reader dropped us: interrupted by SIGINT");
    dir.assert_clean();
}

/// Two network namespaces joined by a veth pair are two hosts as far as TCP
/// can tell: host A is 10.77.0.1, host B 10.77.0.2. Removed when dropped.
struct TwoHosts {
    namespaces: Vec<String>,
    b_link: String,
}

impl TwoHosts {
    /// `None` where `ip netns` cannot be used (no iproute2, not root).
    fn new() -> Option<TwoHosts> {
        let id = std::process::id();
        let n = NETNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let (a, b) = (format!("ipcdemo-a{id}-{n}"), format!("ipcdemo-b{id}-{n}"));
        if !ip(&["netns", "add", &a]) {
            return None;
        }
        let mut hosts = TwoHosts { namespaces: vec![a.clone()], b_link: format!("vb{id}-{n}") };
        assert!(ip(&["netns", "add", &b]));
        hosts.namespaces.push(b.clone());
        let (va, vb) = (format!("va{id}-{n}"), hosts.b_link.clone());
        for args in [
            vec!["link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vb, "netns", &b],
            vec!["-n", &a, "addr", "add", "10.77.0.1/24", "dev", &va],
            vec!["-n", &b, "addr", "add", "10.77.0.2/24", "dev", &vb],
            vec!["-n", &a, "link", "set", &va, "up"],
            vec!["-n", &b, "link", "set", &vb, "up"],
            vec!["-n", &b, "link", "set", "lo", "up"],
        ] {
            assert!(ip(&args), "ip {args:?}");
        }
        Some(hosts)
    }

    /// `bin` to run on host A (`0`) or B (`1`), from `dir`.
    fn on(&self, host: usize, dir: &TestDir, bin: &str) -> Command {
        let mut cmd = dir.command("ip");
        cmd.args(["netns", "exec", &self.namespaces[host], bin]).stdin(Stdio::null());
        cmd
    }

    /// Takes host B's network link down (`false`) or up again.
    fn b_link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let args = ["-n", &self.namespaces[1], "link", "set", &self.b_link, state];
        assert!(ip(&args), "ip {args:?}");
    }
}

impl Drop for TwoHosts {
    fn drop(&mut self) {
        for ns in &self.namespaces {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

static NETNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// `ip ARGS`, quietly: whether it succeeded.
fn ip(args: &[&str]) -> bool {
    Command::new("ip").args(args).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

/// The reader listens on 0.0.0.0 on host A; the writer connects from host B
/// to A's address.
#[test]
fn tcp_crosses_between_two_network_namespaces() {
    let Some(hosts) = TwoHosts::new() else {
        println!("skipped: `ip netns add` is unavailable here (no iproute2, or not root)");
        return;
    };
    let dir = TestDir::new("sock-netns");
    let mut r = Running::spawn(
        hosts.on(0, &dir, READER).args([
            "--transport",
            "tcp",
            "--addr",
            "0.0.0.0:0",
            "--verbose",
            "--quiet",
        ]),
        LIMIT,
    );
    let port = tcp_addr(&r.ready()).rsplit(':').next().expect("port").to_string();
    let w = Running::spawn(
        hosts
            .on(1, &dir, WRITER)
            .args(["--transport", "tcp", "--addr", &format!("10.77.0.1:{port}")])
            .args(["--count", "2000", "--size", "0..70000"]),
        LIMIT,
    )
    .finish();
    let r = r.finish();
    w.expect(0);
    r.expect(0).expect_stderr("connection 1 from 10.77.0.2:");
    assert_eq!(w.summary(), r.summary());
    // Loopback in the writer's namespace is not the reader's: nothing listens there.
    Running::spawn(
        hosts.on(1, &dir, WRITER).args([
            "--transport",
            "tcp",
            "--addr",
            &format!("127.0.0.1:{port}"),
            "--timeout",
            "1",
        ]),
        LIMIT,
    )
    .finish()
    .expect(3);
    dir.assert_clean();
}

/// A host that drops off the network sends nothing, not even an end of file:
/// keepalive and `TCP_USER_TIMEOUT` make the reader notice within seconds.
/// When the network comes back, the writer's next retransmission meets a host
/// that has forgotten the connection, and a reset tells the writer.
#[test]
fn a_tcp_writer_whose_host_vanishes_is_noticed_by_the_reader() {
    let Some(hosts) = TwoHosts::new() else {
        println!("skipped: `ip netns add` is unavailable here (no iproute2, or not root)");
        return;
    };
    let dir = TestDir::new("sock-netns-down");
    let mut r = Running::spawn(
        hosts.on(0, &dir, READER).args(["--transport", "tcp", "--addr", "0.0.0.0:0", "--quiet"]),
        LIMIT,
    );
    let port = tcp_addr(&r.ready()).rsplit(':').next().expect("port").to_string();
    let w = Running::spawn(
        hosts
            .on(1, &dir, WRITER)
            .args(["--transport", "tcp", "--addr", &format!("10.77.0.1:{port}")])
            .args(["--count", "1000000000", "--size", "64K"]),
        LIMIT,
    );
    let pid = r.pid();
    wait_until("the reader to receive 4 MB", LIMIT, || bytes_read(pid) > 4 << 20);
    hosts.b_link(false);
    r.finish()
        .expect(3)
        .expect_stderr("socket-reader: tcp: writer 0 vanished after ")
        .expect_stderr("ETIMEDOUT");
    hosts.b_link(true);
    w.finish().expect(3).expect_stderr("socket-writer: reader went away after ");
    dir.assert_clean();
}

#[test]
fn a_private_directory_open_to_others_is_refused_by_both() {
    let dir = TestDir::new("sock-dir-0777");
    let p = private_dir(&dir);
    fs::set_permissions(&p, fs::Permissions::from_mode(0o777)).expect("chmod");
    Running::spawn(dir.command(READER).stdin(Stdio::null()), LIMIT)
        .finish()
        .expect(1)
        .expect_stderr("has mode 0777, open to other users; refusing to use it");
    run_writer(&dir, &["--count", "1"])
        .expect(1)
        .expect_stderr("has mode 0777, open to other users; refusing to use it");
}
