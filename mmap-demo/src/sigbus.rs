//! SIGBUS from a file truncated under its mapping: caught, not fatal.
//!
//! A mapping does not shrink when its file does. Touching a page of it that now
//! lies wholly past the end of the file raises SIGBUS, whose default action
//! kills the process — the classic pitfall of memory-mapped files (ripgrep's
//! mmap constructor documents it; so does mmap(2)). Anyone who may write the
//! file can do it, at any moment: `truncate -s 0 FILE`. A page the kernel
//! cannot read in (an I/O error) or cannot allocate (a full disk under a
//! sparse file) raises the same signal with the file's size intact.
//!
//! The programs check the file's size with `fstat` each quiet tick while they
//! wait, which catches a truncation that happened while they slept, before
//! they touch anything. A truncation *between* that check and the access is a
//! race no check can close, so this module closes it after the fact:
//!
//! 1. [`install`] puts a `SA_SIGINFO` handler on SIGBUS;
//! 2. [`watch`] registers a mapping's address range for as long as it lives;
//! 3. on a SIGBUS inside a watched range, the handler maps a private page of
//!    zeros over the faulting page (`mmap` with `MAP_FIXED`), records the fact
//!    and the signal's `si_code`, and returns: the access is retried, and now
//!    reads zeros (or writes to a scratch page nobody sees);
//! 4. the program checks [`tripped`] before it trusts or publishes what it
//!    touched ([`Guarded`] does it for each frame), and stops with "file
//!    truncated under the mapping" or, if the file still has its size,
//!    "SIGBUS on a page of the mapping (I/O error or disk full)" (exit 1).
//!
//! A SIGBUS anywhere else (a genuine bug) gets the default action: the handler
//! restores it and returns, the access faults again, and the process dies as it
//! would have without us.
//!
//! # Pitfalls
//! - The patch changes memory under any `&[u8]` lent from the page: a slice
//!   that was checked can read differently a moment later. So a frame's bytes
//!   are read once — checked where they lie, or (text mode, where the driver
//!   reads a payload twice: CRC, then print) copied out first and the copy
//!   lent ([`Guarded::copying`]).
//! - The handler may run between any two instructions of the thread it
//!   interrupts: it touches only atomics, `mmap` and `signal` (async-signal-safe
//!   system calls), and puts `errno` back as it found it.

use std::sync::Once;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicUsize, Ordering, compiler_fence};

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::error::{Context, Error, Result};
use ipc_common::frame::{Frame, Header};
use nix::errno::Errno;
use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};

/// How many mappings can be watched at once (a process here has one or two).
const SLOTS: usize = 4;

/// A slot being filled in.
const RESERVED: usize = usize::MAX;
/// Watched ranges: start address (0 = free slot) and length.
static STARTS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
static LENS: [AtomicUsize; SLOTS] = [const { AtomicUsize::new(0) }; SLOTS];
/// Set by the handler once it has patched a page.
static TRIPPED: AtomicBool = AtomicBool::new(false);
/// The `si_code` of the first patched fault (`BUS_ADRERR`, ...).
static CODE: AtomicI32 = AtomicI32::new(0);
/// The page size, read once by [`install`] (the handler may not ask).
static PAGE: AtomicUsize = AtomicUsize::new(4096);
static INSTALL: Once = Once::new();

/// Whether a watched mapping lost pages under us since the program started.
///
/// Call it after the accesses it vouches for: the handler runs on this very
/// thread, so a compiler fence (no instruction) keeps them before the load.
#[must_use]
pub fn tripped() -> bool {
    compiler_fence(Ordering::SeqCst);
    TRIPPED.load(Ordering::Acquire)
}

/// The `si_code` of the first fault the handler patched, by name
/// (`BUS_ADRERR`: no page there, as after a truncation or an I/O error), if any.
#[must_use]
pub fn fault_code() -> Option<String> {
    tripped().then(|| match CODE.load(Ordering::Relaxed) {
        libc::BUS_ADRALN => "BUS_ADRALN".to_string(),
        libc::BUS_ADRERR => "BUS_ADRERR".to_string(),
        libc::BUS_OBJERR => "BUS_OBJERR".to_string(),
        libc::BUS_MCEERR_AR => "BUS_MCEERR_AR".to_string(),
        libc::BUS_MCEERR_AO => "BUS_MCEERR_AO".to_string(),
        code => code.to_string(),
    })
}

