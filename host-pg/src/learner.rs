//! The learning cycle that persists: drain this database's trajectories from the shared ring,
//! observe them, run the core's `learn_cycle`, and write the snapshot and the pattern table.
//! The background worker runs it on its interval; `ruvector_dag_learn()` runs it in the
//! caller's backend. An advisory lock makes cycles of one database take turns.
//!
//! The learner keeps its optimizer between cycles (its rehearsal buffer is not in the snapshot)
//! and reloads from the table only when someone else wrote a newer version.

use std::cell::RefCell;

use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use ruvector_dag_core::dag::PlanNode;
use ruvector_dag_core::learning::{
    Candidate, CycleReport, Machinery, Optimizer, RunKind, Trajectory,
};
use ruvector_dag_core::PlanDag;
use serde::{Deserialize, Serialize};

use crate::{book, guc, shared};

/// Advisory lock key of the learning cycle ("rvdag" in ASCII).
const LOCK_KEY: i64 = 0x72_76_64_61_67;

struct Learner {
    version: i64,
    opt: Optimizer,
    /// What its copy is for the shared evidence book.
    holding: book::Holding,
}

thread_local! {
    static LEARNER: RefCell<Option<Learner>> = const { RefCell::new(None) };
}

/// What the shared ring carries (postcard). In shared memory only: its format may change
/// with any build.
#[derive(Debug, Serialize, Deserialize)]
pub enum Record {
    /// One run: its trajectory, the tables it read, how it ended and who ran it (a user's
    /// statement, or the background explorer), and what it did to the evidence when it was
    /// recorded in the shared evidence book where it ran (None: it was not).
    Run(Box<Trajectory>, Vec<u32>, RunKind, Option<Booked>),
    /// The candidate plans the explorer planned for a shape: its fingerprint, the default
    /// plan's cost, and the candidates.
    Candidates(u64, f64, Vec<Candidate>),
    /// A run [`Record::Run`] whose decision left the model's view out (a backend's lean
    /// decision): its trajectory without it, the default plan it was decided on and the
    /// executed plan with its measurements (when instrumented), from which the learner
    /// completes it (`Optimizer::complete_trajectory`); then as `Run`.
    RunLean(
        Box<Trajectory>,
        Plan,
        Option<Plan>,
        Vec<u32>,
        RunKind,
        Option<Booked>,
    ),
    /// A scan whose row estimate was far off while it filtered on two or more columns of its
    /// table (statistics advice, [`crate::advice`]).
    Misestimate(crate::advice::Misestimate),
}

/// A plan as the ring carries it: its operators (estimates, measurements, relation names:
/// never a constant) and edges.
pub type Plan = (Vec<PlanNode>, Vec<(u32, u32)>);

/// [`Plan`] borrowed (the same encoding).
type PlanRef<'a> = (&'a [PlanNode], &'a [(u32, u32)]);

fn plan_ref(dag: &PlanDag) -> PlanRef<'_> {
    (dag.nodes(), dag.edges())
}

/// What a run recorded in the shared evidence book did there (the learner's healing log).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Booked {
    /// A verified plan reverted, a run BTSP memory found catastrophic, or a run cut short.
    pub regression: bool,
    /// The default plan's typical time when it ran, ms.
    pub baseline_ms: Option<f32>,
}

/// [`Record`] borrowed, for encoding without copying the trajectory (the same encoding).
#[derive(Serialize)]
enum RecordRef<'a> {
    Run(&'a Trajectory, &'a [u32], RunKind, Option<Booked>),
    Candidates(u64, f64, &'a [Candidate]),
    RunLean(
        &'a Trajectory,
        PlanRef<'a>,
        Option<PlanRef<'a>>,
        &'a [u32],
        RunKind,
        Option<Booked>,
    ),
    Misestimate(&'a crate::advice::Misestimate),
}

impl Record {
    /// The encoding of a run (`booked`: see [`Record::Run`]).
    pub fn run(
        t: &Trajectory,
        relids: &[u32],
        kind: RunKind,
        booked: Option<Booked>,
    ) -> Result<Vec<u8>, String> {
        encode(&RecordRef::Run(t, relids, kind, booked))
    }

    /// The encoding of a run decided without the model's view (see [`Record::RunLean`]):
    /// `default` the default plan it was decided on, `executed` the plan that ran with its
    /// measurements.
    pub fn run_lean(
        t: &Trajectory,
        default: &PlanDag,
        executed: Option<&PlanDag>,
        relids: &[u32],
        kind: RunKind,
        booked: Option<Booked>,
    ) -> Result<Vec<u8>, String> {
        encode(&RecordRef::RunLean(
            t,
            plan_ref(default),
            executed.map(plan_ref),
            relids,
            kind,
            booked,
        ))
    }

    /// The encoding of a misestimated scan.
    pub fn misestimate(m: crate::advice::Misestimate) -> Result<Vec<u8>, String> {
        encode(&RecordRef::Misestimate(&m))
    }

    /// The encoding of the candidates planned for a shape.
    pub fn candidates(
        fingerprint: u64,
        default_cost: f64,
        candidates: &[Candidate],
    ) -> Result<Vec<u8>, String> {
        encode(&RecordRef::Candidates(
            fingerprint,
            default_cost,
            candidates,
        ))
    }
}

fn encode(r: &RecordRef<'_>) -> Result<Vec<u8>, String> {
    postcard::to_allocvec(r).map_err(|e| format!("encoding a ring record: {e}"))
}

/// Complete the trajectory of a lean decision's run from the plans its record carries.
fn complete(
    opt: &Optimizer,
    t: &mut Trajectory,
    default: Plan,
    executed: Option<Plan>,
) -> Result<(), String> {
    let default = PlanDag::new(default.0, default.1).map_err(|e| e.to_string())?;
    let executed = executed
        .map(|(n, e)| PlanDag::new(n, e))
        .transpose()
        .map_err(|e| e.to_string())?;
    opt.complete_trajectory(t, &default, executed.as_ref())
        .map_err(|e| e.to_string())
}

/// A regression the cycle reverted: the arm is blocked for the query shape.
#[derive(Debug, Clone)]
pub struct Healing {
    pub fingerprint: u64,
    pub pattern: Option<u64>,
    pub arm: String,
    pub actual_ms: f32,
    pub baseline_ms: f32,
    /// What was done, as healing_log's `action` says it.
    pub action: &'static str,
}

/// healing_log's action for a regression (a verified plan reverted, or a run BTSP memory found
/// surprisingly slow).
const REVERTED: &str = "reverted to the default plan; arm blocked for this query shape";
/// healing_log's action for a run cut short under a non-default plan.
const CUT_SHORT: &str =
    "cut short (a statement timeout, a cancel or an error) after actual_ms; plan given up for this query shape";

/// What one persisted cycle did.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub report: CycleReport,
    pub drained: usize,
    pub rejected: usize,
    pub version: i64,
    /// The snapshot written.
    pub snapshot: Vec<u8>,
    pub healed: Vec<Healing>,
    /// Settings the learned state keeps as learned (they differ from the session's).
    pub kept: Vec<&'static str>,
    /// OID of the learned-state table (the shared evidence book's identity).
    pub table: u32,
}

