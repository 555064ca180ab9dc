//! The shared-memory ring's index and wake-up protocol (`common/src/ring.rs`,
//! and the mmap log built on its `sleep_until`), model checked: every
//! interleaving of the writer and the reader, with every order in which their
//! buffered stores may reach memory ([`ipc_faults::model`]), for:
//!
//! - **lost wake-ups**: the sleepers here wait with no timeout (the real code
//!   re-checks every 100 ms, which would hide the bug), so a wake-up lost is a
//!   deadlock, which the checker reports;
//! - **torn or stale reads**: the reader checks that every cell of every frame
//!   it takes holds that frame's number, so a cell read before the writer's
//!   store reached it, or a frame published before it was copied, is caught;
//! - **overwrites**: the reader re-reads the frame it lent out when it gives it
//!   back (the next `recv`), so a writer that reuses bytes still lent is caught;
//! - frames out of order, lost or doubled (the numbers again).
//!
//! The model follows `ring.rs` step by step, in units instead of bytes: a ring
//! of 4 cells and frames of 1–3 cells, so the runs below wrap (the `WRAP`
//! marker), fill the ring (the writer sleeps for room) and empty it (the
//! reader sleeps for data). Both doorbells are checked: the semaphores of the
//! shm demo (a count; a ring nobody slept for is taken back with `drain`) and
//! the futex of `FutexBell` (a ticket taken before the flag goes up).
//!
//! Each protocol step the code relies on is then removed, one at a time, and
//! the checker must find the failure it prevents: a model checker that cannot
//! fail proves nothing.

use ipc_faults::model::{Explored, Loc, Op, Program, Step, StoreOrder, Violation, World, explore};

/// The shared words (the `Control` block, the two bells, then the data cells).
const HEAD: Loc = 0;
const TAIL: Loc = 1;
const READER_WAITING: Loc = 2;
const WRITER_WAITING: Loc = 3;
const DATA_BELL: Loc = 4;
const ROOM_BELL: Loc = 5;
const DATA: Loc = 6;

/// Cells in the ring.
const CAPACITY: u32 = 4;
/// The marker "the rest up to the end is unused; go on at 0".
const WRAP: u32 = 0xff;

/// Which doorbell wakes a sleeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bell {
    /// shm-demo's: a POSIX or System V semaphore (`Doorbell::drain` takes back
    /// a count nobody slept for).
    Semaphore,
    /// `ring::FutexBell`: a counter word; the sleeper takes its ticket before
    /// raising the flag and sleeps only while the word still holds it.
    Futex,
}

/// A step of the protocol left out, to show the checker finds what it is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Bug {
    None,
    /// `sleep_until` without its fence between raising the flag and looking again.
    NoSleeperFence,
    /// `wake_if_waiting` without its fence between publishing and looking at the flag.
    NoWakerFence,
    /// `sleep_until` sleeping right after raising the flag, without looking again.
    NoLookAgain,
    /// The futex ticket taken after the flag is up and the last look made.
    LateTicket,
    /// The writer's `head` stored `Relaxed`: it may reach memory before the frame.
    RelaxedHead,
    /// The reader releasing a frame when it hands it out, not on the next call.
    ReleaseWhenLent,
}

/// The run: doorbell, frame sizes (in cells), and the bug, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Setup {
    bell: Bell,
    sizes: &'static [u32],
    bug: Bug,
}

/// What one side sleeps on: its flag, its bell, and the index it watches.
#[derive(Debug, Clone, Copy)]
struct Waits {
    flag: Loc,
    bell: Loc,
    watch: Loc,
    /// `Waiters::Many` (the log's readers) rather than `Waiters::One`.
    many: bool,
}

/// `sleep_until`'s steps (with `spin` 0: spinning only delays raising the flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Sleep {
    /// `if ready()? { return }`
    Look,
    /// `let ticket = bell.prepare()` (the futex word).
    Prepare,
    /// `flag.store(1, SeqCst)`
    Raise,
    /// `fence(SeqCst)`
    Fence,
    /// `if ready()? { ... }`, the last look.
    LookAgain,
    /// `flag.swap(0, AcqRel) == 0`: did the other side take the flag down?
    TakeFlag,
    /// `bell.drain()`: it did, and rang for a sleep we skipped.
    Drain,
    /// `bell.wait(ticket, ...)`, with no timeout here.
    Wait,
}

