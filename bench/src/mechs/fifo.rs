//! Named pipe (`fifo-demo`): the reader makes the FIFO before the fork; the
//! child opens it for writing by its path, as `fifo-writer` does.

use std::os::fd::OwnedFd;
use std::path::Path;

use fifo_demo::{
    FifoSink, FifoSource, PIPE_BUF, create_fifo, default_path, open_writer, wait_for_writer,
};
use ipc_common::error::Result;
use ipc_common::wait::Deadline;

use super::{Mechanism, RawStream};
use crate::jobs::{FIRST_FRAME, MAX_FRAME, RawRx, RawTx, SinkJob, SourceJob};
use crate::pair::CHILD;

/// `fifo-reader` and one `fifo-writer`.
#[derive(Debug, Clone)]
pub struct Fifo;

impl Mechanism for Fifo {
    type Reader = fifo_demo::Fifo;

    fn name(&self) -> String {
        "fifo".into()
    }

    fn copying(&self) -> bool {
        true
    }

    fn create(&self, _size: usize) -> Result<fifo_demo::Fifo> {
        create_fifo(&default_path()?, false)
    }

    fn read<J: SourceJob>(&self, fifo: &mut fifo_demo::Fifo, job: J) -> Result<J::Out> {
        job.run(&mut FifoSource::new(fifo, MAX_FRAME, Some(FIRST_FRAME), None)?)
    }

    fn write<J: SinkJob>(
        &self,
        fifo: &mut fifo_demo::Fifo,
        _size: usize,
        job: J,
    ) -> Result<J::Out> {
        let fd = open_writer(fifo.path(), Some(FIRST_FRAME))?;
        // Quiet: frames above PIPE_BUF are expected here (one writer only).
        job.run(&mut FifoSink::new(fd, fifo.path(), CHILD, true, Some(FIRST_FRAME))?)
    }

    fn raw_rx<'a>(
        &self,
        fifo: &'a mut fifo_demo::Fifo,
        _size: usize,
    ) -> Result<Box<dyn RawRx + 'a>> {
        let stream = RawStream::new(fifo.open_reader()?, "FIFO")?;
        Ok(Box::new(FreshFifo { stream, path: fifo.path(), fresh: true }))
    }

    fn raw_tx<'a>(
        &self,
        fifo: &'a mut fifo_demo::Fifo,
        _size: usize,
    ) -> Result<Box<dyn RawTx + 'a>> {
        Ok(Box::new(RawStream::new(open_writer(fifo.path(), Some(FIRST_FRAME))?, "FIFO")?))
    }

    fn raw_chunk(&self, size: usize) -> usize {
        // FifoSink: whole frames gathered into writes of at most PIPE_BUF,
        // a larger frame alone.
        let frame = size + ipc_common::frame::HEADER_LEN;
        if frame > PIPE_BUF { frame } else { PIPE_BUF / frame * frame }
    }
}

/// A raw read end that first waits for a writer, as `FifoSource` does: `read`
/// on a FIFO no writer holds yet returns end of file at once, while `poll` on
/// a fresh descriptor waits for one (and waiting in the first `recv`, not
/// when opening, lets a latency run open both directions first).
struct FreshFifo<'f> {
    stream: RawStream<OwnedFd>,
    path: &'f Path,
    fresh: bool,
}

impl RawRx for FreshFifo<'_> {
    fn recv(&mut self) -> Result<&[u8]> {
        if self.fresh {
            let deadline = Deadline::after(Some(FIRST_FRAME));
            wait_for_writer(self.stream.fd()?, self.path, &deadline, Some(FIRST_FRAME))?;
            self.fresh = false;
        }
        self.stream.recv()
    }
}