/// The learned state's row: (version, snapshot) or None when nothing was learned yet.
pub fn read_state(with_snapshot: bool) -> Result<Option<(i64, Option<Vec<u8>>)>, String> {
    let sql = if with_snapshot {
        "SELECT version, snapshot FROM ruvector_dag.learned_state WHERE id = 1"
    } else {
        "SELECT version, NULL::bytea FROM ruvector_dag.learned_state WHERE id = 1"
    };
    Spi::connect(|c| {
        let mut rows = c.select(sql, Some(1), &[])?;
        match rows.next() {
            Some(row) => Ok(Some((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<Vec<u8>>(2)?,
            ))),
            None => Ok(None),
        }
    })
    .map_err(|e: pgrx::spi::Error| format!("reading ruvector_dag.learned_state: {e}"))
}

/// The attention machinery (random projections, HDC item memory) the optimizers this process
/// restores share: built in the postmaster at preload for the configured attention parameters,
/// so that every backend inherits it and a session's first load does not draw it again; then
/// the last one a restore used.
static MACHINERY: std::sync::Mutex<Option<std::sync::Arc<Machinery>>> = std::sync::Mutex::new(None);

/// Build the machinery for the configured attention parameters (at preload, in the
/// postmaster, where only settings may be read: not the mode, which asks whether recovery is in
/// progress of shared memory not set up yet). A configuration it refuses leaves none: each
/// restore then builds its own and reports what it refuses.
pub fn prepare_machinery() {
    if let Ok(m) = Machinery::new(&guc::attention_config()) {
        if let Ok(mut slot) = MACHINERY.lock() {
            *slot = Some(m);
        }
    }
}

/// This process's machinery when an optimizer configured as `cfg` can use it (None: none,
/// or it does not fit).
pub fn machinery(
    cfg: &ruvector_dag_core::learning::NeuralDagConfig,
) -> Option<std::sync::Arc<Machinery>> {
    let slot = MACHINERY.lock().ok()?;
    slot.as_ref()
        .filter(|m| m.fits(cfg))
        .map(std::sync::Arc::clone)
}

/// [`Optimizer::restore_lean`] with this process's machinery (the head alone: what a lean
/// decision reads); [`restore`] where there is none yet.
pub fn restore_lean(bytes: &[u8]) -> Result<Optimizer, ruvector_dag_core::NeuralDagError> {
    match MACHINERY.lock().ok().and_then(|m| m.clone()) {
        Some(m) => Optimizer::restore_lean(bytes, &m),
        None => restore(bytes),
    }
}

/// [`Optimizer::restore`], sharing this process's machinery when it fits (and keeping the
/// restored optimizer's for the next restore).
pub fn restore(bytes: &[u8]) -> Result<Optimizer, ruvector_dag_core::NeuralDagError> {
    let shared = MACHINERY.lock().ok().and_then(|m| m.clone());
    let opt = match &shared {
        Some(m) => Optimizer::restore_sharing(bytes, m)?,
        None => Optimizer::restore(bytes)?,
    };
    if !shared.is_some_and(|m| std::sync::Arc::ptr_eq(&m, opt.machinery())) {
        if let Ok(mut slot) = MACHINERY.lock() {
            *slot = Some(std::sync::Arc::clone(opt.machinery()));
        }
    }
    Ok(opt)
}

/// An optimizer from the stored snapshot, or a fresh one from the settings when there is none;
/// refused when the stored arms are not the configured ones.
pub fn load(snapshot: Option<&[u8]>) -> Result<Optimizer, String> {
    load_with(snapshot, &guc::arms()?, false)
}

