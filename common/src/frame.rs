//! The wire format: a 24-byte little-endian header, then the payload (SPEC §3).
//!
//! ```text
//! offset size field   meaning
//!      0    4 magic   "IPC1"
//!      4    1 kind    0 = data, 1 = end of stream
//!      5    1 flags   0 (reserved; a reader rejects other values)
//!      6    2 writer  writer id (--id)
//!      8    8 seq     0, 1, 2, ... per writer; an end frame carries the number of data frames
//!     16    4 len     payload length; an end frame has 0
//!     20    4 crc     CRC-32 (IEEE) of the payload
//!     24  len payload
//! ```
//!
//! The same frame in Python, for a foreign peer:
//! `struct.pack('<4sBBHQII', b'IPC1', kind, 0, writer, seq, len(p), zlib.crc32(p)) + p`.
//!
//! A reader trusts nothing before [`Header::parse`] has checked magic, kind, flags
//! and `len` against `--max-frame` — that happens before any buffer grows for the
//! payload — and [`Frame::check_crc`] has checked the payload. Sequence numbers are
//! the reader driver's job ([`crate::driver`]), since they are per writer.

use std::fmt;

/// The four bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"IPC1";
/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 24;
/// Largest payload a reader accepts unless `--max-frame` says otherwise: 16 MiB.
pub const DEFAULT_MAX_FRAME: u32 = 16 << 20;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A payload.
    Data,
    /// The writer is done; `seq` is the number of data frames it sent.
    End,
}

/// A frame header, parsed or about to be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Data or end of stream.
    pub kind: Kind,
    /// The sending writer's id (`--id`).
    pub writer: u16,
    /// Per-writer sequence number; for an end frame, the count of data frames.
    pub seq: u64,
    /// Payload length in bytes.
    pub len: u32,
    /// CRC-32 (IEEE) of the payload.
    pub crc: u32,
}

/// A frame as a borrowed view: valid until the source's next receive.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    /// The checked header.
    pub header: Header,
    /// The payload bytes, `header.len` of them.
    pub payload: &'a [u8],
}

/// What is wrong with a frame. The reader driver adds the mechanism, writer and seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// The first four bytes are not `IPC1`.
    BadMagic([u8; 4]),
    /// The kind byte is neither 0 nor 1.
    BadKind(u8),
    /// The reserved flags byte is not 0.
    BadFlags(u8),
    /// `len` is above the reader's `--max-frame`.
    Oversize {
        /// The length the header claims.
        len: u32,
        /// The reader's limit.
        max: u32,
    },
    /// An end frame with a payload.
    EndWithPayload(u32),
    /// The payload's CRC differs from the header's.
    BadCrc {
        /// CRC in the header.
        stored: u32,
        /// CRC of the payload as received.
        computed: u32,
    },
    /// A whole message (queue, datagram) whose size is not header + `len`.
    LengthMismatch {
        /// Bytes in the message.
        message: usize,
        /// Bytes the header accounts for.
        frame: usize,
    },
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::BadMagic(m) => write!(
                f,
                "bad magic {:02x} {:02x} {:02x} {:02x} (expected \"IPC1\")",
                m[0], m[1], m[2], m[3]
            ),
            FrameError::BadKind(k) => write!(f, "unknown kind {k} (expected 0 = data or 1 = end)"),
            FrameError::BadFlags(x) => write!(f, "reserved flags set: {x:#04x} (expected 0)"),
            FrameError::Oversize { len, max } => {
                write!(f, "length {len} is above --max-frame {max}; refused before reading it")
            }
            FrameError::EndWithPayload(len) => write!(f, "end frame with a {len}-byte payload"),
            FrameError::BadCrc { stored, computed } => {
                write!(f, "checksum mismatch: header says {stored:08x}, payload has {computed:08x}")
            }
            FrameError::LengthMismatch { message, frame } => {
                write!(f, "message of {message} bytes holds a frame of {frame} bytes")
            }
        }
    }
}

impl std::error::Error for FrameError {}

