//! `shm-reader`: creates a shared memory segment — POSIX or System V — with a
//! ring of frames in it, and reads what one writer puts there, checking each
//! frame in place.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ shm-reader
//! shm-reader: ready: POSIX shm /ipc-demos.1000.shm (a ring of 1048576 bytes; one writer)
//!                                               $ shm-writer --count 100000 --size 64K
//!                                               shm-writer: sent 100000 messages, 6553600000 bytes, digest ...
//! shm-reader: received 100000 messages, 6553600000 bytes, digest ...
//! ```
//!
//! Start the reader first: it creates the segment (mode 0600, exclusively); the
//! writer, once attached, removes its name, so the memory goes with the last
//! process, however both end. One writer per segment (single producer, single
//! consumer). Partner: `shm-writer`. See `shm_overview(7)`, `shmget(2)`.

use std::process::ExitCode;

use ipc_common::driver::run_reader;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, Bytes, ReaderArgs};
use ipc_common::paths::check_posix_name;
use ipc_common::{announce_ready, signals};
use shm_demo::{Api, DEFAULT_RING, create_posix, create_sysv, default_name};

const BIN: &str = "shm-reader";

ipc_common::reader_args! {
    /// Create a shared memory segment with a ring of frames, read and check what
    /// one writer puts there (single producer, single consumer), and remove the
    /// segment when done.
    #[argh(example = "shm-reader\nshm-reader --api sysv --ring 4M --count 200000\nshm-reader --spin 2000")]
    struct Args {
        /// posix (default) or sysv
        #[argh(option, default = "Api::Posix")]
        api: Api,
        /// posix: the segment's name (default /ipc-demos.<uid>.shm)
        #[argh(option)]
        name: Option<String>,
        /// bytes of frames the ring holds (default 1M); the largest frame it takes
        #[argh(option, arg_name = "BYTES")]
        ring: Option<Bytes>,
        /// spin this many times before sleeping when the ring is empty: less latency, more CPU
        #[argh(option, default = "0", arg_name = "N")]
        spin: u32,
        /// remove a stale segment of ours left by a reader that was killed
        #[argh(switch)]
        force: bool,
        /// keep the name: the writer leaves it and so do we (no crash-safe cleanup)
        #[argh(switch)]
        keep: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.reader_opts()?;
    if opts.writers != 1 {
        return Err(Error::usage(format!(
            "--writers {}: a segment here carries one writer (single producer, single consumer); start one shm-reader per writer",
            opts.writers
        )));
    }
    let ring = args.ring.map_or(DEFAULT_RING, |Bytes(b)| b);
    if ring < 4096 || ring % 8 != 0 {
        return Err(Error::usage(format!("--ring {ring}: at least 4096 bytes, a multiple of 8")));
    }
    match (args.api, &args.name) {
        (Api::Sysv, Some(_)) => {
            return Err(Error::usage("--name is for --api posix (sysv keys come from ftok)"));
        }
        (Api::Posix, Some(name)) => check_posix_name("--name", name)?,
        _ => {}
    }
    signals::install()?;

    // 1. Create the segment, its semaphores and its ring.
    let seg = match args.api {
        Api::Posix => create_posix(
            &args.name.clone().unwrap_or_else(default_name),
            ring,
            args.keep,
            args.force,
        )?,
        Api::Sysv => create_sysv(ring, args.keep, args.force)?,
    };
    announce_ready(
        BIN,
        format_args!("{} (a ring of {} bytes; one writer)", seg.what(), seg.ring_capacity()),
    );
    // 2. Read frames in place until the end frame; the writer is watched by its pid.
    let slot = seg.writer_slot(common.timeout());
    // --timeout: for the first writer, then for a stall mid-stream (a frozen writer).
    let mut source = seg.consumer(slot, args.spin, opts.max_frame)?.with_stall(common.timeout());
    let mech = match args.api {
        Api::Posix => "posix shm",
        Api::Sysv => "sysv shm",
    };
    run_reader(BIN, mech, &mut source, &opts)?;
    // 3. Dropping the segment removes whatever name is left, and the memory goes
    //    with our mapping.
    Ok(())
}