/// [`load`] for the arms `arms` (`ruvector.dag_arms` as read); `lean`: the snapshot's head
/// alone ([`restore_lean`]).
fn load_with(snapshot: Option<&[u8]>, arms: &[guc::Arm], lean: bool) -> Result<Optimizer, String> {
    let names: Vec<String> = arms.iter().map(|a| a.0.clone()).collect();
    let restored = |bytes| {
        if lean {
            restore_lean(bytes)
        } else {
            restore(bytes)
        }
    };
    let unreadable = |e| {
        format!("the stored learned state cannot be read ({e}); ruvector_dag_reset() starts over")
    };
    let mut opt = match snapshot {
        Some(bytes) => restored(bytes).map_err(unreadable)?,
        None => Optimizer::new(guc::core_config(), names.clone()).map_err(|e| e.to_string())?,
    };
    // Arms appended to the list: the model's copy is needed to add them (a lean restore has
    // none), the rest is `conform_arms`.
    let stored = opt.arms().len();
    if let (Some(bytes), true) = (
        snapshot,
        stored < names.len() && opt.arms() == &names[..stored] && !opt.has_model(),
    ) {
        opt = restore(bytes).map_err(unreadable)?;
    }
    conform_arms(&mut opt, &names)?;
    Ok(opt)
}

/// Make `opt` (restored with its model) choose among `names` (`ruvector.dag_arms` as read).
/// Arms appended at the end of the list (by the DBA, or by a release's longer default list)
/// are added (true): what was learned for the arms before them stays, the new ones start
/// unexplored, and the learner's next cycle stores the longer list. Any other difference is
/// refused: what was learned would be attributed to the wrong arms.
fn conform_arms(opt: &mut Optimizer, names: &[String]) -> Result<bool, String> {
    if opt.arms() == names {
        return Ok(false);
    }
    let stored = opt.arms().len();
    if stored < names.len() && opt.arms() == &names[..stored] {
        opt.append_arms(&names[stored..]).map_err(|e| {
            format!(
                "the arms appended to ruvector.dag_arms cannot be added to the learned state: {e}"
            )
        })?;
        return Ok(true);
    }
    Err(format!(
        "the learned state was made for the arms '{}' but ruvector.dag_arms lists '{}' \
         (arms appended at the end keep what was learned, others do not); restore the \
         setting, or run ruvector_dag_reset() to learn the new arms from scratch",
        opt.arms().join("|"),
        names.join("|")
    ))
}

/// The OID of `ruvector_dag.learned_state` (another one after DROP and CREATE EXTENSION):
/// part of the shared evidence book's identity.
pub fn state_table() -> Result<u32, String> {
    // Read-only (Spi::get_one is not: on a standby that fails).
    Spi::connect(|c| {
        c.select(
            "SELECT 'ruvector_dag.learned_state'::pg_catalog.regclass::pg_catalog.oid",
            Some(1),
            &[],
        )?
        .first()
        .get_one::<pg_sys::Oid>()
    })
    .map_err(|e: pgrx::spi::Error| format!("finding ruvector_dag.learned_state: {e}"))?
    .map(|o| o.to_u32())
    .ok_or_else(|| "ruvector_dag.learned_state does not exist".to_string())
}

/// The stored version, and an optimizer loaded from it (with what it is for the shared
/// evidence book) unless the caller already holds that version (`held`; the snapshot,
/// possibly megabytes, is read only then). `pending`: with the trajectories waiting for the
/// next training (the learner's; a backend that decides never needs them). One query: a
/// session's first statement pays for it, on cold catalog caches.
pub fn load_unless(
    held: Option<i64>,
    pending: bool,
) -> Result<(i64, Option<(Optimizer, book::Holding)>), String> {
    let row = Spi::connect(|c| {
        let mut rows = c.select(
            "SELECT version, tableoid, \
                    CASE WHEN version IS NOT DISTINCT FROM $1 THEN NULL ELSE snapshot END, \
                    CASE WHEN version IS NOT DISTINCT FROM $1 OR NOT $2 THEN NULL \
                         ELSE pending END \
               FROM ruvector_dag.learned_state WHERE id = 1",
            Some(1),
            &[held.into(), pending.into()],
        )?;
        match rows.next() {
            Some(row) => Ok(Some((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<pg_sys::Oid>(2)?,
                row.get::<Vec<u8>>(3)?,
                row.get::<Vec<u8>>(4)?,
            ))),
            None => Ok(None),
        }
    })
    .map_err(|e: pgrx::spi::Error| format!("reading ruvector_dag.learned_state: {e}"))?;
    let (version, table, snapshot, waiting) = match row {
        Some((v, t, s, p)) => (v, t.map(|t| t.to_u32()), s, p),
        None => (0, None, None, None),
    };
    if held == Some(version) {
        return Ok((version, None));
    }
    // Not in the model cache (the server restarted, or the cache was found stale, and no
    // version was written since: a frozen server writes none): put what was read there, so
    // that the next sessions copy it from memory. Only from a transaction that has written
    // nothing (what it reads is committed); a slot holding a newer version keeps it. Never on a
    // standby: its table changes by WAL replay, which publishes nothing, so a copy left there
    // would hide every newer version.
    if let (Some(bytes), Some(t)) = (snapshot.as_deref(), table) {
        // SAFETY: reads this backend's transaction state.
        let wrote = unsafe { pg_sys::GetTopTransactionIdIfAny() } != pg_sys::InvalidTransactionId;
        if version != 0 && !wrote && !guc::standby() {
            crate::model_cache::publish(crate::database(), t, version, bytes);
        }
    }
    let mut opt = load(snapshot.as_deref().filter(|_| version != 0))?;
    if let Some(bytes) = waiting.filter(|_| version != 0) {
        // Not learned from yet, so not learned state: unreadable ones are dropped (and said),
        // never a reason to stop learning.
        if let Err(e) = opt.restore_pending(&bytes) {
            pgrx::warning!(
                "ruvector_dag: the trajectories waiting in ruvector_dag.learned_state.pending \
                 (version {version}) cannot be read and are dropped: {e}"
            );
        }
    }
    let table = match table {
        Some(t) => t,
        None => state_table()?,
    };
    let holding = book::Holding::loaded(crate::database(), table, version);
    Ok((version, Some((opt, holding))))
}

