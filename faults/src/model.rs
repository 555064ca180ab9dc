//! A small exhaustive model checker for shared-memory protocols: every
//! interleaving of a few threads, under a memory model weaker than the
//! machine's, with lost wake-ups found as deadlocks.
//!
//! `tests/ring_model.rs` uses it on the ring of `ipc_common::ring` (the shm
//! and mmap demos' ring and log). It stands in for loom, whose 0.7.3 release
//! reports executions the memory model forbids (README, "The ring's wake-up
//! protocol and a model checker").
//!
//! # What a program is
//! Each thread is a [`Program`]: a state machine that names its next shared
//! operation ([`Op`]) and is resumed with the value the operation returned.
//! Its local variables are part of its state, so two executions that reach
//! the same memory and the same locals are explored once (a hash set of
//! visited states): the search is exhaustive, not sampled.
//!
//! # The memory model
//! Stores go into a per-thread store buffer and reach memory later, in an
//! order the checker chooses — any order, except that:
//! - stores to one location reach memory in program order (coherence);
//! - a `Release` (or `SeqCst`) store reaches memory only after every store
//!   the thread made before it (what Release promises).
//!
//! A thread's load sees its own latest buffered store to that location, else
//! memory. A `SeqCst` fence, a read-modify-write and a system call (futex,
//! semaphore) first wait for the thread's buffer to empty: afterwards every
//! store the thread made is in memory, visible to all — the store-to-load
//! order a fence exists for. A `SeqCst` *store* is only a `Release` store
//! here, as in the C++/Rust model (it does not order a later non-`SeqCst`
//! load): the fence after it is what does.
//!
//! This is x86-TSO made weaker on the store side (stores to different
//! locations may pass each other, as on Arm and POWER), so a missing fence or
//! a missing Release is found. Loads are not reordered with each other, nor
//! passed by later stores: an `Acquire` that is missing (a `Relaxed` load of
//! the index before the data) is not found, and is checked by reading the
//! code instead.
//!
//! # Blocking
//! A thread asleep in `FUTEX_WAIT`, or in a semaphore wait at zero, has no
//! step to take. A state where no thread can step but some have not
//! finished is a deadlock: with the sleepers' timeouts left out of the model,
//! that is exactly a lost wake-up.

use std::collections::HashSet;
use std::fmt;
use std::hash::Hash;

/// An index into the shared memory (one word per location).
pub type Loc = usize;

/// The orderings the model tells apart for stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreOrder {
    /// May reach memory before the thread's earlier stores.
    Relaxed,
    /// Reaches memory after all of the thread's earlier stores (also what a
    /// `SeqCst` store is, see the module docs).
    Release,
}

/// One shared operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// Returns the word (own buffer first). `Acquire` or `Relaxed` alike: loads
    /// are never reordered here.
    Load(Loc),
    /// Buffers a store; returns 0.
    Store(Loc, u32, StoreOrder),
    /// `swap` (AcqRel): waits for an empty buffer; returns the old word.
    Swap(Loc, u32),
    /// `fetch_add` (AcqRel): waits for an empty buffer; returns the old word.
    FetchAdd(Loc, u32),
    /// `fence(SeqCst)`: waits for an empty buffer; returns 0.
    Fence,
    /// `futex(FUTEX_WAIT, expected)` with no timeout: returns 1 at once if the
    /// word is not `expected` (EAGAIN), else sleeps until a `FutexWake`, then 1.
    FutexWait(Loc, u32),
    /// `futex(FUTEX_WAKE)`: wakes every thread asleep on the word (a ring has
    /// one sleeper per word, so waking one or all is the same; the log's
    /// bell wakes all); returns 0.
    FutexWake(Loc),
    /// `sem_wait` with no timeout: takes one count, sleeping while there is none; returns 1.
    SemWait(Loc),
    /// `sem_trywait`: takes a count if there is one; returns 1 if it did.
    SemTryWait(Loc),
    /// `sem_post`: adds a count (waking a sleeper); returns 0.
    SemPost(Loc),
}

