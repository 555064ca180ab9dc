//! Sockets: a server that binds, listens and accepts; clients that connect;
//! then both send. Unix stream and sequenced-packet sockets on one machine, TCP
//! across machines, many writers served at once, the peer's uid checked.
//!
//! A socket is the one IPC mechanism that is a *conversation* (both ends send,
//! on one descriptor), serves many clients through one listening address, and
//! reaches other machines (TCP). Three transports share all the code here:
//!
//! | `--transport` | socket | boundaries | peer's uid | across machines |
//! |---|---|---|---|---|
//! | `unix` (default) | `AF_UNIX`, `SOCK_STREAM` | none: frames back to back | `SO_PEERCRED` | no |
//! | `unix-dgram` | `AF_UNIX`, `SOCK_SEQPACKET` | one frame per message | `SO_PEERCRED` | no |
//! | `tcp` | `AF_INET`/`AF_INET6`, `SOCK_STREAM` | none | — | yes |
//!
//! Why `SOCK_SEQPACKET` for "datagram": it keeps datagram boundaries (one frame
//! per message, a message of the wrong length is bad data) but is
//! connection-oriented, so the reader sees each writer's end of file when it
//! dies, `SO_PEERCRED` works, and the server can answer the client. A
//! `SOCK_DGRAM` reader learns nothing when a sender dies (it would need the lock
//! files of `ipc_common::liveness`), and can reply only if the client binds an
//! address of its own. On Unix sockets both are reliable and ordered.
//!
//! # Lifecycle
//! Server (`socket-reader`, [`listener`] and [`server`]):
//! 1. `flock(LOCK_EX | LOCK_NB)` on `<path>.lock`: a live server holds it, so a
//!    second one is refused and a dead one's socket file is safe to remove;
//! 2. `socket`, `fchmod(0600)`, `bind` (creates the socket file), `listen`;
//! 3. `accept4` each client; `SO_PEERCRED` says who it is; the server answers one
//!    line, `0 ready`, or `1` and why it refuses the client;
//! 4. a thread per client reads its frames and checks them; after the end frame
//!    it answers `0 received N messages, B bytes, digest X` (or the error, with
//!    its exit code) and closes;
//! 5. after `--writers K` writers have ended (cleanly or not), no new client is
//!    admitted and the writers still sending finish; then the socket file and
//!    the lock file are removed.
//!
//! Client (`socket-writer`, [`client`]): `socket`, `connect` (retried until
//! `--timeout`), `SO_PEERCRED` of the server, read `0 ready`, send the frames,
//! read the final answer: exit 0 only when the reader confirmed every frame.
//!
//! The server's answers are text lines, `<exit code> <text>\n` ([`Reply`]), so
//! `socat` shows them and the writer exits with the reader's verdict.
//!
//! Modules: [`listener`] (bind, the stale-path lock, accept), [`client`]
//! (connect, the server's uid, the answers), [`server`] (many clients at once),
//! [`message`] (one frame per `SOCK_SEQPACKET` message, socket buffer sizes),
//! [`fdpass`] (payloads passed as descriptors: `SCM_RIGHTS`, sealed memfds).
//!
//! # Cleanup
//! The server owns the socket file and the lock file ([`listener::Listener`]
//! removes both on drop: success, error, SIGINT/SIGTERM). A server killed with
//! SIGKILL leaves both; the next server finds the lock free, so it knows the
//! socket file is dead, removes it and binds (no `--force` needed). Abstract
//! sockets (`--abstract NAME`) and TCP ports leave nothing: the kernel releases
//! the name when the last descriptor closes.
//!
//! # Pitfalls
//! - `bind` fails with `EADDRINUSE` on an existing path even if no process is
//!   behind it: a socket file outlives its server. Removing it blindly can take
//!   over a live server's path; the lock file tells the two cases apart.
//! - `sun_path` holds 108 bytes with the terminating NUL: a longer path cannot
//!   be bound or connected at all, so it is refused before any system call.
//! - `connect` follows symbolic links: the client checks the path with `lstat`.
//! - The abstract namespace ignores file permissions: anyone in the same network
//!   namespace can connect, or bind the name first. Check `SO_PEERCRED` (both
//!   ends do here).
//! - Rust ignores SIGPIPE, so writing to a closed socket is `EPIPE`, not death.
//! - A TCP peer whose host loses power or network sends nothing, not even an
//!   end of file: without keepalive and `TCP_USER_TIMEOUT` ([`tcp_options`])
//!   the other end waits for hours. Here a vanished writer host is noticed
//!   within 5 s, a vanished reader host within 30 s.