/// [`load_unless`] (without the pending trajectories) from the model cache in shared memory,
/// when it holds this database's model: no query. `lean`: the snapshot's head alone
/// ([`restore_lean`]). None: not cached (read the table).
pub fn load_cached(
    held: Option<i64>,
    lean: bool,
) -> Option<Result<(i64, Option<(Optimizer, book::Holding)>), String>> {
    // A standby's table changes by WAL replay, which publishes nothing: it reads the table.
    let table = crate::extension_relid(crate::LEARNED_STATE);
    if table == 0 || guc::standby() {
        return None;
    }
    let db = crate::database();
    // The arms are read before the cache's lock is taken (they parse a setting).
    let arms = match guc::arms() {
        Ok(a) => a,
        Err(e) => return Some(Err(e)),
    };
    let (version, loaded) = crate::model_cache::read(db, table, held, |bytes| {
        let _t = crate::hooks::phases::timing(crate::hooks::phases::Phase::Restore);
        load_with(Some(bytes), &arms, lean)
    })?;
    let Some(loaded) = loaded else {
        return Some(Ok((version, None)));
    };
    Some(loaded.map(|opt| {
        (
            version,
            Some((opt, book::Holding::loaded(db, table, version))),
        )
    }))
}

/// The OID of the learned-state table whose model the cache may hold for this database (None:
/// not installed here, or a standby, which reads the table). A catalog lookup the first time.
pub fn cached_table() -> Option<u32> {
    let table = crate::extension_relid(crate::LEARNED_STATE);
    (table != 0 && !guc::standby()).then_some(table)
}

/// Load the model of `opt`, restored lean from version `version` of `table` in the model cache
/// ([`load_cached`]), from the cache while it still holds that version. False when it does not
/// any more, or the model does not load (the caller loads the state again). Pure Rust under
/// the cache slot's lock: no query, no PostgreSQL error.
pub fn load_model_cached(opt: &mut Optimizer, table: u32, version: i64) -> bool {
    let loaded = crate::model_cache::read_exact(crate::database(), table, version, |bytes| {
        opt.load_model(bytes)
    });
    matches!(loaded, Some(Ok(())))
}

/// Trajectories a light cycle may leave pending (stored beside the snapshot, in the `pending`
/// column) before it trains anyway.
const LIGHT_CYCLE_MAX_PENDING: usize = 256;

/// Take this database's learning lock until the transaction ends: cycles, imports, resets
/// and forgetting take turns (the learned state has one writer at a time).
fn take_lock() -> Result<(), String> {
    Spi::run(&format!(
        "SELECT pg_catalog.pg_advisory_xact_lock({LOCK_KEY})"
    ))
    .map_err(|e| format!("taking the learning lock: {e}"))
}

/// What observing the drained records gave: trajectories refused, self-healing events for
/// healing_log, rows for trajectory_history, and the shapes seen with the tables they read.
struct Drained {
    rejected: usize,
    healed: Vec<Healing>,
    history: Vec<History>,
    shapes: Vec<Shape>,
    misestimates: Vec<crate::advice::Misestimate>,
}

/// Observe every drained record ([`Record`]) with the learner's optimizer `opt` (its copy
/// `holding` for the shared evidence book, of database `db`): a run recorded in the book
/// where it ran leaves the evidence to the book; any other (and the candidates an explorer
/// planned) is recorded in the book from here.
fn observe_records(
    db: u32,
    opt: &mut Optimizer,
    holding: &mut book::Holding,
    records: &[Vec<u8>],
) -> Drained {
    let mut rejected = 0;
    let mut healed = Vec::new();
    let mut history = Vec::new();
    let mut shapes: Vec<Shape> = Vec::new();
    let mut misestimates = Vec::new();
    for bytes in records {
        let (t, relids, kind, booked) = match postcard::from_bytes::<Record>(bytes) {
            Ok(Record::Run(t, relids, kind, booked)) => (*t, relids, kind, booked),
            Ok(Record::RunLean(t, default, executed, relids, kind, booked)) => {
                let mut t = *t;
                match complete(opt, &mut t, default, executed) {
                    Ok(()) => (t, relids, kind, booked),
                    Err(_) => {
                        rejected += 1;
                        continue;
                    }
                }
            }
            Ok(Record::Candidates(fingerprint, default_cost, candidates)) => {
                let (noted, _) = book::update(db, holding, opt, fingerprint, |o| {
                    o.note_candidates(fingerprint, default_cost, &candidates)
                });
                rejected += usize::from(noted.is_err());
                continue;
            }
            Ok(Record::Misestimate(m)) => {
                misestimates.push(m);
                continue;
            }
            Err(_) => {
                rejected += 1;
                continue;
            }
        };
        note_shape(&mut shapes, &t, relids);
        let (fingerprint, pattern, arm, actual) = (t.fingerprint, t.pattern, t.arm, t.actual_ms);
        let (predicted, shares) = (t.predicted_ms, t.op_shares.clone());
        let cut = kind.cut;
        let observed = match booked {
            Some(_) => opt.observe_recorded(t),
            None => {
                book::update(db, holding, opt, fingerprint, |o| {
                    o.observe_run(t, kind, true)
                })
                .0
            }
        };
        match observed {
            Ok(o) => {
                history.push(History {
                    fingerprint,
                    arm: opt.arms()[usize::from(arm)].clone(),
                    actual_ms: actual,
                    predicted_ms: predicted,
                    quality: o.quality,
                    node_shares: shares,
                });
                // A verified plan reverted, a catastrophic run whose arm BTSP now blocks, or a
                // run cut short: as the book saw it where it ran, or as observed here.
                let (regression, baseline) = match booked {
                    Some(b) => (
                        b.regression || o.regression,
                        b.baseline_ms.or(o.baseline_ms),
                    ),
                    None => (o.regression, o.baseline_ms),
                };
                if let (true, Some(base)) = (regression, baseline) {
                    healed.push(Healing {
                        fingerprint,
                        pattern,
                        arm: opt.arms()[usize::from(arm)].clone(),
                        actual_ms: actual,
                        baseline_ms: base,
                        action: if cut { CUT_SHORT } else { REVERTED },
                    });
                }
            }
            Err(_) => rejected += 1,
        }
    }
    Drained {
        rejected,
        healed,
        history,
        shapes,
        misestimates,
    }
}

