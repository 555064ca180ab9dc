//! ipc-faults: the workspace's faults, hostile input and load, proven across
//! every mechanism at once (issue 9). The tests in `tests/` start the real
//! writer and reader binaries in pairs, the way a user does; this library is
//! the catalogue they share: which binaries make up each pair, with which
//! arguments, and how a pair is started.
//!
//! [`model`] is the exception: an exhaustive model checker for the shared-memory
//! ring's wake-up protocol (`tests/ring_model.rs`), which no pair of processes
//! can prove by running.
//!
//! Each mechanism crate tests its own faults; here the same faults are run over
//! the whole catalogue, so a mechanism added later is covered by adding a row.

#![allow(clippy::missing_panics_doc)]

use std::fs;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use ipc_common::testkit::{Running, TestDir};

pub mod model;
pub mod oracle;
pub mod rng;
pub mod soak;

/// How the two sides of a pair find each other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meet {
    /// An anonymous pipe: the writer's stdout is the reader's stdin.
    Pipe,
    /// The reader creates the object and says `ready:`; the writer opens it.
    ReaderFirst,
    /// TCP: as `ReaderFirst`, and the writer is given the port the reader's
    /// ready line names (`--addr`).
    Tcp,
    /// The mmap log: the writer creates the file; the reader waits for it
    /// (started first, it says `ready:` once it follows the writer).
    WriterCreates,
}

/// One row of the catalogue: a mechanism (and API) as its two binaries.
#[derive(Debug, Clone, Copy)]
pub struct Mechanism {
    /// The name in tables: `mq posix`, `unix-dgram`...
    pub name: &'static str,
    /// The writer binary.
    pub writer: &'static str,
    /// The reader binary.
    pub reader: &'static str,
    /// Arguments both sides take (`--api sysv`, `--transport tcp`).
    pub both: &'static [&'static str],
    /// Arguments only the writer takes (`--ring 256K`).
    pub writer_only: &'static [&'static str],
    /// Arguments only the reader takes (`--lock sysv`, `--remove`).
    pub reader_only: &'static [&'static str],
    /// How the two sides meet.
    pub meet: Meet,
}

const fn row(
    name: &'static str,
    writer: &'static str,
    reader: &'static str,
    both: &'static [&'static str],
    meet: Meet,
) -> Mechanism {
    Mechanism { name, writer, reader, both, writer_only: &[], reader_only: &[], meet }
}

/// Every mechanism and API in the workspace.
pub const MECHANISMS: &[Mechanism] = &[
    row("pipe", "pipe-writer", "pipe-reader", &[], Meet::Pipe),
    row("fifo", "fifo-writer", "fifo-reader", &[], Meet::ReaderFirst),
    row("mq posix", "mq-writer", "mq-reader", &["--api", "posix"], Meet::ReaderFirst),
    row("mq sysv", "mq-writer", "mq-reader", &["--api", "sysv"], Meet::ReaderFirst),
    row("shm posix", "shm-writer", "shm-reader", &["--api", "posix"], Meet::ReaderFirst),
    row("shm sysv", "shm-writer", "shm-reader", &["--api", "sysv"], Meet::ReaderFirst),
    row("sem posix", "sem-writer", "sem-reader", &[], Meet::ReaderFirst),
    Mechanism {
        reader_only: &["--lock", "sysv"],
        ..row("sem sysv", "sem-writer", "sem-reader", &[], Meet::ReaderFirst)
    },
    Mechanism {
        reader_only: &["--remove"],
        ..row("mmap log", "mmap-writer", "mmap-reader", &[], Meet::WriterCreates)
    },
    Mechanism {
        writer_only: &["--ring", "256K"],
        reader_only: &["--remove"],
        ..row("mmap ring", "mmap-writer", "mmap-reader", &[], Meet::WriterCreates)
    },
    row("unix", "socket-writer", "socket-reader", &["--transport", "unix"], Meet::ReaderFirst),
    row(
        "unix-dgram",
        "socket-writer",
        "socket-reader",
        &["--transport", "unix-dgram"],
        Meet::ReaderFirst,
    ),
    row("tcp", "socket-writer", "socket-reader", &["--transport", "tcp"], Meet::Tcp),
];

/// The catalogue row called `name`.
#[must_use]
pub fn mechanism(name: &str) -> &'static Mechanism {
    MECHANISMS.iter().find(|m| m.name == name).unwrap_or_else(|| panic!("no mechanism {name}"))
}

/// The path of a workspace binary: next to the running executable (a binary
/// such as `ipc-soak`, in `target/<profile>`), or next to the test executable's
/// directory (`target/<profile>/deps/..`). `cargo test --workspace` builds them all.
#[must_use]
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let beside = exe.parent().map(|d| d.join(name)).filter(|p| p.is_file());
    let dir = exe.parent().and_then(|d| d.parent()).expect("target/<profile>");
    let path = beside.unwrap_or_else(|| dir.join(name));
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --release --workspace)",
        path.display()
    );
    path
}