/// Installs the SIGBUS handler (once per process; later calls do nothing).
pub fn install() -> Result<()> {
    let mut result = Ok(());
    INSTALL.call_once(|| {
        // sysconf(_SC_PAGESIZE): the unit the handler patches.
        // SAFETY: sysconf reads a constant of the system; no memory is passed.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if let Ok(page) = usize::try_from(page) {
            PAGE.store(page, Ordering::Relaxed);
        }
        let action =
            SigAction::new(SigHandler::SigAction(on_sigbus), SaFlags::SA_SIGINFO, SigSet::empty());
        // sigaction SIGBUS: from now on a lost page of a watched mapping is ours to patch.
        // SAFETY: the handler only reads and stores atomics and errno, and calls
        // mmap, signal and raise (async-signal-safe system calls).
        result =
            unsafe { sigaction(Signal::SIGBUS, &action) }.map(drop).context(|| "sigaction SIGBUS");
    });
    result
}

/// A registered mapping; unregistered when dropped (drop it before unmapping).
#[derive(Debug)]
pub struct Watch {
    slot: usize,
}

/// Registers `[start, start + len)`, a mapping of a file that may shrink.
pub fn watch(start: *const u8, len: usize) -> Result<Watch> {
    for (slot, s) in STARTS.iter().enumerate() {
        // Reserve the slot, set its length, then publish its start.
        if s.compare_exchange(0, RESERVED, Ordering::AcqRel, Ordering::Relaxed).is_ok() {
            LENS[slot].store(len, Ordering::Relaxed);
            s.store(start.addr(), Ordering::Release);
            return Ok(Watch { slot });
        }
    }
    Err(Error::system(format!("more than {SLOTS} file mappings to watch for SIGBUS")))
}

impl Drop for Watch {
    fn drop(&mut self) {
        STARTS[self.slot].store(0, Ordering::Release);
    }
}

/// The handler: see the module documentation.
extern "C" fn on_sigbus(_sig: libc::c_int, info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    // errno belongs to the code we interrupted: mmap or signal below may change it.
    let saved = Errno::last_raw();
    patch(info);
    Errno::set_raw(saved);
}