/// Remember that `t`'s shape read the tables `relids` (for `ruvector_dag_reset(regclass)`): a
/// shape may have been read through several tables, or a table re-created; at most
/// [`MAX_SHAPES_PER_CYCLE`] shapes a cycle.
fn note_shape(shapes: &mut Vec<Shape>, t: &Trajectory, relids: Vec<u32>) {
    let room = shapes.len() < MAX_SHAPES_PER_CYCLE;
    match shapes.iter_mut().find(|s| s.fingerprint == t.fingerprint) {
        Some(s) => {
            for r in relids {
                if !s.relids.contains(&r) {
                    s.relids.push(r);
                }
            }
        }
        None if room => shapes.push(Shape {
            fingerprint: t.fingerprint,
            key: t.key.clone(),
            relids,
        }),
        None => {}
    }
}

/// Run one persisted cycle in the current transaction. `train`: the full cycle (the core's
/// `learn_cycle`: cost model, patterns; and the pattern table); without it, a light cycle that
/// only observes the waiting trajectories (measured evidence, budget, BTSP memory) and writes
/// the snapshot, so that new sessions see what the others measured within a second.
pub fn cycle(train: bool) -> Result<Outcome, String> {
    take_lock()?;
    let (stored_version, loaded) = load_unless(
        LEARNER.with(|l| l.borrow().as_ref().map(|l| l.version)),
        true,
    )?;
    if let Some((opt, holding)) = loaded {
        LEARNER.with(|l| {
            *l.borrow_mut() = Some(Learner {
                version: stored_version,
                opt,
                holding,
            })
        });
    }
    // A cached model that is not the table's version (written around the extension's
    // functions) is dropped: sessions read the table until the next write.
    if stored_version != 0 {
        let table = LEARNER.with(|l| l.borrow().as_ref().map_or(0, |l| l.holding.table));
        crate::model_cache::check(crate::database(), table, stored_version);
    }
    // If this transaction fails after the learner changed, start again from the table.
    register_xact_callback(PgXactCallbackEvent::Abort, || {
        LEARNER.with(|l| *l.borrow_mut() = None)
    });
    let db = crate::database();
    // The arm list changed since this learner loaded the state: arms appended are added (and
    // stored below, even when nothing else is new), any other change is refused.
    let names: Vec<String> = guc::arms()?.into_iter().map(|a| a.0).collect();
    let appended = LEARNER.with(|l| {
        let mut l = l.borrow_mut();
        let learner = l.as_mut().expect("loaded above");
        let before = learner.opt.arms().len();
        conform_arms(&mut learner.opt, &names).map(|added| added.then_some(before))
    })?;
    if let Some(before) = appended {
        log!(
            "ruvector_dag: {} arm(s) appended to ruvector.dag_arms added to the learned state (what was learned for the first {before} is kept)",
            names.len() - before
        );
    }
    // Verified statistics advice, created when the DBA allows repairs (never on a standby).
    if guc::HEALING_REPAIR.get() && !guc::standby() {
        crate::advice::apply_verified()?;
    }
    let records = shared::drain(db);
    let result = LEARNER.with(|l| {
        let mut l = l.borrow_mut();
        let learner = l.as_mut().expect("loaded above");
        let opt = &mut learner.opt;
        let kept = opt.retune(&guc::core_config()).map_err(|e| e.to_string())?;
        let drained = observe_records(db, opt, &mut learner.holding, &records);
        // The evidence as every backend sees it goes into the snapshot (a restart loses at
        // most one cycle of it).
        if let Some((shapes, budget)) = book::shapes(db, &mut learner.holding, opt.evidence()) {
            opt.evidence_mut().replace_all(shapes, &budget);
        }
        // Pending trajectories are written beside the snapshot: past a few hundred, train now
        // rather than write them every second.
        let train = train || opt.pending() >= LIGHT_CYCLE_MAX_PENDING;
        let report = if train {
            opt.learn_cycle().map_err(|e| e.to_string())?
        } else {
            CycleReport {
                patterns: opt.bank().patterns().len(),
                ..CycleReport::default()
            }
        };
        // Backends read the model only; the waiting trajectories go beside it.
        let snapshot = opt.snapshot_model().map_err(|e| e.to_string())?;
        let pending = opt.snapshot_pending().map_err(|e| e.to_string())?;
        let patterns: Option<Vec<PatternRow>> = train.then(|| pattern_rows(opt));
        Ok::<_, String>((
            report,
            drained,
            kept,
            snapshot,
            pending,
            patterns,
            train,
            learner.holding.table,
        ))
    })?;
    let (report, drained, kept, snapshot, pending, patterns, trained, table) = result;
    let Drained {
        rejected,
        healed,
        history,
        shapes,
        misestimates,
    } = drained;
    if records.is_empty() && report.trajectories == 0 && stored_version > 0 && appended.is_none() {
        // Nothing new: the stored state stands (no new version, no reload anywhere).
        return Ok(Outcome {
            report,
            drained: 0,
            rejected,
            version: stored_version,
            snapshot,
            healed,
            kept,
            table,
        });
    }
    let version = persist(
        &snapshot,
        pending.as_deref(),
        patterns.as_deref(),
        &healed,
        &history,
    )?;
    remember_shapes(&shapes)?;
    remember_misestimates(&misestimates)?;
    LEARNER.with(|l| {
        if let Some(l) = l.borrow_mut().as_mut() {
            l.version = version;
        }
    });
    // Backends reload the state only when the model changed: the evidence they decide on is
    // the shared book's, current without a reload (a light cycle only keeps it on disk).
    if trained || !book::in_use(db) {
        register_xact_callback(PgXactCallbackEvent::Commit, shared::bump_learned);
    }
    Ok(Outcome {
        report,
        drained: records.len(),
        rejected,
        version,
        snapshot,
        healed,
        kept,
        table,
    })
}

