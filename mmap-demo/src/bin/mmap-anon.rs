//! `mmap-anon`: a parent and the child it forks share a `MAP_SHARED |
//! MAP_ANONYMOUS` mapping — memory with no file and no name, because related
//! processes need none. The child writes frames into a ring in it, the parent
//! reads them; both print their summary.
//!
//! ```text
//! $ mmap-anon --count 100000 --size 4K
//! mmap-anon child: sent 100000 messages, 409600000 bytes, digest 0942e01c
//! mmap-anon: received 100000 messages, 409600000 bytes, digest 0942e01c
//! $ printf 'hello\n' | mmap-anon          # text mode: the child reads stdin, the parent prints
//! hello
//! ```
//!
//! One process, one command: the mapping is made before `fork`, so the child
//! inherits it; the kernel frees it when both have unmapped it (exited).
//! Nothing to remove. Compare `mmap-writer`/`mmap-reader`, unrelated processes
//! that meet at a file. See mmap(2) on MAP_SHARED and MAP_ANONYMOUS, fork(2).

use std::io::stdin;
use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_common::driver::{ReaderOpts, run_reader, run_writer};
use ipc_common::error::{Error, Result};
use ipc_common::frame::DEFAULT_MAX_FRAME;
use ipc_common::opts::{self, Bytes, WriterArgs};
use ipc_common::process::{exit_child, first_cause, fork_process, wait_child};
use ipc_common::ring::{Consumer, FutexBell, PidPeer, Producer};
use ipc_common::signals;
use mmap_demo::anon::SharedAnon;
use mmap_demo::{DEFAULT_RING, MIN_CAPACITY, SPIN};
use nix::unistd::{ForkResult, getpid};

const BIN: &str = "mmap-anon";
const CHILD: &str = "mmap-anon child";

ipc_common::writer_args! {
    /// Map shared anonymous memory, fork, and pass frames from the child
    /// (writer) to the parent (reader) through a ring in it: each line of
    /// standard input, or --count generated payloads.
    #[argh(example = "mmap-anon --count 100000 --size 4K\nprintf 'hello\\n' | mmap-anon")]
    struct Args {
        /// ring bytes in the shared mapping (default 1M)
        #[argh(option, arg_name = "BYTES")]
        ring: Option<Bytes>,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let writer_opts = common.writer_opts()?;
    let ring = args.ring.map_or(DEFAULT_RING, |Bytes(b)| b);
    if ring < MIN_CAPACITY {
        return Err(Error::usage(format!("--ring {ring}: at least {MIN_CAPACITY} bytes")));
    }
    SharedAnon::len_for(ring)?; // too large to map: a usage error, before any system call
    signals::install()?;

    // 1. mmap MAP_SHARED|MAP_ANONYMOUS, and a ring in it: before fork, so both have it.
    let region = SharedAnon::with_ring(ring)?;
    let bells = region.bells();
    let parent = getpid();

    // 2. fork: the child inherits the mapping — the same pages, not a copy.
    match fork_process()? {
        ForkResult::Child => {
            // 3. The child writes frames into the ring, watching its parent.
            let result = PidPeer::new(parent.as_raw()).and_then(|peer| {
                // SAFETY: the ring region lives as long as `region` (this whole
                // block), is 64-byte aligned and initialised, and has one writer: us.
                let mut sink = unsafe {
                    Producer::attach(
                        region.ring(),
                        region.ring_len(),
                        FutexBell::new(&bells.data),
                        FutexBell::new(&bells.room),
                        peer,
                        SPIN,
                    )?
                };
                run_writer(CHILD, &mut sink, &writer_opts, stdin().as_fd())?;
                sink.close()
            });
            exit_child(CHILD, result)
        }
        ForkResult::Parent { child } => {
            // 4. The parent reads them in place, watching its child.
            let opts = ReaderOpts {
                count: writer_opts.count,
                writers: 1,
                max_frame: DEFAULT_MAX_FRAME,
                print: writer_opts.count.is_none() && !common.quiet,
                verify: true,
            };
            let read = PidPeer::new(child.as_raw()).and_then(|peer| {
                // SAFETY: as in the child; one reader: us.
                let mut source = unsafe {
                    Consumer::attach(
                        region.ring(),
                        region.ring_len(),
                        FutexBell::new(&bells.data),
                        FutexBell::new(&bells.room),
                        peer,
                        SPIN,
                        DEFAULT_MAX_FRAME,
                    )?
                };
                run_reader(BIN, "mmap-anon", &mut source, &opts).map(drop)
            });
            // 5. Reap the child; its failure is the cause of ours if we lost it.
            let reaped = wait_child(child, CHILD);
            first_cause(BIN, read, reaped)
        }
    }
}
