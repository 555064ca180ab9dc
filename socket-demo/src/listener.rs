//! The server's side of the rendezvous: `socket`, `bind`, `listen`, `accept`,
//! and the lock file that solves the stale-path problem.
//!
//! # The stale path
//! A socket file outlives its server: after a crash `bind` fails with
//! `EADDRINUSE` although nobody listens. The usual fixes are both wrong: unlink
//! before bind takes over a live server's path (its clients silently go to the
//! newcomer), and "connect to see if someone answers" races with a server that
//! is starting. Here the server holds `flock(LOCK_EX | LOCK_NB)` on
//! `<path>.lock` for as long as it lives; the kernel drops the lock when the
//! process dies, however it dies. So:
//!
//! - lock taken → no server of ours is alive: a socket file at the path is dead;
//!   it is removed (after a last check that no *other* program listens there)
//!   and the bind goes on;
//! - lock held elsewhere → a live server: refused (exit 1), path untouched.
//!
//! The lock file holds the live server's pid, for the error message.

use std::fmt;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use ipc_common::error::{Context, Error, Result};
use ipc_common::liveness::open_lock_file;
use ipc_common::paths::{check_ours, expect_kind, remove_if_same};
use nix::errno::Errno;
use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockaddrStorage, UnixAddr, accept4, bind, connect,
    getpeername, getsockname, listen, setsockopt, socket, sockopt,
};
use nix::sys::stat::{Mode, SFlag, fchmod, lstat};
use nix::sys::uio::{pread, pwrite};
use nix::unistd::{ftruncate, unlink};

use crate::{
    BACKLOG, Endpoint, LOCK_SUFFIX, PeerCred, READER_USER_TIMEOUT, Transport, peer_cred,
    tcp_options,
};

/// Mode of the socket file: connecting needs write permission, so 0600 is "us only".
pub const SOCKET_MODE: Mode = Mode::S_IRUSR.union(Mode::S_IWUSR);

/// `<path>.lock`.
#[must_use]
pub fn lock_path(path: &Path) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(LOCK_SUFFIX);
    PathBuf::from(p)
}

/// The listening socket, and the file and lock it owns (if it has a path).
#[derive(Debug)]
pub struct Listener {
    // Declared first, dropped first: stop listening, then remove the file.
    fd: OwnedFd,
    transport: Transport,
    shown: String,
    file: Option<SocketFile>,
    removed_stale: bool,
}

/// A bound socket file and the lock that proves its server alive; removes both on drop.
#[derive(Debug)]
struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
    // Dropped after `Drop::drop` below has unlinked the socket file: the lock is
    // held until the very end.
    _lock: LockFile,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        // unlink, but only the socket we bound, not one someone put there since.
        remove_if_same(&self.path, self.dev, self.ino);
    }
}

/// `<path>.lock`, created 0600 and held with `flock`; removed on drop.
#[derive(Debug)]
struct LockFile {
    /// Open for as long as we live: the flock is on this open file.
    _fd: OwnedFd,
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        // Removed while still locked; the lock itself goes with the descriptor.
        remove_if_same(&self.path, self.dev, self.ino);
    }
}

/// `flock(LOCK_EX | LOCK_NB)`: `Ok(false)` if another open file holds it.
fn try_flock(fd: BorrowedFd<'_>, path: &Path) -> Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    match Errno::result(rc) {
        Ok(_) => Ok(true),
        Err(Errno::EWOULDBLOCK) => Ok(false),
        Err(e) => Err(Error::errno(format!("flock {}", path.display()), e)),
    }
}