use std::fmt;
use std::mem::size_of;
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use ipc_common::error::{Context, Error, Exit, Result};
use ipc_common::paths::{self, byte_len};
use ipc_common::signals;
use ipc_common::stream::STREAM_BUFFER;
use ipc_common::wait::{Deadline, wait_fd};
use nix::errno::Errno;
use nix::poll::PollFlags;
use nix::sys::socket::{MsgFlags, SockType, getsockopt, recv, send, setsockopt, sockopt};

pub mod client;
pub mod fdpass;
pub mod listener;
pub mod message;
pub mod server;

/// File name of the stream socket in the private directory.
pub const STREAM_NAME: &str = "socket";
/// File name of the sequenced-packet socket in the private directory.
pub const DGRAM_NAME: &str = "socket-dgram";
/// Appended to the socket path to name the server's lock file.
pub const LOCK_SUFFIX: &str = ".lock";
/// Where the TCP server listens unless told: loopback, a port the kernel picks.
pub const DEFAULT_TCP_ADDR: &str = "127.0.0.1:0";
/// Connections the kernel queues before `accept` (capped by `net.core.somaxconn`).
pub const BACKLOG: i32 = 128;
/// Bytes in `sockaddr_un.sun_path`, the terminating NUL included (108 on Linux).
pub const SUN_PATH_LEN: usize = size_of::<libc::sockaddr_un>() - size_of::<libc::sa_family_t>();
/// The client gathers small frames into writes of this size (stream transports).
pub const SEND_BUFFER: usize = STREAM_BUFFER;
/// Longest answer line the server sends.
pub const REPLY_MAX: usize = 1024;
/// TCP keepalive: seconds a connection may be quiet before the kernel probes
/// the other host (`TCP_KEEPIDLE`; the kernel's default is two hours).
pub const KEEPALIVE_IDLE_SECS: u32 = 2;
/// TCP keepalive: seconds between unanswered probes (`TCP_KEEPINTVL`).
pub const KEEPALIVE_INTERVAL_SECS: u32 = 1;
/// TCP keepalive: unanswered probes before the connection is dropped
/// (`TCP_KEEPCNT`): 2 + 3 × 1 = a quiet connection to a vanished host ends
/// within 5 s.
pub const KEEPALIVE_PROBES: u32 = 3;
/// `TCP_USER_TIMEOUT` on the reader's connections: a writer's host that stops
/// answering is given up after 5 s (the same as keepalive's 2 + 3 × 1).
pub const READER_USER_TIMEOUT: Duration = Duration::from_secs(5);
/// `TCP_USER_TIMEOUT` on the writer's connection: 30 s, longer than the
/// reader's, because Linux applies it also to a receiver that keeps its window
/// closed: a reader stopped with Ctrl-Z, or printing to a paused terminal,
/// would otherwise lose its writers after 5 s.
pub const WRITER_USER_TIMEOUT: Duration = Duration::from_secs(30);

/// `--idle-timeout` when not given, for a TCP reader listening on an address
/// other than loopback: peers it cannot identify may hold a connection slot
/// only this long without completing a frame.
pub const REMOTE_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// The idle timeout a reader uses unless told: none on Unix sockets and TCP
/// loopback (every peer is a local process), [`REMOTE_IDLE_TIMEOUT`] on a TCP
/// address that other machines can reach.
#[must_use]
pub fn default_idle_timeout(endpoint: &Endpoint) -> Option<Duration> {
    match endpoint {
        Endpoint::Tcp(addr) if !addr.ip().is_loopback() => Some(REMOTE_IDLE_TIMEOUT),
        _ => None,
    }
}

/// Which kind of socket: `--transport unix|unix-dgram|tcp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `AF_UNIX` `SOCK_STREAM`: a byte stream, frames back to back.
    Unix,
    /// `AF_UNIX` `SOCK_SEQPACKET`: one frame per message, with connections.
    UnixDgram,
    /// TCP: a byte stream to a host and port, possibly on another machine.
    Tcp,
}

