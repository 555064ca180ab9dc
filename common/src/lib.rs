//! `ipc-common`: what every ipc-demos pair shares, written once.
//!
//! Each mechanism crate (pipe, FIFO, queues, shared memory, sockets...) holds
//! only its own system calls. Everything else a writer/reader pair needs lives
//! here:
//!
//! - [`frame`]: the wire format (SPEC §3) — encode, parse, check;
//! - [`payload`]: generated payloads and the running digest;
//! - [`driver`]: the two traits a mechanism implements ([`driver::FrameSink`],
//!   [`driver::FrameSource`]) and the writer, reader and round-trip loops on them;
//! - [`stream`]: those traits for byte streams (pipes, FIFOs, stream sockets);
//! - [`opts`]: the shared command line, usage errors exit 2;
//! - [`error`]: the one error type, its exit codes, and `main`'s [`error::report`];
//! - [`paths`]: the private directory, POSIX names, and the safety checks on both;
//! - [`signals`] and [`wait`]: SIGINT/SIGTERM as a flag, and bounded waits that watch it;
//! - [`clean`]: finding what a killed run left, for `ipc-clean`;
//! - [`ring`]: a single-producer, single-consumer ring of frames in any shared
//!   memory region (shared memory segments, mapped files);
//! - [`process`]: `fork`, reaping a child through a pidfd, passing its exit code on;
//! - [`stats`]: latency percentiles;
//! - `testkit` (feature): running the real binaries in pairs from tests.
//!
//! # Lifecycle of a pair
//! 1. `main` parses options ([`opts::parse`]) and installs the signal flag
//!    ([`signals::install`]).
//! 2. The reader creates and owns the kernel object (an RAII value in its
//!    mechanism crate), prints `<bin>: ready: ...`, and runs [`driver::run_reader`].
//! 3. The writer waits for the object (`--timeout`), opens it, and runs
//!    [`driver::run_writer`].
//! 4. Both print a summary line with the digest; the owner's `Drop` removes the
//!    object, on success, error, or SIGINT/SIGTERM alike; [`error::report`]
//!    prints any error and returns the exit code.

pub mod clean;
pub mod driver;
pub mod error;
pub mod frame;
pub mod liveness;
pub mod opts;
pub mod paths;
pub mod payload;
pub mod process;
pub mod ring;
pub mod signals;
pub mod stats;
pub mod stream;
pub mod wait;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{Context, Error, Exit, Result};

/// Prints one line on standard error with a single `write`, so the lines of
/// processes sharing a terminal (a writer and the reader it spawned) never
/// interleave mid-line, as `eprintln!`'s piecewise writes can.
pub fn say(line: std::fmt::Arguments<'_>) {
    use std::os::fd::AsFd;
    let text = format!("{line}\n");
    let mut slices = [std::io::IoSlice::new(text.as_bytes())];
    // Standard error may share a non-blocking pipe with standard output
    // (`2>&1 |`): the same poll-and-retry write as everywhere, errors ignored.
    let _ = stream::write_all_vectored(std::io::stderr().as_fd(), &mut slices, "standard error");
}

/// `eprintln!` in one `write`: see [`say()`].
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say(format_args!($($arg)*))
    };
}

/// Tells the person (and the tests) that the reader's object exists and it is
/// listening: `fifo-reader: ready: FIFO /run/user/0/ipc-demos/fifo`.
pub fn announce_ready(bin: &str, what: impl std::fmt::Display) {
    say(format_args!("{bin}: ready: {what}"));
}