/// `wake_if_waiting`'s steps, from the publishing store on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wake {
    /// `head` (writer) or `tail` (reader) stored with `Release`.
    Publish,
    /// `fence(SeqCst)`
    Fence,
    /// `flag.load(Relaxed) != 0`
    LookAtFlag,
    /// `flag.swap(0, AcqRel) != 0`: we take it down, once.
    TakeFlag,
    /// `bell.ring()`: `sem_post`, or the futex word's `fetch_add`...
    Ring,
    /// ...and `FUTEX_WAKE`.
    Rouse,
}

enum Slept {
    Still(Sleep),
    Ready,
}

impl Setup {
    fn sleep_op(self, s: Sleep, w: Waits, ticket: u32) -> Op {
        match s {
            Sleep::Look | Sleep::LookAgain => Op::Load(w.watch),
            Sleep::Prepare => Op::Load(w.bell),
            Sleep::Raise => Op::Store(w.flag, 1, StoreOrder::Release),
            Sleep::Fence => Op::Fence,
            Sleep::TakeFlag => Op::Swap(w.flag, 0),
            Sleep::Drain => Op::SemTryWait(w.bell),
            Sleep::Wait => match self.bell {
                Bell::Semaphore => Op::SemWait(w.bell),
                Bell::Futex => Op::FutexWait(w.bell, ticket),
            },
        }
    }

    /// The step after `s`, which returned `value`; `ready` is what `ready()`
    /// said, for the two looks.
    fn sleep_next(self, s: Sleep, w: Waits, value: u32, ready: bool, ticket: &mut u32) -> Slept {
        let futex = self.bell == Bell::Futex;
        let late = self.bug == Bug::LateTicket;
        Slept::Still(match s {
            Sleep::Look if ready => return Slept::Ready,
            Sleep::Look if futex && !late => Sleep::Prepare,
            Sleep::Look => Sleep::Raise,
            Sleep::Prepare => {
                *ticket = value;
                if late { Sleep::Wait } else { Sleep::Raise }
            }
            Sleep::Raise if self.bug == Bug::NoSleeperFence => Sleep::LookAgain,
            Sleep::Raise => Sleep::Fence,
            Sleep::Fence if self.bug == Bug::NoLookAgain => Sleep::Wait,
            Sleep::Fence => Sleep::LookAgain,
            Sleep::LookAgain if ready && w.many => return Slept::Ready,
            Sleep::LookAgain if ready => Sleep::TakeFlag,
            Sleep::LookAgain if futex && late => Sleep::Prepare,
            Sleep::LookAgain => Sleep::Wait,
            Sleep::TakeFlag if value == 0 && !futex => Sleep::Drain,
            Sleep::TakeFlag | Sleep::Drain => return Slept::Ready,
            Sleep::Wait => Sleep::Look,
        })
    }

    fn wake_op(self, s: Wake, w: Waits, index: Loc, value: u32) -> Op {
        match s {
            Wake::Publish if index == HEAD && self.bug == Bug::RelaxedHead => {
                Op::Store(index, value, StoreOrder::Relaxed)
            }
            Wake::Publish => Op::Store(index, value, StoreOrder::Release),
            Wake::Fence => Op::Fence,
            Wake::LookAtFlag => Op::Load(w.flag),
            Wake::TakeFlag => Op::Swap(w.flag, 0),
            Wake::Ring => match self.bell {
                Bell::Semaphore => Op::SemPost(w.bell),
                Bell::Futex => Op::FetchAdd(w.bell, 1),
            },
            Wake::Rouse => Op::FutexWake(w.bell),
        }
    }

