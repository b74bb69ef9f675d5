//! The executor hooks: time the statements in scope (per-node timing on a sample), read the
//! instrumentation into a trajectory at ExecutorEnd, push it to the shared ring and observe it
//! in this backend at once. A run under a non-default plan that never reaches ExecutorEnd (a
//! statement timeout, a cancel, an error: its (sub)transaction aborts) is evidence too: it is
//! recorded as cut short after the time it ran ([`cut_short`]), and its plan is given up.

use super::*;

/// A statement in scope that is executing.
pub(super) struct Running {
    query_desc: usize,
    started: Instant,
    /// Observed at ExecutorEnd (sampled at `ruvector.dag_sample_rate`).
    timed: bool,
    /// With per-node timing.
    node_timed: bool,
    /// The subtransaction it started in: when it (or its transaction) aborts, the run is cut
    /// short.
    subxact: pg_sys::SubTransactionId,
    /// A run under a non-default plan: its decision, tables and arm, recorded if it is cut
    /// short (whether timed or not).
    under_arm: Option<(Rc<Decision>, Rc<Vec<u32>>, u8)>,
    /// A run under an arm that raises memory where it runs: the arm's runtime settings, applied
    /// around each ExecutorRun, and the share of `ruvector.dag_work_mem_max` it holds (given
    /// back when the entry goes: [`memory`]).
    raised: Option<(Rc<Vec<(String, String)>>, memory::Grant)>,
}

thread_local! {
    /// Statements in scope running (timed, or under a non-default plan).
    pub(super) static RUNNING: RefCell<Vec<Running>> = const { RefCell::new(Vec::new()) };
}

/// Whether a run of `decision`'s plan gets per-node timing. It costs the statement a clock
/// read per row per node: sampled at `ruvector.dag_node_timing_rate` among timed runs, and
/// never on a run that explores or trials a plan (its time is evidence, and must be the plan's).
pub(super) fn node_timing(timed: bool, decision: &Decision) -> bool {
    timed
        && !matches!(decision.rule, Rule::Explore | Rule::Trial)
        && sampled(guc::NODE_TIMING_RATE.get())
}

pub(super) fn sampled(rate: f64) -> bool {
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

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn executor_start_hook(
    query_desc: *mut pg_sys::QueryDesc,
    eflags: i32,
) {
    if pg_sys::ParallelWorkerNumber >= 0 {
        crate::explorer::priority::worker_start();
    }
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    let (mut timed, mut node_timed, mut under_arm) = match planned_for(query_desc) {
        // node_timed implies timed (see `remember`). A plan cache copy runs many times: its
        // per-node timing is sampled again on each run.
        Some(((d, relids, arm_ran, timed, node_timed), copy))
            if !explain_only && !query_desc.is_null() =>
        {
            let node_timed = if copy {
                node_timing(timed, &d)
            } else {
                node_timed
            };
            let under_arm = (arm_ran != 0).then(|| (Rc::clone(&d), relids, arm_ran));
            (timed, node_timed, under_arm)
        }
        _ => (false, false, None),
    };
    // An arm that raises memory where its plan runs: its share of the server's raise, and its
    // settings around the run. Without the share it runs as the session is set, and that run
    // is not its evidence.
    let mut raised = None;
    if let Some(raise) = under_arm
        .as_ref()
        .and_then(|(_, _, arm)| memory::raise(*arm))
    {
        match memory::grant((*query_desc).plannedstmt, &raise) {
            Some(g) => {
                // Its plan is known by its salted identity, not by its nodes' shapes.
                node_timed = false;
                raised = Some((Rc::new(raise.settings), g));
            }
            None => {
                (timed, node_timed, under_arm) = (false, false, None);
            }
        }
    }
    if node_timed {
        // Per-node timing, only for this statement.
        (*query_desc).instrument_options |= (pg_sys::InstrumentOption::INSTRUMENT_TIMER
            | pg_sys::InstrumentOption::INSTRUMENT_ROWS)
            as i32;
    }
    let start = || match PREV_EXECUTOR_START {
        Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc, eflags)),
        None => pg_sys::standard_ExecutorStart(query_desc, eflags),
    };
    match &raised {
        // A hash aggregate sizes its table at its start.
        Some((settings, _)) => {
            if super::planner::under_arm(settings, start).is_err() {
                start();
            }
        }
        None => start(),
    }
    if timed || under_arm.is_some() || raised.is_some() {
        let run = Running {
            query_desc: query_desc as usize,
            started: Instant::now(),
            timed,
            node_timed,
            subxact: pg_sys::GetCurrentSubTransactionId(),
            under_arm,
            raised,
        };
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            // An entry at this address is a statement that never reached ExecutorEnd (its
            // abort was handled, or it was a portal dropped unfinished): stale.
            r.retain(|x| {
                x.query_desc != query_desc as usize && x.started.elapsed().as_secs() < 3600
            });
            r.push(run);
        });
    }
}

