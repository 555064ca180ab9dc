//! What a reader lends in text mode is a copy: the bytes the driver checks
//! (CRC) are the bytes it prints, whatever happens to the file in between.
//! (A test binary of its own: the SIGBUS handler's state is per process.)

use std::fs;
use std::time::Duration;

use ipc_common::driver::{FrameSink, FrameSource};
use ipc_common::frame::{DEFAULT_MAX_FRAME, Header};
use ipc_common::testkit::TestDir;
use mmap_demo::log::{self, LogSink};
use mmap_demo::{Access, HEADER_LEN, Layout, create, open_file, sigbus};

#[test]
fn a_text_payload_is_lent_as_a_copy_that_a_truncation_cannot_change() {
    sigbus::install().expect("install");
    let dir = TestDir::new("mmap-text-copy");
    let path = dir.root().join("copy.log");
    let writer = create(&path, Layout::Log, 64 << 10, false).expect("create");
    let payload = vec![b'x'; 3 * 4096]; // three pages of the file
    LogSink::new(&writer, false).send(&Header::data(0, 0, &payload), &payload).expect("send");

    let file = open_file(&path, Access::Replay, Some(Duration::ZERO), || {}).expect("open");
    let mut text = log::replay(&file, DEFAULT_MAX_FRAME).expect("text reader").copying(true);
    let mut in_place = log::replay(&file, DEFAULT_MAX_FRAME).expect("quiet reader");
    let copied = text.recv().expect("recv").expect("a frame");
    let lent = in_place.recv().expect("recv").expect("a frame");
    assert!(!sigbus::tripped());

    // Someone cuts the file to its header page: the payload's pages are gone.
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open")
        .set_len(HEADER_LEN as u64)
        .expect("truncate");

    // The copy is what was read before: its CRC holds, and it prints as sent.
    assert!(copied.check_crc().is_ok());
    assert_eq!(copied.payload, &payload[..]);
    // In place, the same frame now reads as the zeros the SIGBUS handler
    // mapped over the lost pages: why text mode, which reads a payload twice
    // (check, then print), must not read it there.
    assert!(lent.payload.iter().all(|&b| b == 0));
    assert!(sigbus::tripped());
    drop((writer, file));
}
