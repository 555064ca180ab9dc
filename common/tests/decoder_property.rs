//! Property test of the frame decoder: random and mutated streams and messages
//! never make it panic, never make it allocate for a length above --max-frame,
//! and every frame that passes its checksum carries a payload that was sent.
//! (The CRC covers the payload; a corrupted `writer` or `seq` field is the
//! reader's sequence check's to catch, tested with the binaries.)
//!
//! A deterministic generator (no extra dependency) so a failure reproduces: the
//! seed is in the assertion message.

use std::collections::HashSet;
use std::io::Write;
use std::os::fd::AsFd;

use ipc_common::driver::FrameSource;
use ipc_common::frame::{HEADER_LEN, parse_message};
use ipc_common::stream::StreamSource;
use ipc_common::testkit::{end_bytes, frame_bytes};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A valid stream of `n` frames from two writers, and the set of its payloads.
fn valid_stream(rng: &mut Rng, n: u64) -> (Vec<u8>, HashSet<Vec<u8>>) {
    let (mut stream, mut payloads) = (Vec::new(), HashSet::new());
    for seq in 0..n {
        let len = rng.below(300);
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        stream.extend_from_slice(&frame_bytes((seq % 2) as u16, seq / 2, &payload));
        payloads.insert(payload);
    }
    stream.extend_from_slice(&end_bytes(0, n.div_ceil(2)));
    payloads.insert(Vec::new());
    (stream, payloads)
}

/// Decodes `bytes` from a file the way a reader does. Returns the payload of
/// every frame whose CRC checks, and how many frames the decoder handed out.
fn decode_all(bytes: &[u8], max_frame: u32) -> (Vec<Vec<u8>>, usize) {
    let path = std::env::temp_dir().join(ipc_common::testkit::unique("ipc-demos-prop"));
    std::fs::File::create(&path).and_then(|mut f| f.write_all(bytes)).expect("write");
    let file = std::fs::File::open(&path).expect("open");
    std::fs::remove_file(&path).expect("remove");
    let mut src = StreamSource::new(file.as_fd(), max_frame, None, "test").expect("source");
    let (mut good, mut frames) = (Vec::new(), 0);
    while let Ok(Some(frame)) = src.recv() {
        assert!(frame.header.len <= max_frame, "accepted a length above --max-frame");
        assert_eq!(frame.payload.len(), frame.header.len as usize);
        frames += 1;
        if frame.check_crc().is_ok() {
            good.push(frame.payload.to_vec());
        }
    }
    (good, frames)
}

#[test]
fn valid_streams_decode_completely() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50 {
        let n = rng.below(40) as u64;
        let (stream, originals) = valid_stream(&mut rng, n);
        let (good, frames) = decode_all(&stream, 1 << 20);
        assert_eq!((good.len(), frames), (n as usize + 1, n as usize + 1));
        assert!(good.iter().all(|f| originals.contains(f)));
    }
}

#[test]
fn mutated_streams_never_panic_and_only_sent_payloads_pass_the_crc() {
    let mut caught = 0;
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let n = 1 + rng.below(20) as u64;
        let (mut stream, originals) = valid_stream(&mut rng, n);
        for _ in 0..=rng.below(6) {
            let at = rng.below(stream.len());
            match rng.below(4) {
                0 => stream[at] ^= 1 << rng.below(8),
                1 => stream.truncate(at),
                2 => stream.insert(at, rng.next() as u8),
                _ => stream[at..].rotate_left(1),
            }
            if stream.is_empty() {
                break;
            }
        }
        // A small --max-frame: any length a mutation inflates must be refused.
        let (good, frames) = decode_all(&stream, 4096);
        // The property: a mutation never yields a frame whose CRC checks but
        // whose payload was never sent.
        for payload in &good {
            assert!(originals.contains(payload), "seed {seed}: a corrupted payload passed its CRC");
        }
        caught += frames - good.len();
    }
    assert!(caught > 100, "the mutations did reach payloads ({caught} frames failed their CRC)");
}

#[test]
fn random_bytes_as_messages_never_panic() {
    let mut rng = Rng(7);
    for _ in 0..5000 {
        let len = rng.below(64);
        let mut msg: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if len >= HEADER_LEN && rng.below(2) == 0 {
            msg[..4].copy_from_slice(b"IPC1");
            msg[4] = 0;
            msg[5] = 0;
        }
        if let Ok(frame) = parse_message(&msg, 32) {
            assert!(frame.header.len <= 32);
            assert_eq!(HEADER_LEN + frame.payload.len(), msg.len());
        }
    }
}