    /// The step after `s`, which returned `value`; `None` when done.
    fn wake_next(self, s: Wake, value: u32) -> Option<Wake> {
        match s {
            Wake::Publish if self.bug == Bug::NoWakerFence => Some(Wake::LookAtFlag),
            Wake::Publish => Some(Wake::Fence),
            Wake::Fence => Some(Wake::LookAtFlag),
            Wake::LookAtFlag | Wake::TakeFlag if value == 0 => None,
            Wake::LookAtFlag => Some(Wake::TakeFlag),
            Wake::TakeFlag => Some(Wake::Ring),
            Wake::Ring if self.bell == Bell::Futex => Some(Wake::Rouse),
            Wake::Ring | Wake::Rouse => None,
        }
    }
}

/// The writer waits for room on its flag and bell, watching `tail`.
const WRITER_WAITS: Waits =
    Waits { flag: WRITER_WAITING, bell: ROOM_BELL, watch: TAIL, many: false };
/// The reader waits for data on its flag and bell, watching `head`.
const READER_WAITS: Waits =
    Waits { flag: READER_WAITING, bell: DATA_BELL, watch: HEAD, many: false };

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum W {
    /// `send`: work out where the frame goes (local).
    Send,
    /// `wait_room`: sleeping until `need` cells are free.
    Room(Sleep),
    /// Copying cell `k` of the frame (or the WRAP marker).
    Copy(u32),
    /// `publish`: `head`, then `wake_if_waiting`.
    Publish(Wake),
    Done,
}

/// `Producer::send`, for each frame of the setup.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Writer {
    setup: Setup,
    pc: W,
    /// The frame being sent (its cells hold `frame + 1`).
    frame: usize,
    head: u32,
    /// The `tail` last loaded.
    tail: u32,
    ticket: u32,
}

impl Writer {
    fn new(setup: Setup) -> Self {
        let mut w = Writer { setup, pc: W::Send, frame: 0, head: 0, tail: 0, ticket: 0 };
        w.settle();
        w
    }

    /// Where the next record goes: (position, cells needed, is it the WRAP marker).
    fn plan(&self) -> (u32, u32, bool) {
        let size = self.setup.sizes[self.frame];
        let pos = self.head % CAPACITY;
        let to_end = CAPACITY - pos;
        if size > to_end { (pos, to_end, true) } else { (pos, size, false) }
    }

    fn room(&self, need: u32) -> bool {
        CAPACITY - (self.head - self.tail) >= need
    }

    /// Runs the local steps up to the next shared one.
    fn settle(&mut self) {
        if self.pc == W::Send {
            self.pc = if self.frame == self.setup.sizes.len() {
                W::Done
            } else if self.room(self.plan().1) {
                W::Copy(0)
            } else {
                W::Room(Sleep::Look)
            };
        }
    }
}

impl Program for Writer {
    fn next(&self) -> Step {
        Step::Op(match self.pc {
            W::Send | W::Done => return Step::Done,
            W::Room(s) => self.setup.sleep_op(s, WRITER_WAITS, self.ticket),
            W::Copy(k) => {
                let (pos, _, wrap) = self.plan();
                let value = if wrap { WRAP } else { self.frame as u32 + 1 };
                Op::Store(DATA + (pos + k) as Loc, value, StoreOrder::Relaxed)
            }
            W::Publish(s) => self.setup.wake_op(s, READER_WAITS, HEAD, self.head),
        })
    }

