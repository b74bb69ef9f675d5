//! This backend's copy of the learned optimizer: loaded from `ruvector_dag.learned_state`,
//! reloaded when the shared version moves, tuned to the session's settings; its counters; and
//! the one guard every call into the learning path goes through ([`learning_path`]).

use super::*;

/// What this backend counts (shown by `ruvector_dag_status()`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Counters {
    pub planned_in_scope: u64,
    /// Decisions made without the model's view (`Optimizer::decide_lean`): the learner
    /// completes their runs' trajectories.
    pub lean: u64,
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
    /// Runs under a non-default plan cut short (statement timeout, cancel, error): their plans
    /// given up.
    pub cut_short: u64,
    /// Statements settled on a verified plan planned under its arm alone (no default plan
    /// planned: `settled`), and those whose plan under the arm alone was not the verified one
    /// (then planned the usual way).
    pub planned_alone: u64,
    pub alone_missed: u64,
    /// Statements settled on the default plan planned without a copy of their Query
    /// (`plain`).
    pub uncopied: u64,
    /// Statements decided on what another decision on their shape recalled, without this
    /// backend's copy of the learned state (`recalled`).
    pub recalled: u64,
}

/// This backend's copy of the learned optimizer.
pub(super) struct Loaded {
    pub(super) opt: Optimizer,
    /// The shared learned version seen when it was (re)checked.
    pub(super) seen: u64,
    /// The table version it was loaded from (0: nothing learned yet).
    pub(super) version: i64,
    /// The arm list it was checked against.
    pub(super) arms: String,
    /// The settings last applied with `retune`.
    pub(super) config: NeuralDagConfig,
    /// Settings the learned state keeps as learned.
    pub(super) kept: Vec<&'static str>,
    /// What the copy is for the shared evidence book.
    pub(super) holding: crate::book::Holding,
    /// Its recall digest as loaded (`Optimizer::recall_digest`; None: it failed).
    pub(super) digest: Option<u64>,
}

pub(super) struct Backend {
    pub(super) loaded: Option<Loaded>,
    /// The optimizer that holds the rules alone, for decisions on what another recalled.
    pub(super) rules: Option<super::recalled::Rules>,
    /// Why loading failed, for the shared version and arm list it failed at.
    pub(super) failed: Option<(u64, String, String)>,
    pub(super) planned: VecDeque<Planned>,
    /// In-scope statements planned without a decision ([`pass_in_scope`]), newest at
    /// `passed_next - 1`.
    pub(super) passed: [Passed; PASSED],
    pub(super) passed_next: usize,
    /// Plan cache copies of remembered plans, by the copy's address; most recently executed
    /// last (see [`ADOPTED`]).
    pub(super) adopted: VecDeque<Planned>,
    /// The last in-scope statement planned: (its `PlannedStmt` address, decision, arm that
    /// ran), for EXPLAIN.
    pub(super) last_explained: Option<(usize, Rc<Decision>, u8)>,
    /// The last decision made in this session, and the arm its statement got (status).
    pub(super) last_decided: Option<(Rc<Decision>, u8)>,
    pub(super) counters: Counters,
    pub(super) last_error: Option<String>,
    pub(super) logged_error: bool,
    pub(super) plugin_error: Option<String>,
    pub(super) logged_plugin_error: bool,
}

thread_local! {
    pub(super) static BACKEND: RefCell<Backend> = const { RefCell::new(Backend {
        loaded: None,
        rules: None,
        failed: None,
        planned: VecDeque::new(),
        passed: [Passed { stmt: 0, tree: 0, copy_identity: 0 }; PASSED],
        passed_next: 0,
        adopted: VecDeque::new(),
        last_explained: None,
        last_decided: None,
        counters: Counters { planned_in_scope: 0, lean: 0, applied: 0, observed: 0, timed_nodes: 0,
            pushed: 0, fallbacks: 0, reloads: 0, reverted: 0, candidate_sets: 0,
            candidate_plans: 0, candidate_us: 0, plugin_fallbacks: 0, cut_short: 0,
            planned_alone: 0, alone_missed: 0, uncopied: 0, recalled: 0 },
        last_error: None,
        logged_error: false,
        plugin_error: None,
        logged_plugin_error: false,
    }) };
    /// Set while this extension itself is planning (scope lookups, re-planning): pass through.
    pub(super) static BUSY: Cell<bool> = const { Cell::new(false) };
}

