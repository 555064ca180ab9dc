//! `socket-writer`: the client. Connects to a `socket-reader` (Unix stream,
//! Unix sequenced packets, or TCP, possibly on another machine), sends frames,
//! and exits 0 only when the reader has confirmed every one.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ socket-reader --writers 2
//! socket-reader: ready: listening on unix /run/user/1000/ipc-demos/socket
//!                                               $ socket-writer --id 1 --count 1000 &
//!                                               $ socket-writer --id 2 --count 1000 --size 0..70000
//! socket-reader: writer 1: received 1000 messages, 64000 bytes, digest ...
//! socket-reader: writer 2: received 1000 messages, ... bytes, digest ...
//! socket-reader: received 2000 messages, ... bytes
//!
//! $ socket-writer --send-fd /etc/hostname          # the payload is an open descriptor
//! $ socket-writer --send-memfd --count 10 --size 1M  # each payload a sealed memfd
//! ```
//!
//! The reader creates and removes the socket; a writer started first retries
//! `connect` until `--timeout`. On a Unix socket the writer checks the server's
//! uid (`SO_PEERCRED`) before sending. The reader answers one line at connect
//! (`0 ready`, or why it refuses us) and one after the end frame (its verdict).
//! Partner: `socket-reader`. See socket(7), unix(7), tcp(7), connect(2),
//! cmsg(3) on `SCM_RIGHTS`, `memfd_create(2)`.

use std::io::stdin;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;

use ipc_common::driver::{FrameSink, WriterOpts, run_writer};
use ipc_common::error::{Error, Exit, Result};
use ipc_common::opts::{self, WriterArgs};
use ipc_common::stream::{StreamSink, WritePolicy, pump_raw};
use ipc_common::wait::stalled;
use ipc_common::{paths, say, signals};
use socket_demo::client::{
    await_ready, await_verdict_within, check_server, connect, reason_if_any,
};
use socket_demo::fdpass::{MemfdSink, send_file};
use socket_demo::message::{MessageSink, fit_send_buffer};
use socket_demo::{Endpoint, EndpointArgs, SEND_BUFFER, Transport, endpoint, lost_if_closed};

const BIN: &str = "socket-writer";

