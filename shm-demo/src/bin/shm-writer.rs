//! `shm-writer`: attaches to the segment a `shm-reader` made and puts frames
//! into its ring — one copy per frame, no system call per frame while the
//! reader keeps up.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ shm-reader --api sysv
//! shm-reader: ready: System V segment key 0x48000123 id 98310 (a ring of 1048576 bytes; one writer)
//!                                               $ shm-writer --api sysv --count 1000
//! ```
//!
//! The reader creates the segment; a writer started first waits up to
//! `--timeout`. Once attached, the writer removes the segment's name: both
//! sides hold it, and a crash of both leaves nothing. One writer per segment:
//! a second one is refused. Partner: `shm-reader`. See `shm_open(3)`, `shmat(2)`.

use std::io::stdin;
use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_common::driver::run_writer;
use ipc_common::error::{Error, Result};
use ipc_common::frame::HEADER_LEN;
use ipc_common::opts::{self, WriterArgs};
use ipc_common::paths::check_posix_name;
use ipc_common::signals;
use shm_demo::{Api, default_name, open_posix, open_sysv};

const BIN: &str = "shm-writer";

ipc_common::writer_args! {
    /// Attach to the shared memory segment an shm-reader made and put each line
    /// of standard input (or --count generated payloads) into its ring as a
    /// frame. One writer per segment.
    #[argh(example = "shm-writer\nshm-writer --count 100000 --size 64K\nshm-writer --api sysv --count 1000 --spin 2000")]
    struct Args {
        /// posix (default) or sysv
        #[argh(option, default = "Api::Posix")]
        api: Api,
        /// posix: the segment's name (default /ipc-demos.<uid>.shm)
        #[argh(option)]
        name: Option<String>,
        /// spin this many times before sleeping when the ring is full: less latency, more CPU
        #[argh(option, default = "0", arg_name = "N")]
        spin: u32,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    match (args.api, &args.name) {
        (Api::Sysv, Some(_)) => {
            return Err(Error::usage("--name is for --api posix (sysv keys come from ftok)"));
        }
        (Api::Posix, Some(name)) => check_posix_name("--name", name)?,
        _ => {}
    }
    signals::install()?;

    // 1. Attach: open, check magic/version/size, wait for ready, claim the writer
    //    slot, remove the name.
    let seg = match args.api {
        Api::Posix => {
            open_posix(&args.name.clone().unwrap_or_else(default_name), common.timeout())?
        }
        Api::Sysv => open_sysv(common.timeout())?,
    };
    // 2. Refuse frames the ring cannot hold, before sending any.
    let largest = HEADER_LEN + opts.size.max;
    if opts.count.is_some() && largest > seg.ring_capacity() {
        return Err(Error::usage(format!(
            "--size {}: a frame of {largest} bytes is larger than the ring ({} bytes; shm-reader --ring sets it)",
            opts.size,
            seg.ring_capacity()
        )));
    }
    // 3. Frames into the ring, the end frame, then the closed flag.
    // --timeout also bounds how long the ring may stay full (a frozen reader).
    let mut sink = seg.producer(args.spin)?.with_stall(common.timeout());
    run_writer(BIN, &mut sink, &opts, stdin().as_fd())?;
    sink.close()
}
