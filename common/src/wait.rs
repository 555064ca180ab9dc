//! Bounded waiting: deadlines, and `poll` in ticks that watch the stop signals.
//!
//! Nothing in the workspace sleeps in the kernel without a bound. A wait is a
//! `poll` of at most [`TICK`]; on each wake it checks the signal flag
//! ([`crate::signals::check`]) and the deadline, so Ctrl-C and `--timeout` are
//! honoured within a tick, and mechanisms without end-of-file use the same tick to
//! check that their peer is still alive.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use crate::error::{Context, Result};
use crate::signals;

/// Longest a wait sleeps before looking at signals, deadline and peer again.
pub const TICK: Duration = Duration::from_millis(100);

/// When to give up waiting, or never.
#[derive(Debug, Clone, Copy)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// `timeout` from now; `None` never expires.
    #[must_use]
    pub fn after(timeout: Option<Duration>) -> Self {
        // A timeout too large to add is as good as none.
        Deadline(timeout.and_then(|t| Instant::now().checked_add(t)))
    }

    /// A deadline that never expires.
    #[must_use]
    pub fn never() -> Self {
        Deadline(None)
    }

    /// Whether the deadline has passed.
    #[must_use]
    pub fn expired(&self) -> bool {
        self.0.is_some_and(|at| Instant::now() >= at)
    }

    /// How long the next sleep may last: at most `step`, and not past the deadline.
    #[must_use]
    pub fn step(&self, step: Duration) -> Duration {
        match self.0 {
            None => step,
            Some(at) => at.saturating_duration_since(Instant::now()).min(step),
        }
    }
}

/// The error for a peer that stopped making progress mid-stream: frozen
/// (SIGSTOP), stuck, or gone without a trace we can see.
#[must_use]
pub fn stalled(peer: &str, limit: Duration) -> crate::error::Error {
    crate::error::Error::peer_lost(format!(
        "{peer} made no progress for {} s mid-stream (stopped or stuck? --timeout)",
        limit.as_secs_f64()
    ))
}

/// `--timeout SECS` as a duration: 0 means wait forever.
#[must_use]
pub fn timeout_secs(secs: u64) -> Option<Duration> {
    (secs > 0).then(|| Duration::from_secs(secs))
}

/// Waits in steps of at most [`TICK`]: `attempt(step)` blocks up to `step` and
/// says whether it got what it waited for; between attempts the stop signals are
/// checked (`Err(Interrupted)`) and `on_tick` runs (a peer check goes there).
/// `Ok(false)` once `deadline` has passed.
pub fn wait_in_ticks(
    deadline: &Deadline,
    mut attempt: impl FnMut(Duration) -> Result<bool>,
    mut on_tick: impl FnMut() -> Result<()>,
) -> Result<bool> {
    loop {
        signals::check()?;
        if deadline.expired() {
            return Ok(false);
        }
        if attempt(deadline.step(TICK))? {
            return Ok(true);
        }
        on_tick()?;
    }
}

/// Waits until `fd` reports one of `events` (or an error/hang-up condition).
///
/// Returns `Ok(true)` when ready, `Ok(false)` when `deadline` passed first, and
/// the interrupt error as soon as a stop signal is seen. `on_tick` runs after
/// every quiet tick: a mechanism's peer-liveness check goes there.
pub fn wait_fd(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    deadline: &Deadline,
    on_tick: impl FnMut() -> Result<()>,
) -> Result<bool> {
    let ready = |step: Duration| {
        let ms = u16::try_from(step.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(fd, events)];
        // poll: sleep until the descriptor is ready or the tick ends; a signal
        // handler makes it return EINTR even under SA_RESTART.
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(Errno::EINTR) => Ok(false),
            Ok(_) => Ok(true),
            Err(e) => Err(e).context(|| "poll"),
        }
    };
    wait_in_ticks(deadline, ready, on_tick)
}

/// Sleeps one short step (at most `step`, never past `deadline`), then checks signals.
///
/// For retry loops whose object has no descriptor to poll yet (a FIFO not yet
/// created, a queue not yet opened).
pub fn pause(deadline: &Deadline, step: Duration) -> Result<()> {
    std::thread::sleep(deadline.step(step));
    signals::check()
}

/// A SIGALRM every [`TICK`], for the blocking calls that take no timeout.
///
/// System V `msgsnd` and `msgrcv` can block forever and have no timed variant.
/// The kernel never restarts them after a signal handler ran (signal(7)), so a
/// periodic SIGALRM with a no-op handler makes them return `EINTR` at least once
/// a tick: the caller then checks the stop flag and its peer, and calls again.
/// This is TLPI's `timed_read` technique (an alarm around a blocking call),
/// made periodic. Dropping the ticker disarms the timer.
#[derive(Debug)]
pub struct Ticker(());

static TICKS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl Ticker {
    /// Installs the SIGALRM handler and arms `ITIMER_REAL` to fire every tick.
    pub fn start() -> Result<Ticker> {
        signal_hook::flag::register(libc::SIGALRM, &TICKS).context(|| "sigaction SIGALRM")?;
        set_timer(TICK)?;
        Ok(Ticker(()))
    }
}

fn set_timer(every: Duration) -> Result<()> {
    let tv = libc::timeval {
        tv_sec: libc::time_t::try_from(every.as_secs()).unwrap_or(0),
        tv_usec: libc::suseconds_t::from(every.subsec_micros()),
    };
    let timer = libc::itimerval { it_interval: tv, it_value: tv };
    // SAFETY: setitimer reads the struct we pass and writes no old value (null).
    let rc = unsafe { libc::setitimer(libc::ITIMER_REAL, &raw const timer, std::ptr::null_mut()) };
    Errno::result(rc).map(drop).context(|| "setitimer ITIMER_REAL")
}

impl Drop for Ticker {
    fn drop(&mut self) {
        let _ = set_timer(Duration::ZERO);
    }
}
