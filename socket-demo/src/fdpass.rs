//! Passing open descriptors (`SCM_RIGHTS`): a payload that travels as a file
//! descriptor instead of bytes on the socket.
//!
//! A Unix socket can carry *open files* as ancillary data: the kernel installs
//! a duplicate of the sender's descriptor in the receiver, pointing at the same
//! open file description. The receiver needs no path and no permission on one:
//! it reads whatever the sender could read. Two uses here:
//!
//! - `socket-writer --send-fd FILE`: one frame whose payload is FILE's content;
//!   the reader reads the file through the received descriptor (with `pread`:
//!   the descriptor shares its file offset with the sender's).
//! - `socket-writer --send-memfd`: each payload goes into its own
//!   `memfd_create` segment — memory with no name in any namespace — sealed
//!   against writing, growing and shrinking, then passed; the reader maps it
//!   (`mmap`) and checks the payload in place. The seals are what make mapping
//!   safe: the sender can no longer change the bytes or truncate the file
//!   (which would turn the reader's access into SIGBUS).
//!
//! # On the wire (Unix stream only)
//! A frame with its payload in a descriptor is sent as its 24-byte header with
//! the magic `FDP1` instead of `IPC1`, and exactly one descriptor attached;
//! nothing follows it on the socket. The end frame is an ordinary `IPC1`
//! header. The reader tells such a connection from a plain one by its magic,
//! looked at with `recv(MSG_PEEK)` before anything is read: it must read
//! descriptor messages with `recvmsg`, since a plain `read` silently closes
//! any descriptors that came with the bytes.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::{Frame, HEADER_LEN, Header, Kind, MAGIC};
use ipc_common::paths::{file_kind, kind_name};
use ipc_common::payload::Digest;
use ipc_common::signals;
use ipc_common::stream::STREAM_BUFFER;
use ipc_common::wait::{Deadline, wait_fd};
use memmap2::{Mmap, MmapOptions};
use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, SealFlag, fcntl, open};
use nix::poll::PollFlags;
use nix::sys::memfd::{MFdFlags, memfd_create};
use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, send, sendmsg};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::sys::uio::pread;
use nix::unistd::write;

/// Magic of a frame header whose payload is in the attached descriptor.
pub const FD_MAGIC: [u8; 4] = *b"FDP1";
/// Name of each payload segment (shown only in `/proc/PID/fd`, as `memfd:...`).
pub const MEMFD_NAME: &str = "ipc-demos-payload";
/// The seals that make a received segment safe to map: no writes, no resizing, no unsealing.
pub const SEALS: SealFlag = SealFlag::F_SEAL_SHRINK
    .union(SealFlag::F_SEAL_GROW)
    .union(SealFlag::F_SEAL_WRITE)
    .union(SealFlag::F_SEAL_SEAL);

/// The 24 bytes announcing a frame whose payload is in a descriptor.
#[must_use]
pub fn announcement(header: &Header) -> [u8; HEADER_LEN] {
    let mut bytes = header.to_bytes();
    bytes[..4].copy_from_slice(&FD_MAGIC);
    bytes
}

/// Sends `bytes` with `fd` attached (`SCM_RIGHTS`), waiting while the socket is full.
pub fn send_with_fd(sock: BorrowedFd<'_>, bytes: &[u8], fd: BorrowedFd<'_>) -> Result<()> {
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [IoSlice::new(bytes)];
    loop {
        // sendmsg with SCM_RIGHTS: the kernel duplicates the descriptor into the
        // receiver when it reads these bytes.
        match sendmsg::<()>(sock.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None) {
            Ok(n) => return send_all(sock, &bytes[n..]),
            Err(Errno::EAGAIN) => wait_writable(sock)?,
            Err(Errno::EINTR) => signals::check()?,
            Err(Errno::EPIPE | Errno::ECONNRESET) => {
                return Err(Error::peer_lost("reader went away"));
            }
            Err(e) => return Err(Error::errno("sendmsg SCM_RIGHTS", e)),
        }
    }
}

fn wait_writable(sock: BorrowedFd<'_>) -> Result<()> {
    wait_fd(sock, PollFlags::POLLOUT, &Deadline::never(), || Ok(())).map(drop)
}