/// In the postmaster, at preload: register a thread-local destructor (this backend state's) as
/// every backend's first in-scope statement would. glibc resolves what registering one calls
/// lazily, by a search through every loaded library's symbol tables: about 20 page faults and
/// 80-120 us in a new backend here (`perf`: `do_lookup_x` under `__cxa_thread_atexit_impl`),
/// paid by its first statement's planning. Resolved once before the fork, every backend
/// inherits it resolved (and this state registered).
///
/// What else a backend's first statement would compute the same way is computed here too, and
/// inherited: the parsed `ruvector.dag_arms` (a session that has not set its own finds it
/// parsed), and the hash seed of the tables an optimizer keeps (drawn at the first one made in
/// a process; made here by an optimizer that holds the rules alone, as a session's first
/// decision on what another recalled makes one).
pub(crate) fn prepare_process() {
    BACKEND.with(|_| ());
    // Nothing here may stop the server from starting: a failure (a malformed setting, which
    // the sessions report) only leaves it for them to compute.
    let _ = catch_unwind(|| {
        let _ = guc::arms_shared();
        let cfg = ruvector_dag_core::learning::NeuralDagConfig {
            attention: guc::attention_config(),
            ..Default::default()
        };
        if let Some(m) = learner::machinery(&cfg) {
            let _ = Optimizer::rules_only(cfg, vec!["default".into()], &m);
        }
    });
}

/// This backend's counters.
pub fn counters() -> Counters {
    BACKEND.with(|b| b.borrow().counters)
}

/// The last learning-path error of this backend, if any.
/// The last decision this session made: its rule, the arm its statement got, and why.
pub fn last_decision() -> Option<String> {
    BACKEND.with(|b| {
        b.borrow()
            .last_decided
            .as_ref()
            .map(|(d, arm)| format!("rule {}, arm {arm}: {}", d.rule.name(), d.reason))
    })
}

pub fn last_error() -> Option<String> {
    BACKEND.with(|b| b.borrow().last_error.clone())
}

/// What a caller needs of this backend's learned state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Need {
    /// What a lean decision reads (`Optimizer::decide_lean` where the statement explores
    /// nothing itself): a copy restored from the model cache has the snapshot's head alone
    /// (`Optimizer::restore_lean`), a few kilobytes of it.
    Head,
    /// Everything, the model too (a full decision, EXPLAIN's view of it, status).
    Model,
}

/// Make sure this backend holds the current learned optimizer with its model, tuned to the
/// session's settings. `Err` says why it cannot (the statement then keeps the default plan).
pub(super) fn ready() -> Result<(), String> {
    ready_for(Need::Model)
}

/// Whether this backend holds a copy of the learned state current for `need` ([`ready_for`]
/// has nothing to load), and the shared version it was checked at.
pub(super) fn copy_current(need: Need) -> (bool, u64) {
    let seen = shared::learned_version();
    let Ok((_, arms)) = guc::arms_shared() else {
        return (false, seen);
    };
    let current = BACKEND.with(|b| {
        b.borrow().loaded.as_ref().is_some_and(|l| {
            // (A copy adopted before its commit, a reset's or an import's, is current here:
            // what other sessions decided is of the state it replaces.)
            l.seen == seen && *l.arms == *arms && (need == Need::Head || l.opt.has_model())
        })
    });
    (current, seen)
}

