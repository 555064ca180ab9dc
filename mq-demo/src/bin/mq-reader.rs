//! `mq-reader`: creates a message queue — POSIX or System V — and reads frames
//! from every writer that sends to it, one frame per message.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ mq-reader
//! mq-reader: ready: POSIX queue /ipc-demos.1000.mq (10 messages of up to 8192 bytes)
//!                                               $ mq-writer
//!                                               hello
//! hello                                         ^D
//!                                               mq-writer: sent 1 messages, 5 bytes, digest 3610a686
//! mq-reader: received 1 messages, 5 bytes, digest 3610a686
//!
//! $ mq-reader --api sysv --writers 4 --count 8000       # then four mq-writer --api sysv --id K
//! $ mq-reader --api sysv --type 3                       # only writer 2's messages
//! ```
//!
//! Start the reader first: it creates the queue (mode 0600, exclusively) and
//! removes it when it exits, also on Ctrl-C; writers wait for it (`--timeout`).
//! Partner: `mq-writer`. See `mq_overview(7)`, `mq_open(3)`, `msgget(2)`, `msgrcv(2)`.

use std::process::ExitCode;

use ipc_common::driver::run_reader;
use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, ReaderArgs};
use ipc_common::paths::check_posix_name;
use ipc_common::payload::SizeSpec;
use ipc_common::{announce_ready, signals};
use mq_demo::posix::{self, Wait};
use mq_demo::sysv::{self, Select, parse_key};
use mq_demo::{Api, message_size, read_limit};

const BIN: &str = "mq-reader";

ipc_common::reader_args! {
    /// Create a message queue (POSIX or System V), read one frame per message
    /// from every writer, check each one, print text messages, and remove the
    /// queue when done.
    #[argh(example = "mq-reader\nmq-reader --api sysv --writers 4 --count 8000\nmq-reader --api sysv --type 3\nmq-reader --size 100 --depth 10 --notify")]
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
        /// largest payload expected, B or MIN..MAX: sets the message size (default: the system's largest)
        #[argh(option, arg_name = "B|MIN..MAX")]
        size: Option<SizeSpec>,
        /// messages the queue holds (posix mq_maxmsg, default 10; sysv raises msg_qbytes)
        #[argh(option, arg_name = "N")]
        depth: Option<u64>,
        /// sysv: only messages of type T, writer T-1 (msgrcv msgtyp); negative: lowest type first
        #[argh(option, long = "type", arg_name = "T")]
        msg_type: Option<i64>,
        /// sysv: every type except T (MSG_EXCEPT)
        #[argh(option, arg_name = "T")]
        except: Option<i64>,
        /// posix: say when the first message arrives in the empty queue (mq_notify)
        #[argh(switch)]
        notify: bool,
        /// posix: wait with poll on the descriptor (default) or with mq_timedreceive
        #[argh(option, default = "Wait::Poll", arg_name = "poll|timed")]
        wait: Wait,
        /// remove a stale queue of ours left by a reader that was killed
        #[argh(switch)]
        force: bool,
        /// leave the queue in place on exit
        #[argh(switch)]
        keep: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

/// Refuses options of the other API (exit 2), before any system call.
fn check_api(args: &Args) -> Result<()> {
    let (posix_only, sysv_only) = (
        [
            ("--name", args.name.is_some()),
            ("--notify", args.notify),
            ("--wait", args.wait != Wait::Poll),
        ],
        [
            ("--key", args.key.is_some()),
            ("--type", args.msg_type.is_some()),
            ("--except", args.except.is_some()),
        ],
    );
    let wrong = match args.api {
        Api::Posix => sysv_only.iter().find(|(_, given)| *given).map(|(f, _)| (f, "sysv")),
        Api::Sysv => posix_only.iter().find(|(_, given)| *given).map(|(f, _)| (f, "posix")),
    };
    if let Some((flag, api)) = wrong {
        return Err(Error::usage(format!("{flag} is for --api {api}")));
    }
    if args.msg_type.is_some() && args.except.is_some() {
        return Err(Error::usage("--type and --except exclude each other"));
    }
    if args.notify && args.wait == Wait::Timed {
        return Err(Error::usage(
            "--notify needs --wait poll: a process blocked in mq_timedreceive takes the message, and mq_notify never fires",
        ));
    }
    if let Some(name) = &args.name {
        check_posix_name("--name", name)?;
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.reader_opts()?;
    check_api(args)?;
    signals::install()?;

    match args.api {
        Api::Posix => {
            // 1. Create the queue: limits checked, O_CREAT|O_EXCL, mode 0600.
            let name = args.name.clone().unwrap_or_else(posix::default_name);
            let msgsize = match args.size {
                Some(size) => message_size(size),
                None => read_limit(posix::MSGSIZE_MAX_FILE)?,
            };
            let depth =
                args.depth.unwrap_or_else(|| read_limit(posix::MSG_MAX_FILE).unwrap_or(10).min(10));
            let mut q = posix::create_queue(&name, depth, msgsize, args.wait, args.force)?;
            if args.keep {
                q.keep();
            }
            if args.notify {
                posix::notify_on_first_message(&q)?;
            }
            announce_ready(
                BIN,
                format_args!("POSIX queue {name} ({depth} messages of up to {msgsize} bytes)"),
            );
            // 2. Receive and check until --writers end frames; 3. drop removes the queue.
            let notify = args.notify.then_some(BIN);
            // --timeout: for the first writer, then for a stall mid-stream (a frozen writer).
            let mut source =
                posix::QueueSource::new(&q, opts.max_frame, args.wait, common.timeout(), notify)
                    .with_stall(common.timeout());
            run_reader(BIN, "posix mq", &mut source, &opts)?;
        }
        Api::Sysv => {
            // 1. Create the queue: limits checked, key from ftok, IPC_CREAT|IPC_EXCL, 0600.
            let msgsize = match args.size {
                Some(size) => message_size(size),
                None => read_limit(sysv::MSGMAX_FILE)?,
            };
            let mut q = sysv::create_queue(args.key, msgsize, args.depth, args.force)?;
            if args.keep {
                q.keep();
            }
            announce_ready(
                BIN,
                format_args!(
                    "System V queue key {:#010x} id {} ({} bytes deep)",
                    q.key(),
                    q.id(),
                    q.qbytes()
                ),
            );
            let select = match (args.msg_type, args.except) {
                (Some(t), _) if t != 0 => Select::Type(t),
                (_, Some(t)) => Select::Except(t),
                _ => Select::All,
            };
            // 2. Receive and check until --writers end frames; 3. drop removes the queue.
            let mut source = sysv::QueueSource::new(&q, select, opts.max_frame, common.timeout())?
                .with_stall(common.timeout());
            run_reader(BIN, "sysv mq", &mut source, &opts)?;
        }
    }
    Ok(())
}
