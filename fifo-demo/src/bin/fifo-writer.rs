//! `fifo-writer`: opens a FIFO made by `fifo-reader` and writes frames into it;
//! several writers may share one FIFO.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ fifo-reader --writers 2
//! fifo-reader: ready: reading FIFO /run/user/1000/ipc-demos/fifo
//!                                               $ fifo-writer --id 1 --count 1000 &
//!                                               $ fifo-writer --id 2 --count 1000
//! fifo-reader: writer 1: received 1000 messages, 64000 bytes, digest ...
//! fifo-reader: writer 2: received 1000 messages, 64000 bytes, digest ...
//! fifo-reader: received 2000 messages, 128000 bytes
//! ```
//!
//! The reader creates and removes the FIFO; a writer started first waits up to
//! `--timeout` for it. Whole frames go out in writes of at most `PIPE_BUF`
//! (4096) bytes, which the kernel keeps whole, so frames of concurrent writers
//! never mix; a larger frame, written alone, may, and the writer says so.
//! Partner: `fifo-reader`. See fifo(7), pipe(7) on PIPE_BUF.

use std::io::stdin;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use fifo_demo::{FifoSink, default_path, open_writer, set_pipe_size};
use ipc_common::driver::run_writer;
use ipc_common::error::Result;
use ipc_common::opts::{self, Bytes, WriterArgs};
use ipc_common::signals;
use ipc_common::stream::pump_raw;

const BIN: &str = "fifo-writer";

ipc_common::writer_args! {
    /// Open the FIFO a fifo-reader made and write each line of standard input
    /// (or --count generated payloads) into it as a frame.
    #[argh(example = "fifo-writer\nfifo-writer --id 2 --count 2000 --size 0..4000\nfifo-writer --raw --path /tmp/f < file   # with: cat /tmp/f")]
    struct Args {
        /// the FIFO to open (default: <private dir>/fifo)
        #[argh(option)]
        path: Option<PathBuf>,
        /// raise the pipe's capacity (F_SETPIPE_SZ), up to /proc/sys/fs/pipe-max-size
        #[argh(option, arg_name = "BYTES")]
        pipe_size: Option<Bytes>,
        /// pass bytes through unframed, like cat
        #[argh(switch)]
        raw: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    signals::install()?;

    // 1. Open the FIFO for writing once a reader has it open (ENXIO until then).
    let path = match &args.path {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let fd = open_writer(&path, common.timeout())?;
    if let Some(Bytes(bytes)) = args.pipe_size {
        set_pipe_size(fd.as_fd(), bytes)?;
    }
    if args.raw {
        pump_raw(BIN, "sent", stdin().as_fd(), fd.as_fd(), "FIFO")?;
        return Ok(());
    }
    // 2. Frames in atomic writes, then the end frame; closing the descriptor is our EOF.
    let mut sink = FifoSink::new(fd, &path, BIN, common.quiet, common.timeout())?;
    run_writer(BIN, &mut sink, &opts, stdin().as_fd())?;
    Ok(())
}