impl LockFile {
    /// Creates or opens `<socket>.lock` and takes its lock, or explains who has it.
    fn acquire(socket: &Path) -> Result<LockFile> {
        let path = lock_path(socket);
        loop {
            // open O_CREAT | O_NOFOLLOW, 0600: never through a planted link,
            // and only a regular file of ours.
            let Some((fd, st)) = open_lock_file(&path, true)? else { continue };
            if !try_flock(fd.as_fd(), &path)? {
                let pid = read_pid(fd.as_fd()).map_or(String::new(), |p| format!(" (pid {p})"));
                return Err(Error::system(format!(
                    "socket {} is in use by a live socket-reader{pid}, which holds {}",
                    socket.display(),
                    path.display()
                ))
                .hint("stop that reader first, or pick another --path"));
            }
            // Still the file at the path? Its previous owner may have removed it
            // between our open and our lock; then lock the new one instead.
            match lstat(&path) {
                Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {}
                _ => continue,
            }
            // Our pid, for the message a second server prints.
            ftruncate(&fd, 0).context(|| format!("ftruncate {}", path.display()))?;
            let pid = format!("{}\n", std::process::id());
            pwrite(&fd, pid.as_bytes(), 0).context(|| format!("write {}", path.display()))?;
            return Ok(LockFile { _fd: fd, path, dev: st.st_dev, ino: st.st_ino });
        }
    }
}

fn read_pid(fd: BorrowedFd<'_>) -> Option<u32> {
    let mut buf = [0u8; 16];
    let n = pread(fd, &mut buf, 0).ok()?;
    std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
}

/// Whether something accepts connections at `path` (a program that is not a
/// socket-reader and so holds no lock). Used only once the lock is ours.
fn someone_listens(path: &Path, transport: Transport) -> Result<bool> {
    let probe = new_socket(AddressFamily::Unix, transport)?;
    let addr = UnixAddr::new(path).context(|| format!("socket address {}", path.display()))?;
    // connect: refused means a dead socket file; anything else means a listener.
    match connect(probe.as_raw_fd(), &addr) {
        Ok(()) | Err(Errno::EAGAIN | Errno::EPROTOTYPE) => Ok(true),
        Err(Errno::ECONNREFUSED) => Ok(false),
        Err(e) => Err(Error::errno(format!("connect {} (probe)", path.display()), e)),
    }
}

fn new_socket(family: AddressFamily, transport: Transport) -> Result<OwnedFd> {
    // socket: non-blocking, so accept/connect never wait in the kernel without a
    // bound (the loops poll in ticks and watch SIGINT); close-on-exec.
    socket(family, transport.sock_type(), SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC, None)
        .context(|| format!("socket {}", transport.name()))
}

impl Listener {
    /// Binds and listens on `endpoint` (see the module documentation for a path).
    pub fn bind(transport: Transport, endpoint: &Endpoint) -> Result<Listener> {
        match endpoint {
            Endpoint::Path(path) => bind_path(transport, path),
            Endpoint::Abstract(name) => bind_abstract(transport, name),
            Endpoint::Tcp(addr) => bind_tcp(*addr),
        }
    }

    /// The listening descriptor (to poll for new connections).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The transport it listens on.
    #[must_use]
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether a dead server's socket file was found and removed first.
    #[must_use]
    pub fn removed_stale(&self) -> bool {
        self.removed_stale
    }