impl Transport {
    /// The socket type to ask `socket(2)` for.
    #[must_use]
    pub fn sock_type(self) -> SockType {
        match self {
            Transport::Unix | Transport::Tcp => SockType::Stream,
            Transport::UnixDgram => SockType::SeqPacket,
        }
    }

    /// The mechanism's name in messages ("unix", "unix-dgram", "tcp").
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Transport::Unix => "unix",
            Transport::UnixDgram => "unix-dgram",
            Transport::Tcp => "tcp",
        }
    }

    /// Whether this is a byte stream (where `--raw` makes sense).
    #[must_use]
    pub fn is_stream(self) -> bool {
        self.sock_type() == SockType::Stream
    }
}

impl FromStr for Transport {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "unix" => Ok(Transport::Unix),
            "unix-dgram" => Ok(Transport::UnixDgram),
            "tcp" => Ok(Transport::Tcp),
            _ => Err(format!("{s:?}: expected unix, unix-dgram or tcp")),
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where the server listens and the client connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A socket file (`--path`, or the default in the private directory).
    Path(PathBuf),
    /// A name in the abstract namespace (`--abstract NAME`): no file at all.
    Abstract(String),
    /// A TCP address (`--addr HOST:PORT`), resolved.
    Tcp(SocketAddr),
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Path(p) => write!(f, "{}", p.display()),
            Endpoint::Abstract(name) => write!(f, "@{name}"),
            Endpoint::Tcp(addr) => write!(f, "{addr}"),
        }
    }
}

/// The endpoint options both binaries take, as typed.
#[derive(Debug, Clone, Default)]
pub struct EndpointArgs {
    /// `--path PATH`
    pub path: Option<PathBuf>,
    /// `--abstract NAME`
    pub abstract_name: Option<String>,
    /// `--addr HOST:PORT`
    pub addr: Option<String>,
}

/// Checks the endpoint options against the transport and resolves them, all
/// before any system call but `getaddrinfo` (usage errors exit 2).
///
/// `default_tcp` is the address used when `--addr` is absent (the server has
/// one; the client must be told).
pub fn endpoint(
    transport: Transport,
    args: &EndpointArgs,
    default_tcp: Option<&str>,
) -> Result<Endpoint> {
    if transport == Transport::Tcp {
        if args.path.is_some() || args.abstract_name.is_some() {
            return Err(Error::usage(
                "--path and --abstract name Unix sockets; with --transport tcp give --addr HOST:PORT",
            ));
        }
        let Some(addr) = args.addr.as_deref().or(default_tcp) else {
            return Err(Error::usage(
                "--transport tcp needs --addr HOST:PORT (socket-reader prints it on its ready line)",
            ));
        };
        return resolve(addr).map(Endpoint::Tcp);
    }
    if args.addr.is_some() {
        return Err(Error::usage(
            "--addr is for --transport tcp; Unix sockets take --path or --abstract",
        ));
    }
    match (&args.path, &args.abstract_name) {
        (Some(_), Some(_)) => Err(Error::usage(
            "--path and --abstract exclude each other: a socket has a file or an abstract name",
        )),
        (None, Some(name)) => {
            check_abstract_name(name)?;
            Ok(Endpoint::Abstract(name.clone()))
        }
        (Some(path), None) => {
            check_sun_path("--path", path)?;
            Ok(Endpoint::Path(path.clone()))
        }
        (None, None) => {
            let name = match transport {
                Transport::UnixDgram => DGRAM_NAME,
                _ => STREAM_NAME,
            };
            // Only computed here: the private directory is made (mkdir) by the
            // caller once the path is known to fit.
            let path = paths::private_dir_path().join(name);
            check_sun_path(
                "default socket path (set XDG_RUNTIME_DIR shorter, or give --path)",
                &path,
            )?;
            Ok(Endpoint::Path(path))
        }
    }
}

/// Refuses a path `bind`/`connect` cannot take: empty, or too long for
/// `sun_path` (107 bytes and the NUL). Exit 2, before any system call.
pub fn check_sun_path(flag: &str, path: &Path) -> Result<()> {
    let len = byte_len(path);
    if len == 0 {
        return Err(Error::usage(format!("{flag}: the socket path is empty")));
    }
    if len >= SUN_PATH_LEN {
        return Err(Error::usage(format!(
            "{flag}: socket path {} is {len} bytes; sun_path holds at most {} (plus the NUL)",
            path.display(),
            SUN_PATH_LEN - 1
        )));
    }
    Ok(())
}