/// Forget the learner's optimizer in this process: the next cycle loads the stored state, as a
/// learner that just started does.
#[cfg(any(test, feature = "pg_test"))]
pub fn forget_loaded() {
    LEARNER.with(|l| *l.borrow_mut() = None);
}

/// Store `opt` as the learned state (import, reset): a new version, its patterns, and the
/// learner of this backend continues from it. Returns the new version.
pub fn replace(opt: &Optimizer) -> Result<i64, String> {
    take_lock()?;
    let snapshot = opt.snapshot_model().map_err(|e| e.to_string())?;
    let pending = opt.snapshot_pending().map_err(|e| e.to_string())?;
    let version = persist(
        &snapshot,
        pending.as_deref(),
        Some(&pattern_rows(opt)),
        &[],
        &[],
    )?;
    LEARNER.with(|l| *l.borrow_mut() = None);
    let db = crate::database();
    // The shared evidence book starts again from this version (seeded by the first copy
    // loaded from it); then every backend reloads.
    register_xact_callback(PgXactCallbackEvent::Commit, move || {
        book::clear(db, version);
        shared::bump_learned();
    });
    Ok(version)
}

/// Forget what was learned about the statements that read table `relid` (see
/// `Optimizer::forget`) and store the result as a new version. Returns what was forgotten, the
/// new version and the optimizer, or None when nothing was learned yet.
pub fn forget_table(
    relid: u32,
) -> Result<Option<(ruvector_dag_core::learning::Forgotten, i64, Optimizer)>, String> {
    take_lock()?;
    let (version, loaded) = load_unless(None, true)?;
    let Some((mut opt, mut holding)) = loaded.filter(|_| version != 0) else {
        return Ok(None);
    };
    // What every backend measured since the last cycle is in the shared book, not yet here.
    let db = crate::database();
    if let Some((shapes, budget)) = book::shapes(db, &mut holding, opt.evidence()) {
        opt.evidence_mut().replace_all(shapes, &budget);
    }
    let (fingerprints, keys) = shapes_of(relid)?;
    let gone = opt.forget(&fingerprints, &keys);
    let version = replace(&opt)?;
    drop_shapes(relid)?;
    Ok(Some((gone, version, opt)))
}

/// One row of `ruvector_dag.patterns` / `ruvector_dag_patterns()`.
#[derive(Debug, Clone)]
pub struct PatternRow {
    pub id: i64,
    pub members: i64,
    pub best_arm: Option<String>,
    pub confidence: f32,
    pub runs: i64,
    pub best_mean_ms: Option<f64>,
    pub default_mean_ms: Option<f64>,
}

/// The patterns of `opt`, most members first.
pub fn pattern_rows(opt: &Optimizer) -> Vec<PatternRow> {
    let mut rows: Vec<PatternRow> = opt
        .bank()
        .patterns()
        .iter()
        .map(|p| {
            let best = p.best_arm();
            let mean = |a: Option<u8>| {
                a.and_then(|a| p.arms.get(usize::from(a)))
                    .filter(|s| s.count > 0)
                    .map(|s| s.typical_ms())
            };
            PatternRow {
                id: p.id as i64,
                members: p.members as i64,
                best_arm: best.map(|a| opt.arms()[usize::from(a)].clone()),
                confidence: p.confidence(),
                runs: p.arms.iter().map(|s| i64::from(s.count)).sum(),
                best_mean_ms: mean(best),
                default_mean_ms: mean(Some(0)),
            }
        })
        .collect();
    rows.sort_by(|a, b| b.members.cmp(&a.members).then(a.id.cmp(&b.id)));
    rows
}

/// A query shape seen in a cycle and the enabled tables its statement read.
struct Shape {
    fingerprint: u64,
    key: Vec<f32>,
    relids: Vec<u32>,
}

/// Distinct shapes recorded per cycle (the rest wait for a later cycle).
const MAX_SHAPES_PER_CYCLE: usize = 1_000;
/// Rows of `ruvector_dag.shape_tables` kept (the least recently seen go first).
const SHAPES_KEPT: i64 = 20_000;

