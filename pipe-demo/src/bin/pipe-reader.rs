//! `pipe-reader`: receives frames from an anonymous pipe on its standard input,
//! checks each one, and prints the text messages.
//!
//! ```text
//! $ pipe-writer | pipe-reader
//! hello
//! hello
//! pipe-writer: sent 1 messages, 5 bytes, digest 3610a686
//! pipe-reader: received 1 messages, 5 bytes, digest 3610a686
//! $ python3 -c 'import struct,zlib,sys; p=b"hi"; sys.stdout.buffer.write(
//!     struct.pack("<4sBBHQII",b"IPC1",0,0,0,0,len(p),zlib.crc32(p))+p
//!     + struct.pack("<4sBBHQII",b"IPC1",1,0,0,1,0,0))' | pipe-reader
//! hi
//! ```
//!
//! Start order: none (the shell makes the pipe). End of file without an end frame
//! means the writer died: exit 3. Partner: `pipe-writer`. See pipe(7), read(2).

use std::io::{stdin, stdout};
use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_common::driver::run_reader;
use ipc_common::error::Result;
use ipc_common::opts::{self, Bytes, ReaderArgs};
use ipc_common::signals;
use ipc_common::stream::{StreamSource, pump_raw};
use pipe_demo::{refuse_terminal, set_pipe_size};

const BIN: &str = "pipe-reader";

ipc_common::reader_args! {
    /// Read frames from standard input (a pipe), check every one, print text
    /// messages, and finish with the summary line.
    #[argh(example = "pipe-writer | pipe-reader\npipe-writer --count 1000 --size 0..70000 | pipe-reader --count 1000")]
    struct Args {
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
    let opts = common.reader_opts()?;
    signals::install()?;

    // 1. Our standard input is the pipe's read end (the shell made the pipe).
    let input = stdin();
    if let Some(Bytes(bytes)) = args.pipe_size {
        set_pipe_size(input.as_fd(), bytes)?;
    }
    if args.raw {
        pump_raw(BIN, "received", input.as_fd(), stdout().as_fd(), "pipe")?;
        return Ok(());
    }
    refuse_terminal(input.as_fd(), "standard input", "pipe-writer | pipe-reader")?;
    // 2. Read frames until the end frame; end of file before it means the writer died.
    // --timeout: for the first frame, and then for any stall (a frozen writer).
    let mut source = StreamSource::new(input.as_fd(), opts.max_frame, common.timeout(), "pipe")?
        .with_stall(common.timeout());
    run_reader(BIN, "pipe", &mut source, &opts)?;
    Ok(())
}