/// Plain bytes (an end frame, or the rest of a short `sendmsg`).
fn send_all(sock: BorrowedFd<'_>, mut bytes: &[u8]) -> Result<()> {
    while !bytes.is_empty() {
        match send(sock.as_raw_fd(), bytes, MsgFlags::empty()) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EAGAIN) => wait_writable(sock)?,
            Err(Errno::EINTR) => signals::check()?,
            Err(Errno::EPIPE | Errno::ECONNRESET) => {
                return Err(Error::peer_lost("reader went away"));
            }
            Err(e) => return Err(Error::errno("send", e)),
        }
    }
    Ok(())
}

/// Frames whose payloads each go in a sealed memfd, passed over the socket.
#[derive(Debug)]
pub struct MemfdSink<F: AsFd> {
    sock: F,
}

impl<F: AsFd> MemfdSink<F> {
    /// Sends over `sock`, a connected non-blocking Unix stream socket.
    pub fn new(sock: F) -> Self {
        MemfdSink { sock }
    }
}

/// Creates a sealed memfd holding `payload`.
pub fn sealed_memfd(payload: &[u8]) -> Result<OwnedFd> {
    // memfd_create: anonymous memory behind a descriptor; no name in any
    // namespace, gone when the last descriptor closes. ALLOW_SEALING, for below.
    let fd = memfd_create(MEMFD_NAME, MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING)
        .context(|| "memfd_create")?;
    let mut rest = payload;
    while !rest.is_empty() {
        // write: copy the payload in (the memfd grows as a file would).
        match write(&fd, rest) {
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => signals::check()?,
            Err(e) => return Err(Error::errno("write memfd", e)),
        }
    }
    // F_ADD_SEALS: from now on nobody, us included, can change its bytes or size.
    fcntl(fd.as_fd(), FcntlArg::F_ADD_SEALS(SEALS)).context(|| "fcntl F_ADD_SEALS")?;
    Ok(fd)
}

impl<F: AsFd> FrameSink for MemfdSink<F> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        if header.kind == Kind::End {
            return send_all(self.sock.as_fd(), &header.to_bytes());
        }
        let memfd = sealed_memfd(payload)?;
        send_with_fd(self.sock.as_fd(), &announcement(header), memfd.as_fd())
        // Our descriptor closes here; the reader's duplicate keeps the memory alive.
    }
}

/// `--send-fd FILE`: passes FILE's descriptor as the payload of one frame, then
/// the end frame. Returns the payload's length and CRC (for the summary line).
pub fn send_file(sock: BorrowedFd<'_>, path: &Path, id: u16) -> Result<(u64, Digest)> {
    // open O_RDONLY: the reader gets exactly this access, whatever its own rights.
    let file = open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty())
        .context(|| format!("open {}", path.display()))?;
    let st = fstat(&file).context(|| format!("fstat {}", path.display()))?;
    let kind = file_kind(&st);
    if kind != SFlag::S_IFREG {
        return Err(Error::system(format!(
            "{} is a {}; --send-fd passes a regular file",
            path.display(),
            kind_name(kind)
        )));
    }
    let size = u64::try_from(st.st_size).unwrap_or_default();
    let len = u32::try_from(size).map_err(|_| {
        Error::system(format!(
            "{} is {size} bytes; a frame carries at most {} (4 GiB)",
            path.display(),
            u32::MAX
        ))
    })?;
    // The CRC of what the reader should find, read through our own descriptor.
    let digest = digest_of(file.as_fd(), size, path)?;
    let header = Header { kind: Kind::Data, writer: id, seq: 0, len, crc: digest.value() };
    send_with_fd(sock, &announcement(&header), file.as_fd())?;
    send_all(sock, &Header::end(id, 1).to_bytes())?;
    Ok((size, digest))
}

fn digest_of(fd: BorrowedFd<'_>, size: u64, path: &Path) -> Result<Digest> {
    let mut digest = Digest::new();
    let mut buf = vec![0u8; STREAM_BUFFER];
    let mut at = 0u64;
    while at < size {
        let offset = i64::try_from(at).unwrap_or(i64::MAX);
        match pread(fd, &mut buf, offset) {
            Ok(0) => {
                return Err(Error::system(format!("{} shrank while being read", path.display())));
            }
            Ok(n) => {
                let n = n.min(usize::try_from(size - at).unwrap_or(usize::MAX));
                digest.add_bytes(&buf[..n]);
                at += n as u64;
            }
            Err(Errno::EINTR) => signals::check()?,
            Err(e) => return Err(Error::errno(format!("read {}", path.display()), e)),
        }
    }
    Ok(digest)
}