/// Record which enabled tables each shape reads, with the shape's key, so that
/// `ruvector_dag_reset(regclass)` can find what to forget.
/// Keep the misestimated scans drained in `ruvector_dag.statistics_advice`: per table and
/// column set, the runs, the query shapes (at most [`crate::advice::SHAPES_KEPT`]) and the worst
/// misestimate; the [`crate::advice::KEPT`] most recently seen column sets of tables that exist.
fn remember_misestimates(found: &[crate::advice::Misestimate]) -> Result<(), String> {
    if found.is_empty() {
        return Ok(());
    }
    Spi::connect_mut(|c| {
        for m in found {
            c.update(
                &format!(
                    "INSERT INTO ruvector_dag.statistics_advice AS a \
                       (relid, columns, runs, shapes, worst_factor, estimated_rows, actual_rows, \
                        before_ms, after_ms, after_cut, verified_at) \
                     VALUES ($1::regclass, $2, 1, ARRAY[$3::bigint], $4, $5, $6, $7, $8, $9, \
                             CASE WHEN $7 IS NULL THEN NULL ELSE now() END) \
                     ON CONFLICT (relid, columns) DO UPDATE SET \
                       runs = a.runs + CASE WHEN $7 IS NULL THEN 1 ELSE 0 END, \
                       before_ms = coalesce($7, a.before_ms), \
                       after_ms = coalesce($8, a.after_ms), \
                       after_cut = coalesce($9, a.after_cut), \
                       verified_at = CASE WHEN $7 IS NULL THEN a.verified_at ELSE now() END, \
                       shapes = CASE WHEN $3 = ANY (a.shapes) \
                                       OR cardinality(a.shapes) >= {kept} \
                                     THEN a.shapes ELSE a.shapes || $3 END, \
                       estimated_rows = CASE WHEN $4 > a.worst_factor THEN $5 \
                                             ELSE a.estimated_rows END, \
                       actual_rows = CASE WHEN $4 > a.worst_factor THEN $6 \
                                          ELSE a.actual_rows END, \
                       worst_factor = greatest(a.worst_factor, $4), last_seen = now()",
                    kept = crate::advice::SHAPES_KEPT
                ),
                None,
                &[
                    pg_sys::Oid::from(m.relid).into(),
                    m.columns.clone().into(),
                    (m.fingerprint as i64).into(),
                    m.factor().into(),
                    m.estimated.into(),
                    m.actual.into(),
                    m.verified.map(|v| v.before_ms).into(),
                    m.verified.map(|v| v.after_ms).into(),
                    m.verified.map(|v| v.cut).into(),
                ],
            )?;
        }
        keep_recent(
            c,
            "statistics_advice",
            "relid, columns",
            crate::advice::KEPT,
        )
    })
    .map_err(|e| format!("recording statistics advice: {e}"))
}

/// Of the rows of `table` (one of the extension's, with `relid` and `last_seen` columns, keyed
/// by `key`), drop those of tables dropped since and all but the `kept` most recently seen.
fn keep_recent(
    c: &mut pgrx::spi::SpiClient<'_>,
    table: &str,
    key: &str,
    kept: i64,
) -> Result<(), pgrx::spi::Error> {
    c.update(
        &format!(
            "DELETE FROM ruvector_dag.{table} t WHERE NOT EXISTS \
               (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.relid)"
        ),
        None,
        &[],
    )?;
    c.update(
        &format!(
            "DELETE FROM ruvector_dag.{table} WHERE ({key}) IN \
               (SELECT {key} FROM ruvector_dag.{table} ORDER BY last_seen DESC OFFSET {kept})"
        ),
        None,
        &[],
    )?;
    Ok(())
}

fn remember_shapes(shapes: &[Shape]) -> Result<(), String> {
    if shapes.is_empty() {
        return Ok(());
    }
    Spi::connect_mut(|c| {
        for s in shapes {
            for &relid in &s.relids {
                c.update(
                    "INSERT INTO ruvector_dag.shape_tables AS t (fingerprint, relid, key, last_seen) \
                     VALUES ($1, $2, $3, now()) \
                     ON CONFLICT (fingerprint, relid) DO UPDATE SET key = $3, last_seen = now()",
                    None,
                    &[
                        (s.fingerprint as i64).into(),
                        pg_sys::Oid::from(relid).into(),
                        s.key.clone().into(),
                    ],
                )?;
            }
        }
        // Tables dropped since: nothing left to reset for them.
        keep_recent(c, "shape_tables", "fingerprint, relid", SHAPES_KEPT)
    })
    .map_err(|e| format!("recording query shapes: {e}"))
}

/// The (fingerprint, key) of every recorded shape that reads `relid`.
pub fn shapes_of(relid: u32) -> Result<(Vec<u64>, Vec<Vec<f32>>), String> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT fingerprint, key FROM ruvector_dag.shape_tables WHERE relid = $1",
            None,
            &[pg_sys::Oid::from(relid).into()],
        )?;
        let (mut fps, mut keys) = (Vec::new(), Vec::new());
        for r in rows {
            fps.push(r.get::<i64>(1)?.unwrap_or(0) as u64);
            keys.push(r.get::<Vec<f32>>(2)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>((fps, keys))
    })
    .map_err(|e| format!("reading ruvector_dag.shape_tables: {e}"))
}