    /// The socket file, if it has one.
    #[must_use]
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|f| f.path.as_path())
    }

    /// The next pending connection, and who is at the other end; see [`Accepted`].
    ///
    /// Only a failure of the listening socket itself is an `Err`: whatever goes
    /// wrong with one connection, or with the resources to take it, is for the
    /// caller to note and go on.
    pub fn accept(&self) -> Result<Accepted> {
        // accept4: the new connection is non-blocking and close-on-exec from birth.
        let fd = match accept4(&self.fd, SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC) {
            Ok(fd) => fd,
            // Nothing pending, or the client gave up before we got to it.
            Err(Errno::EAGAIN | Errno::ECONNABORTED | Errno::EINTR) => {
                return Ok(Accepted::Nothing);
            }
            // Out of descriptors or kernel memory: the connection stays in the
            // backlog until we can take it.
            Err(e @ (Errno::EMFILE | Errno::ENFILE | Errno::ENOBUFS | Errno::ENOMEM)) => {
                let err = Error::errno(format!("accept on {}", self.shown), e);
                return Ok(Accepted::Exhausted(
                    err.hint("raise ulimit -n, or let fewer clients connect at once"),
                ));
            }
            // A network error already pending on the new connection (accept(2)
            // asks to treat these like EAGAIN): that client's problem, not ours.
            Err(
                e @ (Errno::ENETDOWN
                | Errno::EPROTO
                | Errno::ENOPROTOOPT
                | Errno::EHOSTDOWN
                | Errno::ENONET
                | Errno::EHOSTUNREACH
                | Errno::EOPNOTSUPP
                | Errno::ENETUNREACH
                | Errno::ETIMEDOUT
                | Errno::ECONNRESET
                | Errno::EPERM),
            ) => return Ok(Accepted::Dropped(Error::errno("accept", e))),
            Err(e) => return Err(Error::errno(format!("accept on {}", self.shown), e)),
        };
        match self.identify(fd.as_fd()) {
            Ok(peer) => Ok(Accepted::Client(fd, peer)),
            // Dropping `fd` closes the connection.
            Err(e) => Ok(Accepted::Dropped(e)),
        }
    }

    /// Who is at the other end of a new connection; sets the TCP options.
    fn identify(&self, fd: BorrowedFd<'_>) -> Result<Peer> {
        if self.transport != Transport::Tcp {
            return Ok(Peer::Unix(peer_cred(fd)?));
        }
        // getpeername: the client's address (ENOTCONN if it reset the
        // connection while it waited in the backlog).
        let addr: SockaddrStorage = getpeername(fd.as_raw_fd()).context(|| "getpeername")?;
        tcp_options(fd, READER_USER_TIMEOUT)?;
        Ok(Peer::Tcp(addr.to_string()))
    }
}

/// What one [`Listener::accept`] brought.
#[derive(Debug)]
pub enum Accepted {
    /// A connection, and who is at the other end.
    Client(OwnedFd, Peer),
    /// Nothing is pending.
    Nothing,
    /// A connection that failed before it could be served (its client reset
    /// it, say): already closed; the error says why.
    Dropped(Error),
    /// Out of descriptors or memory (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`):
    /// the connection waits in the backlog. Try again when a connection has
    /// ended or after a pause: the listener stays readable meanwhile, so
    /// polling it at once would spin.
    Exhausted(Error),
}

impl fmt::Display for Listener {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

/// Who connected.
#[derive(Debug, Clone)]
pub enum Peer {
    /// A Unix peer and its credentials (`SO_PEERCRED`).
    Unix(PeerCred),
    /// A TCP peer's address: no credentials cross the network.
    Tcp(String),
}

impl fmt::Display for Peer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Peer::Unix(cred) => cred.fmt(f),
            Peer::Tcp(addr) => f.write_str(addr),
        }
    }
}

