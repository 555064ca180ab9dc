//! Running real binaries in pairs, for the `tests/` of every crate (feature `testkit`).
//!
//! Tests start processes the way a user does: a reader, then — once it says it is
//! ready, or its object exists — one or more writers, and assert on exit codes,
//! summary lines and error text. Nothing here sleeps to synchronise: a test waits
//! for a line on standard error or a path to appear, each bounded by a deadline
//! after which the process is killed and the test fails with what it printed.
//!
//! Every [`TestDir`] is a fresh `XDG_RUNTIME_DIR`, so parallel tests never share
//! a private directory or a default path, and [`TestDir::assert_clean`] proves a
//! run left nothing behind.

#![allow(clippy::missing_panics_doc)]

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any one test process may live unless a test says otherwise.
pub const LIMIT: Duration = Duration::from_secs(60);

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name no other test, in this run or a parallel one, is using: `tag-pid-n`.
#[must_use]
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// A private `XDG_RUNTIME_DIR` and POSIX name prefix for one test; the
/// directory is removed when dropped.
#[derive(Debug)]
pub struct TestDir {
    root: PathBuf,
    prefix: String,
}

impl TestDir {
    /// Creates `$TMPDIR/ipc-demos-test-<unique>` with mode 0700.
    #[must_use]
    pub fn new(tag: &str) -> Self {
        let name = unique(&format!("ipc-demos-test-{tag}"));
        let root = std::env::temp_dir().join(&name);
        fs::DirBuilder::new().mode(0o700).create(&root).expect("create test dir");
        TestDir { root, prefix: name }
    }

    /// The POSIX name prefix the binaries will use (`/<prefix>.<uid>.<mech>`).
    #[must_use]
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// What the default POSIX name of `mech` is for binaries run from here.
    #[must_use]
    pub fn posix_name(&self, mech: &str) -> String {
        format!("/{}.{}.{mech}", self.prefix, crate::paths::uid())
    }

    /// The directory itself (what `XDG_RUNTIME_DIR` is set to).
    #[must_use]
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The private directory the binaries will use: `<root>/ipc-demos`.
    #[must_use]
    pub fn private(&self) -> PathBuf {
        self.root.join(crate::paths::DIR_NAME)
    }

    /// A command for `bin` with this directory as its `XDG_RUNTIME_DIR` and this
    /// test's name prefix.
    #[must_use]
    pub fn command(&self, bin: &str) -> Command {
        let mut cmd = Command::new(bin);
        cmd.env("XDG_RUNTIME_DIR", &self.root)
            .env(crate::paths::PREFIX_ENV, &self.prefix)
            .env_remove("RUST_BACKTRACE");
        cmd
    }

    /// Fails the test if anything of this test's is left in any namespace:
    /// the private directory, `/dev/shm`, POSIX queues, System V objects.
    pub fn assert_clean(&self) {
        let left = crate::clean::scan_with(&self.private(), &self.prefix).expect("scan");
        let names: Vec<String> = left.iter().map(|l| format!("{} {}", l.kind, l.name)).collect();
        assert!(names.is_empty(), "left behind: {names:?}");
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

/// A process under test: its stderr is watched line by line, its stdout captured.
#[derive(Debug)]
pub struct Running {
    name: String,
    pid: i32,
    pidfd: OwnedFd,
    started: Instant,
    deadline: Instant,
    stdin: Option<ChildStdin>,
    stdout: Option<JoinHandle<Vec<u8>>>,
    stderr_lines: Receiver<String>,
    stderr_all: Arc<Mutex<String>>,
    stderr_done: Option<JoinHandle<()>>,
    status: Receiver<ExitStatus>,
    finished: bool,
}

/// How a process ended and what it printed.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The program, for messages.
    pub name: String,
    /// Exit status, if it exited.
    pub code: Option<i32>,
    /// Signal number, if a signal killed it.
    pub signal: Option<i32>,
    /// Everything on standard output.
    pub stdout: Vec<u8>,
    /// Everything on standard error.
    pub stderr: String,
    /// From spawn to exit.
    pub elapsed: Duration,
}

/// A summary line: `sent|received N messages, B bytes, digest XXXXXXXX`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// Messages.
    pub messages: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// The CRC-32 digest, 8 hex digits.
    pub digest: String,
}

