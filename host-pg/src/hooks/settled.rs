//! Statements whose verified plan is planned under its arm alone. Applying a verified plan the
//! usual way costs two plannings: the default plan (its shape is what the evidence is kept
//! under, so the decision needs it) and the plan under the arm. On TPC-H the second planning
//! was most of the extension's planning overhead (q08: 1.4 ms planning, +1.6 ms applied).
//!
//! The server remembers in shared memory, by the statement's text without its constants
//! ([`super::cheap::key`]) and its database, the default plan of a statement whose last
//! [`STREAK`] plannings (in any session) gave a default plan of the same shape and applied a
//! verified plan for it at the same cost. From then on the statement is decided on that
//! remembered default plan and planned under the decided arm alone, in every session, from a
//! session's first planning of it on (a connection per request, or a pool that hands each
//! statement to another backend, never plans the same statement twice in one session). The
//! plan is kept only when it is the verified plan itself (the same shape hash) at the cost it
//! had then (within [`COST_DRIFT`]: the same estimates, so the decision on the remembered
//! default plan, its embeddings and what BTSP memory recalls for them, still holds). Otherwise
//! (other constants, other data, other settings, another role's row security) the statement
//! is planned the usual way, the default plan first (the plan under the arm is used again if
//! the decision applies that arm), and must settle again over a streak twice as long as
//! before. Every [`FULL_EVERY`]th planning goes the usual way too, so a default plan whose
//! shape changed while the arm's plan did not is seen within that many plannings; the default
//! plan measured again every `RECHECK_EVERY` applied runs (learn mode) goes the usual way as
//! well, as the decision for it is not the verified rule.
//!
//! [`SLOTS`] statements for all databases, direct-mapped by key (a collision forgets the older
//! statement), in [`PARTITIONS`] partitions with an LWLock each; a default plan is kept as
//! postcard bytes (operators, estimates, relation names: never a constant) of at most
//! [`DAG_BYTES`] (a larger one is not remembered: counted). Nothing of it outlives the server
//! or reaches a table: it is a cache of what the planner makes, rebuilt by planning.
//! Each backend keeps the plans it decoded, by slot and generation, so a statement repeated in
//! a session decodes its default plan once.

use super::*;
use ruvector_dag_core::dag::PlanNode;
use ruvector_dag_core::PlanDag;
use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

/// Plannings in a row with the same default shape and a verified plan applied before a
/// statement is planned under its arm alone.
pub(crate) const STREAK: u8 = 2;
/// One planning in this many of a settled statement goes the usual way (the default plan
/// first), to see a default plan whose shape changed.
pub(crate) const FULL_EVERY: u8 = 8;
/// How far the verified plan's cost may move (a share of it) and still be the same planning.
pub(crate) const COST_DRIFT: f64 = 0.1;
/// Statements remembered, for all databases.
pub(crate) const SLOTS: usize = 256;
/// Partitions of the slots (one LWLock each).
const PARTITIONS: usize = 16;
/// Bytes of one remembered default plan at most (every TPC-H plan the harness settled fit:
/// `settled_too_large` stayed 0).
pub(crate) const DAG_BYTES: usize = 8 * 1024 - 64;

const NAME: &std::ffi::CStr = c"ruvector_dag settled";

#[repr(C)]
pub(crate) struct Slot {
    /// Database OID (0: free) and statement key: written under the exclusive lock, read
    /// without it to see at once that a statement is not here.
    db: AtomicU32,
    key: AtomicU64,
    /// Plannings under the arm alone since the last usual one (under the shared lock).
    alone: AtomicU32,
    /// The rest under the partition's lock.
    fingerprint: UnsafeCell<u64>,
    /// The planner's total cost of the verified plan applied then.
    cost: UnsafeCell<f64>,
    /// Usual plannings in a row with this default shape and a verified plan applied.
    streak: UnsafeCell<u8>,
    /// Plannings under the arm alone that did not give the verified plan: the streak needed
    /// is [`STREAK`] doubled this many times.
    misses: UnsafeCell<u8>,
    /// Which write of the default plan the bytes are (unique over all slots).
    generation: UnsafeCell<u64>,
    len: UnsafeCell<u32>,
    dag: UnsafeCell<[u8; DAG_BYTES]>,
}

