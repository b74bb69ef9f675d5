//! The planner, executor and EXPLAIN hooks, each chaining to whatever was installed before.
//! Installed only when the library is preloaded (`shared_preload_libraries`).
//!
//! - planner: for an in-scope statement (it reads a table enabled with
//!   `ruvector_enable_neural_dag`), plan it normally, turn the plan into the core's `PlanDag`,
//!   ask this backend's copy of the learned optimizer for an arm, and in `learn` / `frozen`
//!   mode plan again with the arm's settings at a new GUC nest level, restored before
//!   returning (on error too).
//! - ExecutorStart: in `observe` / `learn` mode, request per-node timing for sampled in-scope
//!   statements. ExecutorEnd: read the instrumentation into a trajectory (fingerprints and
//!   numbers only), push it to the shared ring for the learner, and observe it locally (so a
//!   regressing arm is blocked in this backend at once).
//! - ExplainOneQuery: EXPLAIN (text format) prints the decision and its reason.
//!
//! The backend's optimizer is loaded from `ruvector_dag.learned_state` and reloaded when the
//! shared version moves. Anything that goes wrong in the learning path is counted, logged once
//! per session, and the statement runs with the default plan.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use ruvector_dag_core::learning::{Candidate, Decision, NeuralDagConfig, Optimizer, Rule};

use crate::guc::{self, Mode};
use crate::plantree::{dag_from_plan, dag_with_actuals, measure};
use crate::{learner, shared};