/// CRC-32 (IEEE, as zlib.crc32) of `bytes`.
#[must_use]
#[inline]
pub fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

impl Header {
    /// The header of data frame `seq` from `writer` carrying `payload`.
    ///
    /// # Panics
    /// If `payload` is 4 GiB or more, which no size option allows.
    #[must_use]
    #[inline]
    pub fn data(writer: u16, seq: u64, payload: &[u8]) -> Header {
        let len = u32::try_from(payload.len()).expect("payload length fits the 32-bit len field");
        Header { kind: Kind::Data, writer, seq, len, crc: crc32(payload) }
    }

    /// The end frame of `writer`, which sent `count` data frames.
    #[must_use]
    pub fn end(writer: u16, count: u64) -> Header {
        // crc32 of the empty payload is 0.
        Header { kind: Kind::End, writer, seq: count, len: 0, crc: 0 }
    }

    /// The 24 header bytes, little-endian.
    ///
    /// Built as three 64-bit words (magic, kind, flags and writer; seq; len
    /// and crc), so that the compiler stores three words where the bytes go
    /// rather than eight narrow pieces that a 16-byte copy then reads back
    /// (a failed store-to-load forward: ~15 cycles a frame).
    #[must_use]
    #[inline]
    pub fn to_bytes(&self) -> [u8; HEADER_LEN] {
        let kind: u64 = match self.kind {
            Kind::Data => 0,
            Kind::End => 1,
        };
        // Byte 5, the flags, stays 0.
        let first =
            u64::from(u32::from_le_bytes(MAGIC)) | kind << 32 | u64::from(self.writer) << 48;
        let last = u64::from(self.len) | u64::from(self.crc) << 32;
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&first.to_le_bytes());
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&last.to_le_bytes());
        b
    }

    /// Parses and checks a header: magic, kind, flags, and `len <= max_frame`.
    ///
    /// Nothing else in the header is trusted until this returns `Ok`; the caller
    /// grows no buffer for the payload before it.
    #[inline]
    pub fn parse(b: &[u8; HEADER_LEN], max_frame: u32) -> Result<Header, FrameError> {
        let magic = [b[0], b[1], b[2], b[3]];
        if magic != MAGIC {
            return Err(FrameError::BadMagic(magic));
        }
        let kind = match b[4] {
            0 => Kind::Data,
            1 => Kind::End,
            k => return Err(FrameError::BadKind(k)),
        };
        if b[5] != 0 {
            return Err(FrameError::BadFlags(b[5]));
        }
        let le32 = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        let len = le32(16);
        if len > max_frame {
            return Err(FrameError::Oversize { len, max: max_frame });
        }
        if kind == Kind::End && len != 0 {
            return Err(FrameError::EndWithPayload(len));
        }
        let mut seq = [0u8; 8];
        seq.copy_from_slice(&b[8..16]);
        Ok(Header {
            kind,
            writer: u16::from_le_bytes([b[6], b[7]]),
            seq: u64::from_le_bytes(seq),
            len,
            crc: le32(20),
        })
    }

    /// Bytes on the wire: header plus payload.
    #[must_use]
    #[inline]
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }
}

impl Frame<'_> {
    /// Checks the payload against the header's CRC.
    #[inline]
    pub fn check_crc(&self) -> Result<(), FrameError> {
        let computed = crc32(self.payload);
        if computed == self.header.crc {
            Ok(())
        } else {
            Err(FrameError::BadCrc { stored: self.header.crc, computed })
        }
    }
}

/// Parses one whole message (a queue message, a datagram) holding exactly one frame.
///
/// The header is checked first, then the message length must be header + `len`.
/// The CRC is left to [`Frame::check_crc`], like every other source.
pub fn parse_message(msg: &[u8], max_frame: u32) -> Result<Frame<'_>, FrameError> {
    let Some((head, payload)) = msg.split_first_chunk::<HEADER_LEN>() else {
        return Err(FrameError::LengthMismatch { message: msg.len(), frame: HEADER_LEN });
    };
    let header = Header::parse(head, max_frame)?;
    if payload.len() != header.len as usize {
        return Err(FrameError::LengthMismatch { message: msg.len(), frame: header.frame_len() });
    }
    Ok(Frame { header, payload })
}