#[repr(C)]
pub(crate) struct Memo {
    generation: AtomicU64,
    planned_alone: AtomicU64,
    missed: AtomicU64,
    too_large: AtomicU64,
    unreadable: AtomicU64,
}

/// The shared memory: the header, then the slots.
pub(crate) static AREA: crate::shared::SlotArea<Memo, Slot> =
    crate::shared::SlotArea::new(NAME, SLOTS, PARTITIONS);

thread_local! {
    /// Default plans this backend decoded: (generation, plan) per slot.
    static DECODED: RefCell<Vec<(u64, Option<Arc<PlanDag>>)>> = const { RefCell::new(Vec::new()) };
}

fn memo() -> Option<&'static Memo> {
    AREA.header()
}

fn slot(key: u64) -> usize {
    (key % SLOTS as u64) as usize
}

fn database() -> u32 {
    // SAFETY: a backend's database, set before any statement is planned.
    unsafe { pg_sys::MyDatabaseId.to_u32() }
}

/// Whether slot `s` holds `key`'s statement of database `db` (without the lock: a first look;
/// under it: the answer).
fn holds(s: &Slot, db: u32, key: u64) -> bool {
    s.db.load(Ordering::Acquire) == db && s.key.load(Ordering::Acquire) == key
}

/// The default plan `dag` as the slot keeps it; None when it does not fit.
fn encode(dag: &PlanDag) -> Option<Vec<u8>> {
    postcard::to_allocvec(&(dag.nodes(), dag.edges()))
        .ok()
        .filter(|b| b.len() <= DAG_BYTES)
}

fn decode(bytes: &[u8]) -> Option<PlanDag> {
    let (nodes, edges): (Vec<PlanNode>, Vec<(u32, u32)>) = postcard::from_bytes(bytes).ok()?;
    PlanDag::new(nodes, edges).ok()
}

/// After a usual planning of `key`'s statement: its default plan `dag` (of shape hash
/// `fingerprint`), and the cost of the verified plan applied for it (None: no verified plan was
/// applied, or the arm's plan was another one).
pub(super) fn note(key: u64, dag: Arc<PlanDag>, fingerprint: u64, verified_cost: Option<f64>) {
    let Some(m) = memo() else { return };
    let (db, i) = (database(), slot(key));
    let s = AREA.slot(i);
    let Some(cost) = verified_cost else {
        forget(key);
        return;
    };
    let Some(bytes) = encode(&dag) else {
        m.too_large.fetch_add(1, Ordering::AcqRel);
        forget(key);
        return;
    };
    let generation = m.generation.fetch_add(1, Ordering::AcqRel) + 1;
    {
        let _held = AREA.lock(i, pg_sys::LWLockMode::LW_EXCLUSIVE);
        // SAFETY: the fields behind UnsafeCell are written under the exclusive lock only.
        unsafe {
            let (streak, misses) = if holds(s, db, key) {
                let same = *s.fingerprint.get() == fingerprint && same_cost(*s.cost.get(), cost);
                let streak = if same {
                    (*s.streak.get()).saturating_add(1)
                } else {
                    1
                };
                (streak, *s.misses.get())
            } else {
                (1, 0)
            };
            s.db.store(db, Ordering::Release);
            s.key.store(key, Ordering::Release);
            s.alone.store(0, Ordering::Release);
            *s.fingerprint.get() = fingerprint;
            *s.cost.get() = cost;
            *s.streak.get() = streak;
            *s.misses.get() = misses;
            *s.generation.get() = generation;
            *s.len.get() = bytes.len() as u32;
            (&mut (*s.dag.get()))[..bytes.len()].copy_from_slice(&bytes);
        }
    }
    keep_decoded(i, generation, dag);
}

fn keep_decoded(i: usize, generation: u64, dag: Arc<PlanDag>) {
    DECODED.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_empty() {
            d.resize_with(SLOTS, || (0, None));
        }
        d[i] = (generation, Some(dag));
    });
}

fn decoded(i: usize, generation: u64) -> Option<Arc<PlanDag>> {
    DECODED.with(|d| match d.borrow().get(i) {
        Some((g, Some(dag))) if *g == generation => Some(Arc::clone(dag)),
        _ => None,
    })
}

