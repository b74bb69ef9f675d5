//! The planner hook: plan normally, decide, and in `learn` / `frozen` plan again under the
//! chosen arm's settings at a new GUC nest level (restored on success and on error); the
//! candidate plans `Optimizer::choose` picks among; `ruvector_dag_compare_json`.

use super::*;
use crate::explorer;
use ruvector_dag_core::dag::without_disable_cost;
use ruvector_dag_core::learning::Exploration;
use std::fmt::Write;

thread_local! {
    /// What the planner hook did with the last statement it was asked about (for
    /// `ruvector_dag_compare_json`).
    pub(super) static OUTCOME: RefCell<Option<Outcome>> = const { RefCell::new(None) };
    /// In the background explorer: every statement is planned as PostgreSQL plans it (the
    /// explorer sets the arm), and the first plan made after [`begin_probe`] is kept here.
    static PROBE: RefCell<Option<Option<Probed>>> = const { RefCell::new(None) };
}

/// Set in the background explorer's process: the hooks plan, run and explain statements as
/// PostgreSQL does, and the planner keeps the first plan for [`take_probe`].
static EXPLORER_PROCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What the planner made of the statement the explorer planned or ran.
pub(crate) struct Probed {
    /// The plan.
    pub dag: ruvector_dag_core::PlanDag,
    /// Its total cost without PostgreSQL's `disable_cost` penalties.
    pub cost: f64,
    /// The `PlannedStmt` it was read from (valid until the statement's ExecutorEnd).
    stmt: usize,
    /// Run with instrumentation (EXPLAIN ANALYZE): its misestimated scans on two or more
    /// columns of a table (statistics advice; their fingerprint is 0, the caller's to fill).
    pub misestimates: Vec<crate::advice::Misestimate>,
    /// Run with instrumentation: a sort, hash or aggregate of it spilled to disk (EXPLAIN's
    /// output says; the caller's to fill).
    pub spilled: bool,
    /// What the arm it was planned under salts its plan's identity with (`memory::plan_id`;
    /// the caller's to fill).
    pub salt: u64,
    /// Run with instrumentation: the most parallel workers one Gather of it launched (EXPLAIN's
    /// output says; the caller's to fill).
    pub workers: u32,
}

impl Probed {
    /// The identity of its plan for the evidence (`memory::plan_id`).
    pub fn plan(&self) -> u64 {
        self.dag.shape_hash() ^ self.salt
    }
}

/// This process is the background explorer (for good).
pub(crate) fn set_explorer_process() {
    EXPLORER_PROCESS.store(true, std::sync::atomic::Ordering::Release);
}

pub(super) fn explorer_process() -> bool {
    EXPLORER_PROCESS.load(std::sync::atomic::Ordering::Acquire)
}

/// Keep the next plan made (until [`take_probe`]).
pub(crate) fn begin_probe() {
    PROBE.with(|p| *p.borrow_mut() = Some(None));
}

/// The plan kept since [`begin_probe`], if one was made (and readable).
pub(crate) fn take_probe() -> Option<Probed> {
    PROBE.with(|p| p.borrow_mut().take().flatten())
}

unsafe fn note_probe(planned: *mut pg_sys::PlannedStmt) {
    let waiting = PROBE.with(|p| matches!(*p.borrow(), Some(None)));
    if !waiting || planned.is_null() || (*planned).planTree.is_null() {
        return;
    }
    if let Ok(dag) = dag_from_plan(planned) {
        let cost = without_disable_cost((*(*planned).planTree).total_cost);
        let probed = Probed {
            dag,
            cost,
            stmt: planned as usize,
            misestimates: Vec::new(),
            spilled: false,
            salt: 0,
            workers: 0,
        };
        PROBE.with(|p| *p.borrow_mut() = Some(Some(probed)));
    }
}

