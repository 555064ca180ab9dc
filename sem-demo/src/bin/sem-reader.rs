//! `sem-reader`: the consumer of the bounded buffer. Creates K slots in a POSIX
//! shared memory object and the semaphores that guard them, then takes frames out
//! as writers put them in, checking each one where it lies.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ sem-reader
//! sem-reader: ready: bounded buffer /ipc-demos.1000.sem: 8 slots of 4120 bytes, POSIX semaphores ... and ..., robust mutex lock
//!                                               $ sem-writer
//!                                               hello
//! hello                                         ^D
//!                                               sem-writer: sent 1 messages, 5 bytes, digest 3610a686
//! sem-reader: received 1 messages, 5 bytes, digest 3610a686
//!
//! $ sem-reader --lock sysv --writers 4 --count 20000 &     # System V semaphores, four writers
//! $ for k in 1 2 3 4; do sem-writer --id $k --count 5000 --size 0..4K & done
//! ```
//!
//! Start the reader first: it creates the object (`/dev/shm/ipc-demos.<uid>.sem`)
//! and the semaphores (`empty` = K, `full` = 0; the lock: a robust mutex in the
//! object, or with `--lock sysv` a third semaphore at 1), and removes them all
//! when it exits, also on Ctrl-C. Each frame: P(full), check that its writer
//! committed the slot, check the frame in place, and at the next frame
//! V(empty). When every writer has gone (their presence locks are free) and
//! the buffer is empty, the stream has ended; a writer that died in the middle
//! of a copy is reported as lost (exit 3), never as corrupt data.
//! Partner: `sem-writer`. See `sem_overview(7)`, `shm_overview(7)`, semop(2).

use std::process::ExitCode;

use ipc_common::driver::run_reader;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, Bytes, ReaderArgs};
use ipc_common::{announce_ready, signals};
use sem_demo::buffer::{
    self, BoundedBuffer, BufferOptions, DEFAULT_SLOT_SIZE, DEFAULT_SLOTS, Family, MAX_SLOT_SIZE,
    MAX_SLOTS, MIN_SLOT_SIZE,
};

const BIN: &str = "sem-reader";

ipc_common::reader_args! {
    /// Create a bounded buffer (K slots in POSIX shared memory, guarded by
    /// empty/full/lock semaphores), take frames out as writers put them in,
    /// check each one, and remove everything when done.
    #[argh(example = "sem-reader\nsem-reader --lock sysv --count 20000 --quiet\nsem-reader --writers 4 --count 20000 --slots 8")]
    struct Args {
        /// POSIX name of the buffer (default /ipc-demos.<uid>.sem); its semaphores add .empty, .full
        #[argh(option)]
        name: Option<String>,
        /// posix (named semaphores empty and full, a robust mutex as the lock; the default) or sysv (one System V set of three)
        #[argh(option, default = "Family::Posix")]
        lock: Family,
        /// key of the System V set (0x1234abcd or decimal) instead of the first free ftok key of the reader's lock file
        #[argh(option, from_str_fn(parse_key))]
        key: Option<libc::key_t>,
        /// number of slots K (default 8)
        #[argh(option, default = "DEFAULT_SLOTS")]
        slots: u32,
        /// bytes per slot, the 24-byte frame header included (default 4120: 4 KiB payloads)
        #[argh(option, arg_name = "BYTES")]
        slot_size: Option<Bytes>,
        /// remove stale objects left by a reader that was killed, instead of refusing
        #[argh(switch)]
        force: bool,
        /// leave the buffer, its semaphores and the lock files that record them in place on exit
        #[argh(switch)]
        keep: bool,
    }
}

fn parse_key(s: &str) -> std::result::Result<libc::key_t, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16).map(|k| i32::from_ne_bytes(k.to_ne_bytes())),
        None => s.parse::<i32>(),
    };
    match parsed {
        Ok(0) => Err("0 is IPC_PRIVATE, which no other process can find".into()),
        Ok(key) => Ok(key),
        Err(e) => Err(format!("{s:?}: {e}")),
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn buffer_options(args: &Args) -> Result<BufferOptions> {
    let name = args.name.clone().unwrap_or_else(buffer::default_name);
    buffer::check_name(&name)?;
    if !(1..=MAX_SLOTS).contains(&args.slots) {
        return Err(Error::usage(format!("--slots {}: from 1 to {MAX_SLOTS}", args.slots)));
    }
    let slot_size = args.slot_size.map_or(DEFAULT_SLOT_SIZE, |Bytes(b)| b);
    if !(MIN_SLOT_SIZE..=MAX_SLOT_SIZE).contains(&slot_size) {
        return Err(Error::usage(format!(
            "--slot-size {slot_size}: from {MIN_SLOT_SIZE} to {MAX_SLOT_SIZE} bytes"
        )));
    }
    if args.key.is_some() && args.lock != Family::Sysv {
        return Err(Error::usage("--key names a System V set: give --lock sysv too"));
    }
    Ok(BufferOptions {
        name,
        family: args.lock,
        key: args.key,
        slots: args.slots,
        slot_size,
        force: args.force,
    })
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.reader_opts()?;
    let buffer_opts = buffer_options(args)?;
    signals::install()?;

    // 1. Create the buffer: shm_open O_EXCL + posix_fallocate + mmap, then the lock
    //    and empty = K, full = 0 (pthread_mutex_init + sem_open O_EXCL, or semget
    //    IPC_EXCL + SETALL); publish them in the lock file.
    let mut buf = BoundedBuffer::create(&buffer_opts)?;
    if args.keep {
        buf.keep();
    }
    announce_ready(BIN, buf.describe());

    // 2. Each frame: P(full), check it in its slot, V(empty) at the next one;
    //    until --writers end frames have come.
    // --timeout: for the first writer, then for a stall mid-stream (a frozen writer).
    let mut source = buf.source(opts.max_frame, common.timeout()).with_stall(common.timeout());
    run_reader(BIN, "sem", &mut source, &opts)?;
    // 3. `buf` drops here (and on every error path): semaphores and object removed.
    Ok(())
}
