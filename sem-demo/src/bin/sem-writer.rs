//! `sem-writer`: a producer of the bounded buffer made by `sem-reader`; several
//! may write at once.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ sem-reader --writers 2 --count 2000 --quiet
//! sem-reader: ready: bounded buffer /ipc-demos.1000.sem: 8 slots of 4120 bytes, ...
//!                                               $ sem-writer --id 1 --count 1000 &
//!                                               $ sem-writer --id 2 --count 1000
//! sem-reader: writer 1: received 1000 messages, 64000 bytes, digest ...
//! sem-reader: writer 2: received 1000 messages, 64000 bytes, digest ...
//! sem-reader: received 2000 messages, 128000 bytes
//! ```
//!
//! Each frame: P(empty) for a free slot, the lock for the shared producer
//! index, mark the slot "writing", copy the frame into it, mark it
//! "committed", unlock, V(full). With `--lock posix` the lock is a robust mutex
//! (a writer killed holding it hands it to the next one with `EOWNERDEAD`);
//! with System V the P(empty) and P(lock) are one atomic `semop`, and the lock
//! is taken with `SEM_UNDO`. The reader creates and removes everything and
//! publishes what it made in its lock file; a writer started first waits up to
//! `--timeout` for that, and notices within a tick if the reader dies.
//! Partner: `sem-reader`. See `sem_overview(7)`, semop(2),
//! `pthread_mutexattr_setrobust(3)`.

use std::io::stdin;
use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_common::driver::run_writer;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, WriterArgs};
use ipc_common::signals;
use sem_demo::buffer::{self, BufferSink, Family};

const BIN: &str = "sem-writer";

ipc_common::writer_args! {
    /// Put each line of standard input (or --count generated payloads) into the
    /// bounded buffer a sem-reader made, one frame per slot.
    #[argh(example = "sem-writer\nsem-writer --count 20000 --size 0..4K\nsem-writer --id 2 --count 5000")]
    struct Args {
        /// POSIX name of the buffer (default /ipc-demos.<uid>.sem)
        #[argh(option)]
        name: Option<String>,
        /// expect this semaphore family (posix or sysv); by default, whatever the reader chose
        #[argh(option)]
        lock: Option<Family>,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    let name = args.name.clone().unwrap_or_else(buffer::default_name);
    buffer::check_name(&name)?;
    signals::install()?;

    // 1. Wait for the reader's buffer; open it and the semaphores its header names.
    //    --timeout also bounds a wait for a free slot mid-stream (a frozen reader).
    let mut sink =
        BufferSink::connect(&name, args.lock, common.timeout())?.with_stall(common.timeout());
    if opts.count.is_some() && opts.size.max > sink.payload_capacity() {
        return Err(Error::usage(format!(
            "--size {}: the reader's slots hold payloads up to {} bytes (see sem-reader --slot-size)",
            opts.size,
            sink.payload_capacity()
        )));
    }
    // 2. Each frame: P(empty), lock, copy into the slot, unlock, V(full).
    run_writer(BIN, &mut sink, &opts, stdin().as_fd())?;
    Ok(())
}
