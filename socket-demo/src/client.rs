//! The client's side: `socket`, `connect` (retried until the server is there),
//! a look at who the server is, and its first answer.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use ipc_common::error::{Context, Error, Result};
use ipc_common::paths;
use ipc_common::wait::{Deadline, pause, wait_fd};
use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::socket::{
    AddressFamily, SockFlag, SockaddrLike, SockaddrStorage, UnixAddr, connect as connect_fd,
    getsockopt, socket, sockopt,
};

use crate::listener::check_socket_path;
use crate::{
    Endpoint, Reply, Transport, WRITER_USER_TIMEOUT, peer_cred, read_reply, tcp_options,
    uid_allowed,
};

/// How often a client retries a server that is not there yet.
pub const CONNECT_RETRY: Duration = Duration::from_millis(20);

/// Connects to the server at `endpoint`, retrying while nobody listens, up to
/// `timeout` (`None`: forever).
///
/// A path is checked with `lstat` before each try: `connect` would follow a
/// symbolic link to wherever it points.
pub fn connect(
    transport: Transport,
    endpoint: &Endpoint,
    timeout: Option<Duration>,
) -> Result<OwnedFd> {
    let deadline = Deadline::after(timeout);
    loop {
        if let Some(fd) = try_connect(transport, endpoint, &deadline)? {
            return Ok(fd);
        }
        if deadline.expired() {
            let secs = timeout.unwrap_or_default().as_secs();
            return Err(Error::peer_lost(format!(
                "no socket-reader is listening on {transport} {endpoint} within {secs} s (--timeout)"
            ))
            .hint("start socket-reader first"));
        }
        pause(&deadline, CONNECT_RETRY)?;
    }
}

/// One attempt: `Ok(None)` when nobody listens yet.
fn try_connect(
    transport: Transport,
    endpoint: &Endpoint,
    deadline: &Deadline,
) -> Result<Option<OwnedFd>> {
    let (unix, inet);
    let (family, addr): (AddressFamily, &dyn SockaddrLike) = match endpoint {
        Endpoint::Path(path) => {
            if !check_socket_path(path)? {
                return Ok(None);
            }
            unix = UnixAddr::new(path.as_path())
                .context(|| format!("socket address {}", path.display()))?;
            (AddressFamily::Unix, &unix)
        }
        Endpoint::Abstract(name) => {
            unix = UnixAddr::new_abstract(name.as_bytes()).context(|| format!("@{name}"))?;
            (AddressFamily::Unix, &unix)
        }
        Endpoint::Tcp(sa) => {
            inet = SockaddrStorage::from(*sa);
            let family = if sa.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
            (family, &inet)
        }
    };
    // socket: non-blocking, so a full backlog or a slow network never blocks
    // us beyond the deadline (and Ctrl-C works).
    let fd = socket(
        family,
        transport.sock_type(),
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )
    .context(|| format!("socket {transport}"))?;
    // connect: Unix sockets connect at once (or EAGAIN when the backlog is full);
    // TCP starts the handshake and reports EINPROGRESS.
    match connect_fd(fd.as_raw_fd(), addr) {
        Ok(()) => {}
        // Nobody listens (yet), or the socket file was just removed, or the backlog is full.
        Err(Errno::ECONNREFUSED | Errno::ENOENT | Errno::EAGAIN) => return Ok(None),
        Err(Errno::EINPROGRESS) => {
            if !wait_fd(fd.as_fd(), PollFlags::POLLOUT, deadline, || Ok(()))? {
                return Ok(None);
            }
            // SO_ERROR: how the handshake ended.
            let err = getsockopt(&fd, sockopt::SocketError).context(|| "getsockopt SO_ERROR")?;
            match Errno::from_raw(err) {
                Errno::UnknownErrno => {}
                // ECONNRESET: the listener died with our connection still in
                // its accept queue; like a refusal, nobody listens (now).
                Errno::ECONNREFUSED | Errno::ECONNRESET | Errno::ETIMEDOUT => return Ok(None),
                e => return Err(Error::errno(format!("connect {transport} {endpoint}"), e)),
            }
        }
        Err(e) => return Err(Error::errno(format!("connect {transport} {endpoint}"), e)),
    }
    if transport == Transport::Tcp {
        // No Nagle delay; keepalive and TCP_USER_TIMEOUT, so that a reader's
        // host that vanishes is noticed within 30 s, not hours.
        tcp_options(fd.as_fd(), WRITER_USER_TIMEOUT)?;
    }
    Ok(Some(fd))
}

/// On a Unix socket, refuses a server that runs as another user (unless allowed):
/// anyone may bind an abstract name first, or a path in a shared directory.
pub fn check_server(fd: BorrowedFd<'_>, endpoint: &Endpoint, allowed: &[u32]) -> Result<()> {
    if matches!(endpoint, Endpoint::Tcp(_)) {
        return Ok(());
    }
    // SO_PEERCRED on the client: the credentials of the process that called listen().
    let server = peer_cred(fd)?;
    if uid_allowed(server.uid, allowed) {
        return Ok(());
    }
    Err(Error::system(format!(
        "the process listening on {endpoint} ({server}) is not us (uid {}); refusing to talk to it",
        paths::uid()
    ))
    .hint(format!("--allow-uid {} trusts it", server.uid)))
}

/// Waits for the server's first answer: `Ok` on `0 ready`, else its reason.
pub fn await_ready(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<()> {
    match read_reply(fd, &Deadline::after(timeout))? {
        Some(Reply { code: 0, .. }) => Ok(()),
        Some(reply) => Err(reply.into_error("socket-reader refused the connection")),
        None => Err(Error::peer_lost(
            "the server closed the connection or sent no answer in time (is it a socket-reader? \
             other servers need --raw)",
        )),
    }
}

/// After the end frame: waits for the reader's verdict on everything we sent.
pub fn await_verdict(fd: BorrowedFd<'_>) -> Result<String> {
    await_verdict_within(fd, None)
}

/// [`await_verdict`], for at most `timeout` (`--timeout`: a reader frozen
/// after our last frame never answers); `None` waits as long as it takes.
pub fn await_verdict_within(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<String> {
    match read_reply(fd, &Deadline::after(timeout))? {
        Some(Reply { code: 0, text }) => Ok(text),
        Some(reply) => Err(reply.into_error("socket-reader rejected the stream")),
        None if read_side_open(fd) => Err(Error::peer_lost(format!(
            "the reader did not confirm the stream within {} s (stopped or stuck? --timeout)",
            timeout.unwrap_or_default().as_secs()
        ))),
        None => Err(Error::peer_lost("the reader went away before confirming the stream")),
    }
}

/// Whether the reader has neither sent anything nor hung up.
fn read_side_open(fd: BorrowedFd<'_>) -> bool {
    let mut fds =
        [PollFd::new(fd, PollFlags::POLLIN | PollFlags::from_bits_retain(libc::POLLRDHUP))];
    // poll with no timeout: a look at the socket's state, never a wait.
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(0))
}

/// How long a writer whose send failed waits for the reader's reason: the
/// reader sends it and closes at once, so this bounds only a wedged reader.
pub const REASON_WAIT: Duration = Duration::from_secs(1);

/// After a failed send: the reason the reader gave, if it sent one before closing.
pub fn reason_if_any(fd: BorrowedFd<'_>, err: Error) -> Error {
    match read_reply(fd, &Deadline::after(Some(REASON_WAIT))) {
        Ok(Some(reply)) if reply.code != 0 => reply.into_error("socket-reader dropped us"),
        _ => err,
    }
}
