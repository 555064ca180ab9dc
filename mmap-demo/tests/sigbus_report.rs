//! A SIGBUS on a file that still has its size is reported as what it is (an
//! I/O error or a full disk), not as a truncation; one on a shortened file is
//! a truncation. (A test binary of its own: the handler's state is per process.)

use std::fs;

use ipc_common::error::Error;
use ipc_common::testkit::TestDir;
use mmap_demo::{HEADER_LEN, Layout, create, sigbus};

#[test]
fn a_fault_is_called_a_truncation_only_while_the_file_is_short() {
    sigbus::install().expect("install");
    let dir = TestDir::new("mmap-sigbus-report");
    let path = dir.root().join("faulted.log");
    let file = create(&path, Layout::Log, 64 << 10, false).expect("create");
    let total = (HEADER_LEN + file.capacity()) as u64;
    let disk = fs::OpenOptions::new().write(true).open(&path).expect("open");
    assert!(file.damage().expect("fstat").is_none());

    // The data pages go away; touching one raises SIGBUS, patched with zeros.
    disk.set_len(HEADER_LEN as u64).expect("truncate");
    // SAFETY: inside the mapping; past the end of the file now, so the load
    // faults and the handler maps a page of zeros there.
    let byte = unsafe { file.data().add(8192).read_volatile() };
    assert_eq!(byte, 0);
    assert_eq!(sigbus::fault_code().as_deref(), Some("BUS_ADRERR"));
    let short = file.damage().expect("fstat").expect("damage");
    assert!(
        short.message().contains(&format!(
            "file truncated under the mapping (it has {HEADER_LEN} of its {total} bytes)"
        )),
        "{short}"
    );

    // The file gets its size back: the fault remains, and the size no longer
    // explains it — as with a page the disk could not read.
    disk.set_len(total).expect("extend");
    let intact = file.damage().expect("fstat").expect("damage");
    assert!(
        intact.message().contains(
            "SIGBUS on a page of the mapping (I/O error or disk full): si_code BUS_ADRERR"
        ),
        "{intact}"
    );
    assert!(!intact.message().contains("truncated"), "{intact}");
    // It is what a reader reports, whatever error the zeros caused first.
    let explained = file.explain(Error::bad_data("log at byte 0: bad magic"));
    assert_eq!(explained, intact);
    assert!(file.check_intact().is_err());
    drop(file);
}