    fn resume(&mut self, value: u32) -> Result<(), String> {
        self.pc = match self.pc {
            W::Room(s) => {
                if matches!(s, Sleep::Look | Sleep::LookAgain) {
                    self.tail = value;
                }
                let ready = self.room(self.plan().1);
                match self.setup.sleep_next(s, WRITER_WAITS, value, ready, &mut self.ticket) {
                    Slept::Still(s) => W::Room(s),
                    Slept::Ready => W::Copy(0),
                }
            }
            W::Copy(k) => {
                let (_, need, wrap) = self.plan();
                if wrap || k + 1 == need {
                    self.head += need;
                    self.frame += usize::from(!wrap);
                    W::Publish(Wake::Publish)
                } else {
                    W::Copy(k + 1)
                }
            }
            W::Publish(s) => self.setup.wake_next(s, value).map_or(W::Send, W::Publish),
            W::Send | W::Done => unreachable!("no operation to resume"),
        };
        self.settle();
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum R {
    /// `recv`: give back the frame lent last time, then look (local).
    Recv,
    /// The driver's use of the lent frame: re-reading its cell `k`.
    Recheck(u32),
    /// `release`: `tail`, then `wake_if_waiting`.
    Release(Wake),
    /// `wait_data`: sleeping until `head` moves past `tail`.
    Data(Sleep),
    /// Reading cell `k` at `tail` (cell 0 may be the WRAP marker).
    Read(u32),
    Done,
}

/// `Consumer::recv`, until every frame of the setup has come.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Reader {
    setup: Setup,
    pc: R,
    /// The frame expected next.
    frame: usize,
    /// The `head` last loaded.
    head: u32,
    tail: u32,
    /// The frame lent out: its first cell and its size (0: none).
    lent_at: u32,
    lent: u32,
    /// Cells to release on the next call.
    unreleased: u32,
    ticket: u32,
}

impl Reader {
    fn new(setup: Setup) -> Self {
        let mut r = Reader {
            setup,
            pc: R::Recv,
            frame: 0,
            head: 0,
            tail: 0,
            lent_at: 0,
            lent: 0,
            unreleased: 0,
            ticket: 0,
        };
        r.settle();
        r
    }

    /// Runs the local steps up to the next shared one.
    fn settle(&mut self) {
        if self.pc == R::Recv {
            self.pc = if self.lent > 0 {
                R::Recheck(0)
            } else if self.unreleased > 0 {
                self.release()
            } else if self.frame == self.setup.sizes.len() {
                R::Done
            } else if self.head <= self.tail {
                R::Data(Sleep::Look)
            } else {
                R::Read(0)
            };
        }
    }

    fn release(&mut self) -> R {
        self.tail += std::mem::take(&mut self.unreleased);
        R::Release(Wake::Publish)
    }

    /// Cell `k` of the frame at `tail` holds `value`: the frame's own number,
    /// inside what `head` published.
    fn read(&mut self, k: u32, value: u32) -> Result<R, String> {
        let pos = self.tail % CAPACITY;
        if k == 0 && value == WRAP {
            self.unreleased = CAPACITY - pos;
            return Ok(self.release());
        }
        let (want, size) = (self.frame as u32 + 1, self.setup.sizes[self.frame]);
        if value != want {
            return Err(format!(
                "torn read: cell {} holds {value}, frame {want} expected",
                pos + k
            ));
        }
        if self.head - self.tail < size {
            return Err(format!("frame {want} taken before all of it was published"));
        }
        if k + 1 < size {
            return Ok(R::Read(k + 1));
        }
        // Handed out: lent until the next call, which releases it.
        self.frame += 1;
        (self.lent_at, self.lent, self.unreleased) = (pos, size, size);
        if self.setup.bug == Bug::ReleaseWhenLent {
            self.unreleased = size;
            return Ok(self.release());
        }
        Ok(R::Recv)
    }
}

impl Program for Reader {
    fn next(&self) -> Step {
        Step::Op(match self.pc {
            R::Recv | R::Done => return Step::Done,
            R::Recheck(k) => Op::Load(DATA + (self.lent_at + k) as Loc),
            R::Release(s) => self.setup.wake_op(s, WRITER_WAITS, TAIL, self.tail),
            R::Data(s) => self.setup.sleep_op(s, READER_WAITS, self.ticket),
            R::Read(k) => Op::Load(DATA + (self.tail % CAPACITY + k) as Loc),
        })
    }

    fn resume(&mut self, value: u32) -> Result<(), String> {
        self.pc = match self.pc {
            R::Recheck(k) => {
                if value != self.frame as u32 {
                    return Err(format!(
                        "overwrite: frame {} changed (cell {} holds {value}) while lent out",
                        self.frame,
                        self.lent_at + k
                    ));
                }
                if k + 1 < self.lent {
                    R::Recheck(k + 1)
                } else {
                    self.lent = 0;
                    R::Recv
                }
            }
            R::Release(s) => self.setup.wake_next(s, value).map_or(R::Recv, R::Release),
            R::Data(s) => {
                if matches!(s, Sleep::Look | Sleep::LookAgain) {
                    self.head = value;
                }
                let ready = self.head > self.tail;
                match self.setup.sleep_next(s, READER_WAITS, value, ready, &mut self.ticket) {
                    Slept::Still(s) => R::Data(s),
                    Slept::Ready => R::Read(0),
                }
            }
            R::Read(k) => self.read(k, value)?,
            R::Recv | R::Done => unreachable!("no operation to resume"),
        };
        self.settle();
        Ok(())
    }
}

/// The two sides of the ring.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Side {
    Writer(Writer),
    Reader(Reader),
}

