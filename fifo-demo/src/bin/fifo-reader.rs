//! `fifo-reader`: creates a FIFO (named pipe), reads frames from every writer that
//! opens it, checks each one, and prints the text messages.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ fifo-reader
//! fifo-reader: ready: reading FIFO /run/user/1000/ipc-demos/fifo
//!                                               $ fifo-writer
//!                                               hello
//! hello                                         ^D
//!                                               fifo-writer: sent 1 messages, 5 bytes, digest 3610a686
//! fifo-reader: received 1 messages, 5 bytes, digest 3610a686
//!
//! $ fifo-reader --writers 4 --count 8000 &      # four writers at once
//! $ for k in 1 2 3 4; do fifo-writer --id $k --count 2000 --size 0..4000 & done
//! ```
//!
//! Start the reader first: it creates the FIFO (mode 0600) and removes it when it
//! exits, also on Ctrl-C. Writers that start first wait for it (`--timeout`).
//! Partner: `fifo-writer`. See fifo(7), mkfifo(3), pipe(7) on PIPE_BUF.

use std::io::stdout;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use fifo_demo::{FifoSource, create_fifo, default_path, set_pipe_size, wait_for_writer};
use ipc_common::driver::run_reader;
use ipc_common::error::Result;
use ipc_common::opts::{self, Bytes, ReaderArgs};
use ipc_common::stream::pump_raw;
use ipc_common::wait::Deadline;
use ipc_common::{announce_ready, signals};

const BIN: &str = "fifo-reader";

ipc_common::reader_args! {
    /// Create a FIFO, read frames from every writer that opens it, check each
    /// one, print text messages, and remove the FIFO when done.
    #[argh(example = "fifo-reader\nfifo-reader --writers 4 --count 8000\nfifo-reader --raw --path /tmp/f   # then: echo hi > /tmp/f")]
    struct Args {
        /// where to create the FIFO (default: <private dir>/fifo)
        #[argh(option)]
        path: Option<PathBuf>,
        /// remove a stale FIFO left at the path by a reader that was killed
        #[argh(switch)]
        force: bool,
        /// leave the FIFO in place on exit
        #[argh(switch)]
        keep: bool,
        /// raise the pipe's capacity (F_SETPIPE_SZ), up to /proc/sys/fs/pipe-max-size
        #[argh(option, arg_name = "BYTES")]
        pipe_size: Option<Bytes>,
        /// pass bytes through unframed, like cat, until the first writer closes
        #[argh(switch)]
        raw: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.reader_opts()?;
    signals::install()?;

    // 1. Create the FIFO (mkfifo 0600), open its read end and lock it as ours.
    let path = match &args.path {
        Some(path) => path.clone(),
        None => default_path()?,
    };
    let mut fifo = create_fifo(&path, args.force)?;
    if args.keep {
        fifo.keep();
    }
    if let Some(Bytes(bytes)) = args.pipe_size {
        set_pipe_size(fifo.lock_fd().as_fd(), bytes)?;
    }
    if args.raw {
        // 2. Raw: copy bytes to standard output until the writer closes. The
        // read end is opened before we say ready, so it sees every writer's close.
        let fd = fifo.open_reader()?;
        announce_ready(BIN, format_args!("reading FIFO {}", path.display()));
        wait_for_writer(fd.as_fd(), &path, &Deadline::after(common.timeout()), common.timeout())?;
        pump_raw(BIN, "received", fd.as_fd(), stdout().as_fd(), "FIFO")?;
        return Ok(());
    }
    // 2. Read frames from each writer until --writers end frames have come.
    let announce = (!common.quiet).then_some(BIN);
    let mut source = FifoSource::new(&fifo, opts.max_frame, common.timeout(), announce)?;
    announce_ready(BIN, format_args!("reading FIFO {}", path.display()));
    run_reader(BIN, "fifo", &mut source, &opts)?;
    // 3. `fifo` drops here (and on every error path above): the FIFO is unlinked.
    Ok(())
}
