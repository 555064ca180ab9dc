//! One error type for every binary: a one-line message and the exit code it maps to.
//!
//! Every failure in the workspace ends as an [`Error`] carrying an [`Exit`] class
//! (SPEC §2). The message says what failed, the kernel's words (`EEXIST: File
//! exists`) and, where it helps, what to do about it. [`report`] is the one place
//! that prints it, prefixed with the binary's name, and picks the exit status.
//!
//! ```text
//! fifo-reader: mkfifo /run/user/0/ipc-demos/fifo: EACCES: Permission denied
//! ```

use std::fmt;
use std::io;
use std::process::ExitCode;

use nix::errno::Errno;

/// Why a program stopped: each class has one exit status (SPEC §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// 1: a kernel call failed, a limit was hit, an object is stale, foreign or unsafe.
    System,
    /// 2: a bad flag or value, named in the message.
    Usage,
    /// 3: the other side never came, vanished mid-stream, or removed the object.
    PeerLost,
    /// 4: a corrupt, oversize or out-of-order frame.
    BadData,
    /// 128 + signal: stopped by SIGINT (130) or SIGTERM (143), after cleanup.
    Interrupted(i32),
}

impl Exit {
    /// The process exit status for this class.
    #[must_use]
    pub fn code(self) -> u8 {
        match self {
            Exit::System => 1,
            Exit::Usage => 2,
            Exit::PeerLost => 3,
            Exit::BadData => 4,
            Exit::Interrupted(sig) => u8::try_from(128 + sig).unwrap_or(128),
        }
    }

    /// The class of a child's exit status (the inverse of [`Exit::code`] for
    /// the statuses our binaries use; anything else is a system failure).
    #[must_use]
    pub fn from_code(code: i32) -> Exit {
        match code {
            2 => Exit::Usage,
            3 => Exit::PeerLost,
            4 => Exit::BadData,
            130 => Exit::Interrupted(libc::SIGINT),
            143 => Exit::Interrupted(libc::SIGTERM),
            _ => Exit::System,
        }
    }
}

/// A failure: its class and a one-line message (without the binary's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    exit: Exit,
    message: String,
    writer: Option<u16>,
}

/// The result type of everything in the workspace.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An error of class `exit` with `message`.
    pub fn new(exit: Exit, message: impl Into<String>) -> Self {
        Self { exit, message: message.into(), writer: None }
    }

    /// A kernel call failed, a limit was hit, or an object is unsafe (exit 1).
    pub fn system(message: impl Into<String>) -> Self {
        Self::new(Exit::System, message)
    }

    /// A bad flag or value (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self::new(Exit::Usage, message)
    }

    /// The peer never came or went away (exit 3).
    pub fn peer_lost(message: impl Into<String>) -> Self {
        Self::new(Exit::PeerLost, message)
    }

    /// A frame failed a check (exit 4).
    pub fn bad_data(message: impl Into<String>) -> Self {
        Self::new(Exit::BadData, message)
    }

    /// Stopped by signal `sig`; the message names it.
    #[must_use]
    pub fn interrupted(sig: i32) -> Self {
        let name = match sig {
            libc::SIGINT => "SIGINT",
            libc::SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        Self::new(Exit::Interrupted(sig), format!("interrupted by {name}"))
    }

    /// A failed system call: `what` (the call and its object) and the kernel's words.
    pub fn errno(what: impl fmt::Display, errno: Errno) -> Self {
        Self::system(format!("{what}: {}", errno_text(errno)))
    }

    /// Appends a hint: what to do about it (`; remove it with: rm PATH`).
    #[must_use]
    pub fn hint(mut self, hint: impl fmt::Display) -> Self {
        self.message = format!("{}; {hint}", self.message);
        self
    }

    /// Changes the class, keeping the message (an `EPIPE` is a lost peer, say).
    #[must_use]
    pub fn with_exit(mut self, exit: Exit) -> Self {
        self.exit = exit;
        self
    }

    /// Says which writer this is about, when the source knows (a shared buffer
    /// that saw writer 2 die in its critical section, say): the reader then
    /// names that writer, not just the first one still open.
    #[must_use]
    pub fn for_writer(mut self, id: u16) -> Self {
        self.writer = Some(id);
        self
    }

    /// The writer this error is about, if the source said.
    #[must_use]
    pub fn writer(&self) -> Option<u16> {
        self.writer
    }

    /// The class of this error.
    #[must_use]
    pub fn exit(&self) -> Exit {
        self.exit
    }

    /// The message, without the binary's name.
    #[must_use]
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// `EEXIST: File exists`: the symbolic name, so it can be searched, and the text.
#[must_use]
pub fn errno_text(errno: Errno) -> String {
    // nix prints `EEXIST: File exists`, the form TLPI's examples use.
    errno.to_string()
}

/// The errno behind an I/O error, or `EIO` when there is none.
#[must_use]
pub fn io_errno(err: &io::Error) -> Errno {
    err.raw_os_error().map_or(Errno::EIO, Errno::from_raw)
}

/// Adds the failed call and its object to a kernel error: `.context(|| format!("mkfifo {p}"))`.
pub trait Context<T> {
    /// On error, an [`Error`] of class [`Exit::System`]: `what: ERRNO: text`.
    fn context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T>;
}

impl<T> Context<T> for std::result::Result<T, Errno> {
    fn context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|errno| Error::errno(what(), errno))
    }
}

impl<T> Context<T> for io::Result<T> {
    fn context<D: fmt::Display>(self, what: impl FnOnce() -> D) -> Result<T> {
        self.map_err(|err| match err.raw_os_error() {
            Some(raw) => Error::errno(what(), Errno::from_raw(raw)),
            None => Error::system(format!("{}: {err}", what())),
        })
    }
}

/// The one place that prints an error and picks the exit status: `main` ends with it.
///
/// Success is silent here (each binary prints its own summary line first).
#[must_use]
pub fn report(bin: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::say!("{bin}: {err}");
            ExitCode::from(err.exit().code())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_class_has_its_documented_exit_code() {
        assert_eq!(Exit::System.code(), 1);
        assert_eq!(Exit::Usage.code(), 2);
        assert_eq!(Exit::PeerLost.code(), 3);
        assert_eq!(Exit::BadData.code(), 4);
        assert_eq!(Exit::Interrupted(libc::SIGINT).code(), 130);
        assert_eq!(Exit::Interrupted(libc::SIGTERM).code(), 143);
    }

    #[test]
    fn context_names_the_call_and_the_kernel_words() {
        let r: std::result::Result<(), Errno> = Err(Errno::EEXIST);
        let err = r.context(|| "mkfifo /x").unwrap_err();
        assert_eq!(err.to_string(), "mkfifo /x: EEXIST: File exists");
        assert_eq!(err.exit(), Exit::System);
        let err = err.hint("remove it with: rm /x");
        assert_eq!(err.to_string(), "mkfifo /x: EEXIST: File exists; remove it with: rm /x");
    }
}