/// Planned statements whose decision is remembered for the executor hooks.
const REMEMBERED: usize = 64;
/// Plan cache copies (prepared statements' generic plans, PL/pgSQL's plans) recognised by
/// fingerprint, kept by address while they are executed: the least recently executed is
/// forgotten first, so a statement planned once and run for hours stays observed however many
/// others are planned meanwhile.
const ADOPTED: usize = 256;

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXPLAIN: pg_sys::ExplainOneQuery_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What this backend counts (shown by `ruvector_dag_status()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub planned_in_scope: u64,
    pub applied: u64,
    pub observed: u64,
    pub timed_nodes: u64,
    pub pushed: u64,
    pub fallbacks: u64,
    pub reloads: u64,
    pub reverted: u64,
    /// Statements planned under every unblocked arm for their candidate plans.
    pub candidate_sets: u64,
    /// Plannings done for candidates, and the time they took (microseconds).
    pub candidate_plans: u64,
    pub candidate_us: u64,
    /// Statements whose decision could not use the attention plugin the selector may pick
    /// (it failed, or is not registered) and used the key's built-in kind.
    pub plugin_fallbacks: u64,
}

/// A planned statement the executor hooks should recognise.
#[derive(Clone)]
struct Planned {
    stmt: usize,
    tree: usize,
    /// [`plan_fingerprint`]: finds the plan again after the plan cache copied it.
    fingerprint: u64,
    /// None: the hook planned this in-scope statement without a decision (too cheap, or the
    /// learning path failed), so neither it nor a plan cache copy of it is observed.
    decision: Option<Rc<Decision>>,
    /// The enabled tables the statement reads (learned with the trajectory, for
    /// `ruvector_dag_reset(regclass)`).
    relids: Rc<Vec<u32>>,
    arm_ran: u8,
    /// Timed as a whole and observed.
    timed: bool,
    /// Executed with per-node timing too.
    node_timed: bool,
}

/// This backend's copy of the learned optimizer.
struct Loaded {
    opt: Optimizer,
    /// The shared learned version seen when it was (re)checked.
    seen: u64,
    /// The table version it was loaded from (0: nothing learned yet).
    version: i64,
    /// The arm list it was checked against.
    arms: String,
    /// The settings last applied with `retune`.
    config: NeuralDagConfig,
    /// Settings the learned state keeps as learned.
    kept: Vec<&'static str>,
}

struct Backend {
    loaded: Option<Loaded>,
    /// Why loading failed, for the shared version and arm list it failed at.
    failed: Option<(u64, String, String)>,
    planned: VecDeque<Planned>,
    /// Plan cache copies of remembered plans, by the copy's address; most recently executed
    /// last (see [`ADOPTED`]).
    adopted: VecDeque<Planned>,
    /// The last in-scope statement planned: (its `PlannedStmt` address, decision, arm that
    /// ran), for EXPLAIN.
    last_explained: Option<(usize, Rc<Decision>, u8)>,
    counters: Counters,
    last_error: Option<String>,
    logged_error: bool,
    plugin_error: Option<String>,
    logged_plugin_error: bool,
}

thread_local! {
    static BACKEND: RefCell<Backend> = const { RefCell::new(Backend {
        loaded: None,
        failed: None,
        planned: VecDeque::new(),
        adopted: VecDeque::new(),
        last_explained: None,
        counters: Counters { planned_in_scope: 0, applied: 0, observed: 0, timed_nodes: 0,
            pushed: 0, fallbacks: 0, reloads: 0, reverted: 0, candidate_sets: 0,
            candidate_plans: 0, candidate_us: 0, plugin_fallbacks: 0 },
        last_error: None,
        logged_error: false,
        plugin_error: None,
        logged_plugin_error: false,
    }) };
    /// Set while this extension itself is planning (scope lookups, re-planning): pass through.
    static BUSY: Cell<bool> = const { Cell::new(false) };
    /// What the planner hook did with the last statement it was asked about (for
    /// `ruvector_dag_compare_json`).
    static OUTCOME: RefCell<Option<Outcome>> = const { RefCell::new(None) };
    /// Relation OIDs enabled for learning, with the shared scope version they were read at.
    static ENABLED: RefCell<Option<(u64, HashSet<u32>)>> = const { RefCell::new(None) };
    /// Timed statements running, by QueryDesc address: start time, and whether per-node
    /// timing was asked for.
    static STARTED: RefCell<Vec<(usize, Instant, bool)>> = const { RefCell::new(Vec::new()) };
}

/// Install the hooks (from `_PG_init`, while preloading).
pub fn install() {
    // SAFETY: _PG_init runs once per process, single-threaded, before any query.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner_hook);
        PREV_EXPLAIN = pg_sys::ExplainOneQuery_hook;
        pg_sys::ExplainOneQuery_hook = Some(explain_hook);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start_hook);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end_hook);
    }
    #[cfg(feature = "pg18")]
    explain18::install();
    INSTALLED.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether the hooks are installed (the library was preloaded).
pub fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Acquire)
}

/// This backend's counters.
pub fn counters() -> Counters {
    BACKEND.with(|b| b.borrow().counters)
}

/// The last learning-path error of this backend, if any.
pub fn last_error() -> Option<String> {
    BACKEND.with(|b| b.borrow().last_error.clone())
}

/// A table was enabled (`true`) or disabled in this transaction: this backend sees it at
/// once; other backends after commit.
pub fn scope_changed(relid: u32, enabled: bool) {
    let mut set = enabled_tables();
    if enabled {
        set.insert(relid);
    } else {
        set.remove(&relid);
    }
    ENABLED.with(|e| *e.borrow_mut() = Some((shared::scope_version(), set)));
    register_xact_callback(PgXactCallbackEvent::Commit, shared::bump_scope);
    register_xact_callback(PgXactCallbackEvent::Abort, forget_enabled);
}

fn forget_enabled() {
    ENABLED.with(|e| *e.borrow_mut() = None);
}

/// Make sure this backend holds the current learned optimizer, tuned to the session's
/// settings. `Err` says why it cannot (the statement then keeps the default plan).
fn ready() -> Result<(), String> {
    let seen = shared::learned_version();
    let arms = guc::arms_shared()?.1;
    let state = BACKEND.with(|b| {
        let b = b.borrow();
        if let Some((v, a, e)) = &b.failed {
            if *v == seen && **a == *arms {
                return Some(Err(e.clone()));
            }
        }
        b.loaded
            .as_ref()
            .filter(|l| l.seen == seen && *l.arms == *arms)
            .map(|_| Ok(()))
    });
    let result = match state {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => Ok(()),
        None => reload(seen, &arms),
    };
    if let Err(e) = &result {
        BACKEND.with(|b| b.borrow_mut().failed = Some((seen, arms.to_string(), e.clone())));
        return result;
    }
    let config = guc::core_config();
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let l = b.loaded.as_mut().expect("loaded");
        if l.config != config {
            l.kept = l.opt.retune(&config).map_err(|e| e.to_string())?;
            l.config = config;
        }
        Ok(())
    })
}

fn reload(seen: u64, arms: &str) -> Result<(), String> {
    // SAFETY: reads a backend-local flag.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        return Err("no active snapshot to read ruvector_dag.learned_state with".into());
    }
    let _busy = Busy::enter();
    let (version, loaded) = crate::guarded(|| {
        learner::load_unless(|v| {
            BACKEND.with(|b| {
                b.borrow()
                    .loaded
                    .as_ref()
                    .is_some_and(|l| l.version == v && *l.arms == *arms)
            })
        })
    })?;
    if let Some(opt) = loaded {
        adopt(opt, version, seen);
    }
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.failed = None;
        if let Some(l) = b.loaded.as_mut() {
            l.seen = seen;
        }
    });
    Ok(())
}

/// Use `opt` (learned state of table version `version`) in this backend from now on (it keeps
/// the attention plugin the previous one had attached).
pub fn adopt(mut opt: Optimizer, version: i64, seen: u64) {
    let arms = opt.arms().join("|");
    let config = opt.config().clone();
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        if let Some(old) = b.loaded.as_mut() {
            opt.adopt_plugin(&mut old.opt);
        }
        b.counters.reloads += 1;
        b.failed = None;
        b.loaded = Some(Loaded {
            opt,
            seen,
            version,
            arms,
            config,
            kept: Vec::new(),
        });
    });
}

/// Run `f` on this backend's learned optimizer (loading it when needed).
pub fn with_optimizer<R>(f: impl FnOnce(&mut Optimizer) -> R) -> Result<R, String> {
    ready()?;
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        Ok(f(&mut b.loaded.as_mut().expect("ready").opt))
    })
}

/// Run `f` on this backend's optimizer as it is, without reloading (the executor hooks may run
/// without a snapshot, where reading tables is not possible). None when none is loaded.
fn with_loaded<R>(f: impl FnOnce(&mut Optimizer) -> R) -> Option<R> {
    BACKEND.with(|b| b.borrow_mut().loaded.as_mut().map(|l| f(&mut l.opt)))
}

/// What this backend's learned state holds (patterns, BTSP engrams, query shapes with
/// evidence) and the exploration budget, as status rows; None before it is loaded.
pub fn evidence_summary() -> Option<Vec<(&'static str, String)>> {
    with_loaded(|o| {
        let e = o.evidence();
        let margin = f64::from(o.config().min_gain);
        let (mut verified, mut trials) = (0, 0);
        for (_, s) in e.iter() {
            verified += usize::from(s.verified(margin).is_some());
            trials += usize::from(s.in_trial(margin).is_some());
        }
        vec![
            ("patterns", o.bank().patterns().len().to_string()),
            ("btsp_engrams", o.btsp().len().to_string()),
            (
                "capacities",
                format!(
                    "query_shapes {}, patterns {}, btsp_engrams {}",
                    o.config().max_trajectories,
                    o.config().pattern_capacity,
                    o.config().btsp_capacity
                ),
            ),
            ("query_shapes", e.len().to_string()),
            ("shapes_with_verified_plan", verified.to_string()),
            ("shapes_in_trial", trials.to_string()),
            ("plans_explored", e.explorations.to_string()),
            ("plans_refuted", e.refuted.to_string()),
            ("verified_plans_reverted", e.reverts.to_string()),
            ("exploration_budget_ms", format!("{:.1}", e.pool_ms)),
            ("exploration_spent_ms", format!("{:.1}", e.spent_ms)),
            ("verified_saved_ms", format!("{:.1}", e.saved_ms)),
        ]
    })
}

/// What this backend's learned state says of the attached plugin as an attention kind:
/// `N pulls, mean reward R (built-in kinds: ...)`; None when none is attached or loaded.
pub fn plugin_selector_stats() -> Option<String> {
    with_loaded(|o| {
        let id = o.plugin()?;
        let (pulls, sum) = o.plugin_arms().get(id);
        let mean = |n: u64, s: f64| if n > 0 { s / n as f64 } else { 0.0 };
        let builtin: u64 = ruvector_dag_core::AttentionKind::ALL
            .iter()
            .map(|&k| o.selector().pulls(k))
            .sum();
        Some(format!(
            "{pulls} pulls, mean reward {:.3} (built-in kinds: {builtin} pulls)",
            mean(pulls, sum)
        ))
    })
    .flatten()
}

/// (table version, settings kept as learned) of this backend's optimizer, once loaded.
pub fn loaded_info() -> Option<(i64, Vec<&'static str>)> {
    BACKEND.with(|b| {
        b.borrow()
            .loaded
            .as_ref()
            .map(|l| (l.version, l.kept.clone()))
    })
}

/// The last attention plugin failure of this backend's planner path, if any.
pub fn plugin_error() -> Option<String> {
    BACKEND.with(|b| b.borrow().plugin_error.clone())
}

/// The attention plugin could not serve a statement's decision: counted, logged once per
/// session; the decision used the key's built-in kind.
fn note_plugin_fallback(e: &str) {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.counters.plugin_fallbacks += 1;
        b.plugin_error = Some(e.to_string());
        if !b.logged_plugin_error {
            b.logged_plugin_error = true;
            log!("ruvector_dag: the attention plugin failed during planning, the built-in attention kind was used instead: {e} (logged once per session; the plugin is not used again in this session until it is registered again; see ruvector_dag_status())");
        }
    });
}

/// The plugin `ruvector.dag_attention_type` names, for the optimizer (None: none, or it cannot
/// serve; a new failure is reported here).
fn planner_plugin() -> Option<(
    ruvector_dag_core::PluginId,
    Box<dyn ruvector_dag_core::DagAttention + Send + Sync>,
)> {
    let guc::AttentionSetting::Plugin(name) = guc::attention_setting() else {
        return None;
    };
    // SAFETY: reads a backend-local flag. Without a snapshot the registry cannot be read.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        return None;
    }
    match crate::plugins::for_planner(&name) {
        crate::plugins::ForPlanner::Attach(id, m) => Some((id, m)),
        crate::plugins::ForPlanner::Failed(e) => {
            note_plugin_fallback(&e);
            None
        }
        crate::plugins::ForPlanner::Off => None,
    }
}

fn note_error(what: &str, e: &str) {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.counters.fallbacks += 1;
        b.last_error = Some(format!("{what}: {e}"));
        if !b.logged_error {
            b.logged_error = true;
            log!("ruvector_dag: {what} failed, using the default plan: {e} (logged once per session; see ruvector_dag_status())");
        }
    });
}

/// A PostgreSQL ERROR raised inside the learning path (say, SPI reading our own tables) is
/// passed on, not swallowed: PostgreSQL must abort the (sub)transaction itself. Only Rust
/// panics, which are bugs in pure code, become a fallback to the default plan.
fn rust_panics_only<T>(r: std::thread::Result<T>) -> std::thread::Result<T> {
    match r {
        Err(payload)
            if payload
                .downcast_ref::<pg_sys::panic::CaughtError>()
                .is_some() =>
        {
            std::panic::resume_unwind(payload)
        }
        other => other,
    }
}

/// What the planner hook did with a statement.
#[derive(Clone)]
enum Outcome {
    /// A decision, and the arm whose plan the statement got.
    Decided(Rc<Decision>, u8),
    /// No decision, and why.
    Passed(String),
}

fn passed(why: impl Into<String>) {
    OUTCOME.with(|o| *o.borrow_mut() = Some(Outcome::Passed(why.into())));
}

/// While it lives, this extension's own planning passes through the planner hook (nested
/// uses restore the outer state).
pub(crate) struct Busy(bool);
impl Busy {
    pub(crate) fn enter() -> Busy {
        Busy(BUSY.with(|b| b.replace(true)))
    }
}
impl Drop for Busy {
    fn drop(&mut self) {
        BUSY.with(|b| b.set(self.0));
    }
}

fn enabled_tables() -> HashSet<u32> {
    let version = shared::scope_version();
    if let Some(set) = ENABLED.with(|e| {
        e.borrow()
            .as_ref()
            .filter(|(v, _)| *v == version)
            .map(|(_, s)| s.clone())
    }) {
        return set;
    }
    // SAFETY: reads a backend-local flag.
    if !unsafe { pg_sys::ActiveSnapshotSet() } {
        // Reading needs a snapshot; keep what is known until the next statement that has one.
        return ENABLED.with(|e| {
            e.borrow()
                .as_ref()
                .map(|(_, s)| s.clone())
                .unwrap_or_default()
        });
    }
    let _busy = Busy::enter();
    let oids = crate::guarded(|| {
        Spi::connect(|c| {
            let rows = c.select(
                "SELECT relid::oid FROM ruvector_dag.enabled_tables",
                None,
                &[],
            )?;
            let mut out = HashSet::new();
            for row in rows {
                if let Some(oid) = row.get::<pg_sys::Oid>(1)? {
                    out.insert(oid.to_u32());
                }
            }
            Ok::<_, pgrx::spi::Error>(out)
        })
        .map_err(|e| e.to_string())
    });
    match oids {
        Ok(set) => {
            ENABLED.with(|e| *e.borrow_mut() = Some((version, set.clone())));
            set
        }
        Err(e) => {
            note_error("reading ruvector_dag.enabled_tables", &e);
            HashSet::new()
        }
    }
}

/// Whether the extension is installed in this database (its table exists).
fn extension_present() -> bool {
    // SAFETY: catalog lookup by name.
    unsafe {
        let ns = pg_sys::get_namespace_oid(c"ruvector_dag".as_ptr(), true);
        ns != pg_sys::InvalidOid
            && pg_sys::get_relname_relid(c"enabled_tables".as_ptr(), ns) != pg_sys::InvalidOid
    }
}

/// Relations a query reads, including subqueries and CTEs in its range table.
unsafe fn query_relations(q: *mut pg_sys::Query, out: &mut Vec<u32>, depth: usize) {
    if q.is_null() || depth > 64 {
        return;
    }
    for rte in list_ptrs::<pg_sys::RangeTblEntry>((*q).rtable) {
        if rte.is_null() {
            continue;
        }
        match (*rte).rtekind {
            pg_sys::RTEKind::RTE_RELATION => out.push((*rte).relid.to_u32()),
            pg_sys::RTEKind::RTE_SUBQUERY => query_relations((*rte).subquery, out, depth + 1),
            _ => {}
        }
    }
    for cte in list_ptrs::<pg_sys::CommonTableExpr>((*q).cteList) {
        if !cte.is_null() {
            query_relations((*cte).ctequery as *mut pg_sys::Query, out, depth + 1);
        }
    }
}

unsafe fn list_ptrs<T>(list: *mut pg_sys::List) -> Vec<*mut T> {
    if list.is_null() {
        return Vec::new();
    }
    (0..(*list).length as usize)
        .map(|i| (*(*list).elements.add(i)).ptr_value as *mut T)
        .collect()
}

/// What identifies a plan after `copyObject`: the plan cache (PREPARE / EXECUTE, the extended
/// protocol, PL/pgSQL) copies a plan into its own memory after the planner hook returned, so
/// the executor sees another address. The statement's kind and query id, the top plan node's
/// type, costs, rows and width, its inputs' types and costs, and the range table's relations.
unsafe fn plan_fingerprint(stmt: *mut pg_sys::PlannedStmt) -> u64 {
    let mut bytes: Vec<u8> = Vec::with_capacity(128);
    let mut put = |x: u64| bytes.extend_from_slice(&x.to_le_bytes());
    put((*stmt).commandType as u64);
    // uint64 before PostgreSQL 18, int64 from 18 on: its bits either way.
    put(u64::from_ne_bytes((*stmt).queryId.to_ne_bytes()));
    let mut nodes = vec![(*stmt).planTree];
    if !(*stmt).planTree.is_null() {
        nodes.push((*(*stmt).planTree).lefttree);
        nodes.push((*(*stmt).planTree).righttree);
    }
    for p in nodes {
        if p.is_null() {
            put(0);
            continue;
        }
        put((*p).type_ as u64);
        put((*p).startup_cost.to_bits());
        put((*p).total_cost.to_bits());
        put((*p).plan_rows.to_bits());
        put((*p).plan_width as u64);
    }
    for rte in list_ptrs::<pg_sys::RangeTblEntry>((*stmt).rtable) {
        if !rte.is_null() {
            put((*rte).rtekind as u64);
            put(u64::from((*rte).relid.to_u32()));
        }
    }
    ruvector_dag_core::rng::fnv1a64(&bytes).max(1)
}

/// The enabled tables `parse` reads (none: the statement is out of scope).
unsafe fn in_scope(parse: *mut pg_sys::Query) -> Vec<u32> {
    if (*parse).commandType == pg_sys::CmdType::CMD_UTILITY || !extension_present() {
        return Vec::new();
    }
    let mut rels = Vec::new();
    query_relations(parse, &mut rels, 0);
    if rels.is_empty() {
        return rels;
    }
    // The common case, a current cache, without copying the set.
    let version = shared::scope_version();
    let cached = ENABLED.with(|e| match e.borrow().as_ref() {
        Some((v, set)) if *v == version => {
            rels.retain(|r| set.contains(r));
            true
        }
        _ => false,
    });
    if !cached {
        let enabled = enabled_tables();
        rels.retain(|r| enabled.contains(r));
    }
    rels.sort_unstable();
    rels.dedup();
    rels
}

unsafe fn call_planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    let planned = match PREV_PLANNER {
        // Another extension's hook is C: an ERROR in it must unwind through our frames as a
        // Rust panic (pgrx's FFI guard), not longjmp over them.
        Some(prev) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev(parse, query_string, cursor_options, params))
        }
        None => pg_sys::standard_planner(parse, query_string, cursor_options, params),
    };
    // A plan now at this address means any plan remembered there was freed: forget it, or the
    // executor hooks would take this statement for that one.
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.planned.retain(|p| p.stmt != planned as usize);
        b.adopted.retain(|p| p.stmt != planned as usize);
    });
    planned
}

/// Plan with the arm's settings at a new GUC nest level, restored on success and on error.
/// `Err` names a setting PostgreSQL refused (unknown, bad value, not settable by this user):
/// then nothing is planned and the caller keeps the default plan.
unsafe fn plan_with_arm(
    settings: &[(String, String)],
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> Result<*mut pg_sys::PlannedStmt, String> {
    under_arm(settings, || {
        call_planner(parse, query_string, cursor_options, params)
    })
}

/// Run `f` with an arm's settings at a new GUC nest level, restored on success and on error.
/// `Err` names a setting PostgreSQL refused (unknown, bad value, not settable by this user);
/// then `f` is not run.
fn under_arm<R>(settings: &[(String, String)], f: impl FnOnce() -> R) -> Result<R, String> {
    // SAFETY: a GUC nest level opened here and closed on every path (finally).
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        PgTryBuilder::new(AssertUnwindSafe(|| {
            for (k, v) in settings {
                let (ck, cv) = (
                    CString::new(k.as_str()).unwrap_or_default(),
                    CString::new(v.as_str()).unwrap_or_default(),
                );
                // Reported at DEBUG1 only: a refused setting is our fallback, not the user's
                // error.
                let ok = pg_sys::set_config_option(
                    ck.as_ptr(),
                    cv.as_ptr(),
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucSource::PGC_S_SESSION,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                    true,
                    pg_sys::DEBUG1 as i32,
                    false,
                );
                if ok <= 0 {
                    return Err(format!(
                        "PostgreSQL refused the arm's setting {k} = '{v}' (unknown, bad value, or not settable by this user)"
                    ));
                }
            }
            Ok(f())
        }))
        .finally(|| pg_sys::AtEOXact_GUC(true, nest))
        .execute()
    }
}

fn remember(
    stmt: *mut pg_sys::PlannedStmt,
    decision: Decision,
    relids: Vec<u32>,
    arm_ran: u8,
    timed: bool,
) {
    // Per-node timing costs the statement a clock read per row per node: sampled, and never
    // on a run that explores or trials a plan (its time is evidence, and must be the plan's).
    let node_timed = timed
        && !matches!(decision.rule, Rule::Explore | Rule::Trial)
        && sampled(guc::NODE_TIMING_RATE.get());
    let decision = Rc::new(decision);
    let planned = Planned {
        stmt: stmt as usize,
        tree: 0,
        fingerprint: 0,
        decision: Some(Rc::clone(&decision)),
        relids: Rc::new(relids),
        arm_ran,
        timed,
        node_timed,
    };
    push_planned(stmt, planned);
    BACKEND.with(|b| {
        b.borrow_mut().last_explained = Some((stmt as usize, Rc::clone(&decision), arm_ran))
    });
    OUTCOME.with(|o| *o.borrow_mut() = Some(Outcome::Decided(decision, arm_ran)));
}

/// Remember `p` for the executor hooks (the oldest of [`REMEMBERED`] is forgotten), with the
/// plan tree's address and [`plan_fingerprint`] of `stmt`.
fn push_planned(stmt: *mut pg_sys::PlannedStmt, mut p: Planned) {
    // SAFETY: stmt is the planner's result, valid here.
    (p.tree, p.fingerprint) = unsafe { ((*stmt).planTree as usize, plan_fingerprint(stmt)) };
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        if b.planned.len() == REMEMBERED {
            b.planned.pop_front();
        }
        b.planned.push_back(p);
    });
}

/// An in-scope statement planned without a decision: remembered as such, so that the
/// executor does not take it (or the plan cache's copy of it) for an earlier statement of the
/// same shape that had one. `why` is what `ruvector_dag_compare_json` reports.
fn pass_in_scope(stmt: *mut pg_sys::PlannedStmt, why: String) {
    passed(why);
    let planned = Planned {
        stmt: stmt as usize,
        tree: 0,
        fingerprint: 0,
        decision: None,
        relids: Rc::new(Vec::new()),
        arm_ran: 0,
        timed: false,
        node_timed: false,
    };
    push_planned(stmt, planned);
}

#[pg_guard]
unsafe extern "C-unwind" fn planner_hook(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    let mode = guc::mode();
    if BUSY.with(|b| b.get()) {
        return call_planner(parse, query_string, cursor_options, params);
    }
    if mode == Mode::Off || !guc::NEURAL_DAG_ENABLED.get() {
        passed(if mode == Mode::Off {
            "ruvector.dag_mode is off"
        } else {
            "ruvector.neural_dag_enabled is off"
        });
        return call_planner(parse, query_string, cursor_options, params);
    }
    if !pg_sys::IsTransactionState()
        // Inside a parallel operation (a function run by a parallel worker) nothing may be
        // read or started: pass through.
        || pg_sys::IsInParallelMode()
        || parse.is_null()
    {
        return call_planner(parse, query_string, cursor_options, params);
    }
    let relids = in_scope(parse);
    if relids.is_empty() {
        passed("no table the query reads is enabled (ruvector_enable_neural_dag)");
        return call_planner(parse, query_string, cursor_options, params);
    }
    // The planner scribbles on its Query: keep a pristine copy for planning again under an arm
    // (only modes that apply arms need one).
    let may_apply = matches!(mode, Mode::Learn | Mode::Frozen);
    let pristine = if may_apply {
        pg_sys::copyObjectImpl(parse as *const std::ffi::c_void) as *mut pg_sys::Query
    } else {
        std::ptr::null_mut()
    };
    let default = call_planner(parse, query_string, cursor_options, params);
    // Statements this cheap are never re-planned, so there is nothing to decide or learn.
    let cost = (*(*default).planTree).total_cost;
    if cost < guc::REPLAN_MIN_COST.get() {
        pass_in_scope(
            default,
            format!(
                "the default plan's cost ({cost:.1}) is below ruvector.dag_replan_min_cost ({})",
                guc::REPLAN_MIN_COST.get()
            ),
        );
        return default;
    }
    let dag = match dag_from_plan(default) {
        Ok(d) => d,
        Err(e) => {
            note_error("reading the plan", &e);
            pass_in_scope(default, format!("reading the plan failed: {e}"));
            return default;
        }
    };
    let plugin = planner_plugin();
    // The learning path is pure Rust: a panic there is a bug, and it must not fail the query.
    let decided = rust_panics_only(catch_unwind(AssertUnwindSafe(|| {
        with_optimizer(|o| {
            o.set_plugin(plugin);
            o.decide(&dag)
        })
    })));
    let decision = match decided {
        Ok(Ok(Ok(d))) => d,
        Ok(Ok(Err(e))) => {
            note_error("decide", &e.to_string());
            pass_in_scope(default, format!("deciding failed: {e}"));
            return default;
        }
        Ok(Err(e)) => {
            note_error("loading the learned state", &e);
            pass_in_scope(default, format!("loading the learned state failed: {e}"));
            return default;
        }
        Err(_) => {
            note_error("decide", "internal panic");
            pass_in_scope(default, "deciding failed: internal panic".into());
            return default;
        }
    };
    BACKEND.with(|b| b.borrow_mut().counters.planned_in_scope += 1);
    // A plugin failure (on this plan, a reference plan, or an executed plan before) is
    // reported once; the plugin is not used again in this session.
    let unreported = crate::plugins::unreported_failure();
    if let Some(e) = decision.plugin_error.as_ref().or(unreported.as_ref()) {
        note_plugin_fallback(e);
    }
    let record = guc::records();
    let timed = record && sampled(guc::SAMPLE_RATE.get());
    let mut decision = decision;
    // Exploration due (learn mode only): plan under every unblocked arm and let the optimizer
    // pick among the distinct plans; the chosen arm's plan is used as it is.
    let mut candidates: Vec<(u8, *mut pg_sys::PlannedStmt)> = Vec::new();
    if mode == Mode::Learn && decision.wants_candidates && !pristine.is_null() {
        candidates = plan_candidates(
            &mut decision,
            pristine,
            query_string,
            cursor_options,
            params,
        );
    }
    let apply = may_apply && !pristine.is_null() && decision.arm != 0;
    if !apply {
        remember(default, decision, relids, 0, timed);
        return default;
    }
    let arm = decision.arm;
    // A candidate's plan was hashed when it was planned (`choose` set decision.plan to it).
    let replanned = !candidates.iter().any(|(a, _)| *a == arm);
    let chosen = match candidates.iter().find(|(a, _)| *a == arm) {
        Some(&(_, planned)) => Ok(planned),
        None => {
            let settings = guc::arms_shared()
                .ok()
                .and_then(|(a, _)| a.get(usize::from(arm)).map(|x| x.1.clone()))
                .unwrap_or_default();
            let _busy = Busy::enter();
            // An ERROR while planning under the arm (say, a function folded at plan time that
            // fails under its settings) is rolled back and the statement keeps the default plan.
            crate::guarded(|| {
                plan_with_arm(&settings, pristine, query_string, cursor_options, params)
            })
        }
    };
    let chosen = match chosen {
        Ok(c) => c,
        Err(e) => {
            note_error("applying an arm", &e);
            pass_in_scope(default, format!("applying arm {arm} failed: {e}"));
            return default;
        }
    };
    BACKEND.with(|b| b.borrow_mut().counters.applied += 1);
    // Re-planned under the arm: the plan it really gave this time (its constants may differ
    // from the run that recorded the candidate) is what its runs are evidence for.
    if replanned {
        if let Ok(dag) = dag_from_plan(chosen) {
            decision.plan = dag.shape_hash();
        }
    }
    remember(chosen, decision, relids, arm, timed);
    chosen
}

/// PostgreSQL adds `disable_cost` (1.0e10) to the cost of every path of a disabled kind it
/// could not avoid; the plan's own cost is what remains.
const DISABLE_COST: f64 = 1.0e10;

fn own_cost(total: f64) -> f64 {
    if total >= DISABLE_COST {
        total % DISABLE_COST
    } else {
        total
    }
}

/// Plan a copy of `pristine` under every arm the decision does not block, hand the plans to
/// [`Optimizer::choose`], and return them by arm (so the chosen one needs no planning again).
/// An arm PostgreSQL refuses is left out; a failure of the learning path leaves the decision
/// at the default plan.
unsafe fn plan_candidates(
    decision: &mut Decision,
    pristine: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> Vec<(u8, *mut pg_sys::PlannedStmt)> {
    let t0 = Instant::now();
    let Ok((arms, _)) = guc::arms_shared() else {
        return Vec::new();
    };
    let mut planned = Vec::new();
    let mut cands = Vec::new();
    for (i, (_, settings)) in arms.iter().enumerate().skip(1) {
        let arm = i as u8;
        if decision.blocked.contains(&arm) {
            continue;
        }
        let copy =
            pg_sys::copyObjectImpl(pristine as *const std::ffi::c_void) as *mut pg_sys::Query;
        let result = {
            let _busy = Busy::enter();
            crate::guarded(|| plan_with_arm(settings, copy, query_string, cursor_options, params))
        };
        let stmt = match result {
            Ok(p) => p,
            Err(e) => {
                note_error("planning a candidate", &e);
                continue;
            }
        };
        match dag_from_plan(stmt) {
            Ok(dag) => {
                cands.push(Candidate {
                    arm,
                    plan: dag.shape_hash(),
                    cost: own_cost((*(*stmt).planTree).total_cost),
                });
                planned.push((arm, stmt));
            }
            Err(e) => note_error("reading a candidate plan", &e),
        }
    }
    let chosen = rust_panics_only(catch_unwind(AssertUnwindSafe(|| {
        with_loaded(|o| o.choose(decision, &cands))
    })));
    match chosen {
        Ok(Some(Ok(()))) => {}
        Ok(Some(Err(e))) => note_error("choose", &e.to_string()),
        Ok(None) => {}
        Err(_) => note_error("choose", "internal panic"),
    }
    let us = t0.elapsed().as_micros() as u64;
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.counters.candidate_sets += 1;
        b.counters.candidate_plans += planned.len() as u64;
        b.counters.candidate_us += us;
    });
    planned
}

fn sampled(rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    // SAFETY: PostgreSQL's per-backend PRNG.
    let r = unsafe { pg_sys::pg_prng_double(std::ptr::addr_of_mut!(pg_sys::pg_global_prng_state)) };
    r < rate
}

/// What the planner hook remembered of the statement: (decision, tables, arm ran, timed,
/// node-timed).
type Remembered = (Rc<Decision>, Rc<Vec<u32>>, u8, bool, bool);

/// The remembered decision for the statement `query_desc` executes: the plan the hook
/// returned (by address), or a plan cache copy of one (by [`plan_fingerprint`], the most
/// recent planning of that shape; then kept by the copy's address, see [`ADOPTED`]). The flag
/// says it is a copy.
fn planned_for(query_desc: *mut pg_sys::QueryDesc) -> Option<(Remembered, bool)> {
    // SAFETY: the executor passes a valid QueryDesc.
    let s = unsafe { (*query_desc).plannedstmt };
    if s.is_null() {
        return None;
    }
    // SAFETY: a valid PlannedStmt.
    let (stmt, tree) = (s as usize, unsafe { (*s).planTree } as usize);
    let same = |p: &Planned| p.stmt == stmt && p.tree == tree;
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let b = &mut *b;
        let (found, copy) = if let Some(p) = b.planned.iter().rev().find(|p| same(p)) {
            (p.clone(), false)
        } else {
            if b.planned.is_empty() && b.adopted.is_empty() {
                return None;
            }
            // SAFETY: as above.
            let fingerprint = unsafe { plan_fingerprint(s) };
            // A copy seen before, unless its memory now holds another plan.
            if let Some(i) = b
                .adopted
                .iter()
                .position(|p| same(p) && p.fingerprint == fingerprint)
            {
                let p = b.adopted.remove(i)?;
                b.adopted.push_back(p.clone());
                (p, true)
            } else {
                b.adopted.retain(|p| !same(p));
                let mut p = b
                    .planned
                    .iter()
                    .rev()
                    .find(|p| p.fingerprint == fingerprint)?
                    .clone();
                (p.stmt, p.tree) = (stmt, tree);
                if b.adopted.len() == ADOPTED {
                    b.adopted.pop_front();
                }
                b.adopted.push_back(p.clone());
                (p, true)
            }
        };
        Some((
            (
                Rc::clone(found.decision.as_ref()?),
                Rc::clone(&found.relids),
                found.arm_ran,
                found.timed,
                found.node_timed,
            ),
            copy,
        ))
    })
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_start_hook(query_desc: *mut pg_sys::QueryDesc, eflags: i32) {
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    let (timed, node_timed) = match planned_for(query_desc) {
        // node_timed implies timed (see `remember`). A plan cache copy runs many times: its
        // per-node timing is sampled again on each run.
        Some(((d, _, _, timed, node_timed), copy)) if !explain_only && !query_desc.is_null() => {
            let node_timed = if copy {
                timed
                    && !matches!(d.rule, Rule::Explore | Rule::Trial)
                    && sampled(guc::NODE_TIMING_RATE.get())
            } else {
                node_timed
            };
            (timed, node_timed)
        }
        _ => (false, false),
    };
    if node_timed {
        // Per-node timing, only for this statement.
        (*query_desc).instrument_options |= (pg_sys::InstrumentOption::INSTRUMENT_TIMER
            | pg_sys::InstrumentOption::INSTRUMENT_ROWS)
            as i32;
    }
    match PREV_EXECUTOR_START {
        Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc, eflags)),
        None => pg_sys::standard_ExecutorStart(query_desc, eflags),
    }
    if timed {
        STARTED.with(|s| {
            let mut s = s.borrow_mut();
            // A statement that failed never reached ExecutorEnd: its entry is stale, and its
            // address may be this one's.
            s.retain(|(q, t, _)| *q != query_desc as usize && t.elapsed().as_secs() < 3600);
            s.push((query_desc as usize, Instant::now(), node_timed));
        });
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn executor_end_hook(query_desc: *mut pg_sys::QueryDesc) {
    let started = STARTED.with(|s| {
        let mut s = s.borrow_mut();
        let i = s.iter().position(|(q, _, _)| *q == query_desc as usize)?;
        let (_, t0, node_timed) = s.swap_remove(i);
        Some((t0, node_timed))
    });
    if let (Some((t0, node_timed)), Some(((decision, relids, arm_ran, _, _), _))) =
        (started, planned_for(query_desc))
    {
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        // Without per-node timing the executed plan is the planned one: nothing to read.
        let executed = if node_timed {
            dag_with_actuals((*query_desc).plannedstmt, &measure(query_desc)).ok()
        } else {
            None
        };
        observe(
            &decision,
            &relids,
            arm_ran,
            executed.as_ref(),
            ms.max(1e-3) as f32,
        );
    }
    match PREV_EXECUTOR_END {
        Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc)),
        None => pg_sys::standard_ExecutorEnd(query_desc),
    }
}

fn observe(
    decision: &Decision,
    relids: &[u32],
    arm_ran: u8,
    executed: Option<&ruvector_dag_core::PlanDag>,
    ms: f32,
) {
    // SAFETY: reading the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let result = rust_panics_only(catch_unwind(AssertUnwindSafe(|| {
        with_loaded(|o| {
            let t = o.trajectory(decision, arm_ran, executed, ms)?;
            let timed_nodes = t.op_shares.len();
            let bytes = postcard::to_allocvec(&(&t, relids)).map_err(|e| {
                ruvector_dag_core::NeuralDagError::InvalidTrajectory(format!("encoding: {e}"))
            })?;
            // The learner queues it for its cycles; this copy only learns from it at once.
            let observed = o.observe_unqueued(t)?;
            Ok::<_, ruvector_dag_core::NeuralDagError>((bytes, timed_nodes, observed))
        })
    })));
    match result {
        Ok(Some(Ok((bytes, timed_nodes, observed)))) => {
            let pushed = shared::push(db, &bytes).is_ok();
            let reverted = observed.regression;
            BACKEND.with(|b| {
                let mut b = b.borrow_mut();
                b.counters.observed += 1;
                b.counters.timed_nodes += timed_nodes as u64;
                b.counters.pushed += u64::from(pushed);
                b.counters.reverted += u64::from(reverted);
            });
            if reverted {
                log!(
                    "ruvector_dag: arm {arm_ran} ran {ms:.1} ms against {:.1} ms for the default plan; back to the default plan for this query shape",
                    observed.baseline_ms.unwrap_or(0.0)
                );
            }
        }
        Ok(Some(Err(e))) => note_error("observe", &e.to_string()),
        // Nothing loaded (the state was forgotten since planning): nothing to observe with.
        Ok(None) => {}
        Err(_) => note_error("observe", "internal panic"),
    }
}

fn append(es: *mut pg_sys::ExplainState, line: &str) {
    let text = CString::new(line.replace('\0', " ")).unwrap_or_default();
    // SAFETY: es->str is the EXPLAIN output buffer.
    unsafe { pg_sys::appendStringInfoString((*es).str_, text.as_ptr()) };
}

#[pg_guard]
unsafe extern "C-unwind" fn explain_hook(
    query: *mut pg_sys::Query,
    cursor_options: i32,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    BACKEND.with(|b| b.borrow_mut().last_explained = None);
    #[cfg(feature = "pg18")]
    explain18::forget_weights();
    if let Some(prev) = PREV_EXPLAIN {
        pg_sys::ffi::pg_guard_ffi_boundary(|| {
            prev(
                query,
                cursor_options,
                into,
                es,
                query_string,
                params,
                query_env,
            )
        });
    } else {
        crate::compat::standard_explain_one_query(
            query,
            cursor_options,
            into,
            es,
            query_string,
            params,
            query_env,
        );
    }
    if crate::compat::STRUCTURED_EXPLAIN {
        // PostgreSQL 18 printed it from explain_per_plan_hook, in every format.
        return;
    }
    let Some((_, d, arm_ran)) = BACKEND.with(|b| b.borrow_mut().last_explained.take()) else {
        return;
    };
    if (*es).format != pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT {
        return;
    }
    for line in Shown::of(&d, arm_ran).text() {
        append(es, &line);
    }
}

/// `ruvector_dag_compare_json`: the default plan of `query`, the plan the extension gives it
/// and the decision between them (see the function's documentation in analyze.rs).
pub(crate) fn compare(query: &str) -> serde_json::Value {
    let parse = |what: &str, text: &str| {
        serde_json::from_str::<serde_json::Value>(text).unwrap_or_else(|e| {
            crate::fail(
                PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                format!("ruvector_dag: EXPLAIN of the {what} plan is not JSON: {e}"),
            )
        })
    };
    // PostgreSQL's own plan: the planner hook passes through.
    let default = {
        let _busy = Busy::enter();
        parse("default", &crate::plan::explain_json(query))
    };
    // The plan this session gets: planned through the hook, as EXPLAIN and the query itself are.
    OUTCOME.with(|o| *o.borrow_mut() = None);
    let hooked = parse("extension's", &crate::plan::explain_json(query));
    let outcome = OUTCOME.with(|o| o.borrow_mut().take());
    let mode = guc::mode().name();
    let (decision, learned, note) = match outcome {
        Some(Outcome::Decided(d, arm_ran)) => {
            let shown = Shown::of(&d, arm_ran);
            let settings: Vec<(String, String)> = guc::arms_shared()
                .ok()
                .and_then(|(a, _)| a.get(usize::from(d.arm)).map(|x| x.1.clone()))
                .unwrap_or_default();
            let (learned, note) = if d.arm == arm_ran {
                (hooked, None)
            } else {
                // Advice only (observe mode): what the arm would have given.
                match explain_under(&settings, query) {
                    Ok(text) => (
                        parse("arm's", &text),
                        Some(format!(
                            "mode {mode}: the arm was not applied; its plan is shown as it would be"
                        )),
                    ),
                    Err(e) => (hooked, Some(e)),
                }
            };
            let decision = serde_json::json!({
                "arm": shown.arm,
                "applied": shown.applied,
                "rule": shown.rule,
                "pattern": shown.pattern,
                "similarity": shown.similarity,
                "confidence": shown.confidence,
                "attention": shown.attention,
                "predicted_ms": shown.predicted_ms,
                "reason": shown.reason,
                "arm_index": d.arm,
                "settings": settings.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>(),
                "mode": mode,
            });
            (decision, learned, note)
        }
        Some(Outcome::Passed(why)) => (serde_json::Value::Null, hooked, Some(why)),
        None => (
            serde_json::Value::Null,
            hooked,
            Some("the planner hook did not see the query (ruvector_dag is not preloaded)".into()),
        ),
    };
    serde_json::json!({
        "format": "ruvector_dag/compare/1",
        "mode": mode,
        "decision": decision,
        "note": note,
        "default": default,
        "learned": learned,
    })
}

/// EXPLAIN (FORMAT JSON) of `query` under `settings` (set at a new GUC nest level, restored
/// on success and on error), the planner hook passing through. `Err` names a setting
/// PostgreSQL refused.
fn explain_under(settings: &[(String, String)], query: &str) -> Result<String, String> {
    let _busy = Busy::enter();
    under_arm(settings, || crate::plan::explain_json(query))
        .map_err(|e| format!("{e}; the plan shown is the session's"))
}

/// A decision as EXPLAIN shows it.
struct Shown {
    arm: String,
    applied: String,
    rule: &'static str,
    pattern: String,
    similarity: f32,
    confidence: f32,
    attention: String,
    predicted_ms: f32,
    reason: String,
}

impl Shown {
    fn of(d: &Decision, arm_ran: u8) -> Shown {
        // The parsed arm list is shared (parsed once per setting text), not copied.
        let arm = guc::arms_shared()
            .ok()
            .and_then(|(arms, _)| arms.get(usize::from(d.arm)).map(|x| x.0.clone()))
            .unwrap_or_else(|| format!("arm {}", d.arm));
        let applied = if d.arm == 0 {
            "the default plan".to_string()
        } else if arm_ran == d.arm {
            "applied".to_string()
        } else {
            format!("advice only, mode {}", guc::mode().name())
        };
        let attention = match d.attention {
            ruvector_dag_core::AttentionKind::Plugin(id) => format!(
                "{}{}",
                crate::plugins::PREFIX,
                crate::plugins::planner_name(id).unwrap_or_else(|| id.to_string())
            ),
            k => k.name().to_string(),
        };
        Shown {
            arm,
            applied,
            rule: d.rule.name(),
            pattern: d
                .pattern
                .map_or_else(|| "none".to_string(), |p| p.to_string()),
            similarity: d.similarity,
            confidence: d.confidence,
            attention,
            predicted_ms: d.predicted_ms,
            reason: d.reason.clone(),
        }
    }

    /// The two lines of the text format.
    fn text(&self) -> [String; 2] {
        [
            format!(
                "ruvector_dag: arm '{}' ({}; rule {}), pattern {}, similarity {:.3}, confidence {:.3}, attention {}, predicted {:.3} ms\n",
                self.arm,
                self.applied,
                self.rule,
                self.pattern,
                self.similarity,
                self.confidence,
                self.attention,
                self.predicted_ms
            ),
            format!("ruvector_dag reason: {}\n", self.reason),
        ]
    }
}

/// PostgreSQL 18's EXPLAIN extension points: the decision as a `ruvector_dag` group in every
/// format (`explain_per_plan_hook`), each operator's attention weight on request
/// (`explain_per_node_hook`), and the EXPLAIN options `ruvector_dag` (default on; off hides
/// the decision) and `ruvector_dag_weights` (default off).
#[cfg(feature = "pg18")]
pub mod explain18 {
    use super::*;
    use std::ffi::CStr;

    static mut PREV_PER_PLAN: pg_sys::explain_per_plan_hook_type = None;
    static mut PREV_PER_NODE: pg_sys::explain_per_node_hook_type = None;
    static mut EXTENSION_ID: i32 = -1;

    /// The EXPLAIN being printed (its `ExplainState` and `PlannedStmt` addresses) and its
    /// operators' weights by `Plan` address (for `ruvector_dag_weights`).
    type Weights = ((usize, usize), std::collections::HashMap<usize, f64>);

    thread_local! {
        static WEIGHTS: RefCell<Option<Weights>> = const { RefCell::new(None) };
    }

    /// Forget the weights of an EXPLAIN (also when one ended in an error before its per-plan
    /// hook ran: the next EXPLAIN must not reuse them).
    pub fn forget_weights() {
        WEIGHTS.with(|w| *w.borrow_mut() = None);
    }

    /// The options of one EXPLAIN, kept in its `ExplainState`.
    #[repr(C)]
    struct Options {
        hide: bool,
        weights: bool,
    }

    /// Register the EXPLAIN options (from `_PG_init`, preloaded or not, so that statements
    /// naming them parse either way).
    pub fn register_options() {
        // SAFETY: backend-local registrations, made once while loading the library.
        unsafe {
            EXTENSION_ID = pg_sys::GetExplainExtensionId(c"ruvector_dag".as_ptr());
            pg_sys::RegisterExtensionExplainOption(c"ruvector_dag".as_ptr(), Some(option));
            pg_sys::RegisterExtensionExplainOption(c"ruvector_dag_weights".as_ptr(), Some(option));
        }
    }

    /// Install the per-plan and per-node hooks (from `hooks::install`).
    pub fn install() {
        // SAFETY: _PG_init runs once per process, before any query.
        unsafe {
            PREV_PER_PLAN = pg_sys::explain_per_plan_hook;
            pg_sys::explain_per_plan_hook = Some(per_plan);
            PREV_PER_NODE = pg_sys::explain_per_node_hook;
            pg_sys::explain_per_node_hook = Some(per_node);
        }
    }

    unsafe fn options(es: *mut pg_sys::ExplainState) -> Option<&'static Options> {
        if EXTENSION_ID < 0 {
            return None;
        }
        (pg_sys::GetExplainExtensionState(es, EXTENSION_ID) as *const Options).as_ref()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn option(
        es: *mut pg_sys::ExplainState,
        opt: *mut pg_sys::DefElem,
        _pstate: *mut pg_sys::ParseState,
    ) {
        let mut o = pg_sys::GetExplainExtensionState(es, EXTENSION_ID) as *mut Options;
        if o.is_null() {
            o = pg_sys::palloc0(std::mem::size_of::<Options>()) as *mut Options;
            pg_sys::SetExplainExtensionState(es, EXTENSION_ID, o.cast());
        }
        let on = pg_sys::defGetBoolean(opt);
        if CStr::from_ptr((*opt).defname).to_bytes() == b"ruvector_dag" {
            (*o).hide = !on;
        } else {
            (*o).weights = on;
        }
    }

    fn text(s: &str) -> CString {
        CString::new(s.replace('\0', " ")).unwrap_or_default()
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn per_plan(
        stmt: *mut pg_sys::PlannedStmt,
        into: *mut pg_sys::IntoClause,
        es: *mut pg_sys::ExplainState,
        query_string: *const std::ffi::c_char,
        params: pg_sys::ParamListInfo,
        query_env: *mut pg_sys::QueryEnvironment,
    ) {
        if let Some(prev) = PREV_PER_PLAN {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                prev(stmt, into, es, query_string, params, query_env)
            });
        }
        forget_weights();
        if options(es).is_some_and(|o| o.hide) {
            return;
        }
        // Only the decision made for this very plan.
        let Some((d, arm_ran)) = BACKEND.with(|b| {
            b.borrow()
                .last_explained
                .as_ref()
                .filter(|(s, _, _)| *s == stmt as usize)
                .map(|(_, d, a)| (Rc::clone(d), *a))
        }) else {
            return;
        };
        let shown = Shown::of(&d, arm_ran);
        if (*es).format == pg_sys::ExplainFormat::EXPLAIN_FORMAT_TEXT {
            for line in shown.text() {
                append(es, &line);
            }
            return;
        }
        let group = c"ruvector_dag".as_ptr();
        pg_sys::ExplainOpenGroup(group, group, true, es);
        let put = |label: &CStr, value: &str| {
            let v = text(value);
            pg_sys::ExplainPropertyText(label.as_ptr(), v.as_ptr(), es);
        };
        put(c"Arm", &shown.arm);
        put(c"Applied", &shown.applied);
        put(c"Rule", shown.rule);
        put(c"Pattern", &shown.pattern);
        pg_sys::ExplainPropertyFloat(
            c"Similarity".as_ptr(),
            std::ptr::null(),
            f64::from(shown.similarity),
            3,
            es,
        );
        pg_sys::ExplainPropertyFloat(
            c"Confidence".as_ptr(),
            std::ptr::null(),
            f64::from(shown.confidence),
            3,
            es,
        );
        put(c"Attention", &shown.attention);
        pg_sys::ExplainPropertyFloat(
            c"Predicted Time".as_ptr(),
            c"ms".as_ptr(),
            f64::from(shown.predicted_ms),
            3,
            es,
        );
        put(c"Reason", &shown.reason);
        pg_sys::ExplainCloseGroup(group, group, true, es);
    }

    #[pg_guard]
    unsafe extern "C-unwind" fn per_node(
        planstate: *mut pg_sys::PlanState,
        ancestors: *mut pg_sys::List,
        relationship: *const std::ffi::c_char,
        plan_name: *const std::ffi::c_char,
        es: *mut pg_sys::ExplainState,
    ) {
        if let Some(prev) = PREV_PER_NODE {
            pg_sys::ffi::pg_guard_ffi_boundary(|| {
                prev(planstate, ancestors, relationship, plan_name, es)
            });
        }
        if !options(es).is_some_and(|o| o.weights) || planstate.is_null() {
            return;
        }
        let stmt = (*(*planstate).state).es_plannedstmt;
        let plan = (*planstate).plan as usize;
        let key = (es as usize, stmt as usize);
        let fresh = WEIGHTS.with(|w| w.borrow().as_ref().is_some_and(|(k, _)| *k == key));
        if !fresh {
            let dag = crate::plantree::dag_and_plans(stmt).unwrap_or_else(|e| {
                crate::fail(
                    PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
                    format!("ruvector_dag_weights: reading the plan: {e}"),
                )
            });
            let (dag, plans) = dag;
            let alpha = crate::analyze::weights_under_setting(&dag);
            let map = plans
                .into_iter()
                .zip(alpha)
                .map(|(p, w)| (p, f64::from(w)))
                .collect();
            WEIGHTS.with(|w| *w.borrow_mut() = Some((key, map)));
        }
        if let Some(w) =
            WEIGHTS.with(|w| w.borrow().as_ref().and_then(|(_, m)| m.get(&plan).copied()))
        {
            pg_sys::ExplainPropertyFloat(
                c"ruvector_dag Attention".as_ptr(),
                std::ptr::null(),
                w,
                4,
                es,
            );
        }
    }
}

/// Run a persisted learning cycle in this backend (`ruvector_dag_learn()`), then use its
/// result here at once (other backends reload after commit).
pub fn learn_now() -> Result<learner::Outcome, String> {
    let _busy = Busy::enter();
    let outcome = learner::cycle(true)?;
    let opt = Optimizer::restore(&outcome.snapshot).map_err(|e| e.to_string())?;
    adopt(opt, outcome.version, shared::learned_version());
    Ok(outcome)
}