/// The handler's work: patch a watched page, or fall back to the default action.
fn patch(info: *mut libc::siginfo_t) {
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    if code <= 0 {
        // Sent by a process (kill, sigqueue), not by a fault: die of it, as
        // without us (the raised signal waits until this handler returns).
        // SAFETY: signal and raise are async-signal-safe; SIG_DFL installs no handler.
        unsafe {
            libc::signal(libc::SIGBUS, libc::SIG_DFL);
            libc::raise(libc::SIGBUS);
        }
        return;
    }
    // SAFETY: as above; for a SIGBUS from a fault, si_addr is the faulting address.
    let addr = unsafe { (*info).si_addr() }.addr();
    let ours = STARTS.iter().zip(&LENS).any(|(s, l)| {
        let start = s.load(Ordering::Acquire);
        start != 0 && start != RESERVED && addr >= start && addr - start < l.load(Ordering::Relaxed)
    });
    if ours {
        let page = PAGE.load(Ordering::Relaxed);
        let at = std::ptr::without_provenance_mut::<libc::c_void>(addr & !(page - 1));
        // mmap MAP_FIXED|MAP_PRIVATE|MAP_ANONYMOUS: a page of zeros replaces the
        // vanished one, in this process only; the faulting access is retried on it.
        // SAFETY: the page lies inside a mapping we made and still own (a watched
        // range); replacing it changes only what that mapping shows.
        let patched = unsafe {
            libc::mmap(
                at,
                page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if patched != libc::MAP_FAILED {
            if !TRIPPED.load(Ordering::Relaxed) {
                CODE.store(code, Ordering::Relaxed);
            }
            TRIPPED.store(true, Ordering::Release);
            return;
        }
    }
    // Not ours (or the patch failed): the default action, on the retried access.
    // SAFETY: restoring SIG_DFL installs no handler.
    unsafe { libc::signal(libc::SIGBUS, libc::SIG_DFL) };
}

/// A frame source or sink over pages a SIGBUS may patch: checks [`tripped`]
/// after each frame, so nothing read from a patched page is handed out.
///
/// - Reading in place (the default): the source lends the payload where it
///   lies, and the driver reads it once, for its CRC (the digest adds that
///   checked CRC, not the bytes). A page patched before or during that read
///   gives zeros that fail the CRC; one patched after it is never read, and
///   this check stops the next frame.
/// - Reading a copy ([`Guarded::copying`], text mode): the driver reads a
///   payload twice, CRC then print, and a page patched in between would
///   print zeros that were never checked. So the payload is copied out of the
///   mapping once (text comes at human speed), [`tripped`] is checked after
///   the copy, and the copy is lent: the bytes checked are the bytes printed.
/// - Writing: the check comes after the inner sink's `send`. The log's sink
///   checks before it commits, so it never publishes such a frame, but the
///   ring's `Producer` has published `head` by then: such a frame *is*
///   published. Its bytes went to this process's private scratch page, not
///   to the file, so the reader never gets them: it faults on the lost page
///   itself (and stops the same way), or reads the file's bytes there, which
///   fail their checks. The writer stops right after.
#[derive(Debug)]
pub struct Guarded<T> {
    inner: T,
    /// The copy lent out in text mode; `None` lends in place.
    copy: Option<Vec<u8>>,
}

/// The error a patched page turns into; `MappedFile::explain` then says why.
fn faulted() -> Error {
    Error::system("a load or store in the mapping faulted (SIGBUS)")
}

impl<T> Guarded<T> {
    /// Guards `inner`, lending payloads in place.
    pub fn new(inner: T) -> Self {
        Guarded { inner, copy: None }
    }

    /// With `copy` (readers that print), each payload received is copied out
    /// of the mapping before it is checked and lent.
    #[must_use]
    pub fn copying(mut self, copy: bool) -> Self {
        self.copy = copy.then(Vec::new);
        self
    }

    /// The guarded end.
    pub fn inner(&self) -> &T {
        &self.inner
    }

    /// The guarded end, to call what the traits do not cover.
    pub fn inner_mut(&mut self) -> &mut T {
        &mut self.inner
    }
}

impl<T: FrameSink> FrameSink for Guarded<T> {
    fn send(&mut self, header: &Header, payload: &[u8]) -> Result<()> {
        self.inner.send(header, payload)?;
        if tripped() {
            return Err(faulted());
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.inner.flush()
    }
}

impl<T: FrameSource> FrameSource for Guarded<T> {
    fn recv(&mut self) -> Result<Option<Frame<'_>>> {
        let frame = match (self.inner.recv()?, self.copy.as_mut()) {
            (Some(frame), Some(copy)) => {
                // One read of the mapping: the copy is checked, then printed.
                copy.clear();
                copy.extend_from_slice(frame.payload);
                Some(Frame { header: frame.header, payload: copy.as_slice() })
            }
            (frame, _) => frame,
        };
        if tripped() {
            return Err(faulted());
        }
        Ok(frame)
    }

    fn end_reason(&self) -> &'static str {
        self.inner.end_reason()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_read_past_the_truncated_end_is_patched_not_fatal() {
        install().unwrap();
        let dir = std::env::temp_dir().join(format!("mmap-sigbus-{}", std::process::id()));
        let mut file = std::fs::File::create_new(&dir).unwrap();
        file.write_all(&[7u8; 3 * 4096]).unwrap();
        let map = memmap2::MmapOptions::new().map_raw_read_only(&file).unwrap();
        let w = watch(map.as_ptr(), map.len()).unwrap();
        // SAFETY: inside the mapping; the file still holds these bytes.
        assert_eq!(unsafe { map.as_ptr().add(2 * 4096).read_volatile() }, 7);
        file.set_len(4096).unwrap();
        assert!(!tripped());
        // SAFETY: inside the mapping; past the end of the file now, so this
        // access raises SIGBUS, which the handler turns into a page of zeros.
        let after = unsafe { map.as_ptr().add(2 * 4096).read_volatile() };
        assert_eq!(after, 0);
        assert!(tripped());
        drop(w);
        drop(map);
        std::fs::remove_file(&dir).unwrap();
    }
}