/// Keep what `decision`, a lean decision of this backend's current copy, recalled of its plan,
/// for backends without a current copy ([`super::recalled`]).
pub(super) fn keep_recalled(decision: &Decision) {
    if decision.model_view || decision.recalled {
        return;
    }
    BACKEND.with(|b| {
        let b = b.borrow();
        // A copy of the current version, loaded from its table (not one adopted before its
        // commit, a reset's or an import's).
        let Some((l, digest)) = b
            .loaded
            .as_ref()
            .filter(|l| l.holding.table != 0 && l.seen == shared::learned_version())
            .and_then(|l| Some((l, l.digest?)))
        else {
            return;
        };
        super::recalled::publish_stamp(l.seen, digest);
        if let Some(v) = super::recalled::validity(digest, &l.config) {
            super::recalled::keep(decision, v, (l.opt.config(), l.holding.table, l.version));
        }
    });
}

/// [`ready`] for what the caller needs.
pub(super) fn ready_for(need: Need) -> Result<(), String> {
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
            .filter(|l| need == Need::Head || l.opt.has_model())
            .map(|_| Ok(()))
    });
    let result = match state {
        Some(Err(e)) => return Err(e),
        Some(Ok(())) => Ok(()),
        None => reload(seen, &arms, need),
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

pub(super) fn reload(seen: u64, arms: &str, need: Need) -> Result<(), String> {
    let mut held = BACKEND.with(|b| {
        b.borrow()
            .loaded
            .as_ref()
            // A copy adopted before its commit (a reset, an import) is loaded again once, so
            // that it knows its table and uses the shared evidence book.
            .filter(|l| *l.arms == *arms && l.holding.table != 0)
            .map(|l| l.version)
    });
    // A copy restored lean gets its model from the cache while the cache holds its version;
    // otherwise the state is loaded again, in full.
    if need == Need::Model && held.is_some() && !load_model_in_place() {
        held = None;
    }
    let (version, loaded) = match learner::load_cached(held, need == Need::Head) {
        Some(r) => r?,
        None => {
            // SAFETY: reads a backend-local flag.
            if !unsafe { pg_sys::ActiveSnapshotSet() } {
                return Err("no active snapshot to read ruvector_dag.learned_state with".into());
            }
            let _busy = Busy::enter();
            crate::guarded(|| learner::load_unless(held, false))?
        }
    };
    if let Some((opt, holding)) = loaded {
        adopt(opt, version, seen, holding);
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

/// Load the model of this backend's copy when it was restored lean, from the model cache while
/// the cache holds the version it came from. Whether the copy has its model now.
fn load_model_in_place() -> bool {
    let version = match BACKEND.with(|b| {
        b.borrow()
            .loaded
            .as_ref()
            .map(|l| (l.opt.has_model(), l.version))
    }) {
        None => return false,
        Some((true, _)) => return true,
        Some((false, version)) => version,
    };
    // The catalog lookup (it may raise an error) before the copy is borrowed.
    let Some(table) = learner::cached_table() else {
        return false;
    };
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.loaded.as_mut().is_some_and(|l| {
            l.version == version && learner::load_model_cached(&mut l.opt, table, version)
        })
    })
}

/// Forget this backend's copy of the learned state and its rules copy, as a new session has
/// none (tests: a session's first statement in a test's own backend).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn forget_copy() {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        b.loaded = None;
        b.rules = None;
    });
}

/// Whether this backend's copy of the learned state was restored without its model (None:
/// none loaded).
pub fn lean_copy() -> Option<bool> {
    BACKEND.with(|b| b.borrow().loaded.as_ref().map(|l| !l.opt.has_model()))
}