/// Encodes a whole frame into `out`, reusing its allocation (for message mechanisms
/// that must hand the kernel one contiguous buffer).
pub fn encode_into(out: &mut Vec<u8>, header: &Header, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(&header.to_bytes());
    out.extend_from_slice(payload);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct.pack('<4sBBHQII', b'IPC1', 0, 0, 7, 3, 5, zlib.crc32(b'hello')) + b'hello'`
    const PYTHON_HELLO: [u8; 29] = [
        0x49, 0x50, 0x43, 0x31, 0x00, 0x00, 0x07, 0x00, 0x03, 0, 0, 0, 0, 0, 0, 0, 0x05, 0, 0, 0,
        0x86, 0xa6, 0x10, 0x36, b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn encoding_matches_the_python_one_liner() {
        let mut out = Vec::new();
        encode_into(&mut out, &Header::data(7, 3, b"hello"), b"hello");
        assert_eq!(out, PYTHON_HELLO);
    }

    #[test]
    fn parse_message_round_trips_and_checks_crc() {
        let frame = parse_message(&PYTHON_HELLO, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!(frame.header, Header::data(7, 3, b"hello"));
        assert_eq!(frame.payload, b"hello");
        frame.check_crc().unwrap();
    }

    fn with(byte: usize, value: u8) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h.copy_from_slice(&PYTHON_HELLO[..HEADER_LEN]);
        h[byte] = value;
        h
    }

    #[test]
    fn each_header_field_is_checked() {
        assert_eq!(Header::parse(&with(0, b'X'), 100), Err(FrameError::BadMagic(*b"XPC1")));
        assert_eq!(Header::parse(&with(4, 2), 100), Err(FrameError::BadKind(2)));
        assert_eq!(Header::parse(&with(5, 1), 100), Err(FrameError::BadFlags(1)));
        assert_eq!(Header::parse(&with(4, 1), 100), Err(FrameError::EndWithPayload(5)));
        assert_eq!(
            Header::parse(&with(16, 101), 100),
            Err(FrameError::Oversize { len: 101, max: 100 })
        );
    }

    #[test]
    fn oversize_is_refused_from_the_header_alone() {
        let mut h = with(16, 0xf0);
        h[17..20].copy_from_slice(&[0xff, 0xff, 0xff]);
        let err = Header::parse(&h, DEFAULT_MAX_FRAME).unwrap_err();
        assert_eq!(err, FrameError::Oversize { len: 0xffff_fff0, max: DEFAULT_MAX_FRAME });
    }

    #[test]
    fn corrupt_payload_fails_the_crc() {
        let mut msg = PYTHON_HELLO;
        msg[26] ^= 1;
        let frame = parse_message(&msg, DEFAULT_MAX_FRAME).unwrap();
        assert!(matches!(frame.check_crc(), Err(FrameError::BadCrc { .. })));
    }

    #[test]
    fn a_message_must_hold_exactly_one_frame() {
        assert!(matches!(
            parse_message(&PYTHON_HELLO[..28], DEFAULT_MAX_FRAME),
            Err(FrameError::LengthMismatch { message: 28, frame: 29 })
        ));
        assert!(matches!(
            parse_message(&PYTHON_HELLO[..10], DEFAULT_MAX_FRAME),
            Err(FrameError::LengthMismatch { message: 10, frame: 24 })
        ));
    }

    #[test]
    fn end_frame_carries_the_count_and_no_payload() {
        let end = Header::end(2, 812);
        let parsed = Header::parse(&end.to_bytes(), 0).unwrap();
        assert_eq!(parsed, end);
        assert_eq!(parsed.kind, Kind::End);
        assert_eq!(parsed.seq, 812);
    }
}