/// A pair that is running: the reader and the writer.
#[derive(Debug)]
pub struct Pair {
    /// The reader (started first).
    pub reader: Running,
    /// The writer.
    pub writer: Running,
}

impl Mechanism {
    /// The reader's command (not started): `XDG_RUNTIME_DIR` and name prefix
    /// from `dir`, the row's arguments, then `extra`.
    #[must_use]
    pub fn reader_command(&self, dir: &TestDir, extra: &[&str]) -> Command {
        let mut cmd = dir.command(bin(self.reader).to_str().expect("utf-8 path"));
        cmd.args(self.both).args(self.reader_only).args(extra);
        cmd
    }

    /// The writer's command (not started), as [`Mechanism::reader_command`].
    #[must_use]
    pub fn writer_command(&self, dir: &TestDir, extra: &[&str]) -> Command {
        let mut cmd = dir.command(bin(self.writer).to_str().expect("utf-8 path"));
        cmd.args(self.both).args(self.writer_only).args(extra);
        cmd
    }

    /// Starts the pair the way a user does in two terminals: the reader first,
    /// then (once it is ready, where it says so before the writer comes) the
    /// writer. Both are killed if still running after `limit`.
    #[must_use]
    pub fn start(
        &self,
        dir: &TestDir,
        writer_args: &[&str],
        reader_args: &[&str],
        limit: Duration,
    ) -> Pair {
        match self.meet {
            Meet::Pipe => {
                let (writer, stdin) =
                    Running::spawn_upstream(&mut self.writer_command(dir, writer_args), limit);
                let reader =
                    Running::spawn(self.reader_command(dir, reader_args).stdin(stdin), limit);
                Pair { reader, writer }
            }
            Meet::ReaderFirst => {
                let mut reader = Running::spawn(
                    self.reader_command(dir, reader_args).stdin(Stdio::null()),
                    limit,
                );
                reader.ready();
                let writer = Running::spawn(
                    self.writer_command(dir, writer_args).stdin(Stdio::null()),
                    limit,
                );
                Pair { reader, writer }
            }
            Meet::Tcp => {
                let mut reader = Running::spawn(
                    self.reader_command(dir, reader_args).stdin(Stdio::null()),
                    limit,
                );
                let line = reader.ready();
                let addr = line.rsplit(' ').next().expect("address on the ready line").to_string();
                let mut cmd = self.writer_command(dir, writer_args);
                let writer =
                    Running::spawn(cmd.arg("--addr").arg(addr).stdin(Stdio::null()), limit);
                Pair { reader, writer }
            }
            Meet::WriterCreates => {
                let reader = Running::spawn(
                    self.reader_command(dir, reader_args).stdin(Stdio::null()),
                    limit,
                );
                let writer = Running::spawn(
                    self.writer_command(dir, writer_args).stdin(Stdio::null()),
                    limit,
                );
                Pair { reader, writer }
            }
        }
    }
}

/// A pidfd of our own on `pid` (a child not yet reaped), to poll for its exit
/// or signal it without ever reaching a later process that reuses the pid.
#[must_use]
pub fn pidfd(pid: i32) -> OwnedFd {
    // SAFETY: pidfd_open takes a pid and flags and returns a descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(raw >= 0, "pidfd_open {pid}: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor from the kernel, owned by nothing else.
    unsafe { OwnedFd::from_raw_fd(i32::try_from(raw).expect("fd")) }
}

/// Runs `work` on every item, `workers` at a time (each case is a pair of
/// processes: more at once would only fight over the two CPUs), and returns
/// the results in the items' order. `work` gets each item's index too.
pub fn in_parallel<T: Send, R: Send>(
    items: Vec<T>,
    workers: usize,
    work: impl Fn(usize, T) -> R + Sync,
) -> Vec<R> {
    let queue = std::sync::Mutex::new(items.into_iter().enumerate());
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let next = queue.lock().expect("queue").next();
                    let Some((i, item)) = next else { break };
                    let result = work(i, item);
                    results.lock().expect("results").push((i, result));
                }
            });
        }
    });
    let mut results = results.into_inner().expect("results");
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Waits up to `limit` for the process behind `fd` (a pidfd) to exit; `true` if it did.
#[must_use]
pub fn exited_within(fd: &OwnedFd, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(n) if n > 0 => return true,
            Ok(_) if left.is_zero() => return false,
            _ => {}
        }
    }
}

/// User plus system CPU time of `pid`, in clock ticks (0 once it is gone).
#[must_use]
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some((_, rest)) = stat.rsplit_once(") ") else { return 0 };
    // After the command: state is field 3, utime 14, stime 15 (1-based).
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| f.get(i).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
    num(11) + num(12)
}