/// In the background explorer, at ExecutorEnd: the probed statement ran with instrumentation
/// (EXPLAIN ANALYZE): keep its misestimated scans ([`crate::advice::find`]).
///
/// # Safety
/// `query_desc` is a started, not yet ended `QueryDesc`.
pub(super) unsafe fn note_probe_run(query_desc: *mut pg_sys::QueryDesc) {
    if query_desc.is_null()
        || (*query_desc).planstate.is_null()
        || (*(*query_desc).planstate).instrument.is_null()
    {
        return;
    }
    let stmt = (*query_desc).plannedstmt;
    let probed = PROBE.with(|p| matches!(&*p.borrow(), Some(Some(pr)) if pr.stmt == stmt as usize));
    if !probed {
        return;
    }
    let measured = measure(query_desc);
    let Ok((dag, plans)) = dag_with_actuals_and_plans(stmt, &measured) else {
        return;
    };
    let found = crate::advice::find(stmt, &dag, &plans, &measured, 0);
    PROBE.with(|p| {
        if let Some(Some(pr)) = p.borrow_mut().as_mut() {
            pr.misestimates = found;
        }
    });
}

/// What the planner hook did with a statement.
#[derive(Clone)]
pub(super) enum Outcome {
    /// A decision, and the arm whose plan the statement got.
    Decided(Rc<Decision>, u8),
    /// No decision, and why.
    Passed(Why),
}

/// Why a statement got no decision, put into words only when someone asks
/// (`ruvector_dag_compare_json`): most statements a hook passes are cheap ones, and formatting
/// a sentence for each cost pgbench -S about as much as the rest of the hooks.
#[derive(Clone)]
pub(super) enum Why {
    Text(std::borrow::Cow<'static, str>),
    /// The default plan's cost was below `ruvector.dag_replan_min_cost`.
    BelowMinCost {
        cost: f64,
        min: f64,
    },
}

impl<T: Into<std::borrow::Cow<'static, str>>> From<T> for Why {
    fn from(s: T) -> Why {
        Why::Text(s.into())
    }
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Text(s) => f.write_str(s),
            Why::BelowMinCost { cost, min } => write!(
                f,
                "the default plan's cost ({cost:.1}) is below ruvector.dag_replan_min_cost ({min})"
            ),
        }
    }
}

pub(super) fn passed(why: impl Into<Why>) {
    OUTCOME.with(|o| *o.borrow_mut() = Some(Outcome::Passed(why.into())));
}

pub(super) unsafe fn call_planner(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    let timing = phases::timing(Phase::Postgres);
    let planned = match PREV_PLANNER {
        // Another extension's hook is C: an ERROR in it must unwind through our frames as a
        // Rust panic (pgrx's FFI guard), not longjmp over them.
        Some(prev) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev(parse, query_string, cursor_options, params))
        }
        None => pg_sys::standard_planner(parse, query_string, cursor_options, params),
    };
    drop(timing);
    // A plan now at this address means any plan remembered there was freed: forget it, or the
    // executor hooks would take this statement for that one.
    forget_address(planned as usize);
    planned
}

