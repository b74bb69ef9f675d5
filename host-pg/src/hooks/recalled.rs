//! Decisions on what another backend recalled. A session's first in-scope statement used to
//! load its own copy of the learned state (the snapshot's head, from the model cache) only to
//! compute what a lean decision reads through the model: the plan's key embedding and what BTSP
//! memory recalls for it ([`Recalled`]). Everything else a lean decision reads is the shape's
//! evidence, in the shared book, and the configuration. Those page faults of a new process and
//! the restore were most of the extension's time on a first statement (README: "Where a
//! session's first statement goes").
//!
//! So the server keeps, in shared memory, per query shape and database, what the last lean
//! decision on a plan of that shape recalled, with the recall digest of the learned state it
//! was recalled with (`Optimizer::recall_digest`: the configuration, the arms and BTSP memory;
//! training the cost model or the patterns leaves it as it is), the arm list and the settings it
//! was decided under, and the learned state's configuration as tuned by them. A backend holding
//! a copy of the current learned-state version publishes that version's digest (a stamp per
//! database); an entry serves while its digest is the stamp's, so after the model is trained
//! again the first session that loads the new version makes every entry whose BTSP memory did
//! not change valid again. A backend without a current copy of the
//! learned state decides a plan of a shape kept here with an optimizer that holds the rules
//! and nothing learned ([`Optimizer::rules_only`], one per backend, built from the kept
//! configuration) on the book's evidence of the shape: the same rules, evidence and recalled
//! verdicts give the decision its own copy would give (`Optimizer::decide_recalled`), except that
//! the key is the one of the plan the verdicts were recalled for (plans of one shape differ in
//! their estimates only; BTSP memory recalls by cosine similarity of keys). Its runs are
//! observed with that optimizer into the shared book, and reach the learner as any lean
//! decision's do (it completes their trajectories from the default plan). Nothing else needs
//! the learned state: a statement whose decision needs the model (an attention plugin, a key
//! that reads the shapes' history, exploration in the statement itself) or whose shape is not
//! kept, or kept under another digest, arm list or settings, or before any copy of the current
//! version stamped the digest, is decided the usual way, and its decision kept for the next.
//!
//! [`SLOTS`] shapes for all databases, direct-mapped by database and shape (a collision
//! forgets the older), in [`PARTITIONS`] partitions with an LWLock each; an entry is postcard
//! bytes (a 256-value key, arm numbers, the configuration: never a constant or a name of the
//! user's) of at most [`ENTRY_BYTES`]. Nothing of it outlives the server or reaches a table.

use super::*;
use ruvector_dag_core::learning::{Exploration, NeuralDagConfig, Recalled};
use ruvector_dag_core::PlanDag;
use std::cell::UnsafeCell;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Shapes kept, for all databases.
pub(crate) const SLOTS: usize = 512;
/// Partitions of the slots (one LWLock each).
const PARTITIONS: usize = 16;
/// Bytes of one entry at most (the key is 1 KiB of it).
pub(crate) const ENTRY_BYTES: usize = 2048 - 48;

const NAME: &std::ffi::CStr = c"ruvector_dag recalled";

/// What is kept of one decision.
#[derive(serde::Serialize, serde::Deserialize)]
struct Entry {
    recalled: Recalled,
    /// The learned state's configuration as the settings tuned it (what the rules read).
    cfg: NeuralDagConfig,
    /// The learned-state table and its version the deciding copy was loaded from (the book's
    /// identity for the rules copy).
    table: u32,
    version: i64,
}

#[repr(C)]
pub(crate) struct Slot {
    /// Database OID (0: free) and shape: written under the exclusive lock, read without it to
    /// see at once that a shape is not here (or is, under the same validity).
    db: AtomicU32,
    fingerprint: AtomicU64,
    /// The recall digest of the learned state, the arm list's and the settings' hashes it
    /// holds for.
    digest: AtomicU64,
    arms: AtomicU64,
    config: AtomicU64,
    len: UnsafeCell<u32>,
    bytes: UnsafeCell<[u8; ENTRY_BYTES]>,
}

/// Per database: the recall digest (`Optimizer::recall_digest`) of the learned state at shared
/// learned-state version `seen`, published by a backend that holds a copy of that version.
#[repr(C)]
struct Stamp {
    db: AtomicU32,
    /// 0 while written.
    seen: AtomicU64,
    digest: AtomicU64,
}

#[repr(C)]
pub(crate) struct Header {
    stamps: [Stamp; crate::shared::MAX_LEARNERS],
    decided: AtomicU64,
    kept: AtomicU64,
    too_large: AtomicU64,
    unreadable: AtomicU64,
}

/// The shared memory: the header, then the slots.
pub(crate) static AREA: crate::shared::SlotArea<Header, Slot> =
    crate::shared::SlotArea::new(NAME, SLOTS, PARTITIONS);

fn header() -> Option<&'static Header> {
    AREA.header()
}

fn slot(db: u32, fingerprint: u64) -> usize {
    ((fingerprint ^ u64::from(db).wrapping_mul(0x9E37_79B9_7F4A_7C15)) % SLOTS as u64) as usize
}