/// Where the current payload is.
#[derive(Debug)]
enum Payload {
    None,
    /// A sealed memfd, mapped: shared memory, not copied.
    Mapped(Mmap),
    /// Read through the descriptor into the reused buffer (first `len` bytes).
    Read(usize),
}

/// Receives frames whose payloads come as descriptors. See the module documentation.
#[derive(Debug)]
pub struct FdSource<F: AsFd> {
    sock: F,
    head: [u8; HEADER_LEN],
    cmsg: Vec<u8>,
    /// The descriptors that came with the current header (reused, not reallocated).
    passed: Vec<OwnedFd>,
    buf: Vec<u8>,
    payload: Payload,
    max_frame: u32,
    what: String,
    /// `Some(prefix)`: say once what the first descriptor was.
    verbose: Option<String>,
}

impl<F: AsFd> FdSource<F> {
    /// Reads descriptor frames from `sock`; `verbose` is the prefix of the one
    /// line saying what the first descriptor was.
    pub fn new(sock: F, max_frame: u32, what: impl Into<String>, verbose: Option<String>) -> Self {
        FdSource {
            sock,
            head: [0; HEADER_LEN],
            // Room for one descriptor; more makes the kernel set MSG_CTRUNC.
            cmsg: nix::cmsg_space!([RawFd; 1]),
            passed: Vec::with_capacity(1),
            buf: Vec::new(),
            payload: Payload::None,
            max_frame,
            what: what.into(),
            verbose,
        }
    }

    /// Fills `head` with the next 24 bytes and collects in `passed` any
    /// descriptors that came with them. `Ok(false)` at end of file before the
    /// first byte.
    fn read_head(&mut self) -> Result<bool> {
        let mut got = 0;
        while got < HEADER_LEN {
            let sock = self.sock.as_fd().as_raw_fd();
            let mut iov = [IoSliceMut::new(&mut self.head[got..])];
            // recvmsg: the bytes, and in the control buffer the descriptors sent
            // with them (MSG_CMSG_CLOEXEC: installed close-on-exec).
            let received =
                recvmsg::<()>(sock, &mut iov, Some(&mut self.cmsg), MsgFlags::MSG_CMSG_CLOEXEC);
            let n = match received {
                Ok(msg) => {
                    if let Ok(cmsgs) = msg.cmsgs() {
                        for c in cmsgs {
                            if let ControlMessageOwned::ScmRights(fds) = c {
                                // SAFETY: the kernel just installed these descriptors
                                // in our table for us; nothing else owns them.
                                self.passed.extend(
                                    fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                                );
                            }
                        }
                    }
                    if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                        return Err(Error::bad_data(
                            "the kernel dropped descriptors that came with a frame (MSG_CTRUNC): \
                             more than one was attached, or the reader is out of descriptors \
                             (ulimit -n)",
                        ));
                    }
                    msg.bytes
                }
                Err(Errno::EAGAIN) => {
                    wait_fd(self.sock.as_fd(), PollFlags::POLLIN, &Deadline::never(), || Ok(()))?;
                    continue;
                }
                Err(Errno::EINTR) => {
                    signals::check()?;
                    continue;
                }
                Err(Errno::ECONNRESET) => 0,
                Err(e) => return Err(Error::errno(format!("recvmsg {}", self.what), e)),
            };
            if n == 0 {
                if got == 0 {
                    return Ok(false);
                }
                return Err(Error::peer_lost(format!(
                    "end of file inside a frame header ({got} of {HEADER_LEN} bytes)"
                )));
            }
            got += n;
        }
        Ok(true)
    }

    /// Makes the payload of `header` available from the descriptor `file`.
    fn load(&mut self, header: &Header, file: &OwnedFd) -> Result<()> {
        let len = header.len as usize;
        let st = fstat(file).context(|| "fstat passed descriptor")?;
        let kind = file_kind(&st);
        if kind != SFlag::S_IFREG {
            return Err(Error::bad_data(format!(
                "the passed descriptor is a {}, not a regular file or memfd",
                kind_name(kind)
            )));
        }
        let size = u64::try_from(st.st_size).unwrap_or_default();
        if size < u64::from(header.len) {
            return Err(Error::bad_data(format!(
                "the passed file holds {size} bytes; the header says {len}"
            )));
        }
        // F_GET_SEALS: a memfd sealed against shrinking and writing is safe to map.
        let sealed = fcntl(file.as_fd(), FcntlArg::F_GET_SEALS)
            .map(SealFlag::from_bits_truncate)
            .is_ok_and(|s| s.contains(SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_WRITE));
        if let Some(prefix) = self.verbose.take() {
            let name = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
                .map_or_else(|_| "?".into(), |p| p.display().to_string());
            let how =
                if sealed { "sealed: mapped, not copied" } else { "read through it with pread" };
            ipc_common::say!("{prefix}: received a descriptor for {name} ({size} bytes; {how})");
        }
        if len == 0 {
            self.payload = Payload::Read(0);
        } else if sealed {
            // SAFETY: the segment is sealed against shrinking and writing, so the
            // mapping can neither fault (SIGBUS) nor change while we read it.
            let map = unsafe { MmapOptions::new().len(len).map(file) }
                .map_err(|e| Error::system(format!("mmap passed memfd: {e}")))?;
            self.payload = Payload::Mapped(map);
        } else {
            // An ordinary file could be truncated under a mapping: read it instead,
            // with pread, since the offset is shared with the sender.
            if self.buf.len() < len {
                self.buf.resize(len, 0);
            }
            let mut at = 0;
            while at < len {
                match pread(
                    file.as_fd(),
                    &mut self.buf[at..len],
                    i64::try_from(at).unwrap_or(i64::MAX),
                ) {
                    Ok(0) => {
                        return Err(Error::bad_data(format!(
                            "the passed file shrank to {at} bytes while being read (header says {len})"
                        )));
                    }
                    Ok(n) => at += n,
                    Err(Errno::EINTR) => signals::check()?,
                    Err(e) => return Err(Error::errno("pread passed descriptor", e)),
                }
            }
            self.payload = Payload::Read(len);
        }
        Ok(())
    }
}

