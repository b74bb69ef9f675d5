//! The executor hooks: time the statements in scope (per-node timing on a sample), read the
//! instrumentation into a trajectory at ExecutorEnd, push it to the shared ring and observe it
//! in this backend at once.

use super::*;

thread_local! {
    /// Timed statements running, by QueryDesc address: start time, and whether per-node
    /// timing was asked for.
    pub(super) static STARTED: RefCell<Vec<(usize, Instant, bool)>> = const { RefCell::new(Vec::new()) };
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
    let explain_only = eflags & pg_sys::EXEC_FLAG_EXPLAIN_ONLY as i32 != 0;
    let (timed, node_timed) = match planned_for(query_desc) {
        // node_timed implies timed (see `remember`). A plan cache copy runs many times: its
        // per-node timing is sampled again on each run.
        Some(((d, _, _, timed, node_timed), copy)) if !explain_only && !query_desc.is_null() => {
            let node_timed = if copy {
                node_timing(timed, &d)
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
pub(super) unsafe extern "C-unwind" fn executor_end_hook(query_desc: *mut pg_sys::QueryDesc) {
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

pub(super) fn observe(
    decision: &Decision,
    relids: &[u32],
    arm_ran: u8,
    executed: Option<&ruvector_dag_core::PlanDag>,
    ms: f32,
) {
    // SAFETY: reading the backend's database id.
    let db = unsafe { pg_sys::MyDatabaseId }.to_u32();
    let result = learning_path("observe", || {
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
        .transpose()
        .map_err(|e| ("observe", e.to_string()))
    });
    // Nothing loaded (the state was forgotten since planning): nothing to observe with. A
    // failure was counted and logged.
    if let Ok(Some((bytes, timed_nodes, observed))) = result {
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
}
