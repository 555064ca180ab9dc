//! Private names for one bench run, so it never meets a user's running pairs.
//!
//! Every mechanism finds its objects the way its binaries do by default: the
//! private directory `$XDG_RUNTIME_DIR/ipc-demos` and POSIX names
//! `/<prefix>.<uid>.<mech>` with the prefix from `$IPC_DEMOS_PREFIX`. The
//! bench points both at names of its own — a fresh directory (on a tmpfs, as
//! `XDG_RUNTIME_DIR` normally is, so a mapped file is memory, not disk) and
//! the prefix `ipc-bench.<pid>.<side>` — in two copies:
//!
//! | side | holds the objects read by | used for |
//! |---|---|---|
//! | `p` | the parent | throughput runs; latency replies |
//! | `c` | the child | latency requests |
//!
//! A latency run needs two channels of one kind at once (two FIFOs, two
//! queues, two segments), and some crates keep one object per private
//! directory (`shm-demo`'s System V segment has a single lock file); two
//! namespaces give each channel the default names, as two pairs in two
//! sandboxes would have them.
//!
//! The environment is changed only while the bench is single-threaded (it
//! checks, [`crate::pair::single_threaded`]): `setenv` is unsound only when
//! another thread may read the environment at the same time.

use std::path::{Path, PathBuf};

use ipc_common::clean::{Leftover, scan_with};
use ipc_common::error::{Context, Error, Result};
use ipc_common::paths::{self, DIR_NAME, PREFIX_ENV};
use nix::errno::Errno;
use nix::sys::signal::kill;
use nix::sys::stat::{Mode, SFlag, lstat};
use nix::unistd::{Pid, mkdir};

/// Which process reads a channel's objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The bench process itself: every throughput reader, the latency client's replies.
    Parent,
    /// The forked child: the latency echo side's requests.
    Child,
}

impl Side {
    fn tag(self) -> &'static str {
        match self {
            Side::Parent => "p",
            Side::Child => "c",
        }
    }
}

/// The run's private root directory and its two namespaces.
#[derive(Debug)]
pub struct Namespaces {
    root: PathBuf,
    pid: u32,
}

/// Where the root goes: the user's runtime directory, else `/dev/shm`, else `$TMPDIR`.
fn base() -> PathBuf {
    if let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from) {
        if dir.is_absolute() && dir.is_dir() {
            return dir;
        }
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() }
}

impl Namespaces {
    /// Removes what benches killed with SIGKILL left: a root `ipc-bench.<pid>`
    /// of ours whose process is gone, and every object its namespaces name
    /// (found as `ipc-clean` finds them: the System V keys come from its files).
    /// Says what it removed.
    pub fn remove_stale(bin: &str) -> Result<()> {
        let base = base();
        let Ok(entries) = std::fs::read_dir(&base) else { return Ok(()) };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(pid) = name.to_str().and_then(|n| n.strip_prefix("ipc-bench.")) else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else { continue };
            let root = entry.path();
            let ours = lstat(&root).is_ok_and(|st| {
                st.st_uid == paths::uid() && paths::file_kind(&st) == SFlag::S_IFDIR
            });
            // kill(pid, 0): ESRCH means no such process (a zombie still counts).
            let gone =
                kill(Pid::from_raw(i32::try_from(pid).unwrap_or(0)), None) == Err(Errno::ESRCH);
            if !ours || !gone || pid == std::process::id() {
                continue;
            }
            let stale = Namespaces { root, pid };
            let left: Vec<String> =
                stale.leftovers()?.iter().map(|l| format!("{} {}", l.kind, l.name)).collect();
            ipc_common::say!(
                "{bin}: removing what a killed ipc-bench (pid {pid}) left in {}: {}",
                stale.root.display(),
                if left.is_empty() { "an empty directory".into() } else { left.join(", ") }
            );
            // Its leftovers are expected: only the removal itself may fail.
            if let Err(e) = stale.remove() {
                if e.message().starts_with("rm -r") {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Creates `<base>/ipc-bench.<pid>` (0700) with a directory per side, and
    /// enters the parent's namespace.
    pub fn create() -> Result<Self> {
        let pid = std::process::id();
        let root = base().join(format!("ipc-bench.{pid}"));
        // mkdir 0700: a fresh directory of ours; an existing one is refused
        // (EEXIST), never shared with whoever made it.
        mkdir(&root, Mode::S_IRWXU)
            .context(|| format!("mkdir {}", root.display()))
            .map_err(|e| e.hint("a bench with this pid left it: remove it"))?;
        let ns = Namespaces { root, pid };
        for side in [Side::Parent, Side::Child] {
            let dir = ns.runtime_dir(side);
            match mkdir(&dir, Mode::S_IRWXU) {
                Ok(()) | Err(Errno::EEXIST) => {}
                Err(e) => return Err(Error::errno(format!("mkdir {}", dir.display()), e)),
            }
        }
        ns.enter(Side::Parent)?;
        Ok(ns)
    }

    fn runtime_dir(&self, side: Side) -> PathBuf {
        self.root.join(side.tag())
    }

    fn prefix(&self, side: Side) -> String {
        format!("ipc-bench.{}.{}", self.pid, side.tag())
    }

    /// Points `XDG_RUNTIME_DIR` and `IPC_DEMOS_PREFIX` at `side`'s names:
    /// whatever the mechanism crates create or open next is found there.
    pub fn enter(&self, side: Side) -> Result<()> {
        crate::pair::single_threaded()?;
        // SAFETY: this process has one thread (checked just above), so nothing
        // reads the environment while it changes; the bench never starts a
        // thread (its progress bar is drawn without a ticker).
        unsafe {
            std::env::set_var("XDG_RUNTIME_DIR", self.runtime_dir(side));
            std::env::set_var(PREFIX_ENV, self.prefix(side));
        }
        Ok(())
    }

    /// Everything of ours still there, in both namespaces (what `ipc-clean` would list).
    pub fn leftovers(&self) -> Result<Vec<Leftover>> {
        let mut found = Vec::new();
        for side in [Side::Parent, Side::Child] {
            let dir = self.runtime_dir(side).join(DIR_NAME);
            found.extend(scan_with(&dir, &self.prefix(side))?);
        }
        Ok(found)
    }

    /// Removes whatever is left (listing it first as an error, if anything
    /// was: every object should have been removed by its owner), then the root.
    pub fn remove(self) -> Result<()> {
        let left = self.leftovers()?;
        for l in &left {
            let _ = l.remove();
        }
        std::fs::remove_dir_all(&self.root).context(|| format!("rm -r {}", self.root.display()))?;
        if left.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = left.iter().map(|l| format!("{} {}", l.kind, l.name)).collect();
        Err(Error::system(format!(
            "objects were left behind by a mechanism's owner (removed now): {}",
            names.join(", ")
        )))
    }
}
