//! Anonymous pipe (`pipe-demo`): both ends made before the fork; the child
//! keeps the write end, the parent the read end.

use std::os::fd::{AsFd, OwnedFd};

use ipc_common::error::{Error, Result};
use ipc_common::stream::{StreamSink, StreamSource, WritePolicy};
use pipe_demo::{DEFAULT_PIPE_SIZE, create_pipe, pipe_size, set_pipe_size};

use super::{Mechanism, RawStream};
use crate::jobs::{FIRST_FRAME, MAX_FRAME, RawRx, RawTx, SinkJob, SourceJob};

/// `pipe-writer | pipe-reader`, with `pipe2` and `fork` instead of the shell;
/// with `--pipe-size` when `capacity` is given.
#[derive(Debug, Clone)]
pub struct Pipe {
    /// `--pipe-size` (F_SETPIPE_SZ), or the default 64 KiB.
    pub capacity: Option<usize>,
}

/// The `--pipe-size` of the second pipe row: the largest a user may set here
/// without privileges (`/proc/sys/fs/pipe-max-size`, 1 MiB by default).
pub const BIG_PIPE: usize = 1 << 20;

/// Each end, until its side takes it.
#[derive(Debug)]
pub struct Ends {
    read: Option<OwnedFd>,
    write: Option<OwnedFd>,
}

impl Ends {
    fn take(end: &mut Option<OwnedFd>) -> Result<OwnedFd> {
        end.take().ok_or_else(|| Error::system("pipe end already taken"))
    }
}

/// The frame sink's writes: frames gathered into a quarter of the pipe
/// (what `pipe-writer` does; see `WritePolicy`).
fn gather(fd: &OwnedFd) -> usize {
    pipe_size(fd.as_fd()).unwrap_or(DEFAULT_PIPE_SIZE) / 4
}

impl Mechanism for Pipe {
    type Reader = Ends;

    fn name(&self) -> String {
        match self.capacity {
            Some(bytes) => format!("pipe --pipe-size {}M", bytes >> 20),
            None => "pipe".into(),
        }
    }

    fn copying(&self) -> bool {
        true
    }

    fn create(&self, _size: usize) -> Result<Ends> {
        let (read, write) = create_pipe()?;
        if let Some(bytes) = self.capacity {
            // F_SETPIPE_SZ, as pipe-writer --pipe-size: fewer wake-ups per byte.
            set_pipe_size(write.as_fd(), bytes)?;
        }
        Ok(Ends { read: Some(read), write: Some(write) })
    }

    fn read<J: SourceJob>(&self, ends: &mut Ends, job: J) -> Result<J::Out> {
        // close our copy of the write end: the child's is the only one, so its
        // death is end of file here.
        drop(ends.write.take());
        let fd = Ends::take(&mut ends.read)?;
        job.run(&mut StreamSource::new(fd, MAX_FRAME, Some(FIRST_FRAME), "pipe")?)
    }

    fn write<J: SinkJob>(&self, ends: &mut Ends, _size: usize, job: J) -> Result<J::Out> {
        // close the child's copy of the read end: a reader that dies is EPIPE here.
        drop(ends.read.take());
        let fd = Ends::take(&mut ends.write)?;
        let policy = WritePolicy::Buffered(gather(&fd));
        job.run(&mut StreamSink::new(fd, policy, "pipe")?)
    }

    fn raw_rx<'a>(&self, ends: &'a mut Ends, _size: usize) -> Result<Box<dyn RawRx + 'a>> {
        drop(ends.write.take());
        Ok(Box::new(RawStream::new(Ends::take(&mut ends.read)?, "pipe")?))
    }

    fn raw_tx<'a>(&self, ends: &'a mut Ends, _size: usize) -> Result<Box<dyn RawTx + 'a>> {
        drop(ends.read.take());
        Ok(Box::new(RawStream::new(Ends::take(&mut ends.write)?, "pipe")?))
    }

    fn raw_chunk(&self, size: usize) -> usize {
        gathered_chunk(size, self.capacity.unwrap_or(DEFAULT_PIPE_SIZE) / 4)
    }
}

/// What one write of a `Buffered(gather)` sink holds for `size`-byte payloads,
/// in bytes, headers included: the frames gathered while they fit, plus the
/// one that did not (they leave together in one `writev`); or a lone frame
/// larger than the buffer.
#[must_use]
pub fn gathered_chunk(size: usize, gather: usize) -> usize {
    let frame = size + ipc_common::frame::HEADER_LEN;
    if frame > gather { frame } else { (gather / frame + 1) * frame }
}
