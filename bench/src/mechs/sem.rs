//! The semaphore bounded buffer (`sem-demo`): K slots in shared memory, two
//! counting semaphores and a lock (POSIX named semaphores and a robust mutex,
//! `sem-reader`'s default). The reader creates it before the fork; the child
//! connects as `sem-writer` does.

use ipc_common::error::Result;
use ipc_common::frame::HEADER_LEN;
use sem_demo::buffer::{
    BoundedBuffer, BufferOptions, BufferSink, DEFAULT_SLOTS, Family, MIN_SLOT_SIZE, default_name,
};

use super::Mechanism;
use crate::jobs::{FIRST_FRAME, MAX_FRAME, SinkJob, SourceJob};

/// `sem-reader` / `sem-writer` with their default semaphores and slots.
#[derive(Debug, Clone)]
pub struct Sem;

impl Mechanism for Sem {
    type Reader = BoundedBuffer;

    fn name(&self) -> String {
        "sem buffer".into()
    }

    fn create(&self, size: usize) -> Result<BoundedBuffer> {
        BoundedBuffer::create(&BufferOptions {
            name: default_name(),
            family: Family::Posix,
            key: None,
            slots: DEFAULT_SLOTS,
            // One frame per slot: --slot-size is the largest frame.
            slot_size: (size + HEADER_LEN).max(MIN_SLOT_SIZE),
            force: false,
        })
    }

    fn read<J: SourceJob>(&self, buf: &mut BoundedBuffer, job: J) -> Result<J::Out> {
        job.run(&mut buf.source(MAX_FRAME, Some(FIRST_FRAME)))
    }

    fn write<J: SinkJob>(&self, _buf: &mut BoundedBuffer, _size: usize, job: J) -> Result<J::Out> {
        job.run(&mut BufferSink::connect(&default_name(), None, Some(FIRST_FRAME))?)
    }
}