/// Refuses an abstract name that does not fit `sun_path` after its leading NUL.
pub fn check_abstract_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() >= SUN_PATH_LEN {
        return Err(Error::usage(format!(
            "--abstract: the name is {} bytes; it must be 1 to {}",
            name.len(),
            SUN_PATH_LEN - 1
        )));
    }
    Ok(())
}

/// Resolves `HOST:PORT` (numeric, or a name through `getaddrinfo`).
pub fn resolve(addr: &str) -> Result<SocketAddr> {
    if let Ok(sa) = addr.parse::<SocketAddr>() {
        return Ok(sa);
    }
    if !addr.contains(':') {
        return Err(Error::usage(format!(
            "--addr {addr:?}: expected HOST:PORT, as in 127.0.0.1:5000 or [::1]:5000"
        )));
    }
    let mut found =
        addr.to_socket_addrs().map_err(|e| Error::system(format!("resolve {addr}: {e}")))?;
    found.next().ok_or_else(|| Error::system(format!("resolve {addr}: no address")))
}

/// A Unix peer's credentials, as `SO_PEERCRED` reports them: the process that
/// called `connect` (or, seen from the client, `listen`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Process id.
    pub pid: i32,
    /// Effective user id.
    pub uid: u32,
    /// Effective group id.
    pub gid: u32,
}

impl fmt::Display for PeerCred {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "pid {} uid {} gid {}", self.pid, self.uid, self.gid)
    }
}

/// `getsockopt(SO_PEERCRED)`: who is at the other end of a connected Unix socket.
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<PeerCred> {
    // The kernel recorded these at connect/listen time; the peer cannot forge them.
    let cred = getsockopt(&fd, sockopt::PeerCredentials).context(|| "getsockopt SO_PEERCRED")?;
    Ok(PeerCred { pid: cred.pid(), uid: cred.uid(), gid: cred.gid() })
}

/// The options of every TCP connection, on both ends: no Nagle delay, and a
/// vanished host noticed in seconds rather than hours (`user_timeout`:
/// [`READER_USER_TIMEOUT`] or [`WRITER_USER_TIMEOUT`]).
///
/// Without them a remote host that loses power or network hangs its peer
/// forever: nothing arrives, not even an end of file. Keepalive covers a quiet
/// connection (the reader waiting for frames); `TCP_USER_TIMEOUT` covers data
/// that is never acknowledged (the writer sending into the void), which
/// otherwise retransmits for about 15 minutes (`tcp_retries2`). Either way the
/// next read or write fails with `ETIMEDOUT` (or `EHOSTUNREACH`), which
/// [`lost_if_closed`] turns into a lost peer (exit 3).
pub fn tcp_options(fd: BorrowedFd<'_>, user_timeout: Duration) -> Result<()> {
    // TCP_NODELAY: answer lines and text-mode lines are tiny; send them now,
    // not after Nagle's wait for an acknowledgement (up to 40 ms with delayed ACKs).
    setsockopt(&fd, sockopt::TcpNoDelay, &true).context(|| "setsockopt TCP_NODELAY")?;
    // SO_KEEPALIVE: let the kernel probe the other host when the connection is quiet...
    setsockopt(&fd, sockopt::KeepAlive, &true).context(|| "setsockopt SO_KEEPALIVE")?;
    // ...after 2 s of quiet (TCP_KEEPIDLE), every second (TCP_KEEPINTVL), 3 times (TCP_KEEPCNT).
    setsockopt(&fd, sockopt::TcpKeepIdle, &KEEPALIVE_IDLE_SECS)
        .context(|| "setsockopt TCP_KEEPIDLE")?;
    setsockopt(&fd, sockopt::TcpKeepInterval, &KEEPALIVE_INTERVAL_SECS)
        .context(|| "setsockopt TCP_KEEPINTVL")?;
    setsockopt(&fd, sockopt::TcpKeepCount, &KEEPALIVE_PROBES)
        .context(|| "setsockopt TCP_KEEPCNT")?;
    // TCP_USER_TIMEOUT (ms): give up on data unacknowledged this long. When set,
    // it also replaces TCP_KEEPCNT: keepalive gives up once it has passed.
    let ms = u32::try_from(user_timeout.as_millis()).unwrap_or(u32::MAX);
    setsockopt(&fd, sockopt::TcpUserTimeout, &ms).context(|| "setsockopt TCP_USER_TIMEOUT")
}

