//! `pipe-duplex`: request and reply between a parent and its child, over two pipes.
//!
//! A pipe carries bytes one way only, so a conversation needs a pair: requests
//! go down one pipe, replies come back up the other. The parent sends N frames
//! and times each round trip; the forked child checks each frame as a reader
//! does and sends it straight back; the parent checks that each reply is its
//! request.
//!
//! ```text
//! $ pipe-duplex --count 10000 --size 64
//! pipe-duplex child: received 10000 messages, 640000 bytes, digest 5d0e4f0a
//! pipe-duplex: sent 10000 messages, 640000 bytes, digest 5d0e4f0a
//! pipe-duplex: 10000 round trips of 64 bytes: p50 43.1 µs, p99 71.9 µs, p99.9 120.3 µs, max 401.2 µs
//! ```
//!
//! One process starts both sides (fork; no exec, the child inherits the pipes);
//! nothing to remove. A round trip is two wake-ups of a sleeping process, so it
//! costs what the scheduler charges for those, not what the copy costs.
//! See pipe(7), fork(2).

use std::os::fd::OwnedFd;
use std::process::ExitCode;

use ipc_common::driver::{ReaderOpts, WriterOpts, micros, run_echo_client, run_echo_server};
use ipc_common::error::Result;
use ipc_common::frame::DEFAULT_MAX_FRAME;
use ipc_common::opts::{self, WriterArgs};
use ipc_common::signals;
use ipc_common::stream::{StreamSink, StreamSource, WritePolicy};
use nix::unistd::ForkResult;
use pipe_demo::{create_pipe, exit_child, first_cause, fork_process, wait_child};

const BIN: &str = "pipe-duplex";
const CHILD: &str = "pipe-duplex child";
/// Round trips when `--count` is not given.
const DEFAULT_ROUND_TRIPS: u64 = 10_000;

ipc_common::writer_args! {
    /// Time request/reply round trips between a parent and its forked child over
    /// two pipes (one each way), checking every reply.
    #[argh(example = "pipe-duplex\npipe-duplex --count 100000 --size 4K")]
    struct Args {}
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let mut opts = args.common().writer_opts()?;
    opts.count = Some(opts.count.unwrap_or(DEFAULT_ROUND_TRIPS));
    signals::install()?;

    // 1. Two pipes, because a pipe is one-way: requests down, replies up.
    let (request_r, request_w) = create_pipe()?;
    let (reply_r, reply_w) = create_pipe()?;
    // 2. Fork. Each side closes the ends it does not use, or it would never see
    //    end of file when the other side exits.
    match fork_process()? {
        ForkResult::Child => {
            drop((request_w, reply_r));
            exit_child(CHILD, echo(request_r, reply_w))
        }
        ForkResult::Parent { child } => {
            drop((request_r, reply_w));
            // 3. The parent asks and times; 4. then reaps the child.
            let asked = ask(request_w, reply_r, &opts);
            first_cause(BIN, asked, wait_child(child, CHILD))
        }
    }
}

/// The child: check each request as a reader would and send it back.
fn echo(requests: OwnedFd, replies: OwnedFd) -> Result<()> {
    let opts = ReaderOpts {
        count: None,
        writers: 1,
        max_frame: DEFAULT_MAX_FRAME,
        print: false,
        verify: true,
    };
    let mut source = StreamSource::new(requests, opts.max_frame, None, "pipe")?;
    // One write per frame: the parent is waiting for exactly this reply.
    let mut sink = StreamSink::new(replies, WritePolicy::FramePerWrite, "pipe")?;
    run_echo_server(CHILD, "pipe", &mut source, &mut sink, &opts).map(|_| ())
}

/// The parent: send each request, wait for its reply, and report the percentiles.
fn ask(requests: OwnedFd, replies: OwnedFd, opts: &WriterOpts) -> Result<()> {
    let mut sink = StreamSink::new(requests, WritePolicy::FramePerWrite, "pipe")?;
    let mut source = StreamSource::new(replies, DEFAULT_MAX_FRAME, None, "pipe")?;
    let (sent, mut times) = run_echo_client(BIN, "pipe", &mut sink, &mut source, opts)?;
    ipc_common::say!(
        "{BIN}: {} round trips of {} bytes: p50 {}, p99 {}, p99.9 {}, max {}",
        sent.messages,
        opts.size,
        micros(times.percentile(50.0)),
        micros(times.percentile(99.0)),
        micros(times.percentile(99.9)),
        micros(times.percentile(100.0)),
    );
    Ok(())
}
