//! `socket-reader`: the server. Binds a socket (Unix stream, Unix sequenced
//! packets, or TCP), accepts any number of writers at once, checks every frame
//! of each, and prints the text messages and one summary line per writer.
//!
//! ```text
//! terminal 1                                    terminal 2
//! $ socket-reader
//! socket-reader: ready: listening on unix /run/user/1000/ipc-demos/socket
//!                                               $ socket-writer
//!                                               hello
//! hello                                         ^D
//!                                               socket-writer: sent 1 messages, 5 bytes, digest 3610a686
//! socket-reader: received 1 messages, 5 bytes, digest 3610a686
//!
//! $ socket-reader --transport tcp --addr 0.0.0.0:5000 --writers 2 --quiet
//! socket-reader: ready: listening on tcp 0.0.0.0:5000
//!                                               $ socket-writer --transport tcp --addr host1:5000 --id 1 --count 1000 &
//!                                               $ socket-writer --transport tcp --addr host1:5000 --id 2 --count 1000
//! ```
//!
//! Start it first: it creates the socket file (mode 0600, beside a lock file
//! that proves it alive) and removes both when it exits, also on Ctrl-C. A
//! socket file left by a killed server is recognised (its lock is free),
//! removed, and bound again. Writers that start first wait (`--timeout`).
//! Partner: `socket-writer`. See socket(7), unix(7), tcp(7), accept(2).

use std::path::PathBuf;
use std::process::ExitCode;

use ipc_common::error::{Error, Result};
use ipc_common::opts::{self, ReaderArgs};
use ipc_common::paths;
use ipc_common::wait::timeout_secs;
use ipc_common::{announce_ready, say, signals};
use socket_demo::listener::Listener;
use socket_demo::server::{ServerOpts, serve, serve_raw};
use socket_demo::{
    DEFAULT_TCP_ADDR, Endpoint, EndpointArgs, Transport, default_idle_timeout, endpoint,
};

const BIN: &str = "socket-reader";

ipc_common::reader_args! {
    /// Listen on a socket, serve every writer that connects (several at once),
    /// check each frame, print text messages, and remove the socket when done.
    #[argh(note = "--writers K counts writers that have ended, cleanly or not. A client is a\nwriter as soon as its first bytes are a frame magic (IPC1, or FDP1 for a\npassed descriptor), even if it dies inside that first frame; one that never\nsends one (garbage, silence, nothing) is a stray: dropped with one line, never\ncounted. Once K writers have ended, the reader admits no new client, drops the\nstrays, lets every writer still sending finish (none is cut off mid-stream),\nand exits: 0 if every writer sent its end frame, else the first failure's code.\n--timeout waits for the first writer: clients that are refused or send nothing\ndo not stop the clock.")]
    #[argh(example = "socket-reader\nsocket-reader --writers 8 --count 80000 --idle-timeout 5\nsocket-reader --transport tcp --addr 0.0.0.0:5000\nsocket-reader --transport unix-dgram --verbose\nsocket-reader --raw --path /tmp/s   # then: python3 -c 'import socket; s=socket.socket(socket.AF_UNIX); s.connect(\"/tmp/s\"); s.send(b\"hi\")'")]
    struct Args {
        /// unix (stream, default), unix-dgram (sequenced packets: one frame per message) or tcp
        #[argh(option, default = "Transport::Unix", arg_name = "KIND")]
        transport: Transport,
        /// socket file to create (default: <private dir>/socket, or socket-dgram)
        #[argh(option)]
        path: Option<PathBuf>,
        /// bind NAME in the abstract namespace instead of a file (no file permissions apply!)
        #[argh(option, long = "abstract", arg_name = "NAME")]
        abstract_name: Option<String>,
        /// TCP address to listen on (default 127.0.0.1:0: the kernel picks a port, printed on the ready line)
        #[argh(option, arg_name = "HOST:PORT")]
        addr: Option<String>,
        /// also admit Unix peers of this uid (repeatable); others are refused
        #[argh(option, arg_name = "UID")]
        allow_uid: Vec<u32>,
        /// drop a client that completes no whole frame for SECS seconds (a large frame on a slow link counts only once complete); 0 never (the default, except 60 for TCP on an address other than loopback)
        #[argh(option, arg_name = "SECS")]
        idle_timeout: Option<u64>,
        /// say who connects (pid and uid of Unix peers, address of TCP peers) and which writer each is
        #[argh(switch, short = 'v')]
        verbose: bool,
        /// pass one client's bytes through unframed, like cat (stream transports)
        #[argh(switch)]
        raw: bool,
    }
}

fn main() -> ExitCode {
    opts::main(BIN, run)
}

fn run(args: &Args) -> Result<()> {
    let common = args.common();
    let reader = common.reader_opts()?;
    // 1. Where to listen: checked and resolved before any other system call
    //    (a path too long for sun_path is a usage error, exit 2).
    let endpoint_args = EndpointArgs {
        path: args.path.clone(),
        abstract_name: args.abstract_name.clone(),
        addr: args.addr.clone(),
    };
    let endpoint = endpoint(args.transport, &endpoint_args, Some(DEFAULT_TCP_ADDR))?;
    if args.raw && !args.transport.is_stream() {
        return Err(Error::usage(
            "--raw needs a byte stream: --transport unix or tcp (unix-dgram keeps message boundaries)",
        ));
    }
    signals::install()?;
    if args.path.is_none() && matches!(endpoint, Endpoint::Path(_)) {
        paths::private_dir()?;
    }

    // 2. Lock, bind, listen (a dead server's socket file is removed first).
    let listener = Listener::bind(args.transport, &endpoint)?;
    if listener.removed_stale() {
        say!("{BIN}: note: removed the socket file of a server that is gone (its lock was free)");
    }
    announce_ready(BIN, format_args!("listening on {listener}"));

    let server = ServerOpts {
        bin: BIN,
        reader: &reader,
        first_timeout: common.timeout(),
        idle_timeout: match args.idle_timeout {
            Some(secs) => timeout_secs(secs),
            None => default_idle_timeout(&endpoint),
        },
        allow_uids: &args.allow_uid,
        verbose: args.verbose,
    };
    if args.raw {
        // 3. Raw: one client's bytes to standard output, until it closes.
        serve_raw(&listener, &server)?;
        return Ok(());
    }
    // 3. Accept writers, a thread each, until --writers K have ended.
    serve(&listener, &server)?;
    // 4. `listener` drops here (and on every error path): socket file and lock removed.
    Ok(())
}
