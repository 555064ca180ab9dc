//! `mmap-reader`: maps the file an `mmap-writer` made and reads its frames in
//! place: following the writer as it appends, or (`--replay`) reading a
//! finished — or crashed — writer's file again, long after it exited.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ mmap-reader
//! mmap-reader: waiting for /run/user/1000/ipc-demos/mmap.log (mmap-writer creates it)
//!                                               $ mmap-writer --count 1000 --size 0..4K
//! mmap-reader: ready: following log /run/user/1000/ipc-demos/mmap.log (writer pid 4242, ...)
//!                                               mmap-writer: sent 1000 messages, 2072788 bytes, digest f0c20869
//! mmap-reader: received 1000 messages, 2072788 bytes, digest f0c20869
//! $ mmap-reader --replay --count 1000 --remove  # the file outlived both; read it again, then delete it
//! mmap-reader: received 1000 messages, 2072788 bytes, digest f0c20869
//! ```
//!
//! Start order: either; the roles of the other pairs are swapped — the writer
//! creates the file, and the reader waits for it (`--timeout`, default
//! forever). A writer that dies mid-stream is noticed within a tick, by the
//! lock it held on the file (exit 3); a file truncated under the mapping is
//! exit 1, never a SIGBUS crash. The file stays unless `--remove` is given.
//! Partner: `mmap-writer`. See mmap(2), futex(2), fstat(2), fcntl(2) on
//! open file description locks.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_common::driver::{ReaderOpts, run_reader};
use ipc_common::error::{Error, Exit, Result};
use ipc_common::opts::{self, ReaderArgs};
use ipc_common::{announce_ready, say, signals};
use mmap_demo::{
    Access, Layout, MECH, MappedFile, default_path, log, open_file, ring_file, sigbus,
};

const BIN: &str = "mmap-reader";

ipc_common::reader_args! {
    /// Map the file mmap-writer made, check every frame in place, print text
    /// messages: following the writer, or with --replay reading the file again
    /// after the writer has gone. Waits for the file to appear (--timeout).
    #[argh(example = "mmap-reader\nmmap-reader --count 100000\nmmap-reader --path /tmp/app.log --replay --remove")]
    struct Args {
        /// the file to read (default: <private dir>/mmap.log)
        #[argh(option)]
        path: Option<PathBuf>,
        /// read the log once, read-only, up to its committed length, without
        /// waiting: exit 0 if its writer finished it, 3 if not
        #[argh(switch)]
        replay: bool,
        /// delete the file after a clean finish (it is kept by default)
        #[argh(switch)]
        remove: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.reader_opts()?;
    if opts.writers != 1 {
        return Err(Error::usage("--writers: a mapped file has exactly one writer"));
    }
    signals::install()?;
    sigbus::install()?;

    // 1. Wait for the file, check it (lstat, O_NOFOLLOW, fstat, magic, version, size), map it.
    let path = match &args.path {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let access = if args.replay { Access::Replay } else { Access::Follow };
    let file = open_file(&path, access, common.timeout(), || {
        say!("{BIN}: waiting for {} (mmap-writer creates it)", path.display());
    })?;
    if file.layout() == Layout::Ring && args.replay {
        return Err(Error::usage(format!(
            "{} holds a ring (mmap-writer --ring): it keeps only unread frames, so there is nothing to replay",
            path.display()
        )));
    }
    if file.layout() == Layout::Ring {
        // A ring has one reader: claim it (its lock, then our pid) before saying we are ready.
        ring_file::claim(&file)?;
    }
    let verb = if args.replay { "replaying" } else { "following" };
    let pid = file.identity().writer_pid;
    let state = match file.layout() {
        Layout::Log => {
            let words = &file.words().log.0;
            // closed first: set, it means the committed we load next covers the end frame.
            let closed = words.closed.load(Ordering::Acquire) != 0;
            format!(
                "{} of {} bytes committed{}",
                words.committed.load(Ordering::Acquire),
                file.capacity(),
                if closed { ", closed" } else { "" }
            )
        }
        Layout::Ring => format!("{} bytes", file.capacity()),
    };
    let layout = file.layout().name();
    announce_ready(
        BIN,
        format_args!("{verb} {layout} {} (writer pid {pid}, {state})", path.display()),
    );

    // 2. Read frames in place until the end frame (text: each copied once, then
    //    checked and printed — see sigbus::Guarded).
    let result = match file.layout() {
        Layout::Log => read_log(&file, args.replay, &opts, common.timeout()),
        Layout::Ring => ring_file::consumer_within(&file, opts.max_frame, common.timeout())
            .and_then(|source| {
                run_reader(BIN, MECH, &mut source.copying(opts.print), &opts).map(drop)
            }),
    };
    result.map_err(|err| file.explain(err))?;

    // 3. Unmap and close; the file stays unless --remove.
    if args.remove && file.remove() {
        say!("{BIN}: removed {}", path.display());
    }
    Ok(())
}

fn read_log(
    file: &MappedFile,
    replay: bool,
    opts: &ReaderOpts,
    stall: Option<Duration>,
) -> Result<()> {
    let source = if replay {
        log::replay(file, opts.max_frame)?
    } else {
        log::follow_within(file, opts.max_frame, stall)
    };
    let mut source = source.copying(opts.print);
    let result = run_reader(BIN, MECH, &mut source, opts);
    if let Err(err) = &result {
        if err.exit() == Exit::PeerLost {
            // What the file does hold: every frame up to the last complete one.
            let log = source.inner();
            match log.last_frame() {
                Some((seq, end)) => say!(
                    "{BIN}: last complete frame: seq {seq}, ending at byte {end} of {} committed",
                    log.committed()
                ),
                None => say!("{BIN}: no complete frame in the log"),
            }
        }
    }
    result.map(drop)
}