impl Running {
    /// Starts `cmd` with piped stdout and stderr (stdin as the caller set it;
    /// `Stdio::piped()` makes [`Running::write_stdin`] work). Killed after `limit`.
    #[must_use]
    pub fn spawn(cmd: &mut Command, limit: Duration) -> Self {
        cmd.stdout(Stdio::piped());
        let (mut run, child_stdout) = Self::start(cmd, limit);
        let mut out = child_stdout.expect("stdout piped");
        run.stdout = Some(thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = out.read_to_end(&mut buf);
            buf
        }));
        run
    }

    /// Starts `cmd` whose stdout feeds the next process: returns the `Stdio` to
    /// give that process as its stdin (`writer | reader`).
    #[must_use]
    pub fn spawn_upstream(cmd: &mut Command, limit: Duration) -> (Self, Stdio) {
        cmd.stdout(Stdio::piped());
        let (run, child_stdout) = Self::start(cmd, limit);
        (run, Stdio::from(child_stdout.expect("stdout piped")))
    }

    fn start(cmd: &mut Command, limit: Duration) -> (Self, Option<std::process::ChildStdout>) {
        cmd.stderr(Stdio::piped());
        let name =
            cmd.get_program().to_string_lossy().rsplit('/').next().unwrap_or_default().to_string();
        let mut child: Child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {name}: {e}"));
        let pid = i32::try_from(child.id()).expect("pid fits i32");
        // A pidfd names this very process even after the waiter thread reaps it,
        // so a late kill can never hit a new process that reused the pid.
        // SAFETY: pidfd_open takes a pid and flags, returns a descriptor or -1;
        // the child is not reaped yet (the waiter thread starts below).
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(raw >= 0, "pidfd_open {pid}: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor from the kernel, owned by nothing else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(i32::try_from(raw).expect("fd")) };
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let stderr = child.stderr.take().expect("stderr piped");
        let (line_tx, stderr_lines) = mpsc::channel();
        let stderr_all = Arc::new(Mutex::new(String::new()));
        let all = Arc::clone(&stderr_all);
        let stderr_done = thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let mut text = all.lock().expect("stderr lock");
                text.push_str(&line);
                text.push('\n');
                drop(text);
                let _ = line_tx.send(line);
            }
        });
        let (status_tx, status) = mpsc::channel();
        thread::spawn(move || {
            if let Ok(st) = child.wait() {
                let _ = status_tx.send(st);
            }
        });
        let now = Instant::now();
        let run = Running {
            name,
            pid,
            pidfd,
            started: now,
            deadline: now + limit,
            stdin,
            stdout: None,
            stderr_lines,
            stderr_all,
            stderr_done: Some(stderr_done),
            status,
            finished: false,
        };
        (run, stdout)
    }

    /// The process id.
    #[must_use]
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Everything printed on stderr so far.
    #[must_use]
    pub fn stderr_so_far(&self) -> String {
        self.stderr_all.lock().expect("stderr lock").clone()
    }

    /// Writes to the process's stdin (spawned with `Stdio::piped()`).
    pub fn write_stdin(&mut self, bytes: &[u8]) {
        let stdin = self.stdin.as_mut().expect("stdin was not piped");
        stdin.write_all(bytes).expect("write to stdin");
        stdin.flush().expect("flush stdin");
    }

    /// Writes to stdin, reporting rather than failing if the process stopped reading.
    pub fn try_write_stdin(&mut self, bytes: &[u8]) -> bool {
        let stdin = self.stdin.as_mut().expect("stdin was not piped");
        stdin.write_all(bytes).and_then(|()| stdin.flush()).is_ok()
    }

    /// Closes stdin: the process sees end of input.
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits for a line on stderr containing `needle` and returns it; fails the
    /// test if the process exits or the deadline passes first.
    pub fn wait_for(&mut self, needle: &str) -> String {
        loop {
            let left = self.deadline.saturating_duration_since(Instant::now());
            match self.stderr_lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    self.kill(libc::SIGKILL);
                    panic!(
                        "{}: no {needle:?} on stderr in time; stderr:\n{}",
                        self.name,
                        self.stderr_so_far()
                    );
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "{}: exited before printing {needle:?}; stderr:\n{}",
                        self.name,
                        self.stderr_so_far()
                    );
                }
            }
        }
    }

    /// Waits for the reader's ready line (`<bin>: ready: ...`).
    pub fn ready(&mut self) -> String {
        self.wait_for(": ready: ")
    }

    /// Sends `sig` to the process.
    pub fn kill(&self, sig: i32) {
        // SAFETY: pidfd_send_signal with our own pidfd, no siginfo (null), no flags.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                sig,
                std::ptr::null::<u8>(),
                0,
            );
        }
    }

    /// Waits for the process to exit (killing it at the deadline, which fails the
    /// test) and returns how it ended and what it printed.
    pub fn finish(mut self) -> Outcome {
        self.stdin = None;
        let left = self.deadline.saturating_duration_since(Instant::now());
        let Ok(status) = self.status.recv_timeout(left) else {
            self.kill(libc::SIGKILL);
            let _ = self.status.recv_timeout(Duration::from_secs(5));
            self.finished = true;
            panic!(
                "{}: still running after {:?}; killed. stderr:\n{}",
                self.name,
                self.deadline - self.started,
                self.stderr_so_far()
            );
        };
        self.finished = true;
        let elapsed = self.started.elapsed();
        if let Some(t) = self.stderr_done.take() {
            let _ = t.join();
        }
        let stdout = self.stdout.take().map(|t| t.join().unwrap_or_default()).unwrap_or_default();
        Outcome {
            name: self.name.clone(),
            code: status.code(),
            signal: status.signal(),
            stdout,
            stderr: self.stderr_so_far(),
            elapsed,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if !self.finished {
            // A failing test must not leave its processes (and their objects) behind.
            self.kill(libc::SIGKILL);
            let _ = self.status.recv_timeout(Duration::from_secs(5));
        }
    }
}

