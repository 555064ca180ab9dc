//! The command line every binary shares (SPEC §2), parsed with argh.
//!
//! argh has no `flatten`, so the shared options are added by two macros:
//! [`writer_args!`](crate::writer_args) and [`reader_args!`](crate::reader_args)
//! take a binary's own options (its `--path`, `--spawn`, `--raw`...) and append
//! the common ones, documented once here. [`parse`] then maps argh's outcomes to
//! SPEC's exit codes: `--help` and `--version` exit 0, any usage error prints one
//! line and exits 2 (argh's own `from_env` would exit 1).
//!
//! ```text
//! writer: --count N  --size B|MIN..MAX  --seed S  --id K  --timeout SECS  --quiet  --version
//! reader: --count N  --writers K  --timeout SECS  --max-frame BYTES  --quiet  --version
//! ```

use std::io::Write;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use crate::driver::{ReaderOpts, WriterOpts};
use crate::error::{Error, Result};
use crate::frame::DEFAULT_MAX_FRAME;
use crate::payload::{SizeSpec, parse_bytes};
use crate::wait::timeout_secs;

/// A byte count on the command line: `4096`, `64K`, `16M`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub usize);

impl FromStr for Bytes {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        parse_bytes(s).map(Bytes)
    }
}

/// `--api posix|sysv`: which standard's calls a pair uses, for the mechanisms
/// Linux offers in both (message queues, shared memory).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// POSIX: objects found by name (`mq_open`, `shm_open`).
    Posix,
    /// System V: objects found by an `ftok` key (`msgget`, `shmget`).
    Sysv,
}

impl FromStr for Api {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "posix" => Ok(Api::Posix),
            "sysv" => Ok(Api::Sysv),
            _ => Err(format!("{s:?}: expected posix or sysv")),
        }
    }
}

/// The shared writer options, as typed.
#[derive(Debug, Clone)]
pub struct CommonWriter {
    /// `--count N`
    pub count: Option<u64>,
    /// `--size B|MIN..MAX`
    pub size: Option<SizeSpec>,
    /// `--seed S`
    pub seed: Option<u64>,
    /// `--id K`
    pub id: u16,
    /// `--timeout SECS`
    pub timeout: u64,
    /// `--quiet`
    pub quiet: bool,
}

impl CommonWriter {
    /// Checks the combination and builds the driver's options.
    pub fn writer_opts(&self) -> Result<WriterOpts> {
        if self.count.is_none() && (self.size.is_some() || self.seed.is_some()) {
            return Err(Error::usage("--size and --seed generate payloads: give --count N too"));
        }
        Ok(WriterOpts {
            count: self.count,
            size: self.size.unwrap_or_default(),
            seed: self.seed.unwrap_or(1),
            id: self.id,
        })
    }

    /// How long to wait for the reader's object; `None` is forever.
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        timeout_secs(self.timeout)
    }
}

/// The shared reader options, as typed.
#[derive(Debug, Clone)]
pub struct CommonReader {
    /// `--count N`
    pub count: Option<u64>,
    /// `--writers K`
    pub writers: u16,
    /// `--timeout SECS`
    pub timeout: u64,
    /// `--max-frame BYTES`
    pub max_frame: Option<Bytes>,
    /// `--quiet`
    pub quiet: bool,
}

impl CommonReader {
    /// Checks the values and builds the driver's options.
    pub fn reader_opts(&self) -> Result<ReaderOpts> {
        if self.writers == 0 {
            return Err(Error::usage("--writers 0: a reader needs at least one writer"));
        }
        let max_frame = match self.max_frame {
            None => DEFAULT_MAX_FRAME,
            Some(Bytes(b)) => u32::try_from(b).map_err(|_| {
                Error::usage(format!("--max-frame {b}: at most {} bytes", u32::MAX))
            })?,
        };
        Ok(ReaderOpts {
            count: self.count,
            writers: self.writers,
            max_frame,
            print: self.count.is_none() && !self.quiet,
            verify: true,
        })
    }

    /// How long to wait for the first writer; `None` (the default) is forever.
    #[must_use]
    pub fn timeout(&self) -> Option<Duration> {
        timeout_secs(self.timeout)
    }
}

/// Implemented by [`writer_args!`](crate::writer_args) structs.
pub trait WriterArgs {
    /// The shared options.
    fn common(&self) -> CommonWriter;
}

/// Implemented by [`reader_args!`](crate::reader_args) structs.
pub trait ReaderArgs {
    /// The shared options.
    fn common(&self) -> CommonReader;
}

/// Implemented by both macros: whether `--version` was given.
pub trait VersionFlag {
    /// `--version` was given.
    fn version(&self) -> bool;
}

/// The whole `main` of a binary: parse the command line (exit 0 after `--help`
/// or `--version`, 2 on a usage error), call `run`, and turn its result into the
/// exit status, printing any error as one line ([`crate::error::report`]).
pub fn main<T: argh::FromArgs + VersionFlag>(
    bin: &str,
    run: impl FnOnce(&T) -> Result<()>,
) -> ExitCode {
    match parse::<T>(bin) {
        Ok(args) => {
            let mut result = run(&args);
            // A stop signal explains whatever failed after it (a write cut short,
            // say): report the interrupt, and exit 130/143.
            if let (Err(_), Some(sig)) = (&result, crate::signals::pending()) {
                result = Err(crate::error::Error::interrupted(sig));
            }
            crate::error::report(bin, result)
        }
        Err(code) => code,
    }
}

