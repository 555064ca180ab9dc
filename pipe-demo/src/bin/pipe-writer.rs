//! `pipe-writer`: sends frames down an anonymous pipe — standard output, or a pipe
//! it makes itself with `--spawn`.
//!
//! ```text
//! $ pipe-writer | pipe-reader                       # type lines; Ctrl-D ends
//! hello
//! hello
//! pipe-writer: sent 1 messages, 5 bytes, digest 3610a686
//! pipe-reader: received 1 messages, 5 bytes, digest 3610a686
//! $ pipe-writer --count 100000 --size 4K | pipe-reader --count 100000
//! $ pipe-writer --spawn --count 1000                # pipe2 + fork + exec pipe-reader
//! ```
//!
//! Start order: none; the shell (or `--spawn`) creates the pipe before either
//! runs, and the kernel frees it when both have exited. Nothing to remove.
//! Partner: `pipe-reader`. See pipe(7), pipe2(2), fork(2), dup2(2), execv(3).

use std::io::{stdin, stdout};
use std::os::fd::{AsFd, BorrowedFd};
use std::process::ExitCode;

use ipc_common::driver::run_writer;
use ipc_common::error::Result;
use ipc_common::opts::{self, Bytes, WriterArgs};
use ipc_common::signals;
use ipc_common::stream::{StreamSink, WritePolicy, pump_raw};
use pipe_demo::{
    create_pipe, first_cause, pipe_size, refuse_terminal, set_pipe_size, sibling, spawn_reader,
    wait_child,
};

const BIN: &str = "pipe-writer";

ipc_common::writer_args! {
    /// Send each line of standard input (or --count generated payloads) as a frame
    /// down a pipe: standard output, or with --spawn a pipe to a pipe-reader child.
    #[argh(example = "pipe-writer | pipe-reader\npipe-writer --count 100000 --size 4K | pipe-reader --count 100000\npipe-writer --spawn --count 1000")]
    struct Args {
        /// create the pipe (pipe2), fork, and run pipe-reader on its read end
        #[argh(switch)]
        spawn: bool,
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

    if !args.spawn {
        // 1. The shell made the pipe: our standard output is its write end.
        let out = stdout();
        if !args.raw {
            refuse_terminal(out.as_fd(), "standard output", "pipe-writer | pipe-reader")?;
        }
        return send(args, out.as_fd(), &opts);
    }

    // 1. Make the pipe ourselves, and find the reader built beside us.
    let reader = sibling("pipe-reader")?;
    let (read_end, write_end) = create_pipe()?;
    // 2. Fork; the child runs pipe-reader with the read end as its standard input.
    let mut reader_args = Vec::new();
    if let Some(n) = opts.count {
        reader_args.extend(["--count".to_string(), n.to_string()]);
    }
    if args.raw {
        reader_args.push("--raw".into());
    }
    let child = spawn_reader(read_end, &reader, &reader_args)?;
    // 3. Write, then close our write end, so the reader sees end of file.
    let sent = send(args, write_end.as_fd(), &opts);
    drop(write_end);
    // 4. Reap the reader; its failure is the cause of ours if we lost it.
    let reaped = wait_child(child, "pipe-reader");
    first_cause(BIN, sent, reaped)
}

/// Sends everything to `out`, the pipe's write end.
fn send(args: &Args, out: BorrowedFd<'_>, opts: &ipc_common::driver::WriterOpts) -> Result<()> {
    let stall = args.common().timeout();
    if let Some(Bytes(bytes)) = args.pipe_size {
        set_pipe_size(out, bytes)?;
    }
    if args.raw {
        pump_raw(BIN, "sent", stdin().as_fd(), out, "pipe")?;
        return Ok(());
    }
    // Gather small frames into writes of a quarter pipe: one system call per
    // several frames, while the reader drains the rest (see WritePolicy).
    let capacity = pipe_size(out).unwrap_or(pipe_demo::DEFAULT_PIPE_SIZE);
    // --timeout: how long a full pipe may stay full (a frozen reader).
    let mut sink =
        StreamSink::new(out, WritePolicy::Buffered(capacity / 4), "pipe")?.with_stall(stall);

    run_writer(BIN, &mut sink, opts, stdin().as_fd()).map(|_| ())
}
