//! A ring in a memory-mapped file (`mmap-demo --ring`). As in the two-terminal
//! use, the *writer* creates the file (the roles of the other pairs swapped):
//! the child creates and maps it and produces; the parent waits for the path,
//! maps it, claims the ring and consumes. Each watches the other's pid through
//! the file's header. The file, which mmap-demo keeps on purpose, is removed
//! when the run ends.

use std::path::PathBuf;

use ipc_common::error::Result;
use mmap_demo::{Access, Layout, MappedFile, create, default_path, open_file, ring_file, sigbus};

use super::Mechanism;
use crate::jobs::{FIRST_FRAME, MAX_FRAME, SinkJob, SourceJob};
use crate::mechs::shm::ring_for;

/// `mmap-writer --ring` and `mmap-reader`.
#[derive(Debug, Clone)]
pub struct MmapRing;

/// Where the file will be; removed (if there) when the parent drops it.
#[derive(Debug)]
pub struct RingPath {
    path: PathBuf,
    ring: usize,
}

impl Drop for RingPath {
    fn drop(&mut self) {
        // unlink: mmap-demo keeps its file by design; a bench run leaves nothing.
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Mechanism for MmapRing {
    type Reader = RingPath;

    fn name(&self) -> String {
        "mmap ring".into()
    }

    fn create(&self, size: usize) -> Result<RingPath> {
        // The SIGBUS guard both binaries install first (the child inherits it).
        sigbus::install()?;
        Ok(RingPath { path: default_path()?, ring: ring_for(size) })
    }

    fn read<J: SourceJob>(&self, at: &mut RingPath, job: J) -> Result<J::Out> {
        let file = open_file(&at.path, Access::Follow, Some(FIRST_FRAME), || {})?;
        ring_file::claim(&file)?;
        job.run(&mut ring_file::consumer(&file, MAX_FRAME)?)
    }

    fn write<J: SinkJob>(&self, at: &mut RingPath, _size: usize, job: J) -> Result<J::Out> {
        let file: MappedFile = create(&at.path, Layout::Ring, at.ring, false)?;
        let mut sink = ring_file::producer(&file, Some(FIRST_FRAME))?;
        let out = job.run(&mut sink)?;
        ring_file::close(&file, &mut sink)?;
        Ok(out)
    }
}