impl Program for Side {
    fn next(&self) -> Step {
        match self {
            Side::Writer(w) => w.next(),
            Side::Reader(r) => r.next(),
        }
    }
    fn resume(&mut self, value: u32) -> Result<(), String> {
        match self {
            Side::Writer(w) => w.resume(value),
            Side::Reader(r) => r.resume(value),
        }
    }
}

/// Frame sizes that wrap, fill the ring and drain it: frame 1 (3 cells)
/// does not fit after frame 0, so the writer marks the end WRAP and waits for
/// room at 0; the reader waits for every frame at least once in some run.
const SIZES: &[u32] = &[2, 3, 1, 2, 3, 1];

fn check(bell: Bell, sizes: &'static [u32], bug: Bug) -> Result<Explored, Violation> {
    let setup = Setup { bell, sizes, bug };
    let memory = vec![0; DATA + CAPACITY as usize];
    let pair = vec![Side::Writer(Writer::new(setup)), Side::Reader(Reader::new(setup))];
    explore(World::new(memory, pair))
}

fn holds(bell: Bell) {
    let found = check(bell, SIZES, Bug::None).unwrap_or_else(|v| panic!("{v}"));
    let (data, room) = (found.peak[DATA_BELL], found.peak[ROOM_BELL]);
    eprintln!(
        "{bell:?} bells, frames {SIZES:?} through a ring of {CAPACITY} cells: {} states, \
         {} distinct final states, bell words at most {data} (data) and {room} (room)",
        found.states, found.finals
    );
    assert!(found.finals > 0, "no execution ran to the end");
    if bell == Bell::Semaphore {
        // A ring nobody slept for is taken back by `drain` — unless the waker
        // took the flag down but posts only after the drain looked: then one
        // stale count waits beside the next real one, and the next sleep
        // takes it, wakes at once and looks again. Two at most, never a pile.
        assert!(data <= 2 && room <= 2, "semaphore counts pile up: {data}, {room}");
    }
}

/// The checker finds `bug` with frames of `sizes`, and reports it as `what`.
fn finds(bell: Bell, sizes: &'static [u32], bug: Bug, what: &str) {
    match check(bell, sizes, bug) {
        Ok(found) => panic!("{bug:?} went unnoticed in {} states", found.states),
        Err(v) => {
            eprintln!("{bug:?} with {bell:?} bells: {} ({} steps)", v.what, v.trace.len());
            assert!(v.what.contains(what), "{bug:?}: expected {what:?}, got {v}");
        }
    }
}

#[test]
fn the_ring_with_semaphore_bells_loses_no_wake_up_and_tears_no_frame() {
    holds(Bell::Semaphore);
}

#[test]
fn the_ring_with_futex_bells_loses_no_wake_up_and_tears_no_frame() {
    holds(Bell::Futex);
}

#[test]
fn without_the_sleepers_fence_a_wake_up_is_lost() {
    finds(Bell::Semaphore, &[2, 3, 1], Bug::NoSleeperFence, "lost wake-up");
    finds(Bell::Futex, &[2, 3, 1], Bug::NoSleeperFence, "lost wake-up");
}

#[test]
fn without_the_wakers_fence_a_wake_up_is_lost() {
    finds(Bell::Semaphore, &[2, 3, 1], Bug::NoWakerFence, "lost wake-up");
    finds(Bell::Futex, &[2, 3, 1], Bug::NoWakerFence, "lost wake-up");
}

#[test]
fn without_the_last_look_a_wake_up_is_lost() {
    finds(Bell::Semaphore, &[2, 3, 1], Bug::NoLookAgain, "lost wake-up");
}

#[test]
fn a_futex_ticket_taken_after_the_last_look_loses_a_wake_up() {
    finds(Bell::Futex, &[2, 3, 1], Bug::LateTicket, "lost wake-up");
}

