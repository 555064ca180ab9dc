//! Fuzzes `frame::parse_message`, the decoder of whole messages (POSIX and
//! System V queues, Unix datagrams): input byte 0 picks `--max-frame`, the rest
//! is the message. Asserts: no panic; accepted exactly when SPEC §3 says so,
//! with the header and payload the reference reads; `check_crc` agrees with an
//! independent CRC-32; and no allocation at all.

#![no_main]

use ipc_common::frame::{self, HEADER_LEN, Kind};
use libfuzzer_sys::fuzz_target;

mod support;
use ipc_faults::oracle::{Counting, crc32_ref, ref_header, tracked};
use support::max_frame;

#[global_allocator]
static ALLOC: Counting = Counting;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, msg)) = data.split_first() else { return };
    let max = max_frame(selector);
    let (result, _, allocations) = tracked(|| {
        frame::parse_message(msg, max).map(|f| (f.header, f.payload, f.check_crc().is_ok()))
    });
    assert_eq!(allocations, 0, "parse_message allocated");
    let expect = if msg.len() >= HEADER_LEN { ref_header(msg, max) } else { None }
        .filter(|h| msg.len() == HEADER_LEN + h.3 as usize);
    match (result, expect) {
        (Ok((h, payload, crc_ok)), Some((kind, writer, seq, len, crc))) => {
            assert_eq!(
                (u8::from(h.kind == Kind::End), h.writer, h.seq, h.len, h.crc),
                (kind, writer, seq, len, crc)
            );
            assert_eq!(payload, &msg[HEADER_LEN..]);
            assert_eq!(crc_ok, crc32_ref(payload) == crc, "check_crc disagrees");
        }
        (Err(_), None) => {}
        (Ok(_), None) => panic!("accepted a message SPEC §3 refuses"),
        (Err(e), Some(_)) => panic!("refused a valid message: {e}"),
    }
});