/// What an entry is valid for: the recall digest of the learned state it was recalled with
/// (the configuration, the arms, BTSP memory: training the model leaves it), and the hashes of
/// the arm list and of the settings the configuration is tuned from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Validity {
    digest: u64,
    arms: u64,
    config: u64,
}

/// Publish `digest`, the recall digest of the learned state at shared version `seen`, for this
/// database (from a backend holding a copy of that version).
pub(super) fn publish_stamp(seen: u64, digest: u64) {
    let Some(h) = header() else { return };
    let db = crate::database();
    let Some(s) = h
        .stamps
        .iter()
        .find(|s| s.db.load(Ordering::Acquire) == db)
        .or_else(|| {
            h.stamps.iter().find(|s| {
                s.db.compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
        })
    else {
        return;
    };
    if s.seen.load(Ordering::Acquire) == seen && s.digest.load(Ordering::Acquire) == digest {
        return;
    }
    // Readers see 0 while it is written (and take nothing).
    s.seen.store(0, Ordering::Release);
    s.digest.store(digest, Ordering::Release);
    s.seen.store(seen, Ordering::Release);
}

/// The recall digest of this database's learned state at shared version `seen`, when a
/// backend holding a copy of that version published it.
pub(super) fn stamp(seen: u64) -> Option<u64> {
    let h = header()?;
    let db = crate::database();
    let s = h
        .stamps
        .iter()
        .find(|s| s.db.load(Ordering::Acquire) == db)?;
    let before = s.seen.load(Ordering::Acquire);
    let digest = s.digest.load(Ordering::Acquire);
    (before == seen && seen != 0 && s.seen.load(Ordering::Acquire) == before).then_some(digest)
}

fn hash_of(x: impl Hash) -> u64 {
    // Fixed keys: the same in every process.
    let mut h = std::hash::DefaultHasher::new();
    x.hash(&mut h);
    h.finish()
}

thread_local! {
    /// The settings last hashed and their hash (the settings rarely change in a session).
    static CONFIG: RefCell<Option<(NeuralDagConfig, u64)>> = const { RefCell::new(None) };
    /// The arm list last hashed (as `guc::arms_shared` shares it: the same text is the same
    /// pointer) and its hash: every usual decision asks.
    static ARMS: RefCell<Option<(std::rc::Rc<str>, u64)>> = const { RefCell::new(None) };
}

/// The validity a decision made now has: `digest` the recall digest of its copy of the learned
/// state, `config` the settings ([`guc::core_config`]). None when the arm list does not parse
/// (nothing is decided then).
pub(super) fn validity(digest: u64, config: &NeuralDagConfig) -> Option<Validity> {
    let arms = guc::arms_shared().ok()?.1;
    let arms = ARMS.with(|a| {
        let mut a = a.borrow_mut();
        match a.as_ref() {
            Some((text, h)) if std::rc::Rc::ptr_eq(text, &arms) => *h,
            _ => {
                let h = hash_of(&*arms);
                *a = Some((arms, h));
                h
            }
        }
    });
    let config = CONFIG.with(|c| {
        let mut c = c.borrow_mut();
        match c.as_ref() {
            Some((cfg, h)) if cfg == config => Some(*h),
            _ => {
                let h = hash_of(postcard::to_allocvec(config).ok()?);
                *c = Some((config.clone(), h));
                Some(h)
            }
        }
    })?;
    Some(Validity {
        digest,
        arms,
        config,
    })
}

fn holds(s: &Slot, db: u32, fingerprint: u64, v: Validity) -> bool {
    s.db.load(Ordering::Acquire) == db
        && s.fingerprint.load(Ordering::Acquire) == fingerprint
        && s.digest.load(Ordering::Acquire) == v.digest
        && s.arms.load(Ordering::Acquire) == v.arms
        && s.config.load(Ordering::Acquire) == v.config
}

/// Keep what `decision` (a lean decision of this backend's copy, current at `v`) recalled,
/// unless the slot holds this shape at this validity already (an atomic look: most
/// decisions). `copy`: the copy's configuration as tuned, its table and version.
pub(super) fn keep(decision: &Decision, v: Validity, copy: (&NeuralDagConfig, u32, i64)) {
    let Some(h) = header() else { return };
    let db = crate::database();
    let fp = decision.fingerprint;
    let i = slot(db, fp);
    let s = AREA.slot(i);
    if holds(s, db, fp, v) {
        return;
    }
    let Some(recalled) = decision.recalled() else {
        return;
    };
    let (cfg, table, version) = copy;
    let entry = Entry {
        recalled,
        cfg: cfg.clone(),
        table,
        version,
    };
    let bytes = match postcard::to_allocvec(&entry) {
        Ok(b) if b.len() <= ENTRY_BYTES => b,
        _ => {
            h.too_large.fetch_add(1, Ordering::AcqRel);
            return;
        }
    };
    let _held = AREA.lock(i, pg_sys::LWLockMode::LW_EXCLUSIVE);
    // Readers check the identity under the shared lock: what they see is whole.
    s.db.store(db, Ordering::Release);
    s.fingerprint.store(fp, Ordering::Release);
    s.digest.store(v.digest, Ordering::Release);
    s.arms.store(v.arms, Ordering::Release);
    s.config.store(v.config, Ordering::Release);
    // SAFETY: written under the exclusive lock only.
    unsafe {
        *s.len.get() = bytes.len() as u32;
        (&mut (*s.bytes.get()))[..bytes.len()].copy_from_slice(&bytes);
    }
    h.kept.fetch_add(1, Ordering::AcqRel);
}

/// The entry kept for shape `fingerprint` of this database at validity `v`.
fn recall(fingerprint: u64, v: Validity) -> Option<Entry> {
    let h = header()?;
    let db = crate::database();
    let i = slot(db, fingerprint);
    let s = AREA.slot(i);
    if !holds(s, db, fingerprint, v) {
        return None;
    }
    let decoded = {
        let _held = AREA.lock(i, pg_sys::LWLockMode::LW_SHARED);
        if !holds(s, db, fingerprint, v) {
            return None;
        }
        // Decoded where the bytes lie (pure Rust: no PostgreSQL error under the lock).
        // SAFETY: read under the shared lock; writers hold the exclusive one.
        unsafe {
            let len = (*s.len.get() as usize).min(ENTRY_BYTES);
            postcard::from_bytes::<Entry>(&(&(*s.bytes.get()))[..len])
        }
    };
    match decoded {
        Ok(e) if e.recalled.fingerprint == fingerprint => Some(e),
        _ => {
            h.unreadable.fetch_add(1, Ordering::AcqRel);
            forget(fingerprint);
            None
        }
    }
}

fn forget(fingerprint: u64) {
    if header().is_none() {
        return;
    }
    let db = crate::database();
    let i = slot(db, fingerprint);
    let s = AREA.slot(i);
    let _held = AREA.lock(i, pg_sys::LWLockMode::LW_EXCLUSIVE);
    if s.db.load(Ordering::Acquire) == db && s.fingerprint.load(Ordering::Acquire) == fingerprint {
        s.db.store(0, Ordering::Release);
    }
}

/// This backend's optimizer that holds the rules alone, and what it was built for.
pub(super) struct Rules {
    pub(super) opt: Optimizer,
    validity: Validity,
    pub(super) holding: crate::book::Holding,
}

/// Decide `dag` (its shape kept here at validity `v`) for `exploration` with this backend's
/// rules copy on the book's evidence of the shape. None (decided the usual way) when the shape
/// is not kept at `v`, the book is not in use for the kept table, or the decision fails.
pub(super) fn decide(dag: &PlanDag, exploration: Exploration, v: Validity) -> Option<Decision> {
    let fp = dag.shape_hash();
    let recall_timing = phases::timing(Phase::Recall);
    let entry = recall(fp, v)?;
    let db = crate::database();
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        if b.rules.as_ref().is_none_or(|r| r.validity != v) {
            b.rules = None;
            // The names alone (the parsed list is shared, not copied).
            let names = guc::arms_shared().ok()?.0.iter().map(|a| a.0.clone()).collect();
            // Only with the machinery this process inherited (building it is a restore's cost).
            let machinery = learner::machinery(&entry.cfg)?;
            let opt = Optimizer::rules_only(entry.cfg, names, &machinery).ok()?;
            b.rules = Some(Rules {
                opt,
                validity: v,
                holding: crate::book::Holding::borrowed(db, entry.table, entry.version),
            });
        }
        drop(recall_timing);
        let r = b.rules.as_mut().expect("just set");
        // Its evidence is the book's alone: without the book it has nothing to decide on.
        let brought = {
            let _t = phases::timing(Phase::Book);
            crate::book::bring_in(db, &mut r.holding, &mut r.opt, fp)
        };
        if !brought {
            return None;
        }
        let _t = phases::timing(Phase::Decide);
        let mut d = r.opt.decide_recalled(dag, &entry.recalled, exploration).ok()?;
        d.reason.push_str(
            "; decided without this session's copy of the learned state, on what the last decision on this query shape recalled",
        );
        b.counters.recalled += 1;
        Some(d)
    })
    .inspect(|_| {
        if let Some(h) = header() {
            h.decided.fetch_add(1, Ordering::AcqRel);
        }
    })
}

/// What the memory holds and did, for `ruvector_dag_status()`: shapes of database `db` kept,
/// and over the server's life, decisions made on them, entries kept (written), entries too
/// large to keep, unreadable.
pub(crate) fn stats(db: u32) -> Option<[u64; 5]> {
    let h = header()?;
    let held = (0..SLOTS)
        .filter(|&i| AREA.slot(i).db.load(Ordering::Acquire) == db)
        .count() as u64;
    Some([
        held,
        h.decided.load(Ordering::Acquire),
        h.kept.load(Ordering::Acquire),
        h.too_large.load(Ordering::Acquire),
        h.unreadable.load(Ordering::Acquire),
    ])
}
