//! ipc-faults: the workspace's faults, hostile input and load, proven across
//! every mechanism at once (issue 9). The tests in `tests/` start the real
//! writer and reader binaries in pairs, the way a user does; this library is
//! the catalogue they share: which binaries make up each pair, with which
//! arguments, and how a pair is started.
//!
//! Each mechanism crate tests its own faults; here the same faults are run over
//! the whole catalogue, so a mechanism added later is covered by adding a row.

#![allow(clippy::missing_panics_doc)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use ipc_common::testkit::{Running, TestDir};

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