/// What a thread does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next shared operation.
    Op(Op),
    /// Finished.
    Done,
}

/// One thread's code, as a state machine.
pub trait Program: Clone + Eq + Hash + fmt::Debug {
    /// The operation the thread is about to perform.
    fn next(&self) -> Step;
    /// Gives the thread the operation's result and moves it on; `Err` names a
    /// violated property (a torn read, a frame out of order...).
    ///
    /// # Errors
    /// The property the thread found violated.
    fn resume(&mut self, value: u32) -> Result<(), String>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Buffered {
    loc: Loc,
    value: u32,
    order: StoreOrder,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Thread<P> {
    program: P,
    buffer: Vec<Buffered>,
    /// `Some(word)` while asleep in `FUTEX_WAIT` on it.
    asleep_on: Option<Loc>,
}

/// A state of the whole system: memory and every thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct World<P> {
    memory: Vec<u32>,
    threads: Vec<Thread<P>>,
}

/// A property violated, with the steps that lead there.
#[derive(Debug)]
pub struct Violation {
    /// What went wrong.
    pub what: String,
    /// The execution, one step per line.
    pub trace: Vec<String>,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}, after {} steps:", self.what, self.trace.len())?;
        for (i, step) in self.trace.iter().enumerate() {
            writeln!(f, "  {i:4}  {step}")?;
        }
        Ok(())
    }
}

/// What a complete search found.
#[derive(Debug, Clone, Default)]
pub struct Explored {
    /// Distinct states visited.
    pub states: usize,
    /// States where every thread had finished (the ends of executions).
    pub finals: usize,
    /// The largest value each location held (a semaphore count that piles up shows here).
    pub peak: Vec<u32>,
}

enum Outcome<P> {
    Next(World<P>),
    Broken(String),
}

impl<P: Program> World<P> {
    /// The start: `memory` as given, every store buffer empty.
    #[must_use]
    pub fn new(memory: Vec<u32>, programs: Vec<P>) -> Self {
        let threads = programs.into_iter().map(|program| Thread {
            program,
            buffer: Vec::new(),
            asleep_on: None,
        });
        World { memory, threads: threads.collect() }
    }

    fn load(&self, t: usize, loc: Loc) -> u32 {
        let own = self.threads[t].buffer.iter().rev().find(|b| b.loc == loc);
        own.map_or(self.memory[loc], |b| b.value)
    }

    fn resumed(mut self, t: usize, value: u32) -> Outcome<P> {
        match self.threads[t].program.resume(value) {
            Ok(()) => Outcome::Next(self),
            Err(what) => Outcome::Broken(format!("thread {t}: {what}")),
        }
    }

    /// Every step the world can take: each thread's next operation (if it
    /// can run) and each buffered store that may reach memory now.
    fn successors(&self) -> Vec<(String, Outcome<P>)> {
        let mut out = Vec::new();
        for t in 0..self.threads.len() {
            let thread = &self.threads[t];
            for (i, b) in thread.buffer.iter().enumerate() {
                let earlier = &thread.buffer[..i];
                let blocked = earlier.iter().any(|e| e.loc == b.loc)
                    || (b.order == StoreOrder::Release && !earlier.is_empty());
                if !blocked {
                    let mut next = self.clone();
                    let b = next.threads[t].buffer.remove(i);
                    next.memory[b.loc] = b.value;
                    out.push((
                        format!("thread {t}: store [{}] = {} reaches memory", b.loc, b.value),
                        Outcome::Next(next),
                    ));
                }
            }
            if thread.asleep_on.is_some() {
                continue;
            }
            let Step::Op(op) = thread.program.next() else { continue };
            if let Some(outcome) = self.perform(t, op) {
                out.push((format!("thread {t}: {op:?}"), outcome));
            }
        }
        out
    }