#[test]
fn a_relaxed_head_lets_the_reader_see_a_frame_before_its_bytes() {
    finds(Bell::Semaphore, &[2, 3, 1], Bug::RelaxedHead, "torn read");
}

#[test]
fn releasing_a_frame_while_lent_lets_the_writer_overwrite_it() {
    // Frame 2 goes where frame 0 was, as soon as the reader lets frame 0 go.
    finds(Bell::Semaphore, &[2, 2, 2], Bug::ReleaseWhenLent, "overwrite");
}

// The mmap log (`mmap-demo/src/log.rs`): one writer appends and publishes
// `committed`; several readers follow, sharing one waiting flag
// (`Waiters::Many`: a sleeper leaves it up, the writer takes it down) and one
// futex bell the writer rings for all (`FutexBell::broadcast`).

/// The log's length of frames, one cell each.
const LOG_FRAMES: u32 = 3;
/// The log's readers wait on the shared flag and bell, watching `committed`.
const LOG_WAITS: Waits = Waits { flag: READER_WAITING, bell: DATA_BELL, watch: HEAD, many: true };
const LOG: Setup = Setup { bell: Bell::Futex, sizes: &[], bug: Bug::None };

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Log {
    /// Appending frame `n` (`None`: copying it; `Some`: publishing it).
    Writer { n: u32, publish: Option<Wake> },
    /// Following: `pos` frames read, `committed` as last loaded.
    Reader { pos: u32, committed: u32, sleep: Option<Sleep>, ticket: u32 },
}

impl Program for Log {
    fn next(&self) -> Step {
        Step::Op(match *self {
            Log::Writer { n, .. } | Log::Reader { pos: n, .. } if n == LOG_FRAMES => {
                return Step::Done;
            }
            Log::Writer { n, publish: None } => {
                Op::Store(DATA + n as Loc, n + 1, StoreOrder::Relaxed)
            }
            Log::Writer { n, publish: Some(s) } => LOG.wake_op(s, LOG_WAITS, HEAD, n + 1),
            Log::Reader { sleep: Some(s), ticket, .. } => LOG.sleep_op(s, LOG_WAITS, ticket),
            Log::Reader { pos, .. } => Op::Load(DATA + pos as Loc),
        })
    }

    fn resume(&mut self, value: u32) -> Result<(), String> {
        match self {
            Log::Writer { n, publish } => match *publish {
                None => *publish = Some(Wake::Publish),
                Some(s) => {
                    *publish = LOG.wake_next(s, value);
                    *n += u32::from(publish.is_none());
                }
            },
            Log::Reader { pos, committed, sleep, ticket } => {
                if let Some(s) = *sleep {
                    if matches!(s, Sleep::Look | Sleep::LookAgain) {
                        *committed = value;
                    }
                    let ready = *committed > *pos;
                    *sleep = match LOG.sleep_next(s, LOG_WAITS, value, ready, ticket) {
                        Slept::Still(s) => Some(s),
                        Slept::Ready => None,
                    };
                } else {
                    // The frame at `pos`, which `committed` covers.
                    if value != *pos + 1 {
                        return Err(format!("torn read: log cell {pos} holds {value}"));
                    }
                    *pos += 1;
                    if *pos < LOG_FRAMES && *committed <= *pos {
                        *sleep = Some(Sleep::Look);
                    }
                }
            }
        }
        Ok(())
    }
}

#[test]
fn the_log_wakes_every_follower_and_none_reads_an_uncommitted_frame() {
    let follower = Log::Reader { pos: 0, committed: 0, sleep: Some(Sleep::Look), ticket: 0 };
    let threads = vec![Log::Writer { n: 0, publish: None }, follower.clone(), follower];
    let found = explore(World::new(vec![0; DATA + LOG_FRAMES as usize], threads))
        .unwrap_or_else(|v| panic!("{v}"));
    eprintln!(
        "log, {LOG_FRAMES} frames, one writer and two followers: {} states, {} distinct final states",
        found.states, found.finals
    );
    assert!(found.finals > 0, "no execution ran to the end");
}