impl Outcome {
    /// Fails the test unless the process exited with `code`; shows its stderr.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "{} exited with {:?} (signal {:?}), expected {code}; stderr:\n{}",
            self.name,
            self.code,
            self.signal,
            self.stderr
        );
        self
    }

    /// Fails the test unless stderr contains `needle`.
    #[track_caller]
    pub fn expect_stderr(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "{}: stderr lacks {needle:?}:\n{}",
            self.name,
            self.stderr
        );
        self
    }

    /// The last summary line without a writer id (`sent|received N messages, ...`).
    #[track_caller]
    #[must_use]
    pub fn summary(&self) -> Summary {
        self.stderr
            .lines()
            .rev()
            .filter(|l| !l.contains(": writer "))
            .find_map(parse_summary)
            .unwrap_or_else(|| panic!("{}: no summary line in stderr:\n{}", self.name, self.stderr))
    }

    /// The per-writer summary line of writer `id`.
    #[track_caller]
    #[must_use]
    pub fn writer_summary(&self, id: u16) -> Summary {
        let tag = format!(": writer {id}: ");
        self.stderr.lines().filter(|l| l.contains(&tag)).find_map(parse_summary).unwrap_or_else(
            || panic!("{}: no summary for writer {id}:\n{}", self.name, self.stderr),
        )
    }

    /// Standard output as text (lossy).
    #[must_use]
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
}

/// Parses `... N messages, B bytes, digest XXXXXXXX` from a summary line.
#[must_use]
pub fn parse_summary(line: &str) -> Option<Summary> {
    let at = line.find(" messages, ")?;
    let messages = line[..at].rsplit(' ').next()?.parse().ok()?;
    let rest = &line[at + " messages, ".len()..];
    let (bytes, rest) = rest.split_once(" bytes, digest ")?;
    let digest = rest.trim();
    let bytes = bytes.parse().ok()?;
    (digest.len() == 8 && digest.bytes().all(|b| b.is_ascii_hexdigit())).then(|| Summary {
        messages,
        bytes,
        digest: digest.to_string(),
    })
}

/// Waits until `path` exists (any file type, links not followed), up to `limit`.
pub fn wait_for_path(path: &Path, limit: Duration) {
    let what = format!("{} to appear", path.display());
    wait_until(&what, limit, || fs::symlink_metadata(path).is_ok());
}

/// Polls `cond` every 2 ms until it holds; fails the test after `limit`.
/// For conditions with no event to wait on (a path, a byte count in /proc).
pub fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "waited {limit:?} for {what}");
        thread::sleep(Duration::from_millis(2));
    }
}

/// The process state letter from /proc/PID/stat: `R`, `S`, `T` (stopped)...
#[must_use]
pub fn proc_state(pid: i32) -> char {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name, which is in parentheses and may hold spaces.
    stat.rsplit_once(") ").and_then(|(_, rest)| rest.chars().next()).unwrap_or('?')
}

/// SIGSTOPs `r` and waits until the kernel shows it stopped (state `T`): a
/// frozen peer, for tests of what the other side does about it.
pub fn stop(r: &Running) {
    r.kill(libc::SIGSTOP);
    let pid = r.pid();
    wait_until("the process to stop", LIMIT, || proc_state(pid) == 'T');
}

/// Bytes process `pid` has read so far (`rchar` in /proc/PID/io): proof that a
/// stream is under way before a test injects a fault "mid-stream".
#[must_use]
pub fn bytes_read(pid: i32) -> u64 {
    let io = fs::read_to_string(format!("/proc/{pid}/io")).unwrap_or_default();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// The frame bytes of `payload` as data frame `seq` of `writer`, for hand-made streams.
#[must_use]
pub fn frame_bytes(writer: u16, seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    crate::frame::encode_into(&mut out, &crate::frame::Header::data(writer, seq, payload), payload);
    out
}

/// The end frame of `writer` after `count` data frames.
#[must_use]
pub fn end_bytes(writer: u16, count: u64) -> Vec<u8> {
    crate::frame::Header::end(writer, count).to_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_lines_parse() {
        let s =
            parse_summary("pipe-reader: received 3 messages, 12 bytes, digest 0a1b2c3d").unwrap();
        assert_eq!(s, Summary { messages: 3, bytes: 12, digest: "0a1b2c3d".into() });
        assert!(parse_summary("fifo-reader: received 8 messages, 16 bytes").is_none());
    }
}