ipc_common::writer_args! {
    /// Connect to a socket-reader and send each line of standard input (or
    /// --count generated payloads) as a frame; exit 0 once the reader confirms.
    #[argh(example = "socket-writer\nsocket-writer --id 2 --count 50000 --size 0..70000\nsocket-writer --transport tcp --addr 192.168.1.20:5000 --count 1000\nsocket-writer --send-memfd --count 10 --size 1M\nsocket-writer --raw --transport tcp --addr 127.0.0.1:5000 < file")]
    struct Args {
        /// unix (stream, default), unix-dgram (sequenced packets: one frame per message) or tcp
        #[argh(option, default = "Transport::Unix", arg_name = "KIND")]
        transport: Transport,
        /// socket file to connect to (default: <private dir>/socket, or socket-dgram)
        #[argh(option)]
        path: Option<PathBuf>,
        /// connect to NAME in the abstract namespace
        #[argh(option, long = "abstract", arg_name = "NAME")]
        abstract_name: Option<String>,
        /// the reader's TCP address (it prints it on its ready line)
        #[argh(option, arg_name = "HOST:PORT")]
        addr: Option<String>,
        /// also trust a Unix server running as this uid (repeatable)
        #[argh(option, arg_name = "UID")]
        allow_uid: Vec<u32>,
        /// pass FILE as an open descriptor with SCM_RIGHTS: one frame, its payload read through it
        #[argh(option, arg_name = "FILE")]
        send_fd: Option<PathBuf>,
        /// put each payload in a sealed memfd and pass the descriptor (shared memory, no name)
        #[argh(switch)]
        send_memfd: bool,
        /// pass bytes through unframed, like cat (stream transports)
        #[argh(switch)]
        raw: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn check_combinations(args: &Args) -> Result<()> {
    let by_fd = args.send_fd.is_some() || args.send_memfd;
    if args.send_fd.is_some() && args.send_memfd {
        return Err(Error::usage("--send-fd and --send-memfd exclude each other"));
    }
    if by_fd && args.transport != Transport::Unix {
        return Err(Error::usage(
            "descriptors pass only over a Unix stream socket: use --transport unix",
        ));
    }
    if by_fd && args.raw {
        return Err(Error::usage("--raw sends bytes, not descriptors"));
    }
    if args.send_fd.is_some() && (args.count.is_some() || args.size.is_some()) {
        return Err(Error::usage("--send-fd sends one file: drop --count and --size"));
    }
    if args.raw && !args.transport.is_stream() {
        return Err(Error::usage(
            "--raw needs a byte stream: --transport unix or tcp (unix-dgram keeps message boundaries)",
        ));
    }
    Ok(())
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let opts = common.writer_opts()?;
    check_combinations(args)?;
    let endpoint_args = EndpointArgs {
        path: args.path.clone(),
        abstract_name: args.abstract_name.clone(),
        addr: args.addr.clone(),
    };
    // 1. Where to connect: checked before any system call (sun_path length: exit 2).
    let endpoint = endpoint(args.transport, &endpoint_args, None)?;
    signals::install()?;
    if args.path.is_none() && matches!(endpoint, Endpoint::Path(_)) {
        // The default path is in the private directory: refuse one that is a
        // link, someone else's, or open to others (made 0700 if missing).
        paths::private_dir()?;
    }

    // 2. socket + connect, retried while no reader listens; then who is the server?
    let sock = connect(args.transport, &endpoint, common.timeout())?;
    check_server(sock.as_fd(), &endpoint, &args.allow_uid)?;
    if args.raw {
        // Raw: no answer lines either way; closing the socket is our end of file.
        pump_raw(BIN, "sent", stdin().as_fd(), sock.as_fd(), args.transport.name())?;
        return Ok(());
    }
    // 3. The reader's first answer: "0 ready", or why it refuses us (uid).
    await_ready(sock.as_fd(), common.timeout())?;

    // 4. Send: gathered writes on a stream, one message per frame on
    //    unix-dgram, or payloads by descriptor.
    let sent = match (&args.send_fd, args.transport) {
        (Some(file), _) => {
            let (bytes, digest) = send_file(sock.as_fd(), file, args.id)
                .map_err(|e| reason_if_any(sock.as_fd(), e))?;
            say!("{BIN}: sent 1 messages, {bytes} bytes, digest {digest}");
            Ok(())
        }
        (None, _) if args.send_memfd => send_frames(&mut MemfdSink::new(sock.as_fd()), &opts),
        (None, Transport::UnixDgram) => {
            if let Some(size) = common.size.filter(|_| opts.count.is_some()) {
                fit_send_buffer(sock.as_fd(), size.max + ipc_common::frame::HEADER_LEN)?;
            }
            // --timeout also bounds a stall mid-stream (a frozen reader).
            let mut sink =
                MessageSink::new(sock.as_fd(), "unix-dgram socket").with_stall(common.timeout());
            send_frames(&mut sink, &opts)
        }
        (None, transport) => {
            let what = format!("{transport} socket");
            let mut sink = StreamSink::new(sock.as_fd(), WritePolicy::Buffered(SEND_BUFFER), what)?
                .with_stall(common.timeout());
            send_frames(&mut sink, &opts)
        }
    };
    // A TCP connection the kernel gave up on (the reader's host vanished) is a
    // lost reader; and if the reader hung up on us, it may have said why first.
    // A reader that took nothing for --timeout (frozen) will not: no wait for it.
    let stall = common.timeout().map(|t| stalled("the reader", t).message().to_string());
    sent.map_err(|e| match lost_if_closed(sock.as_fd(), e) {
        e if stall.as_deref().is_some_and(|s| e.message().starts_with(s)) => e,
        e if e.exit() == Exit::PeerLost => reason_if_any(sock.as_fd(), e),
        e => e,
    })?;

    // 5. The reader's verdict on everything we sent.
    await_verdict_within(sock.as_fd(), common.timeout())?;
    Ok(())
}

fn send_frames(sink: &mut impl FrameSink, opts: &WriterOpts) -> Result<()> {
    run_writer(BIN, sink, opts, stdin().as_fd()).map(drop)
}
