//! `MAP_SHARED | MAP_ANONYMOUS`: shared memory for related processes, no file at all.
//!
//! A mapping made before `fork` is inherited by the child. If it is
//! `MAP_SHARED`, parent and child see each other's stores in the same pages;
//! if it is `MAP_PRIVATE` (as memmap2's `map_anon` makes it), `fork` gives the
//! child a copy-on-write snapshot and nothing is shared after all. No name,
//! no file, no cleanup: the pages go when the last process unmaps them.
//!
//! ```text
//! region:  [ bells: data | room, one cache line ][ ipc_common::ring: Control | data ... ]
//! ```

use std::ffi::c_void;
use std::num::NonZeroUsize;
use std::ptr::NonNull;
use std::sync::atomic::AtomicU32;

use ipc_common::error::{Context, Error, Result};
use ipc_common::ring::{self, Line};
use nix::sys::mman::{MapFlags, ProtFlags, mmap_anonymous, munmap};

/// The two futex words of the ring's doorbells, on their own cache line.
#[repr(C)]
#[derive(Debug)]
pub struct Bells {
    /// Rung by the writer when it publishes data.
    pub data: AtomicU32,
    /// Rung by the reader when it frees room.
    pub room: AtomicU32,
}

/// Bytes before the ring: the bells' line.
const RING_AT: usize = std::mem::size_of::<Line<Bells>>();

/// An anonymous shared mapping; unmapped on drop (in each process that has it).
#[derive(Debug)]
pub struct SharedAnon {
    ptr: NonNull<c_void>,
    len: NonZeroUsize,
}

impl SharedAnon {
    /// The bytes to map for `ring_bytes` of ring: the bells, the ring's
    /// control block and the ring. A usage error (exit 2) if that does not
    /// fit in an address space (`--ring` is the only input).
    pub fn len_for(ring_bytes: usize) -> Result<NonZeroUsize> {
        RING_AT
            .checked_add(ring::CONTROL_LEN)
            .and_then(|n| n.checked_add(ring_bytes))
            .filter(|&n| isize::try_from(n).is_ok())
            .and_then(NonZeroUsize::new)
            .ok_or_else(|| Error::usage(format!("--ring {ring_bytes}: too large to map")))
    }

    /// Maps `ring_bytes` of ring (plus its control block and the bells), zeroed,
    /// and initialises the ring. Call before `fork`.
    pub fn with_ring(ring_bytes: usize) -> Result<Self> {
        let len = Self::len_for(ring_bytes)?;
        // mmap(MAP_SHARED | MAP_ANONYMOUS): zeroed pages, shared with every child we fork.
        // (Spelled out here, the call this module shows; other crates use
        // `ipc_common::process::map_shared_anonymous`.)
        // SAFETY: a fresh mapping at an address the kernel picks; nothing aliases it.
        let ptr = unsafe {
            mmap_anonymous(
                None,
                len,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
            )
        }
        .context(|| format!("mmap MAP_SHARED|MAP_ANONYMOUS ({len} bytes)"))?;
        let region = SharedAnon { ptr, len };
        // SAFETY: the ring region is inside the mapping, 64-byte aligned (the
        // mapping is page aligned, RING_AT is 64), and nobody else uses it yet.
        unsafe { ring::init(region.ring(), region.ring_len())? };
        Ok(region)
    }

    /// The doorbells.
    pub fn bells(&self) -> &Bells {
        // SAFETY: the mapping starts with the bells' line, page aligned, and
        // lives as long as `self`; atomics are valid for any bytes.
        unsafe { self.ptr.cast::<Bells>().as_ref() }
    }

    /// Where the ring starts.
    pub fn ring(&self) -> *mut u8 {
        // SAFETY: RING_AT is inside the mapping.
        unsafe { self.ptr.cast::<u8>().as_ptr().add(RING_AT) }
    }

    /// The ring's length, control block included.
    pub fn ring_len(&self) -> usize {
        self.len.get() - RING_AT
    }
}

impl Drop for SharedAnon {
    fn drop(&mut self) {
        // munmap: this process's view goes; the pages go with the last one.
        // SAFETY: our own mapping, whose borrows (`bells`, the ring ends) have ended.
        let _ = unsafe { munmap(self.ptr, self.len.get()) };
    }
}