fn bind_path(transport: Transport, path: &Path) -> Result<Listener> {
    crate::check_sun_path("--path", path)?;
    // 1. The lock first: while we hold it, no other socket-reader can bind here.
    let lock = LockFile::acquire(path)?;
    // 2. Whatever is at the path is now known not to belong to a live server of ours.
    let mut removed_stale = false;
    if let Some(st) = expect_kind(path, SFlag::S_IFSOCK, "socket")? {
        let what = format!("socket {}", path.display());
        check_ours(&st, &what)?;
        if someone_listens(path, transport)? {
            return Err(Error::system(format!(
                "{what} has a listener that does not hold {}; refusing to take it over",
                lock_path(path).display()
            ))
            .hint("stop that program first, or pick another --path"));
        }
        // The socket file of a server that was killed: remove it and bind anew.
        unlink(path).context(|| format!("unlink stale {what}"))?;
        removed_stale = true;
    }
    // 3. socket, then fchmod: on Linux the file `bind` creates takes the socket's
    //    mode (less the umask), so 0600 from the first instant, with no umask
    //    juggling (umask is process-wide).
    let fd = new_socket(AddressFamily::Unix, transport)?;
    fchmod(&fd, SOCKET_MODE).context(|| "fchmod socket 0600")?;
    let addr = UnixAddr::new(path).context(|| format!("socket address {}", path.display()))?;
    // 4. bind: creates the socket file. EADDRINUSE here means someone raced us.
    bind(fd.as_raw_fd(), &addr).context(|| format!("bind {}", path.display()))?;
    let st = lstat(path).context(|| format!("lstat {}", path.display()))?;
    let file = SocketFile { path: path.to_path_buf(), dev: st.st_dev, ino: st.st_ino, _lock: lock };
    check_ours(&st, &format!("socket {}", path.display()))?;
    // 5. listen: from now on connect() succeeds, and waits in the backlog for accept.
    listen(&fd, backlog()).context(|| format!("listen {}", path.display()))?;
    Ok(Listener {
        fd,
        transport,
        shown: format!("{transport} {}", path.display()),
        file: Some(file),
        removed_stale,
    })
}

fn backlog() -> Backlog {
    Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN)
}

fn bind_abstract(transport: Transport, name: &str) -> Result<Listener> {
    let fd = new_socket(AddressFamily::Unix, transport)?;
    // An abstract address: sun_path starts with a NUL; no file, no permissions.
    let addr = UnixAddr::new_abstract(name.as_bytes()).context(|| format!("address @{name}"))?;
    match bind(fd.as_raw_fd(), &addr) {
        Ok(()) => {}
        Err(Errno::EADDRINUSE) => {
            return Err(Error::system(format!(
                "abstract socket @{name} is in use by another process"
            ))
            .hint("stop it first, or pick another --abstract name"));
        }
        Err(e) => return Err(Error::errno(format!("bind @{name}"), e)),
    }
    listen(&fd, backlog()).context(|| format!("listen @{name}"))?;
    Ok(Listener {
        fd,
        transport,
        shown: format!("{transport} @{name} (abstract)"),
        file: None,
        removed_stale: false,
    })
}

fn bind_tcp(addr: SocketAddr) -> Result<Listener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = new_socket(family, Transport::Tcp)?;
    // SO_REUSEADDR: a restarted server may bind the port while old connections
    // linger in TIME_WAIT (it never lets two live listeners share a port).
    setsockopt(&fd, sockopt::ReuseAddr, &true).context(|| "setsockopt SO_REUSEADDR")?;
    match bind(fd.as_raw_fd(), &SockaddrStorage::from(addr)) {
        Ok(()) => {}
        Err(e @ (Errno::EADDRINUSE | Errno::EACCES | Errno::EADDRNOTAVAIL)) => {
            return Err(Error::errno(format!("bind tcp {addr}"), e).hint(
                "another program may use that port, or the address is not this machine's; \
                 port 0 lets the kernel choose",
            ));
        }
        Err(e) => return Err(Error::errno(format!("bind tcp {addr}"), e)),
    }
    listen(&fd, backlog()).context(|| format!("listen tcp {addr}"))?;
    // getsockname: the port the kernel chose, when asked for port 0.
    let local: SockaddrStorage = getsockname(fd.as_raw_fd()).context(|| "getsockname")?;
    Ok(Listener {
        fd,
        transport: Transport::Tcp,
        shown: format!("tcp {local}"),
        file: None,
        removed_stale: false,
    })
}

/// For the client: whether a socket of ours is at `path` (`false` if nothing is
/// there yet); a link, another file type, or a stranger's socket is refused.
pub fn check_socket_path(path: &Path) -> Result<bool> {
    let Some(st) = expect_kind(path, SFlag::S_IFSOCK, "socket")? else {
        return Ok(false);
    };
    check_ours(&st, &format!("socket {}", path.display()))?;
    Ok(true)
}