/// Errors by which the kernel says a connection is gone: reset by the peer,
/// given up by keepalive or `TCP_USER_TIMEOUT`, or unreachable (ICMP).
#[must_use]
pub fn connection_gone(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::ECONNRESET
            | Errno::EPIPE
            | Errno::ETIMEDOUT
            | Errno::EHOSTUNREACH
            | Errno::ENETUNREACH
            | Errno::ENOTCONN
    )
}

/// Turns a system error on a connection the kernel has since closed into a
/// lost peer (exit 3); any other error is returned as it is.
///
/// The shared byte-stream code maps only `ECONNRESET` and `EPIPE` to a lost
/// peer; a TCP connection that keepalive or `TCP_USER_TIMEOUT` gave up on fails
/// its read or write with `ETIMEDOUT` instead. The kernel reports that error
/// once; after it the connection reads as end of file, which is how this tells
/// a dead connection from a failure of ours.
#[must_use]
pub fn lost_if_closed(fd: BorrowedFd<'_>, err: Error) -> Error {
    if err.exit() != Exit::System {
        return err;
    }
    let mut byte = [0u8; 1];
    // recv MSG_PEEK | MSG_DONTWAIT: look, without taking anything or waiting.
    match recv(fd.as_raw_fd(), &mut byte, MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT) {
        Ok(0) => err.with_exit(Exit::PeerLost),
        Err(e) if connection_gone(e) => err.with_exit(Exit::PeerLost),
        _ => err,
    }
}

/// Whether a peer of `uid` may talk to us: our own uid, or one in `allowed`.
#[must_use]
pub fn uid_allowed(uid: u32, allowed: &[u32]) -> bool {
    uid == paths::uid() || allowed.contains(&uid)
}

/// One answer line from the server: `<exit code> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// 0 on success, else the SPEC exit code of the failure.
    pub code: u8,
    /// What the server says.
    pub text: String,
}

impl Reply {
    /// `0 <text>`.
    #[must_use]
    pub fn ok(text: impl Into<String>) -> Self {
        Reply { code: 0, text: text.into() }
    }

    /// The error's exit code and message.
    #[must_use]
    pub fn from_error(err: &Error) -> Self {
        Reply { code: err.exit().code(), text: err.message().to_string() }
    }

