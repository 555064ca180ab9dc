//! Shared memory rings (`shm-demo`), POSIX and System V: the reader creates
//! the segment before the fork; the child attaches as `shm-writer` does
//! (claiming the writer slot, removing the name), and copies each frame in
//! once; the reader checks it where it lies.

use ipc_common::error::Result;
use ipc_common::frame::HEADER_LEN;
use shm_demo::{
    Api, DEFAULT_RING, Segment, create_posix, create_sysv, default_name, open_posix, open_sysv,
};

use super::Mechanism;
use crate::jobs::{FIRST_FRAME, MAX_FRAME, SinkJob, SourceJob};

/// Spins before sleeping, for `--spin` rows: about a millisecond of `pause`
/// instructions, longer than a round trip, so neither side ever sleeps.
pub const SPIN: u32 = 20_000;

/// One API, spinning (`--spin`) or not.
#[derive(Debug, Clone)]
pub struct Shm {
    /// POSIX or System V.
    pub api: Api,
    /// `--spin N` on both sides (0: sleep on the semaphore at once, as by default).
    pub spin: u32,
}

/// The ring for `size`-byte frames: the default 1 MiB, or room for four
/// frames when they are larger (the ring must hold a whole frame; four let
/// the writer fill while the reader drains).
#[must_use]
pub fn ring_for(size: usize) -> usize {
    DEFAULT_RING.max((4 * (size + HEADER_LEN)).next_power_of_two())
}

impl Mechanism for Shm {
    type Reader = Segment;

    fn name(&self) -> String {
        let api = match self.api {
            Api::Posix => "shm posix",
            Api::Sysv => "shm sysv",
        };
        if self.spin > 0 { format!("{api} --spin") } else { api.into() }
    }

    fn create(&self, size: usize) -> Result<Segment> {
        match self.api {
            Api::Posix => create_posix(&default_name(), ring_for(size), false, false),
            Api::Sysv => create_sysv(ring_for(size), false, false),
        }
    }

    fn read<J: SourceJob>(&self, seg: &mut Segment, job: J) -> Result<J::Out> {
        let slot = seg.writer_slot(Some(FIRST_FRAME));
        job.run(&mut seg.consumer(slot, self.spin, MAX_FRAME)?)
    }

    fn write<J: SinkJob>(&self, _seg: &mut Segment, _size: usize, job: J) -> Result<J::Out> {
        let attached = match self.api {
            Api::Posix => open_posix(&default_name(), Some(FIRST_FRAME))?,
            Api::Sysv => open_sysv(Some(FIRST_FRAME))?,
        };
        let mut sink = attached.producer(self.spin)?;
        let out = job.run(&mut sink)?;
        // The closed flag after the end frame, as shm-writer sets it.
        sink.close()?;
        Ok(out)
    }
}