/// Parses the command line: `Ok(args)`, or the exit code after `--help`,
/// `--version` (0) or a usage error (2, one line on standard error).
pub fn parse<T: argh::FromArgs + VersionFlag>(bin: &str) -> std::result::Result<T, ExitCode> {
    let args: Vec<String> =
        match std::env::args_os().skip(1).map(std::ffi::OsString::into_string).collect() {
            Ok(args) => args,
            Err(bad) => {
                crate::say!("{bin}: usage: argument {bad:?} is not UTF-8");
                return Err(ExitCode::from(2));
            }
        };
    let strs: Vec<&str> = args.iter().map(String::as_str).collect();
    match T::from_args(&[bin], &strs) {
        Ok(parsed) if parsed.version() => {
            // writeln, not println: `--version | head -0` must not panic on EPIPE.
            let _ = writeln!(std::io::stdout(), "{bin} {}", env!("CARGO_PKG_VERSION"));
            Err(ExitCode::SUCCESS)
        }
        Ok(parsed) => Ok(parsed),
        Err(early) if early.status.is_ok() => {
            // --help: a closed pipe (`--help | head`) is not an error worth a panic.
            let _ = writeln!(std::io::stdout(), "{}", early.output);
            Err(ExitCode::SUCCESS)
        }
        Err(early) => {
            let text: Vec<&str> =
                early.output.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
            crate::say!("{bin}: usage: {} (see {bin} --help)", text.join("; "));
            Err(ExitCode::from(2))
        }
    }
}

/// Adds the shared writer options to a binary's own: see [`crate::opts`].
///
/// ```text
/// ipc_common::writer_args! {
///     /// Send frames down a pipe.
///     #[argh(example = "pipe-writer --count 1000 | pipe-reader")]
///     struct Args {
///         /// create the pipe and run pipe-reader on it
///         #[argh(switch)]
///         spawn: bool,
///     }
/// }
/// ```
#[macro_export]
macro_rules! writer_args {
    ($(#[$attr:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        #[derive(argh::FromArgs, Debug)]
        $(#[$attr])*
        $vis struct $name {
            $($body)*
            /// send N generated messages instead of the lines of standard input
            #[argh(option, arg_name = "N")]
            pub count: ::core::option::Option<u64>,
            /// generated payload size: B or MIN..MAX, units K and M (default 64)
            #[argh(option, arg_name = "B|MIN..MAX")]
            pub size: ::core::option::Option<$crate::payload::SizeSpec>,
            /// seed of the generated payloads (default 1)
            #[argh(option, arg_name = "S")]
            pub seed: ::core::option::Option<u64>,
            /// writer id put in every frame, so one reader can tell writers apart (default 0)
            #[argh(option, default = "0", arg_name = "K")]
            pub id: u16,
            /// seconds to wait for the other side to be ready, and mid-stream for it to take more (a frozen reader); 0 waits forever (default 10)
            #[argh(option, default = "10", arg_name = "SECS")]
            pub timeout: u64,
            /// print only the summary line and errors
            #[argh(switch, short = 'q')]
            pub quiet: bool,
            /// print the version and exit
            #[argh(switch)]
            pub version: bool,
        }

        impl $crate::opts::WriterArgs for $name {
            fn common(&self) -> $crate::opts::CommonWriter {
                $crate::opts::CommonWriter {
                    count: self.count,
                    size: self.size,
                    seed: self.seed,
                    id: self.id,
                    timeout: self.timeout,
                    quiet: self.quiet,
                }
            }
        }

        impl $crate::opts::VersionFlag for $name {
            fn version(&self) -> bool {
                self.version
            }
        }
    };
}

/// Adds the shared reader options to a binary's own: see [`crate::opts`].
#[macro_export]
macro_rules! reader_args {
    ($(#[$attr:meta])* $vis:vis struct $name:ident { $($body:tt)* }) => {
        #[derive(argh::FromArgs, Debug)]
        $(#[$attr])*
        $vis struct $name {
            $($body)*
            /// expect exactly N messages in all, and print only the summary
            #[argh(option, arg_name = "N")]
            pub count: ::core::option::Option<u64>,
            /// finish after K writers sent their end frame (default 1)
            #[argh(option, default = "1", arg_name = "K")]
            pub writers: u16,
            /// seconds to wait for the first writer, and mid-stream for the next frame (a frozen writer); 0 (the default) waits forever
            #[argh(option, default = "0", arg_name = "SECS")]
            pub timeout: u64,
            /// largest payload accepted, checked before it is read (default 16M)
            #[argh(option, arg_name = "BYTES")]
            pub max_frame: ::core::option::Option<$crate::opts::Bytes>,
            /// print only the summary lines, not the messages
            #[argh(switch, short = 'q')]
            pub quiet: bool,
            /// print the version and exit
            #[argh(switch)]
            pub version: bool,
        }

        impl $crate::opts::ReaderArgs for $name {
            fn common(&self) -> $crate::opts::CommonReader {
                $crate::opts::CommonReader {
                    count: self.count,
                    writers: self.writers,
                    timeout: self.timeout,
                    max_frame: self.max_frame,
                    quiet: self.quiet,
                }
            }
        }

        impl $crate::opts::VersionFlag for $name {
            fn version(&self) -> bool {
                self.version
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::Api;

    #[test]
    fn api_takes_posix_or_sysv_and_names_both_when_refusing() {
        assert_eq!("posix".parse::<Api>(), Ok(Api::Posix));
        assert_eq!("sysv".parse::<Api>(), Ok(Api::Sysv));
        assert_eq!("svr4".parse::<Api>(), Err("\"svr4\": expected posix or sysv".to_string()));
    }
}
