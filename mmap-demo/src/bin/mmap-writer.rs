//! `mmap-writer`: creates a file, maps it `MAP_SHARED`, and appends frames to it
//! as a log (or, with `--ring`, streams them through a ring in it). The file
//! stays when the writer exits: that is the point.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ mmap-writer
//! mmap-writer: ready: writing log /run/user/1000/ipc-demos/mmap.log (67108864 bytes)
//!                                               $ mmap-reader
//!                                               mmap-reader: ready: following log ...
//! hello
//!                                               hello
//! ^D
//! mmap-writer: sent 1 messages, 5 bytes, digest 3610a686
//!                                               mmap-reader: received 1 messages, 5 bytes, digest 3610a686
//! $ mmap-reader --replay                        # later: the file is still there
//! hello
//! mmap-reader: received 1 messages, 5 bytes, digest 3610a686
//! ```
//!
//! Start order: either. The writer creates the file (O_EXCL, 0600, published
//! under its name by an atomic rename) and does not wait for readers in log
//! mode; readers wait for the file. Nobody removes it: `mmap-reader --remove`
//! does, after a clean finish. Partner: `mmap-reader`. See mmap(2), msync(2),
//! fallocate(2), rename(2) on `RENAME_NOREPLACE`, futex(2).

use std::io::stdin;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use ipc_common::driver::run_writer;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, Bytes, WriterArgs};
use ipc_common::{announce_ready, ring, signals};
use mmap_demo::log::LogSink;
use mmap_demo::{
    DEFAULT_CAPACITY, HEADER_LEN, Layout, MIN_CAPACITY, create, default_path, ring_file, sigbus,
};

const BIN: &str = "mmap-writer";

ipc_common::writer_args! {
    /// Create a file, map it MAP_SHARED, and append each line of standard input
    /// (or --count generated payloads) to it as a frame, for mmap-reader to
    /// follow now or replay later. The file stays after the writer exits. In
    /// ring mode (--ring), --timeout is how long a full ring waits for a reader.
    #[argh(example = "mmap-writer\nmmap-writer --count 100000 --size 0..20000 --capacity 2G\nmmap-writer --ring 1M --count 1000000 --size 4K")]
    struct Args {
        /// the file to create (default: <private dir>/mmap.log)
        #[argh(option)]
        path: Option<PathBuf>,
        /// log size in bytes of frames, reserved with fallocate (default 64M)
        #[argh(option, arg_name = "BYTES")]
        capacity: Option<Bytes>,
        /// stream through a ring of BYTES instead of a log: unbounded, read once
        #[argh(option, arg_name = "BYTES")]
        ring: Option<Bytes>,
        /// msync each frame, then the committed length, before going on (log only)
        #[argh(switch)]
        sync: bool,
        /// replace a leftover file of ours at the path (not one in use)
        #[argh(switch)]
        force: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

/// The layout and data bytes the options ask for.
fn layout(args: &Args) -> Result<(Layout, usize)> {
    let (layout, bytes) = match (args.ring, args.capacity) {
        (Some(_), Some(_)) => {
            return Err(Error::usage("--ring and --capacity: a ring has no log capacity"));
        }
        (Some(_), None) if args.sync => {
            return Err(Error::usage("--sync makes a log durable; a ring keeps nothing to replay"));
        }
        (Some(Bytes(ring)), None) => (Layout::Ring, ring),
        (None, capacity) => (Layout::Log, capacity.map_or(DEFAULT_CAPACITY, |Bytes(b)| b)),
    };
    let flag = if layout == Layout::Ring { "--ring" } else { "--capacity" };
    if bytes < MIN_CAPACITY {
        return Err(Error::usage(format!("{flag} {bytes}: at least {MIN_CAPACITY} bytes")));
    }
    // A ring's data area also holds its control block; records are 8-byte multiples.
    let data = match layout {
        Layout::Ring => {
            bytes.checked_next_multiple_of(8).and_then(|b| b.checked_add(ring::CONTROL_LEN))
        }
        Layout::Log => Some(bytes),
    };
    // The whole file, header included, must fit in an address space (and in off_t).
    match data.filter(|d| d.checked_add(HEADER_LEN).is_some_and(|t| isize::try_from(t).is_ok())) {
        Some(data) => Ok((layout, data)),
        None => Err(Error::usage(format!("{flag} {bytes}: too large to map"))),
    }
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    let (layout, bytes) = layout(args)?;
    signals::install()?;
    sigbus::install()?;

    // 1. Create the file: O_EXCL 0600, fallocate, mmap MAP_SHARED, header, rename.
    let path = match &args.path {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let file = create(&path, layout, bytes, args.force)?;
    announce_ready(
        BIN,
        format_args!("writing {} {} ({} bytes)", layout.name(), path.display(), file.capacity()),
    );

    // 2. Append frames (log) or stream them through the ring, then the end frame.
    let result = match layout {
        Layout::Log => {
            let mut sink = LogSink::new(&file, args.sync);
            run_writer(BIN, &mut sink, &opts, stdin().as_fd()).map(drop)
        }
        Layout::Ring => {
            let mut sink = ring_file::producer(&file, common.timeout())?;
            run_writer(BIN, &mut sink, &opts, stdin().as_fd())
                .and_then(|_| ring_file::close(&file, &mut sink))
        }
    };
    // 3. Unmap and close (`file` drops); the file stays for readers, now or later.
    result.map_err(|err| file.explain(err))
}
