//! Message queues: a kernel-kept list of messages that several writers feed
//! and one reader drains, in both standards Linux offers.
//!
//! A message queue keeps message boundaries (one `send` is one `receive`), lives
//! in the kernel independently of any process (it outlives them all until
//! removed), and is found by name (POSIX, `/name`) or by key (System V, a
//! number `ftok` derives from a file). Both carry one frame per message here.
//!
//! | | POSIX ([`posix`]) | System V ([`sysv`]) |
//! |---|---|---|
//! | name | `/ipc-demos.<uid>.mq` | key = `ftok(<private dir>/mq-sysv.reader.lock, 'M')` |
//! | create | `mq_open(O_CREAT\|O_EXCL, 0600, attr)` | `msgget(key, IPC_CREAT\|IPC_EXCL\|0600)` |
//! | order | by priority, FIFO within one (`--priority`) | FIFO, or selected by type (`--type`) |
//! | wait | `poll` on the descriptor, or `mq_timedreceive` | `msgrcv`, woken by a SIGALRM tick |
//! | limits | `/proc/sys/fs/mqueue/{msg_max,msgsize_max}` | `/proc/sys/kernel/{msgmax,msgmnb}` |
//! | remove | `mq_unlink` | `msgctl(IPC_RMID)` |
//!
//! # Lifecycle
//! 1. the reader claims the reader lock file (see [`ipc_common::liveness`]),
//!    checks the limits, and creates the queue exclusively, mode 0600;
//! 2. each writer waits until the queue exists and a reader holds it, takes a
//!    writers lock, and sends frames, each one message;
//! 3. the reader receives, checks each frame, and ends after `--writers` end frames;
//! 4. the reader removes the queue and its lock files.
//!
//! # Cleanup
//! The reader owns the queue and removes it on every exit path it controls. A
//! queue is a kernel object: after SIGKILL it stays, messages and all, until
//! someone removes it. The next reader finds it (creation with `O_EXCL` /
//! `IPC_EXCL` fails), sees that the reader lock is free, calls it stale, and
//! names the command that removes it (`--force` does it); `ipc-clean` lists it.
//!
//! # Pitfalls
//! - Peers do not see each other go: a queue has no end of file. Each side
//!   checks the other's lock file on every idle tick (~100 ms), so a killed
//!   writer or reader is noticed within a second.
//! - Limits are small by default (10 messages of 8 KiB for POSIX; 16 KiB in all
//!   for System V). Asking for more than `/proc` allows fails; the error names
//!   the file and the value to write.
//! - A message longer than the reader's buffer is never silently cut: POSIX
//!   refuses it at send time (`EMSGSIZE`), System V at receive time (`E2BIG`,
//!   as this code never passes `MSG_NOERROR`).

pub mod posix;
pub mod sysv;

use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::HEADER_LEN;
use ipc_common::payload::SizeSpec;

/// The mechanism's name in messages.
pub const MECH: &str = "mq";

/// Which standard's queue: [`Api::Posix`] is `mq_open` and friends ([`posix`]),
/// [`Api::Sysv`] is `msgget` and friends ([`sysv`]).
pub use ipc_common::opts::Api;

/// Both readers' `end_reason`: a queue has no end of file, so a writer's
/// stream ends when its lock is free and the queue is drained.
const END_REASON: &str = "no writer holds the queue any more, and its end frame never came";

/// Reads a number from a `/proc/sys` file.
pub fn read_limit(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).context(|| format!("read {path}"))?;
    text.trim()
        .parse()
        .map_err(|_| Error::system(format!("{path}: not a number: {:?}", text.trim())))
}

/// Refuses `wanted` above the limit in `path`, naming the file and the
/// `sysctl` that raises it (exit 1).
pub fn check_limit(what: &str, wanted: u64, path: &str, sysctl: &str) -> Result<u64> {
    let limit = read_limit(path)?;
    if wanted > limit {
        return Err(Error::system(format!("{what} {wanted} is above {path} ({limit})"))
            .hint(format!("raise it: sysctl {sysctl}={wanted}")));
    }
    Ok(limit)
}

/// The message size a reader needs for `--size`: header plus the largest payload.
#[must_use]
pub fn message_size(size: SizeSpec) -> u64 {
    (HEADER_LEN + size.max) as u64
}

/// Refuses (exit 2) a writer whose frames cannot fit the queue's messages,
/// before it sends anything: a queue never truncates silently here.
pub fn check_frames_fit(size: SizeSpec, msgsize: u64, set_by: &str) -> Result<()> {
    let frame = message_size(size);
    if frame > msgsize {
        return Err(Error::usage(format!(
            "--size {size}: a frame of {frame} bytes does not fit the queue's messages of {msgsize} \
             bytes (payloads up to {} fit; {set_by})",
            msgsize.saturating_sub(HEADER_LEN as u64)
        )));
    }
    Ok(())
}
