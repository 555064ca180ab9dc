//! `mq-writer`: sends frames to a message queue made by `mq-reader`, one frame
//! per message; several writers may share one queue.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ mq-reader --writers 2
//! mq-reader: ready: POSIX queue /ipc-demos.1000.mq (10 messages of up to 8192 bytes)
//!                                               $ mq-writer --id 1 --count 1000 &
//!                                               $ mq-writer --id 2 --count 1000 --priority 5
//! mq-reader: writer 1: received 1000 messages, 64000 bytes, digest ...
//! mq-reader: writer 2: received 1000 messages, 64000 bytes, digest ...
//! mq-reader: received 2000 messages, 128000 bytes
//! ```
//!
//! The reader creates and removes the queue; a writer started first waits up to
//! `--timeout` for it. POSIX messages carry `--priority`; System V messages carry
//! the type `--id` + 1, which a reader can select. Partner: `mq-reader`.
//! See `mq_send(3)`, `msgsnd(2)`.

use std::io::stdin;
use std::os::fd::AsFd;
use std::process::ExitCode;

use ipc_common::driver::run_writer;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, WriterArgs};
use ipc_common::paths::check_posix_name;
use ipc_common::signals;
use mq_demo::posix;
use mq_demo::sysv::{self, parse_key};
use mq_demo::{Api, check_frames_fit};

const BIN: &str = "mq-writer";
/// Highest POSIX message priority on Linux (`MQ_PRIO_MAX` - 1).
const MAX_PRIORITY: u32 = 32767;

ipc_common::writer_args! {
    /// Send each line of standard input (or --count generated payloads) to the
    /// message queue an mq-reader made, one frame per message.
    #[argh(example = "mq-writer\nmq-writer --id 2 --count 2000 --size 0..4000\nmq-writer --api sysv --id 3 --count 100\nmq-writer --priority 5 < urgent.txt")]
    struct Args {
        /// posix (default) or sysv
        #[argh(option, default = "Api::Posix")]
        api: Api,
        /// posix: the queue's name (default /ipc-demos.<uid>.mq)
        #[argh(option)]
        name: Option<String>,
        /// sysv: the key, 0x... or decimal (default: ftok of the reader's lock file)
        #[argh(option, from_str_fn(parse_key))]
        key: Option<i32>,
        /// posix: message priority 0..32767; higher ones overtake queued lower ones (default 0)
        #[argh(option, arg_name = "P")]
        priority: Option<u32>,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    match (args.api, &args.name, args.key, args.priority) {
        (Api::Sysv, Some(_), _, _) => return Err(Error::usage("--name is for --api posix")),
        (Api::Sysv, _, _, Some(_)) => {
            return Err(Error::usage("--priority is for --api posix (sysv has types: --id)"));
        }
        (Api::Posix, _, Some(_), _) => return Err(Error::usage("--key is for --api sysv")),
        (_, _, _, Some(p)) if p > MAX_PRIORITY => {
            return Err(Error::usage(format!("--priority {p}: at most {MAX_PRIORITY}")));
        }
        (_, Some(name), _, _) => check_posix_name("--name", name)?,
        _ => {}
    }
    signals::install()?;

    match args.api {
        Api::Posix => {
            // 1. Wait for the queue and its reader; open it for writing.
            let name = args.name.clone().unwrap_or_else(posix::default_name);
            let q = posix::open_queue(&name, common.timeout())?;
            // 2. Refuse frames the queue cannot take, before sending any.
            if opts.count.is_some() {
                check_frames_fit(opts.size, q.msgsize(), "mq-reader --size sets the message size")?;
            }
            // 3. One message per frame, then the end frame.
            // --timeout also bounds how long a full queue may stay full (a frozen reader).
            let mut sink =
                posix::QueueSink::new(&q, args.priority.unwrap_or(0)).with_stall(common.timeout());
            run_writer(BIN, &mut sink, &opts, stdin().as_fd())?;
        }
        Api::Sysv => {
            let q = sysv::open_queue(args.key, common.timeout())?;
            if opts.count.is_some() {
                check_frames_fit(opts.size, q.msgmax(), "/proc/sys/kernel/msgmax sets the limit")?;
            }
            let mut sink = sysv::QueueSink::new(&q)?.with_stall(common.timeout());
            run_writer(BIN, &mut sink, &opts, stdin().as_fd())?;
        }
    }
    Ok(())
}
