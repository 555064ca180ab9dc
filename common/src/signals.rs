//! SIGINT and SIGTERM as a request to stop, so owners clean up before exiting.
//!
//! [`install`] registers a signal-hook handler that only stores the signal number
//! in an atomic. Every wait in the workspace is a bounded `poll`/timed wait (see
//! [`crate::wait`]) or a call the kernel interrupts with `EINTR`, and checks
//! [`check`] when it wakes; the error it returns unwinds through the RAII owners
//! (which remove their objects in `Drop`) up to `main`, which exits 128 + signal.
//!
//! # Pitfalls
//! signal-hook installs its handler with `SA_RESTART`, so a plain blocking `read`
//! or `write` would be restarted by the kernel and never see the flag: that is why
//! descriptors are made non-blocking and waited on with `poll`, which always
//! returns `EINTR` after a handler ran.

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::{Context, Error, Result};

/// The last stop signal received, or 0.
static PENDING: AtomicUsize = AtomicUsize::new(0);

/// Signals that ask the program to stop (exit 130 / 143 after cleanup).
pub const STOP_SIGNALS: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

/// Environment variable for fault injection: when set to `1`, SIGUSR1 gets a
/// handler that does nothing, installed *without* `SA_RESTART`, so a storm of
/// SIGUSR1 makes every blocking call the program makes fail with `EINTR` — the
/// test that proves each of them is retried (nothing lost, nothing repeated).
pub const EINTR_ENV: &str = "IPC_DEMOS_EINTR_STORM";

/// Registers the stop handlers. Call once, first thing in `main`'s run.
pub fn install() -> Result<()> {
    for sig in STOP_SIGNALS {
        let value = usize::try_from(sig).unwrap_or_default();
        signal_hook::flag::register_usize(sig, &PENDING, value)
            .context(|| format!("sigaction signal {sig}"))?;
    }
    if std::env::var_os(EINTR_ENV).is_some_and(|v| v == "1") {
        interrupt_on_sigusr1()?;
    }
    Ok(())
}

extern "C" fn ignore(_: libc::c_int) {}

/// SIGUSR1: a handler that does nothing, without `SA_RESTART` (see [`EINTR_ENV`]).
fn interrupt_on_sigusr1() -> Result<()> {
    use nix::sys::signal::{SaFlags, SigAction, SigHandler, SigSet, Signal, sigaction};
    let action = SigAction::new(SigHandler::Handler(ignore), SaFlags::empty(), SigSet::empty());
    // SAFETY: the handler does nothing at all, so it is async-signal-safe.
    unsafe { sigaction(Signal::SIGUSR1, &action) }.map(drop).context(|| "sigaction SIGUSR1")
}

/// The stop signal received so far, if any.
#[must_use]
pub fn pending() -> Option<i32> {
    match PENDING.load(Ordering::Relaxed) {
        0 => None,
        sig => i32::try_from(sig).ok(),
    }
}

/// `Err(interrupted)` once a stop signal has arrived: call it wherever a loop waits.
pub fn check() -> Result<()> {
    match pending() {
        None => Ok(()),
        Some(sig) => Err(Error::interrupted(sig)),
    }
}
