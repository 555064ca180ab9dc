//! One measurement of one mechanism: make the objects, fork, run both sides,
//! reap, remove the objects.

use std::sync::atomic::Ordering;
use std::time::Duration;

use ipc_common::error::Result;
use nix::unistd::Pid;

use crate::hist::Histogram;
use crate::jobs::{
    Client, Echo, ReceiveFrames, Rounds, SendFrames, Transfer, raw_client, raw_echo, receive_raw,
    send_raw,
};
use crate::mechs::{Mech, Mechanism};
use crate::ns::{Namespaces, Side};
use crate::pair::{Fork, Pin, SharedPage, child_side, fork, reap};
use crate::with_mech;

/// The shared page's line holding the writer's stop flag.
const STOP: usize = 0;
/// The shared page's line holding the writer's digest (floors use lines 1 to 3).
const DIGEST: usize = 4;

/// What every measurement needs.
#[derive(Debug)]
pub struct Ctx<'a> {
    /// The run's private names.
    pub ns: &'a Namespaces,
    /// Memory shared with every child.
    pub page: &'a SharedPage,
    /// `--pin`.
    pub pin: Option<Pin>,
    /// Throughput: how long to measure each run.
    pub budget: Duration,
    /// Latency: round trips per run.
    pub rounds: Rounds,
    /// The bench's pid, for the child to check on.
    pub parent: Pid,
}

/// How the frames of a throughput or latency run are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Variant {
    /// Frames, every one checked (CRC included), as the real pair.
    Verified,
    /// Frames, the CRC check skipped (`--no-verify`).
    NoVerify,
    /// No frames: the same system calls with bare payloads.
    Raw,
}

impl Variant {
    /// Column label.
    #[must_use]
    pub fn label(self) -> &'static str {
        match self {
            Variant::Verified => "framed",
            Variant::NoVerify => "no-verify",
            Variant::Raw => "raw",
        }
    }
}

/// One throughput run of `mech` with `size`-byte payloads.
pub fn throughput(mech: &Mech, ctx: &Ctx<'_>, size: usize, v: Variant) -> Result<Transfer> {
    with_mech!(mech, m => one_way(m, ctx, size, v))
}

fn one_way<M: Mechanism>(m: &M, ctx: &Ctx<'_>, size: usize, v: Variant) -> Result<Transfer> {
    ctx.ns.enter(Side::Parent)?;
    let stop = ctx.page.word32(STOP);
    stop.store(0, Ordering::Release);
    let digest = ctx.page.word(DIGEST);
    digest.store(0, Ordering::Release);
    let mut reader = m.create(size)?;
    let name = m.name();
    match fork()? {
        Fork::Child => child_side(ctx.pin, ctx.parent, || match v {
            Variant::Raw => {
                let mut tx = m.raw_tx(&mut reader, size)?;
                send_raw(&mut *tx, m.raw_chunk(size), stop)
            }
            _ => m.write(&mut reader, size, SendFrames { size, stop, digest }),
        }),
        Fork::Parent(child) => {
            let budget = ctx.budget;
            let ours = if v == Variant::Raw {
                m.raw_rx(&mut reader, size)
                    .and_then(|mut rx| receive_raw(&mut *rx, size, budget, stop))
            } else {
                let verify = v == Variant::Verified;
                m.read(&mut reader, ReceiveFrames { mech: &name, verify, budget, stop, digest })
            };
            // The child is gone before `reader` drops and removes the objects.
            reap(child, ours)
        }
    }
}

/// One latency run of `mech` with `size`-byte payloads.
pub fn latency(mech: &Mech, ctx: &Ctx<'_>, size: usize, v: Variant) -> Result<Histogram> {
    with_mech!(mech, m => round_trips(m, ctx, size, v))
}

fn round_trips<M: Mechanism>(m: &M, ctx: &Ctx<'_>, size: usize, v: Variant) -> Result<Histogram> {
    let ns = ctx.ns;
    // Requests are read by the child (its namespace), replies by us.
    ns.enter(Side::Child)?;
    let mut req = m.create(size)?;
    let mut rep = if m.one_connection() {
        None
    } else {
        ns.enter(Side::Parent)?;
        Some(m.create(size)?)
    };
    let name = m.name();
    let verify = v != Variant::NoVerify;
    match fork()? {
        Fork::Child => child_side(ctx.pin, ctx.parent, || {
            if v == Variant::Raw {
                let (mut rx, mut tx) = m.raw_echo(ns, &mut req, rep.as_mut(), size)?;
                raw_echo(&mut *rx, &mut *tx)
            } else {
                m.echo(ns, &mut req, rep.as_mut(), size, Echo { mech: &name, verify })
            }
        }),
        Fork::Parent(child) => {
            let rounds = ctx.rounds;
            let ours = if v == Variant::Raw {
                m.raw_client(ns, &mut req, rep.as_mut(), size)
                    .and_then(|(mut tx, mut rx)| raw_client(&mut *tx, &mut *rx, size, rounds))
            } else {
                let job = Client { mech: &name, size, rounds, verify };
                m.client(ns, &mut req, rep.as_mut(), size, job)
            };
            reap(child, ours)
        }
    }
}