/// Whether a plan's costs `a` and `b` are those of the same planning (within [`COST_DRIFT`]).
pub(super) fn same_cost(a: f64, b: f64) -> bool {
    (a - b).abs() <= COST_DRIFT * a.abs().max(1.0)
}

/// The remembered default plan of `key`'s statement and its verified plan's cost, when it is to
/// be planned under its arm alone this time (counted as such).
pub(super) fn take(key: u64) -> Option<(Arc<PlanDag>, f64)> {
    let m = memo()?;
    let (db, i) = (database(), slot(key));
    let s = AREA.slot(i);
    if !holds(s, db, key) {
        return None;
    }
    let (generation, cost, bytes) = {
        let _held = AREA.lock(i, pg_sys::LWLockMode::LW_SHARED);
        // SAFETY: read under the shared lock; writers hold the exclusive one.
        unsafe {
            let needed = u32::from(STREAK) << (*s.misses.get()).min(5);
            if !holds(s, db, key)
                || u32::from(*s.streak.get()) < needed
                || s.alone.load(Ordering::Acquire) + 1 >= u32::from(FULL_EVERY)
            {
                return None;
            }
            s.alone.fetch_add(1, Ordering::AcqRel);
            let generation = *s.generation.get();
            let bytes = match decoded(i, generation) {
                Some(_) => None,
                None => {
                    let len = (*s.len.get() as usize).min(DAG_BYTES);
                    Some((&(*s.dag.get()))[..len].to_vec())
                }
            };
            (generation, *s.cost.get(), bytes)
        }
    };
    let dag = match bytes {
        None => decoded(i, generation)?,
        Some(bytes) => match decode(&bytes) {
            Some(dag) => {
                let dag = Arc::new(dag);
                keep_decoded(i, generation, Arc::clone(&dag));
                dag
            }
            None => {
                m.unreadable.fetch_add(1, Ordering::AcqRel);
                forget(key);
                return None;
            }
        },
    };
    Some((dag, cost))
}

/// A settled statement was planned under its arm alone and kept that plan (the server's count).
pub(super) fn planned_alone() {
    if let Some(m) = memo() {
        m.planned_alone.fetch_add(1, Ordering::AcqRel);
    }
}

/// `key`'s statement planned under its arm alone did not give the verified plan: planned the
/// usual way until it settles again, over a streak twice as long.
pub(super) fn missed(key: u64) {
    if let Some(m) = memo() {
        m.missed.fetch_add(1, Ordering::AcqRel);
    }
    with_held(key, |s| {
        // SAFETY: under the exclusive lock.
        unsafe {
            *s.streak.get() = 0;
            *s.misses.get() = (*s.misses.get()).saturating_add(1);
        }
    });
}

/// `key`'s statement has no verified plan to apply any more (or failed to be decided):
/// planned the usual way until it settles again. Costs two atomic reads when it was not
/// remembered (most statements).
pub(super) fn forget(key: u64) {
    with_held(key, |s| {
        s.db.store(0, Ordering::Release);
        s.key.store(0, Ordering::Release);
    });
}

/// `f` on the slot of `key`'s statement of this database under the exclusive lock, when the
/// slot holds it (looked at without the lock first: most statements are not remembered).
fn with_held(key: u64, f: impl FnOnce(&Slot)) {
    if memo().is_none() {
        return;
    }
    let (db, i) = (database(), slot(key));
    let s = AREA.slot(i);
    if !holds(s, db, key) {
        return;
    }
    let _held = AREA.lock(i, pg_sys::LWLockMode::LW_EXCLUSIVE);
    if holds(s, db, key) {
        f(s);
    }
}

/// What the memory holds and did, for `ruvector_dag_status()`: statements of database `db`
/// remembered, and over the server's life, plannings under the arm alone kept, plannings
/// under it that missed the verified plan, default plans too large to remember, unreadable.
pub(crate) fn stats(db: u32) -> Option<[u64; 5]> {
    let m = memo()?;
    let held = (0..SLOTS)
        .filter(|&i| AREA.slot(i).db.load(Ordering::Acquire) == db)
        .count() as u64;
    Some([
        held,
        m.planned_alone.load(Ordering::Acquire),
        m.missed.load(Ordering::Acquire),
        m.too_large.load(Ordering::Acquire),
        m.unreadable.load(Ordering::Acquire),
    ])
}
