//! What the decoder's property test (`tests/decoder_props.rs`) and its fuzz
//! targets (`fuzz/`) judge it by: a global allocator that records the largest
//! single allocation while decoding, and SPEC §3 read literally (a reference
//! header check and CRC-32), sharing no code with the decoder.
//!
//! Install the allocator in the test or fuzz binary:
//! `#[global_allocator] static ALLOC: Counting = Counting;`

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

/// Passes every call to the system allocator; records sizes while tracking.
pub struct Counting;

thread_local! {
    static TRACK: Cell<bool> = const { Cell::new(false) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static COUNT: Cell<u64> = const { Cell::new(0) };
}

fn note(size: usize) {
    let _ = TRACK.try_with(|t| {
        if t.get() {
            let _ = PEAK.try_with(|p| p.set(p.get().max(size)));
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every call goes to the system allocator unchanged; the wrapper only
// records sizes in const-initialised thread-local cells, which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract is System's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Runs `f` with tracking on: its result, the largest single allocation, how many.
pub fn tracked<T>(f: impl FnOnce() -> T) -> (T, usize, u64) {
    PEAK.with(|p| p.set(0));
    COUNT.with(|c| c.set(0));
    TRACK.with(|t| t.set(true));
    let out = f();
    TRACK.with(|t| t.set(false));
    (out, PEAK.with(Cell::get), COUNT.with(Cell::get))
}

const CRC_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0xedb8_8320 } else { crc >> 1 };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

/// CRC-32 (IEEE), table-driven, independent of crc32fast.
pub fn crc32_ref(bytes: &[u8]) -> u32 {
    !bytes
        .iter()
        .fold(!0u32, |crc, &b| CRC_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8))
}

fn le(b: &[u8]) -> u64 {
    b.iter().rev().fold(0, |acc, &x| (acc << 8) | u64::from(x))
}

/// A header by SPEC §3: (kind, writer, seq, len, crc), or `None` if a reader
/// must refuse it. `b` holds at least 24 bytes.
pub fn ref_header(b: &[u8], max_frame: u32) -> Option<(u8, u16, u64, u32, u32)> {
    let (kind, flags, len) = (b[4], b[5], le(&b[16..20]));
    let ok = &b[0..4] == b"IPC1"
        && kind <= 1
        && flags == 0
        && len <= u64::from(max_frame)
        && (kind == 0 || len == 0);
    ok.then(|| (kind, le(&b[6..8]) as u16, le(&b[8..16]), len as u32, le(&b[20..24]) as u32))
}