/// Forget the recorded shapes of `relid` (after `ruvector_dag_reset(regclass)`).
pub fn drop_shapes(relid: u32) -> Result<(), String> {
    Spi::connect_mut(|c| {
        c.update(
            "DELETE FROM ruvector_dag.shape_tables WHERE relid = $1",
            None,
            &[pg_sys::Oid::from(relid).into()],
        )?;
        Ok::<_, pgrx::spi::Error>(())
    })
    .map_err(|e| format!("writing ruvector_dag.shape_tables: {e}"))
}

/// One learned-from execution, kept in `ruvector_dag.trajectory_history` (numbers only).
struct History {
    fingerprint: u64,
    arm: String,
    actual_ms: f32,
    predicted_ms: f32,
    quality: f32,
    node_shares: Vec<f32>,
}

/// Rows of `trajectory_history` kept (the oldest go first).
const HISTORY_KEPT: i64 = 10_000;

/// Write a new version of the learned state (the model's snapshot, and the trajectories waiting
/// for training beside it); the pattern table too when `patterns` is given (full cycles,
/// import, reset).
fn persist(
    snapshot: &[u8],
    pending: Option<&[u8]>,
    patterns: Option<&[PatternRow]>,
    healed: &[Healing],
    history: &[History],
) -> Result<i64, String> {
    let drained = history.len() as i64;
    let arms = guc::arms()?
        .iter()
        .map(|a| a.0.clone())
        .collect::<Vec<_>>()
        .join("|");
    let db = crate::database();
    Spi::connect_mut(|c| {
        let row = c
            .update(
                "INSERT INTO ruvector_dag.learned_state AS s \
                   (id, version, snapshot, pending, arms, trajectories, cycles, updated_at) \
                 VALUES (1, 1, $1, $4, $2, $3, 1, now()) \
                 ON CONFLICT (id) DO UPDATE SET version = s.version + 1, snapshot = $1, \
                   pending = $4, arms = $2, trajectories = s.trajectories + $3, \
                   cycles = s.cycles + 1, updated_at = now() \
                 RETURNING version, tableoid",
                Some(1),
                &[snapshot.into(), arms.into(), drained.into(), pending.into()],
            )?
            .first();
        let version = row.get::<i64>(1)?.unwrap_or(0);
        let table = row.get::<pg_sys::Oid>(2)?.map_or(0, |o| o.to_u32());
        // Sessions load the model from shared memory once this commits.
        let model = snapshot.to_vec();
        register_xact_callback(PgXactCallbackEvent::Commit, move || {
            crate::model_cache::publish(db, table, version, &model)
        });
        if let Some(patterns) = patterns {
            c.update("DELETE FROM ruvector_dag.patterns", None, &[])?;
            // One statement for all patterns (there may be thousands each cycle).
            c.update(
                "INSERT INTO ruvector_dag.patterns \
               (id, members, best_arm, confidence, runs, best_mean_ms, default_mean_ms) \
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::real[], \
               $5::bigint[], $6::float8[], $7::float8[])",
                None,
                &[
                    patterns.iter().map(|p| p.id).collect::<Vec<_>>().into(),
                    patterns
                        .iter()
                        .map(|p| p.members)
                        .collect::<Vec<_>>()
                        .into(),
                    patterns
                        .iter()
                        .map(|p| p.best_arm.clone())
                        .collect::<Vec<_>>()
                        .into(),
                    patterns
                        .iter()
                        .map(|p| p.confidence)
                        .collect::<Vec<_>>()
                        .into(),
                    patterns.iter().map(|p| p.runs).collect::<Vec<_>>().into(),
                    patterns
                        .iter()
                        .map(|p| p.best_mean_ms)
                        .collect::<Vec<_>>()
                        .into(),
                    patterns
                        .iter()
                        .map(|p| p.default_mean_ms)
                        .collect::<Vec<_>>()
                        .into(),
                ],
            )?;
        }
        for h in healed {
            c.update(
                "INSERT INTO ruvector_dag.healing_log \
                   (fingerprint, pattern, arm, actual_ms, baseline_ms, action) \
                 VALUES ($1, $2, $3, $4, $5, $6)",
                None,
                &[
                    (h.fingerprint as i64).into(),
                    h.pattern.map(|p| p as i64).into(),
                    h.arm.clone().into(),
                    h.actual_ms.into(),
                    h.baseline_ms.into(),
                    h.action.into(),
                ],
            )?;
        }
        for h in history {
            c.update(
                "INSERT INTO ruvector_dag.trajectory_history \
                   (fingerprint, arm, actual_ms, predicted_ms, quality, timed_nodes, node_shares) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                None,
                &[
                    (h.fingerprint as i64).into(),
                    h.arm.clone().into(),
                    h.actual_ms.into(),
                    (h.predicted_ms.is_finite().then_some(h.predicted_ms)).into(),
                    h.quality.into(),
                    (h.node_shares.len() as i32).into(),
                    h.node_shares.clone().into(),
                ],
            )?;
        }
        if !history.is_empty() {
            c.update(
                &format!(
                    "DELETE FROM ruvector_dag.trajectory_history WHERE id <= \
                       (SELECT max(id) - {HISTORY_KEPT} FROM ruvector_dag.trajectory_history)"
                ),
                None,
                &[],
            )?;
        }
        if !healed.is_empty() {
            c.update(
                "DELETE FROM ruvector_dag.healing_log WHERE id <= \
                   (SELECT max(id) - 10000 FROM ruvector_dag.healing_log)",
                None,
                &[],
            )?;
        }
        Ok::<_, pgrx::spi::Error>(version)
    })
    .map_err(|e| format!("writing the learned state: {e}"))
}