/// Plan with the arm's settings at a new GUC nest level, restored on success and on error.
/// `Err` names a setting PostgreSQL refused (unknown, bad value, not settable by this user):
/// then nothing is planned and the caller keeps the default plan.
pub(super) unsafe fn plan_with_arm(
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

/// Plan `parse` under arm `arm` of `ruvector.dag_arms` ([`plan_with_arm`]) as the extension
/// (the planner hook passes through), in a subtransaction: an ERROR while planning under the
/// arm (say, a function folded at plan time that fails under its settings) is rolled back and
/// returned, and the statement keeps the default plan.
unsafe fn plan_under(
    arm: u8,
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> Result<*mut pg_sys::PlannedStmt, String> {
    let settings = guc::arms_shared()?
        .0
        .get(usize::from(arm))
        .map(|x| x.1.clone())
        .ok_or_else(|| format!("arm {arm} is not in ruvector.dag_arms"))?;
    let _busy = Busy::enter();
    let _t = phases::timing(Phase::Arm);
    crate::guarded(|| plan_with_arm(&settings, parse, query_string, cursor_options, params))
}

/// Run `f` with an arm's settings at a new GUC nest level, restored on success and on error.
/// `Err` names a setting PostgreSQL refused (unknown, bad value, not settable by this user);
/// then `f` is not run.
pub(crate) fn under_arm<R>(
    settings: &[(String, String)],
    f: impl FnOnce() -> R,
) -> Result<R, String> {
    // SAFETY: a GUC nest level opened here and closed on every path (finally).
    unsafe {
        let nest = pg_sys::NewGUCNestLevel();
        PgTryBuilder::new(AssertUnwindSafe(|| {
            for (k, v) in settings {
                let (ck, cv) = (
                    CString::new(k.as_str()).unwrap_or_default(),
                    CString::new(v.as_str()).unwrap_or_default(),
                );
                let ok = set_setting(
                    &ck,
                    &cv,
                    pg_sys::GucContext::PGC_USERSET,
                    pg_sys::GucAction::GUC_ACTION_SAVE,
                );
                if !ok {
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

/// Set a setting at session source with `context` and `action`; whether PostgreSQL took it.
/// A refusal is reported at DEBUG1 only: it is the caller's fallback, not the user's error.
///
/// # Safety
/// As `set_config_option`: in a backend, with `action`'s nest level open when it is SAVE.
pub(crate) unsafe fn set_setting(
    name: &std::ffi::CStr,
    value: &std::ffi::CStr,
    context: pg_sys::GucContext::Type,
    action: pg_sys::GucAction::Type,
) -> bool {
    pg_sys::set_config_option(
        name.as_ptr(),
        value.as_ptr(),
        context,
        pg_sys::GucSource::PGC_S_SESSION,
        action,
        true,
        pg_sys::DEBUG1 as i32,
        false,
    ) > 0
}

pub(super) fn remember(
    stmt: *mut pg_sys::PlannedStmt,
    decision: Decision,
    relids: Vec<u32>,
    arm_ran: u8,
    timed: bool,
) {
    let node_timed = node_timing(timed, &decision);
    let decision = Rc::new(decision);
    let planned = Planned {
        stmt: stmt as usize,
        tree: 0,
        copy_identity: 0,
        decision: Some(Rc::clone(&decision)),
        relids: Rc::new(relids),
        arm_ran,
        timed,
        node_timed,
    };
    push_planned(stmt, planned);
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.last_explained = Some((stmt as usize, Rc::clone(&decision), arm_ran));
        b.last_decided = Some((Rc::clone(&decision), arm_ran));
    });
    OUTCOME.with(|o| *o.borrow_mut() = Some(Outcome::Decided(decision, arm_ran)));
}

/// An in-scope statement planned without a decision: remembered as such (see [`Passed`]), so
/// that the executor does not take it (or the plan cache's copy of it) for an earlier statement
/// of the same shape that had one. `why` is what `ruvector_dag_compare_json` reports.
pub(super) fn pass_in_scope(stmt: *mut pg_sys::PlannedStmt, why: impl Into<Why>) {
    passed(why);
    push_passed(stmt);
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn planner_hook(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
) -> *mut pg_sys::PlannedStmt {
    if explorer_process() {
        let planned = call_planner(parse, query_string, cursor_options, params);
        note_probe(planned);
        return planned;
    }
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
    let hook = phases::timing(Phase::Hook);
    let scope = phases::timing(Phase::Scope);
    let relids = in_scope(parse);
    if relids.is_empty() {
        // Not in scope: not the hook's time for a statement it decides on.
        scope.discard();
        hook.discard();
        passed("no table the query reads is enabled (ruvector_enable_neural_dag)");
        return call_planner(parse, query_string, cursor_options, params);
    }
    drop(scope);
    // This database learns: the launcher starts its learner (a few atomic reads once known).
    shared::want_learner(pg_sys::MyDatabaseId.to_u32());
    // The planner scribbles on its Query: keep a pristine copy for planning again under an arm
    // (only modes that apply arms need one), unless the statement came out below
    // ruvector.dag_replan_min_cost its last few plannings: copied for nothing (see `cheap`).
    let may_apply = matches!(mode, Mode::Learn | Mode::Frozen);
    let min = guc::REPLAN_MIN_COST.get();
    let key = if may_apply {
        let _t = phases::timing(Phase::Key);
        cheap::key(parse, query_string, &relids, min)
    } else {
        0
    };
    let uncopied = key != 0 && cheap::known(key);
    // Settled on a verified plan: planned under its arm alone when that gives the verified plan
    // at the cost it had (otherwise that plan is kept for the usual way, if it applies the arm).
    let mut planned_alone = None;
    if key != 0 && !uncopied {
        let took = {
            let _t = phases::timing(Phase::Settled);
            settled::take(key)
        };
        if let Some((dag, cost)) = took {
            let alone = phases::timing(Phase::Alone);
            let settled = plan_settled(
                key,
                &dag,
                cost,
                mode,
                parse,
                query_string,
                cursor_options,
                params,
                &relids,
            );
            drop(alone);
            match settled {
                Ok(planned) => return planned,
                Err(kept) => planned_alone = kept,
            }
        }
    }
    // Settled on the default plan (in any session): planned without the copy (see `plain`),
    // unless the statement itself may explore (ruvector.dag_foreground_exploration in learn
    // mode), which needs the copy whenever its budget allows.
    let plain = key != 0
        && !uncopied
        && planned_alone.is_none()
        && !(mode == Mode::Learn && guc::FOREGROUND_EXPLORATION.get())
        && plain::settled(plain_key(key, mode));
    let pristine = if may_apply && !uncopied && !plain {
        let _t = phases::timing(Phase::Copy);
        pg_sys::copyObjectImpl(parse as *const std::ffi::c_void) as *mut pg_sys::Query
    } else {
        std::ptr::null_mut()
    };
    let default = call_planner(parse, query_string, cursor_options, params);
    // Statements this cheap are never re-planned, so there is nothing to decide or learn.
    let cost = (*(*default).planTree).total_cost;
    if key != 0 {
        cheap::saw(key, cost < min);
    }
    if cost < min {
        // A statement known cheap was forgotten at the planning that made it known (a
        // statement is settled only at a planning above the threshold).
        if !uncopied {
            settled::forget(key);
        }
        pass_in_scope(default, Why::BelowMinCost { cost, min });
        return default;
    }
    if uncopied {
        pass_in_scope(
            default,
            format!(
                "its last {} plannings cost below ruvector.dag_replan_min_cost ({min}), so it was planned without a copy to plan again; this one ({cost:.1}) keeps the default plan, the next is decided",
                cheap::STREAK
            ),
        );
        return default;
    }
    let read = {
        let _t = phases::timing(Phase::Dag);
        dag_from_plan(default)
    };
    let dag = match read {
        Ok(d) => std::sync::Arc::new(d),
        Err(e) => {
            note_error("reading the plan", &e);
            pass_in_scope(default, format!("reading the plan failed: {e}"));
            return default;
        }
    };
    let (decided, at) = decide_on(&dag, mode, pristine, query_string, params);
    let mut decision = match decided {
        Ok(d) => d,
        Err((what, e)) => {
            settled::forget(key);
            pass_in_scope(default, format!("{what} failed: {e}"));
            return default;
        }
    };
    // A statement the explorer cannot run keeps its copy: without one, its decision could not
    // tell that it is not to be offered.
    if key != 0 {
        plain::saw(
            plain_key(key, mode),
            settles_plain(&decision) && at.not_background.is_none(),
        );
    }
    if plain {
        plain::uncopied();
        BACKEND.with(|b| b.borrow_mut().counters.uncopied += 1);
        if !settles_plain(&decision) {
            // Nothing but the default plan can run without the copy: this once.
            plain::missed();
            decision.background = false;
            decision.wants_candidates = false;
            let _ = write!(
                decision.reason,
                "; planned without a copy of its Query (it had settled on the default plan), so the default plan this once, the decision from its next planning on"
            );
        }
    }
    let timed = {
        let _t = phases::timing(Phase::After);
        decided_in_scope(&mut decision, at, params, &relids)
    };
    // Exploration due (learn mode only): plan under every unblocked arm and let the optimizer
    // pick among the distinct plans; the chosen arm's plan is used as it is.
    let mut candidates: Vec<(u8, *mut pg_sys::PlannedStmt)> = Vec::new();
    if mode == Mode::Learn && decision.wants_candidates && !pristine.is_null() {
        let _t = phases::timing(Phase::Candidates);
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
        let _t = phases::timing(Phase::After);
        settled::forget(key);
        remember(default, decision, relids, 0, timed);
        return default;
    }
    // The verified plan, if that is what is applied (`decision.plan` becomes the plan the arm
    // really gives below).
    let verified = (decision.rule == Rule::Verified).then_some(decision.plan);
    let arm = decision.arm;
    // A candidate's plan was hashed when it was planned (`choose` set decision.plan to it).
    let replanned = !candidates.iter().any(|(a, _)| *a == arm);
    let chosen = match candidates.iter().find(|(a, _)| *a == arm) {
        Some(&(_, planned)) => Ok(planned),
        // Planned under this arm already, on the way to planning it alone.
        None => match planned_alone {
            Some((a, planned)) if a == arm => Ok(planned),
            _ => plan_under(arm, pristine, query_string, cursor_options, params),
        },
    };
    let chosen = match chosen {
        Ok(c) => c,
        Err(e) => {
            settled::forget(key);
            note_error("applying an arm", &e);
            pass_in_scope(default, format!("applying arm {arm} failed: {e}"));
            return default;
        }
    };
    BACKEND.with(|b| b.borrow_mut().counters.applied += 1);
    // Re-planned under the arm: the plan it really gave this time (its constants may differ
    // from the run that recorded the candidate) is what its runs are evidence for.
    if replanned {
        let _t = phases::timing(Phase::Dag);
        if let Ok(dag) = dag_from_plan(chosen) {
            decision.plan = memory::plan_id(dag.shape_hash(), arm);
        }
    }
    let verified_cost = (verified == Some(decision.plan)).then(|| (*(*chosen).planTree).total_cost);
    let fingerprint = decision.fingerprint;
    let _t = phases::timing(Phase::After);
    remember(chosen, decision, relids, arm, timed);
    if key != 0 {
        settled::note(key, dag, fingerprint, verified_cost);
    }
    chosen
}

/// Where a statement's untried plans may run ([`where_to_explore`]).
struct Where {
    exploration: Exploration,
    /// Its text for the background explorer, when it runs there.
    explorer_text: Option<String>,
    /// Why the explorer cannot run it.
    not_background: Option<String>,
}

/// The decision on `dag`, the default plan of the statement whose Query (not planned yet) is
/// `pristine` (null: none kept), and where its untried plans may run (learn mode: in the
/// background explorer when it can run the statement, otherwise in the user's statement only if
/// the DBA allows it). A failure says what failed.
///
/// Whether the explorer can run the statement (its kind, its functions' volatility, its text and
/// parameters, captured) is asked only when the decision asks for the explorer: most decisions
/// do not (a verified plan settled, nothing left to run). A decision made for the explorer that
/// does not ask for it has nothing left to run for its shape, which is the same decision
/// wherever its plans would run. Where the explorer cannot run it, the statement is decided
/// again for where its plans may run instead (nowhere, or in the statement itself with
/// `ruvector.dag_foreground_exploration`).
unsafe fn decide_on(
    dag: &std::sync::Arc<ruvector_dag_core::PlanDag>,
    mode: Mode,
    pristine: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
) -> (Result<Decision, (&'static str, String)>, Where) {
    let assumed = mode == Mode::Learn && explorer::offer::explorer_available();
    let (exploration, explorer_text, not_background) = if assumed {
        (Exploration::Explorer, None, None)
    } else {
        where_to_explore(mode, pristine, query_string, params)
    };
    let decided = decide_for(dag, mode, exploration);
    // Planned without a copy (`plain`): the caller keeps the default plan this once.
    if !assumed || pristine.is_null() || !decided.as_ref().is_ok_and(|d| d.background) {
        let at = Where {
            exploration,
            explorer_text,
            not_background,
        };
        return (decided, at);
    }
    let (exploration, explorer_text, not_background) =
        where_to_explore(mode, pristine, query_string, params);
    let decided = if exploration == Exploration::Explorer {
        decided
    } else {
        decide_for(dag, mode, exploration)
    };
    let at = Where {
        exploration,
        explorer_text,
        not_background,
    };
    (decided, at)
}

/// The key a statement settles on the default plan under: its key in `mode` (learn and frozen
/// decide the same statement differently: a statement settled in frozen sessions is not
/// settled for learn ones, whose decision may ask for the explorer).
fn plain_key(key: u64, mode: Mode) -> u64 {
    key ^ (mode as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

/// Whether `d` keeps the default plan with nothing for the statement to run, here or in the
/// background: a statement decided so [`plain::STREAK`] times in a row is planned without a
/// copy of its Query.
fn settles_plain(d: &Decision) -> bool {
    d.arm == 0 && d.rule == Rule::Default && !d.background && !d.wants_candidates
}

/// [`decide_on`] with the statement's untried plans run where `exploration` says.
fn decide_for(
    dag: &std::sync::Arc<ruvector_dag_core::PlanDag>,
    mode: Mode,
    exploration: Exploration,
) -> Result<Decision, (&'static str, String)> {
    let plugin = planner_plugin();
    // An attention plugin runs here (the learner has none attached): the full decision.
    // Otherwise the decision computes what its outcome depends on, and the learner the rest of
    // what the run teaches (its trajectory is completed from the default plan kept here). An
    // EXPLAINed statement is decided the same way (its Planning Time is what the statement
    // pays); EXPLAIN fills in the model's view it shows as it prints (`Shown::of`).
    let full = plugin.is_some();
    // A lean decision needs the learned state's head alone (a new session loads that much);
    // one that may explore in the statement itself is a full one.
    let need = if full || (mode == Mode::Learn && exploration == Exploration::Here) {
        Need::Model
    } else {
        Need::Head
    };
    // A retry below is lean, so without a plugin: the plugin goes to the first call.
    let mut plugin = Some(plugin);
    let mut decide = |need: Need| {
        let plugin = plugin.take().flatten();
        with_state_for(need, dag.shape_hash(), |o| {
            let _t = phases::timing(Phase::Decide);
            o.set_plugin(plugin);
            if full {
                o.decide_with(dag, exploration)
            } else {
                o.decide_lean(dag, exploration)
            }
        })
    };
    // The learning path is pure Rust: a panic there is a bug, and it must not fail the query.
    learning_path("decide", || {
        // Without a current copy of the learned state, a lean decision is made on what another
        // decision on the shape recalled, when one is kept (see `recalled`): no copy loaded.
        if need == Need::Head {
            let (current, seen) = copy_current(need);
            if !current {
                let valid = {
                    let _t = phases::timing(Phase::Recall);
                    super::recalled::stamp(seen)
                        .and_then(|d| super::recalled::validity(d, &guc::core_config()))
                };
                let recalled = valid.and_then(|v| super::recalled::decide(dag, exploration, v));
                if let Some(d) = recalled {
                    return Ok(d);
                }
            }
        }
        let mut decided = decide(need);
        // A learned state whose key attention reads the shapes' history (temporal, the
        // ensemble: fixed when the state was created) decides lean with its model, where the
        // history is stored.
        if need == Need::Head
            && matches!(
                decided,
                Ok(Err(ruvector_dag_core::NeuralDagError::ModelNotLoaded(_)))
            )
        {
            decided = decide(Need::Model);
        }
        let d = decided
            .map_err(|e| ("loading the learned state", e))?
            .map_err(|e| ("decide", e.to_string()))?;
        keep_recalled(&d);
        Ok(d)
    })
    .map(|mut d| {
        if !d.model_view {
            d.default_plan = Some(std::sync::Arc::clone(dag));
        }
        d
    })
}

/// What follows every decision on an in-scope statement: it is counted, a plugin failure is
/// reported, and the statement is offered to the background explorer when the decision asks.
/// Whether its run is to be timed.
unsafe fn decided_in_scope(
    decision: &mut Decision,
    at: Where,
    params: pg_sys::ParamListInfo,
    relids: &[u32],
) -> bool {
    BACKEND.with(|b| {
        let c = &mut b.borrow_mut().counters;
        c.planned_in_scope += 1;
        c.lean += u64::from(!decision.model_view);
    });
    // A plugin failure (on this plan, a reference plan, or an executed plan before) is
    // reported once; the plugin is not used again in this session.
    let unreported = crate::plugins::unreported_failure();
    if let Some(e) = decision.plugin_error.as_ref().or(unreported.as_ref()) {
        note_plugin_fallback(e);
    }
    let timed = guc::records() && sampled(guc::SAMPLE_RATE.get());
    if decision.background {
        offer_to_explorer(decision, at.explorer_text, params, relids);
    } else if let Some(why) = at.not_background {
        if at.exploration == Exploration::Nowhere
            && decision.reason.contains("not explored in this statement")
        {
            let _ = write!(decision.reason, " ({why})");
        }
    }
    timed
}

/// Plan `parse` (not planned yet) under the arm that its decision on `dag` (the default plan
/// its statement `key` got in its last usual plannings: [`settled`]) applies, without planning
/// the default plan: `Ok`, the plan, when it is the verified plan at the cost `cost` it had
/// then (the same plan on the same estimates: the decision on the remembered default plan, its
/// embeddings and what BTSP memory recalls for them, still holds); `Err` when the statement is
/// to be planned the usual way (`parse` is left as it was), with the arm and its plan when one
/// was made (the usual way uses it if it applies that arm).
#[allow(clippy::too_many_arguments)]
unsafe fn plan_settled(
    key: u64,
    dag: &std::sync::Arc<ruvector_dag_core::PlanDag>,
    cost: f64,
    mode: Mode,
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    cursor_options: i32,
    params: pg_sys::ParamListInfo,
    relids: &[u32],
) -> Result<*mut pg_sys::PlannedStmt, Option<(u8, *mut pg_sys::PlannedStmt)>> {
    let (decided, at) = decide_on(dag, mode, parse, query_string, params);
    let mut decision = match decided {
        Ok(d) if d.rule == Rule::Verified && d.arm != 0 && !d.wants_candidates => d,
        // Not (or no longer) a verified plan to apply, or a failure the usual way reports.
        _ => {
            settled::forget(key);
            return Err(None);
        }
    };
    let arm = decision.arm;
    let copy = pg_sys::copyObjectImpl(parse as *const std::ffi::c_void) as *mut pg_sys::Query;
    let chosen = match plan_under(arm, copy, query_string, cursor_options, params) {
        Ok(c) => c,
        Err(_) => {
            settled::missed(key);
            return Err(None);
        }
    };
    let same_plan =
        dag_from_plan(chosen).is_ok_and(|d| memory::plan_id(d.shape_hash(), arm) == decision.plan);
    let now = (*(*chosen).planTree).total_cost;
    if !same_plan || !settled::same_cost(cost, now) {
        BACKEND.with(|b| b.borrow_mut().counters.alone_missed += 1);
        settled::missed(key);
        return Err(Some((arm, chosen)));
    }
    let timed = decided_in_scope(&mut decision, at, params, relids);
    let _ = write!(
        decision.reason,
        "; planned under its arm alone (the default plan was not planned: it had this shape the last {} times this statement was planned in full; one planning in {} is)",
        settled::STREAK,
        settled::FULL_EVERY
    );
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.counters.applied += 1;
        b.counters.planned_alone += 1;
    });
    settled::planned_alone();
    remember(chosen, decision, relids.to_vec(), arm, timed);
    Ok(chosen)
}

/// Where a statement's untried plans may run, its text for the explorer when there, and why
/// not there (when the explorer cannot run it).
unsafe fn where_to_explore(
    mode: Mode,
    pristine: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
) -> (Exploration, Option<String>, Option<String>) {
    if mode != Mode::Learn {
        return (Exploration::Here, None, None);
    }
    let fallback = if guc::FOREGROUND_EXPLORATION.get() {
        Exploration::Here
    } else {
        Exploration::Nowhere
    };
    if !explorer::offer::explorer_available() {
        return (
            fallback,
            None,
            Some("no background explorer runs for this database (ruvector.dag_explore_share, max_worker_processes) and ruvector.dag_foreground_exploration is off".into()),
        );
    }
    // Planned without a copy of its Query (it settled on the default plan): decided as if
    // the explorer could run it, so that a decision wanting the explorer shows; the caller
    // keeps the default plan this once and offers it from its next planning on.
    if pristine.is_null() {
        return (Exploration::Explorer, None, None);
    }
    match explorer::offer::check(pristine, query_string, params) {
        Ok(text) => (Exploration::Explorer, Some(text), None),
        Err(why) => (
            fallback,
            None,
            Some(format!("the background explorer cannot run it: {why}; ruvector.dag_foreground_exploration is off")),
        ),
    }
}

/// Hand the statement to the background explorer (shared memory); say in the reason what
/// became of it.
unsafe fn offer_to_explorer(
    decision: &mut Decision,
    text: Option<String>,
    params: pg_sys::ParamListInfo,
    relids: &[u32],
) {
    let fp = decision.fingerprint;
    let db = pg_sys::MyDatabaseId.to_u32();
    let note = if shared::shape_refused(fp) {
        "; not queued: the explorer could not run this query shape (see ruvector_dag_status: explorer_failed, explorer_denied)".to_string()
    } else if shared::offered(db, fp) {
        // Checked before the statement is captured (its parameters, its session's settings):
        // every execution of a shape waiting in the queue would capture it for nothing.
        " (queued already)".to_string()
    } else {
        let captured = match text {
            Some(t) => explorer::offer::capture(t, params, fp, relids),
            None => Err("its text is not known"),
        };
        match captured.map(|o| postcard::to_allocvec(&o)) {
            Ok(Ok(bytes)) => match shared::offer(db, fp, &bytes) {
                Ok(()) => " (queued)".to_string(),
                Err(shared::OfferError::Queued) => " (queued already)".to_string(),
                Err(shared::OfferError::Full) => {
                    " (the explorer's queue is full: offered again on a later run)".to_string()
                }
                Err(shared::OfferError::TooLong(n)) => format!(
                    "; not queued: the statement takes {n} bytes, over the queue's {}",
                    shared::OFFER_BYTES
                ),
                Err(shared::OfferError::NoSharedMemory) => {
                    "; not queued: no shared memory".to_string()
                }
            },
            Ok(Err(e)) => format!("; not queued: encoding it failed ({e})"),
            Err(why) => format!("; not queued: {why}"),
        }
    };
    decision.reason.push_str(&note);
}

/// Plan a copy of `pristine` under every arm the decision does not block, hand the plans to
/// [`Optimizer::choose`], and return them by arm (so the chosen one needs no planning again).
/// An arm PostgreSQL refuses is left out; a failure of the learning path leaves the decision
/// at the default plan.
pub(super) unsafe fn plan_candidates(
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
        // An arm that raises memory where its plan runs is planned and run by the background
        // explorer only, for shapes whose default plan spilled there (`memory`).
        if decision.blocked.contains(&arm) || memory::raise(arm).is_some() {
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
                    cost: without_disable_cost((*(*stmt).planTree).total_cost),
                });
                planned.push((arm, stmt));
            }
            Err(e) => note_error("reading a candidate plan", &e),
        }
    }
    // A failure leaves the decision at the default plan (counted and logged).
    let _ = learning_path("choose", || {
        let fingerprint = decision.fingerprint;
        with_shape(fingerprint, |o| o.choose(decision, &cands))
            .map(|(r, _)| r)
            .transpose()
            .map_err(|e| ("choose", e.to_string()))
    });
    let us = t0.elapsed().as_micros() as u64;
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.counters.candidate_sets += 1;
        b.counters.candidate_plans += planned.len() as u64;
        b.counters.candidate_us += us;
    });
    planned
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
        Some(Outcome::Passed(why)) => (serde_json::Value::Null, hooked, Some(why.to_string())),
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
pub(super) fn explain_under(settings: &[(String, String)], query: &str) -> Result<String, String> {
    let _busy = Busy::enter();
    under_arm(settings, || crate::plan::explain_json(query))
        .map_err(|e| format!("{e}; the plan shown is the session's"))
}