/// Use `opt` (learned state of table version `version`) in this backend from now on (it keeps
/// the attention plugin the previous one had attached); `holding`: what it is for the shared
/// evidence book ([`crate::book::Holding::detached`] for a state not committed yet).
pub fn adopt(mut opt: Optimizer, version: i64, seen: u64, holding: crate::book::Holding) {
    let arms = opt.arms().join("|");
    let config = opt.config().clone();
    let digest = opt.recall_digest().ok();
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
            holding,
            digest,
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
pub(crate) fn with_loaded<R>(f: impl FnOnce(&mut Optimizer) -> R) -> Option<R> {
    BACKEND.with(|b| b.borrow_mut().loaded.as_mut().map(|l| f(&mut l.opt)))
}

/// [`with_optimizer`] with shape `fingerprint`'s evidence brought in from the shared book
/// first (a decision).
pub fn with_optimizer_for<R>(
    fingerprint: u64,
    f: impl FnOnce(&mut Optimizer) -> R,
) -> Result<R, String> {
    with_state_for(Need::Model, fingerprint, f)
}

/// [`with_optimizer_for`] where `f` needs only what `need` says of the learned state.
pub(super) fn with_state_for<R>(
    need: Need,
    fingerprint: u64,
    f: impl FnOnce(&mut Optimizer) -> R,
) -> Result<R, String> {
    {
        let _t = phases::timing(Phase::Load);
        ready_for(need)?;
    }
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let l = b.loaded.as_mut().expect("ready");
        {
            let _t = phases::timing(Phase::Book);
            crate::book::bring_in(crate::database(), &mut l.holding, &mut l.opt, fingerprint);
        }
        Ok(f(&mut l.opt))
    })
}

/// Run `f` on this backend's optimizer as it is (as [`with_loaded`]) with shape
/// `fingerprint`'s evidence brought in from the shared book, and write back what `f` changed
/// of it (an observation, the candidates planned), under the book's lock for that shape. The
/// bool: whether the shared book holds the result (false: this copy only). None when no
/// state is loaded.
pub(crate) fn with_shape<R>(
    fingerprint: u64,
    f: impl FnOnce(&mut Optimizer) -> R,
) -> Option<(R, bool)> {
    with_shape_of(false, fingerprint, f)
}

/// [`with_shape`] with the optimizer that holds the rules alone when `recalled` (a decision
/// made on what another recalled: [`super::recalled`]).
fn with_shape_of<R>(
    recalled: bool,
    fingerprint: u64,
    f: impl FnOnce(&mut Optimizer) -> R,
) -> Option<(R, bool)> {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let (holding, opt) = if recalled {
            let r = b.rules.as_mut()?;
            (&mut r.holding, &mut r.opt)
        } else {
            let l = b.loaded.as_mut()?;
            (&mut l.holding, &mut l.opt)
        };
        Some(crate::book::update(
            crate::database(),
            holding,
            opt,
            fingerprint,
            f,
        ))
    })
}

/// Learn from one run of `decision`'s statement under `arm` in this copy, with the shape's
/// evidence in the shared book (every backend's at once), and encode the run for the learner's
/// ring (marked as recorded in the book when it was). `(ring record, timed nodes, what the
/// run did)`; None when no state is loaded.
pub(crate) fn observe_shared(
    decision: &Decision,
    arm: u8,
    executed: Option<&ruvector_dag_core::PlanDag>,
    ms: f32,
    relids: &[u32],
    kind: ruvector_dag_core::learning::RunKind,
) -> Option<Result<(Vec<u8>, usize, ruvector_dag_core::learning::Observed), String>> {
    let (done, booked) = with_shape_of(decision.recalled, decision.fingerprint, |o| {
        // The planner hook keeps a lean decision's default plan: the learner completes the
        // trajectory from it.
        if !decision.model_view && decision.default_plan.is_none() {
            return Err(ruvector_dag_core::NeuralDagError::InvalidTrajectory(
                "a decision without the model's view or its default plan".into(),
            ));
        }
        let t = o.trajectory(decision, arm, executed, ms)?;
        // The learner queues it for its cycles; this copy only learns from it at once.
        let observed = o.observe_run(t.clone(), kind, false)?;
        Ok::<_, ruvector_dag_core::NeuralDagError>((t, observed))
    })?;
    Some(done.map_err(|e| e.to_string()).and_then(|(t, observed)| {
        // A plan verified faster: statements settled on the default plan may want it now.
        if observed.verified {
            super::plain::verdict_changed();
        }
        let booked = booked.then_some(crate::learner::Booked {
            regression: observed.regression,
            baseline_ms: observed.baseline_ms,
        });
        // Decided without the model's view: the learner completes the trajectory from the
        // plans (here only when the default plan was not kept: then this copy does it).
        let bytes = match (&decision.default_plan, decision.model_view) {
            (Some(default), false) => {
                crate::learner::Record::run_lean(&t, default, executed, relids, kind, booked)?
            }
            _ => crate::learner::Record::run(&t, relids, kind, booked)?,
        };
        Ok((bytes, t.op_shares.len(), observed))
    }))
}

