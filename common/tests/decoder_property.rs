//! Property test of the frame decoder: random and mutated streams and messages
//! never make it panic, never make it allocate for a length above --max-frame,
//! and every frame it accepts has a checksum the reader can verify.
//!
//! A deterministic generator (no extra dependency) so a failure reproduces: the
//! seed is in the assertion message.

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

/// A valid stream of `n` frames from two writers.
fn valid_stream(rng: &mut Rng, n: u64) -> Vec<u8> {
    let mut s = Vec::new();
    for seq in 0..n {
        let len = rng.below(300);
        let payload: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        s.extend(frame_bytes((seq % 2) as u16, seq / 2, &payload));
    }
    s.extend(end_bytes(0, n.div_ceil(2)));
    s
}

/// Decodes `bytes` from a file the way a reader does; returns (frames, crc ok).
fn decode_all(bytes: &[u8], max_frame: u32) -> (usize, usize) {
    let path = std::env::temp_dir().join(ipc_common::testkit::unique("ipc-demos-prop"));
    std::fs::File::create(&path)
        .and_then(|mut f| f.write_all(bytes))
        .expect("write");
    let file = std::fs::File::open(&path).expect("open");
    std::fs::remove_file(&path).expect("remove");
    let mut src = StreamSource::new(file.as_fd(), max_frame, None, "test").expect("source");
    let (mut frames, mut good) = (0, 0);
    loop {
        match src.recv() {
            Ok(Some(frame)) => {
                assert!(
                    frame.header.len <= max_frame,
                    "accepted a length above --max-frame"
                );
                assert_eq!(frame.payload.len(), frame.header.len as usize);
                frames += 1;
                good += usize::from(frame.check_crc().is_ok());
            }
            Ok(None) | Err(_) => return (frames, good),
        }
    }
}

#[test]
fn valid_streams_decode_completely() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..50 {
        let n = rng.below(40) as u64;
        let s = valid_stream(&mut rng, n);
        let (frames, good) = decode_all(&s, 1 << 20);
        assert_eq!((frames, good), (n as usize + 1, n as usize + 1));
    }
}

#[test]
fn mutated_streams_never_panic_and_bad_payloads_fail_the_crc() {
    for seed in 1..400u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
        let n = 1 + rng.below(20) as u64;
        let mut s = valid_stream(&mut rng, n);
        for _ in 0..=rng.below(6) {
            let at = rng.below(s.len());
            match rng.below(4) {
                0 => s[at] ^= 1 << rng.below(8),
                1 => s.truncate(at),
                2 => {
                    s.insert(at, rng.next() as u8);
                }
                _ => s[at..].rotate_left(1),
            }
            if s.is_empty() {
                break;
            }
        }
        // A small --max-frame: any length field a mutation inflates must be refused.
        let (frames, good) = decode_all(&s, 4096);
        assert!(good <= frames, "seed {seed}");
    }
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