    /// Thread `t` performs `op`; `None` if it cannot now (a fence with stores
    /// still buffered, a semaphore at zero).
    fn perform(&self, t: usize, op: Op) -> Option<Outcome<P>> {
        let drained = self.threads[t].buffer.is_empty();
        let mut next = self.clone();
        let value = match op {
            Op::Load(loc) => self.load(t, loc),
            Op::Store(loc, value, order) => {
                next.threads[t].buffer.push(Buffered { loc, value, order });
                0
            }
            _ if !drained => return None,
            Op::Swap(loc, value) => std::mem::replace(&mut next.memory[loc], value),
            Op::FetchAdd(loc, add) => {
                let old = next.memory[loc];
                next.memory[loc] = old.wrapping_add(add);
                old
            }
            Op::Fence | Op::SemPost(_) | Op::FutexWake(_) => {
                match op {
                    Op::SemPost(loc) => next.memory[loc] += 1,
                    Op::FutexWake(loc) => {
                        for u in 0..next.threads.len() {
                            if next.threads[u].asleep_on == Some(loc) {
                                next.threads[u].asleep_on = None;
                                match next.resumed(u, 1) {
                                    Outcome::Next(w) => next = w,
                                    broken @ Outcome::Broken(_) => return Some(broken),
                                }
                            }
                        }
                    }
                    _ => {}
                }
                0
            }
            Op::FutexWait(loc, expected) => {
                if self.memory[loc] == expected {
                    next.threads[t].asleep_on = Some(loc);
                    return Some(Outcome::Next(next)); // resumed by a FutexWake
                }
                1
            }
            Op::SemWait(loc) => {
                if self.memory[loc] == 0 {
                    return None;
                }
                next.memory[loc] -= 1;
                1
            }
            Op::SemTryWait(loc) => {
                let took = self.memory[loc] > 0;
                if took {
                    next.memory[loc] -= 1;
                }
                u32::from(took)
            }
        };
        Some(next.resumed(t, value))
    }

    fn finished(&self) -> bool {
        self.threads.iter().all(|t| t.program.next() == Step::Done && t.buffer.is_empty())
    }

    fn stuck(&self) -> String {
        let who: Vec<String> = self
            .threads
            .iter()
            .enumerate()
            .filter(|(_, t)| t.program.next() != Step::Done)
            .map(|(i, t)| format!("thread {i} at {:?} ({:?})", t.program.next(), t.program))
            .collect();
        format!("deadlock (a lost wake-up): {}", who.join("; "))
    }
}

/// A step the world may take: what it is, and where it leads.
type Successor<P> = (String, Outcome<P>);

/// One level of the depth-first search: the step that led to a state, and the
/// state's successors not yet tried.
struct Level<P> {
    label: String,
    pending: Vec<Successor<P>>,
}

/// The steps from the start to `last`, and `what` went wrong there.
fn violation<P>(path: &[Level<P>], last: String, what: String) -> Violation {
    let mut trace: Vec<String> = path.iter().skip(1).map(|l| l.label.clone()).collect();
    trace.push(last);
    Violation { what, trace }
}

/// Explores every execution from `start`, depth first; the first violation
/// (a property a thread checks, or a deadlock) with the steps that lead to it.
///
/// # Errors
/// The first violation found.
pub fn explore<P: Program>(start: World<P>) -> Result<Explored, Violation> {
    let mut seen: HashSet<World<P>> = HashSet::new();
    let mut report = Explored::default();
    let mut path = vec![Level { label: String::from("start"), pending: start.successors() }];
    seen.insert(start);
    while let Some(level) = path.last_mut() {
        let Some((label, outcome)) = level.pending.pop() else {
            path.pop();
            continue;
        };
        let world = match outcome {
            Outcome::Next(world) => world,
            Outcome::Broken(what) => return Err(violation(&path, label, what)),
        };
        if seen.contains(&world) {
            continue;
        }
        report.peak.resize(world.memory.len(), 0);
        for (peak, &word) in report.peak.iter_mut().zip(&world.memory) {
            *peak = (*peak).max(word);
        }
        let pending = world.successors();
        if pending.is_empty() {
            if !world.finished() {
                let what = world.stuck();
                return Err(violation(&path, label, what));
            }
            report.finals += 1;
        }
        seen.insert(world);
        path.push(Level { label, pending });
    }
    report.states = seen.len();
    Ok(report)
}