/// Every shape's evidence as the shared book holds it (this copy's own without the book),
/// and the optimizer's margin; None before a state is loaded.
pub fn full_evidence() -> Option<(ruvector_dag_core::learning::EvidenceBook, f64)> {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let l = b.loaded.as_mut()?;
        let mut e = l.opt.evidence().clone();
        if let Some((shapes, budget)) =
            crate::book::shapes(crate::database(), &mut l.holding, l.opt.evidence())
        {
            e.replace_all(shapes, &budget);
        }
        Some((e, f64::from(l.opt.config().min_gain)))
    })
}

/// What this backend's learned state holds (patterns, BTSP engrams, query shapes with
/// evidence) and the exploration budget, as status rows; None before it is loaded.
pub fn evidence_summary() -> Option<Vec<(&'static str, String)>> {
    // A copy restored lean has no patterns to count: its model first.
    if lean_copy() == Some(true) {
        let _ = ready();
    }
    let (e, margin) = full_evidence()?;
    let e = &e;
    with_loaded(|o| {
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
pub(super) fn note_plugin_fallback(e: &str) {
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
pub(super) fn planner_plugin() -> Option<(
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

pub(super) fn note_error(what: &str, e: &str) {
    BACKEND.with(|b| {
        // During abort processing the state may be unavailable: nothing to count then.
        let Ok(mut b) = b.try_borrow_mut() else {
            return;
        };
        b.counters.fallbacks += 1;
        b.last_error = Some(format!("{what}: {e}"));
        if !b.logged_error {
            b.logged_error = true;
            log!("ruvector_dag: {what} failed, using the default plan: {e} (logged once per session; see ruvector_dag_status())");
        }
    });
}

/// Run `f`, a call into the learning path, for `what`. The learning path is pure Rust: a
/// panic there is a bug and must not fail the query, so it becomes a failure; a PostgreSQL
/// ERROR raised inside (say, SPI reading our own tables) is passed on, not swallowed:
/// PostgreSQL must abort the (sub)transaction itself. A failure (`f`'s `Err` or the panic) is
/// counted and logged once per session ([`note_error`]) and returned as
/// `Err((what, why))`, so that the caller falls back to the default plan.
pub(super) fn learning_path<R>(
    what: &'static str,
    f: impl FnOnce() -> Result<R, (&'static str, String)>,
) -> Result<R, (&'static str, String)> {
    let result = match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(payload)
            if payload
                .downcast_ref::<pg_sys::panic::CaughtError>()
                .is_some() =>
        {
            std::panic::resume_unwind(payload)
        }
        Err(_) => Err((what, "internal panic".to_string())),
    };
    if let Err((what, why)) = &result {
        note_error(what, why);
    }
    result
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

/// Run a persisted learning cycle in this backend (`ruvector_dag_learn()`), then use its
/// result here at once (other backends reload after commit).
pub fn learn_now() -> Result<learner::Outcome, String> {
    let _busy = Busy::enter();
    let outcome = learner::cycle(true)?;
    let opt = learner::restore(&outcome.snapshot).map_err(|e| e.to_string())?;
    let holding = crate::book::Holding::loaded(crate::database(), outcome.table, outcome.version);
    adopt(opt, outcome.version, shared::learned_version(), holding);
    Ok(outcome)
}