impl<F: AsFd> FrameSource for FdSource<F> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        self.payload = Payload::None;
        self.passed.clear();
        if !self.read_head()? {
            return Ok(None);
        }
        let mut head = self.head;
        let by_fd = head[..4] == FD_MAGIC;
        if by_fd {
            head[..4].copy_from_slice(&MAGIC);
        }
        let header =
            Header::parse(&head, self.max_frame).map_err(|e| Error::bad_data(e.to_string()))?;
        let file = self.passed.pop();
        let extra = self.passed.len();
        self.passed.clear();
        match (by_fd, file, header.kind) {
            (true, Some(file), Kind::Data) if extra == 0 => self.load(&header, &file)?,
            (false, None, Kind::End) => self.payload = Payload::Read(0),
            (true, file, kind) => {
                return Err(Error::bad_data(format!(
                    "an FDP1 frame needs data and exactly one descriptor; got {kind:?} and {}",
                    extra + usize::from(file.is_some())
                )));
            }
            (false, ..) => {
                return Err(Error::bad_data(
                    "in a descriptor-passing connection only FDP1 frames and the end frame may come",
                ));
            }
        }
        let payload: &[u8] = match &self.payload {
            Payload::Mapped(map) => map,
            Payload::Read(len) => &self.buf[..*len],
            Payload::None => &[],
        };
        Ok(Some(Frame { header, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_descriptor_frame_differs_from_a_plain_one_in_its_first_byte() {
        // The reader peeks one byte to choose its decoder.
        assert_ne!(FD_MAGIC[0], MAGIC[0]);
        let header = Header::data(3, 7, b"payload");
        let head = announcement(&header);
        assert_eq!(&head[..4], b"FDP1");
        assert_eq!(head[4..], header.to_bytes()[4..]);
    }

    #[test]
    fn a_sealed_memfd_refuses_writes_and_resizing() {
        let fd = sealed_memfd(b"fixed").unwrap();
        assert_eq!(write(&fd, b"more"), Err(Errno::EPERM));
        assert_eq!(nix::unistd::ftruncate(&fd, 1), Err(Errno::EPERM));
        let mut buf = [0u8; 8];
        assert_eq!(pread(fd.as_fd(), &mut buf, 0), Ok(5));
        assert_eq!(&buf[..5], b"fixed");
    }
}