    /// The line on the wire, newline-terminated, at most [`REPLY_MAX`] bytes.
    #[must_use]
    pub fn to_line(&self) -> String {
        let mut text: String = self.text.replace('\n', " ");
        // Room for the code (up to 3 digits), its space and the newline.
        let room = REPLY_MAX - 5;
        if text.len() > room {
            let mut cut = room;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        format!("{} {text}\n", self.code)
    }

    /// Parses a line (without its newline).
    #[must_use]
    pub fn parse(line: &str) -> Option<Self> {
        let (code, text) = line.split_once(' ')?;
        Some(Reply { code: code.parse().ok()?, text: text.to_string() })
    }

    /// As an error of the class its code names (`who` says whose words they are).
    #[must_use]
    pub fn into_error(self, who: &str) -> Error {
        let exit = match self.code {
            2 => Exit::Usage,
            // The reader was stopped (130/143): for us, the peer went away.
            3 | 128.. => Exit::PeerLost,
            4 => Exit::BadData,
            _ => Exit::System,
        };
        Error::new(exit, format!("{who}: {}", self.text))
    }
}

/// Sends one answer line, best effort: the client may be gone already.
/// Never blocks (the server's sending side of a connection carries only these
/// few short lines, so the socket buffer always has room).
pub fn send_reply(fd: BorrowedFd<'_>, reply: &Reply) {
    let line = reply.to_line();
    // send with MSG_DONTWAIT: one short write; on SOCK_SEQPACKET, one message.
    let _ = send(fd.as_raw_fd(), line.as_bytes(), MsgFlags::MSG_DONTWAIT);
}

/// Reads one answer line, waiting until `deadline`. `Ok(None)` at end of file
/// (or a connection the kernel gave up on) without a complete line, or when
/// the deadline passed.
pub fn read_reply(fd: BorrowedFd<'_>, deadline: &Deadline) -> Result<Option<Reply>> {
    let mut buf = [0u8; REPLY_MAX];
    let mut have = 0;
    loop {
        // recv: the server sends nothing else until we send again, so reading a
        // whole buffer never takes bytes past this line.
        match recv(fd.as_raw_fd(), &mut buf[have..], MsgFlags::MSG_DONTWAIT) {
            Ok(0) => return Ok(None),
            Err(e) if connection_gone(e) => return Ok(None),
            Ok(n) => {
                have += n;
                if let Some(nl) = buf[..have].iter().position(|&b| b == b'\n') {
                    let line = String::from_utf8_lossy(&buf[..nl]);
                    return Ok(Some(Reply::parse(&line).unwrap_or_else(|| Reply {
                        code: 1,
                        text: format!("unexpected answer {line:?}"),
                    })));
                }
                if have == buf.len() {
                    return Ok(Some(Reply { code: 1, text: "answer line too long".into() }));
                }
            }
            Err(Errno::EAGAIN) => {
                if !wait_fd(fd, PollFlags::POLLIN, deadline, || Ok(()))? {
                    return Ok(None);
                }
            }
            Err(Errno::EINTR) => signals::check()?,
            Err(e) => return Err(Error::errno("recv answer", e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sun_path_is_108_bytes_with_its_nul() {
        assert_eq!(SUN_PATH_LEN, 108);
        let ok = PathBuf::from(format!("/{}", "x".repeat(106)));
        check_sun_path("--path", &ok).unwrap();
        let long = PathBuf::from(format!("/{}", "x".repeat(107)));
        let err = check_sun_path("--path", &long).unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        assert!(err.message().contains("108 bytes"), "{err}");
    }

    #[test]
    fn replies_round_trip_with_their_exit_code() {
        let err = Error::bad_data("unix: frame #1: bad magic");
        let line = Reply::from_error(&err).to_line();
        assert_eq!(line, "4 unix: frame #1: bad magic\n");
        let back = Reply::parse(line.trim_end()).unwrap();
        let err = back.into_error("socket-reader");
        assert_eq!(err.exit(), Exit::BadData);
        assert_eq!(err.message(), "socket-reader: unix: frame #1: bad magic");
    }

    #[test]
    fn only_tcp_reachable_from_other_machines_has_a_default_idle_timeout() {
        let tcp = |a: &str| Endpoint::Tcp(a.parse().unwrap());
        assert_eq!(default_idle_timeout(&tcp("0.0.0.0:5000")), Some(REMOTE_IDLE_TIMEOUT));
        assert_eq!(default_idle_timeout(&tcp("10.77.0.1:5000")), Some(REMOTE_IDLE_TIMEOUT));
        assert_eq!(default_idle_timeout(&tcp("127.0.0.1:0")), None);
        assert_eq!(default_idle_timeout(&tcp("[::1]:0")), None);
        assert_eq!(default_idle_timeout(&Endpoint::Path("/x".into())), None);
    }

    #[test]
    fn a_system_error_on_a_dead_connection_is_a_lost_peer() {
        use std::os::fd::AsFd;
        use std::os::unix::net::UnixStream;
        let (a, b) = UnixStream::pair().unwrap();
        let err = Error::system("read connection 1: ETIMEDOUT: Connection timed out");
        // The peer is still there: our own failure.
        assert_eq!(lost_if_closed(a.as_fd(), err.clone()).exit(), Exit::System);
        drop(b);
        let lost = lost_if_closed(a.as_fd(), err.clone());
        assert_eq!((lost.exit(), lost.message()), (Exit::PeerLost, err.message()));
        // Other classes are left alone.
        let bad = Error::bad_data("frame #1: bad magic");
        assert_eq!(lost_if_closed(a.as_fd(), bad.clone()), bad);
    }

    #[test]
    fn endpoint_options_must_match_the_transport() {
        let tcp_with_path = EndpointArgs { path: Some("/x".into()), ..EndpointArgs::default() };
        let err = endpoint(Transport::Tcp, &tcp_with_path, Some(DEFAULT_TCP_ADDR)).unwrap_err();
        assert_eq!(err.exit(), Exit::Usage);
        let err = endpoint(Transport::Tcp, &EndpointArgs::default(), None).unwrap_err();
        assert!(err.message().contains("needs --addr"), "{err}");
        let e = endpoint(Transport::Tcp, &EndpointArgs::default(), Some(DEFAULT_TCP_ADDR)).unwrap();
        assert_eq!(e.to_string(), "127.0.0.1:0");
    }
}
