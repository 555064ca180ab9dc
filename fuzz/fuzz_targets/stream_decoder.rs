//! Fuzzes `stream::StreamSource`, the decoder of byte streams (pipes, FIFOs,
//! stream sockets), fed through a real pipe: input byte 0 picks `--max-frame`,
//! byte 1 the size of its first buffer (small ones take the compaction and
//! growth paths), the rest is the stream. Asserts: no panic; exactly the frames
//! a reference decoder written from SPEC §3 finds, then the same ending (clean
//! end of file, bad data = exit 4, cut short = exit 3); every frame whose CRC
//! the reader accepts has the CRC an independent CRC-32 computes; and no single
//! allocation while decoding above 24 + `--max-frame` or twice the input.

#![no_main]

use std::io::Write;

use ipc_common::Exit;
use ipc_common::driver::FrameSource;
use ipc_common::frame::{HEADER_LEN, Kind};
use ipc_common::stream::StreamSource;
use libfuzzer_sys::fuzz_target;

mod support;
use ipc_faults::oracle::{Counting, crc32_ref, ref_header, tracked};
use support::max_frame;

#[global_allocator]
static ALLOC: Counting = Counting;

/// What the reference expects: frames as (kind, writer, seq, crc, payload range),
/// then how the stream ends (`None`: cleanly, at a frame boundary).
fn reference(
    input: &[u8],
    max: u32,
) -> (Vec<(u8, u16, u64, u32, std::ops::Range<usize>)>, Option<Exit>) {
    let mut frames = Vec::new();
    let mut at = 0;
    loop {
        let rest = &input[at..];
        if rest.is_empty() {
            return (frames, None);
        }
        if rest.len() < HEADER_LEN {
            return (frames, Some(Exit::PeerLost));
        }
        let Some((kind, writer, seq, len, crc)) = ref_header(rest, max) else {
            return (frames, Some(Exit::BadData));
        };
        if rest.len() < HEADER_LEN + len as usize {
            return (frames, Some(Exit::PeerLost));
        }
        let p = at + HEADER_LEN;
        frames.push((kind, writer, seq, crc, p..p + len as usize));
        at = p + len as usize;
    }
}

fuzz_target!(|data: &[u8]| {
    let [a, b, input @ ..] = data else { return };
    // A default pipe holds 64 KiB; the whole input is written before reading.
    let input = &input[..input.len().min(60_000)];
    let max = max_frame(*a);
    let buffer = usize::from(*b) * 16;
    let (expect, expect_end) = reference(input, max);

    let (r, mut w) = std::io::pipe().expect("pipe");
    w.write_all(input).expect("write pipe");
    drop(w);
    let mut source =
        StreamSource::new(r, max, None, "fuzz pipe").expect("source").with_buffer(buffer);
    let (got, peak, _) = tracked(|| {
        let mut got = 0;
        let end = loop {
            match source.recv() {
                Ok(Some(f)) => {
                    let (kind, writer, seq, crc, ref payload) = expect[got];
                    let h = f.header;
                    assert_eq!(
                        (u8::from(h.kind == Kind::End), h.writer, h.seq, h.crc, f.payload),
                        (kind, writer, seq, crc, &input[payload.clone()]),
                        "frame #{got} differs from the reference"
                    );
                    if f.check_crc().is_ok() {
                        assert_eq!(crc32_ref(f.payload), h.crc, "accepted a wrong checksum");
                    } else {
                        assert_ne!(crc32_ref(f.payload), h.crc, "refused a right checksum");
                    }
                    got += 1;
                }
                Ok(None) => break None,
                Err(e) => break Some(e.exit()),
            }
        };
        assert_eq!(end, expect_end, "how the stream ended");
        got
    });
    assert_eq!(got, expect.len(), "frame count");
    let bound = HEADER_LEN + max as usize;
    assert!(peak <= bound.max(1024), "allocated {peak} bytes, above 24 + --max-frame {max}");
    assert!(peak <= 1024 || peak <= 2 * input.len(), "allocated {peak} for {} bytes", input.len());
});