#[pg_guard]
pub(super) unsafe extern "C-unwind" fn executor_end_hook(query_desc: *mut pg_sys::QueryDesc) {
    if pg_sys::ParallelWorkerNumber >= 0 {
        crate::explorer::priority::worker_end();
    }
    if explorer_process() {
        note_probe_run(query_desc);
    }
    let started = RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        let i = r.iter().position(|x| x.query_desc == query_desc as usize)?;
        let run = r.swap_remove(i);
        run.timed.then_some((run.started, run.node_timed))
    });
    // The decision is looked up only for a timed run (most statements are not in scope).
    if let Some(((t0, node_timed), ((decision, relids, arm_ran, _, _), _))) =
        started.and_then(|s| Some((s, planned_for(query_desc)?)))
    {
        let ms = t0.elapsed().as_secs_f64() * 1000.0;
        // Without per-node timing the executed plan is the planned one: nothing to read.
        let executed = if node_timed {
            let stmt = (*query_desc).plannedstmt;
            let measured = measure(query_desc);
            dag_with_actuals_and_plans(stmt, &measured)
                .ok()
                .map(|(dag, plans)| {
                    note_misestimates(stmt, &dag, &plans, &measured, decision.fingerprint);
                    dag
                })
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

/// Whose work this process's statements are for the explorer's pacing ([`shared::executing`]):
/// a client backend's and its queries' parallel workers' are the users', the explorer's and its
/// statements' parallel workers' the explorer's; the learner's and other workers' neither.
fn executor_kind() -> Option<shared::Executor> {
    thread_local! {
        static KIND: Cell<Option<Option<shared::Executor>>> = const { Cell::new(None) };
    }
    if let Some(k) = KIND.get() {
        return k;
    }
    // SAFETY: backend globals of this process.
    let k = unsafe {
        if explorer_process() {
            Some(shared::Executor::Explorer)
        } else if pg_sys::ParallelWorkerNumber >= 0 {
            // A parallel worker serves one query of one leader, for its whole life.
            let leader = if pg_sys::MyProc.is_null() || (*pg_sys::MyProc).lockGroupLeader.is_null()
            {
                0
            } else {
                (*(*pg_sys::MyProc).lockGroupLeader).pid
            };
            if leader != 0 && shared::explorer_pid(pg_sys::MyDatabaseId.to_u32()) == leader {
                Some(shared::Executor::Explorer)
            } else {
                Some(shared::Executor::User)
            }
        } else if pg_sys::MyBackendType == pg_sys::BackendType::B_BACKEND {
            Some(shared::Executor::User)
        } else {
            None
        }
    };
    KIND.set(Some(k));
    k
}

thread_local! {
    /// ExecutorRun calls under way in this process, and whether the outermost one is counted in
    /// [`shared::executing`].
    static RUN_DEPTH: Cell<(u32, Option<shared::Executor>)> = const { Cell::new((0, None)) };
}

/// This process executes a statement while it lives (the outermost ExecutorRun): counted in
/// [`shared::executing`], and a user's statement that leaves the cores fewer than the processes
/// executing asks a running explorer to give its run up. Dropped on return and on an ERROR (it
/// unwinds through the hook); a process that exits inside (FATAL) uncounts at exit
/// ([`uncount_at_exit`]).
pub(super) struct Executing;

impl Executing {
    pub(super) fn enter() -> Executing {
        let (depth, counted) = RUN_DEPTH.get();
        if depth > 0 {
            RUN_DEPTH.set((depth + 1, counted));
            return Executing;
        }
        let kind = executor_kind();
        if let Some(k) = kind {
            static REGISTERED: std::sync::atomic::AtomicBool =
                std::sync::atomic::AtomicBool::new(false);
            if !REGISTERED.swap(true, std::sync::atomic::Ordering::AcqRel) {
                // SAFETY: registers a callback for this process's exit.
                unsafe { pg_sys::before_shmem_exit(Some(uncount_at_exit), pg_sys::Datum::from(0)) };
            }
            shared::executing_changed(k, true);
            if k == shared::Executor::User {
                let (users, explorers) = shared::executing();
                if explorers > 0 && (users + explorers) as usize > cores() {
                    shared::ask_explorers_to_yield();
                }
            }
        }
        RUN_DEPTH.set((1, kind));
        Executing
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        let (depth, counted) = RUN_DEPTH.get();
        if depth <= 1 {
            if let Some(k) = counted {
                shared::executing_changed(k, false);
            }
            RUN_DEPTH.set((0, None));
        } else {
            RUN_DEPTH.set((depth - 1, counted));
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn uncount_at_exit(_code: i32, _arg: pg_sys::Datum) {
    let (depth, counted) = RUN_DEPTH.get();
    if depth > 0 {
        if let Some(k) = counted {
            shared::executing_changed(k, false);
        }
        RUN_DEPTH.set((0, None));
    }
}

/// This process's ExecutorRun depth and what its outermost run is counted as (SQL tests).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn run_depth() -> (u32, Option<shared::Executor>) {
    RUN_DEPTH.get()
}

/// The machine's cores (read once per process: it reads the cgroup's quota).
pub(crate) fn cores() -> usize {
    thread_local! {
        static CORES: Cell<usize> = const { Cell::new(0) };
    }
    if CORES.get() == 0 {
        CORES.set(std::thread::available_parallelism().map_or(1, |n| n.get()));
    }
    CORES.get()
}

#[cfg(not(feature = "pg18"))]
#[pg_guard]
pub(super) unsafe extern "C-unwind" fn executor_run_hook(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
    execute_once: bool,
) {
    let _executing = Executing::enter();
    let run = || match PREV_EXECUTOR_RUN {
        Some(prev) => {
            pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc, direction, count, execute_once))
        }
        None => pg_sys::standard_ExecutorRun(query_desc, direction, count, execute_once),
    };
    match raised_settings(query_desc) {
        Some(settings) => {
            if under_arm(&settings, run).is_err() {
                run();
            }
        }
        None => run(),
    }
}

#[cfg(feature = "pg18")]
#[pg_guard]
pub(super) unsafe extern "C-unwind" fn executor_run_hook(
    query_desc: *mut pg_sys::QueryDesc,
    direction: pg_sys::ScanDirection::Type,
    count: u64,
) {
    let _executing = Executing::enter();
    let run = || match PREV_EXECUTOR_RUN {
        Some(prev) => pg_sys::ffi::pg_guard_ffi_boundary(|| prev(query_desc, direction, count)),
        None => pg_sys::standard_ExecutorRun(query_desc, direction, count),
    };
    match raised_settings(query_desc) {
        Some(settings) => {
            if under_arm(&settings, run).is_err() {
                run();
            }
        }
        None => run(),
    }
}

/// The runtime settings of the run of `query_desc`, when it runs under an arm that raises
/// memory ([`memory`]).
fn raised_settings(query_desc: *mut pg_sys::QueryDesc) -> Option<Rc<Vec<(String, String)>>> {
    if memory::none_held() {
        return None;
    }
    RUNNING.with(|r| {
        let r = r.try_borrow().ok()?;
        r.iter()
            .find(|x| x.query_desc == query_desc as usize)
            .and_then(|x| x.raised.as_ref().map(|(s, _)| Rc::clone(s)))
    })
}

pub(super) fn observe(
    decision: &Decision,
    relids: &[u32],
    arm_ran: u8,
    executed: Option<&ruvector_dag_core::PlanDag>,
    ms: f32,
) {
    record(decision, relids, arm_ran, executed, ms, false);
}

/// Push the misestimated scans of an executed plan to the shared ring for the learner's
/// statistics advice ([`crate::advice`]; rare: most runs have none).
///
/// # Safety
/// As [`crate::advice::find`].
unsafe fn note_misestimates(
    stmt: *mut pg_sys::PlannedStmt,
    dag: &ruvector_dag_core::PlanDag,
    plans: &[usize],
    measured: &std::collections::HashMap<usize, crate::plantree::Measured>,
    fingerprint: u64,
) {
    let db = crate::database();
    for m in crate::advice::find(stmt, dag, plans, measured, fingerprint) {
        if !crate::advice::report_now(&m) {
            continue;
        }
        if let Ok(bytes) = learner::Record::misestimate(m) {
            if shared::push(db, &bytes).is_ok() {
                shared::count_advice_pushed();
            }
        }
    }
}

/// Learn from one run in this backend and push it to the shared ring for the learner:
/// completed, or `cut` short (then at least that slow, its plan given up).
fn record(
    decision: &Decision,
    relids: &[u32],
    arm_ran: u8,
    executed: Option<&ruvector_dag_core::PlanDag>,
    ms: f32,
    cut: bool,
) {
    let db = crate::database();
    let kind = ruvector_dag_core::learning::RunKind {
        cut,
        background: false,
    };
    let result = learning_path("observe", || {
        observe_shared(decision, arm_ran, executed, ms, relids, kind)
            .transpose()
            .map_err(|e| ("observe", e))
    });
    // Nothing loaded (the state was forgotten since planning): nothing to observe with. A
    // failure was counted and logged.
    let Ok(Some((bytes, timed_nodes, observed))) = result else {
        return;
    };
    let pushed = shared::push(db, &bytes).is_ok();
    let reverted = observed.regression;
    BACKEND.with(|b| {
        let Ok(mut b) = b.try_borrow_mut() else {
            return;
        };
        b.counters.observed += 1;
        b.counters.timed_nodes += timed_nodes as u64;
        b.counters.pushed += u64::from(pushed);
        b.counters.reverted += u64::from(reverted);
        b.counters.cut_short += u64::from(cut);
    });
    let baseline = observed.baseline_ms.unwrap_or(0.0);
    if cut {
        log!(
            "ruvector_dag: a statement under arm {arm_ran} was cut short after {ms:.1} ms (a statement timeout, a cancel or an error; {baseline:.1} ms for the default plan); that plan is given up for this query shape"
        );
    } else if reverted {
        log!(
            "ruvector_dag: arm {arm_ran} ran {ms:.1} ms against {baseline:.1} ms for the default plan; back to the default plan for this query shape"
        );
    }
}

/// Register the (sub)transaction callbacks that find runs cut short (from `hooks::install`).
pub(super) fn install_abort_callbacks() {
    // SAFETY: permanent callbacks, registered once while the library is preloaded.
    unsafe {
        pg_sys::RegisterXactCallback(Some(xact_callback), std::ptr::null_mut());
        pg_sys::RegisterSubXactCallback(Some(subxact_callback), std::ptr::null_mut());
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn xact_callback(
    event: pg_sys::XactEvent::Type,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::XactEvent::XACT_EVENT_ABORT
        || event == pg_sys::XactEvent::XACT_EVENT_PARALLEL_ABORT
    {
        cut_short(|_| true);
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn subxact_callback(
    event: pg_sys::SubXactEvent::Type,
    my_subid: pg_sys::SubTransactionId,
    _parent: pg_sys::SubTransactionId,
    _arg: *mut std::ffi::c_void,
) {
    if event == pg_sys::SubXactEvent::SUBXACT_EVENT_ABORT_SUB {
        // Started in this subtransaction or one below it (their ids are larger).
        cut_short(|r| r.subxact >= my_subid);
    }
}

/// The runs that `aborted` says ended with their (sub)transaction: forgotten, and those under
/// a non-default plan recorded as cut short after the time they ran. Runs during abort
/// processing: nothing here may raise an ERROR (the learning path's failures are counted and
/// logged; a busy backend state is skipped).
fn cut_short(aborted: impl Fn(&Running) -> bool) {
    let ended: Vec<Running> = RUNNING.with(|r| {
        let Ok(mut r) = r.try_borrow_mut() else {
            return Vec::new();
        };
        let (ended, running) = std::mem::take(&mut *r)
            .into_iter()
            .partition(|x| aborted(x));
        *r = running;
        ended
    });
    for run in ended {
        if let Some((decision, relids, arm_ran)) = run.under_arm {
            let ms = (run.started.elapsed().as_secs_f64() * 1000.0).max(1e-3) as f32;
            record(&decision, &relids, arm_ran, None, ms, true);
        }
    }
}
