//! `ruvector_dag_status()`, `ruvector_dag_arms()`, `ruvector_dag_learn()` and
//! `ruvector_dag_patterns()`.

use pgrx::prelude::*;

use crate::{guc, hooks, learner, plugins, scope, shared};

/// One row per fact: settings, scope, this backend's counters, the shared ring, the learned
/// state. Every value is read or computed when called.
/// The arms of `ruvector.dag_arms` as this session parses them: one row per setting (the
/// default arm, which sets nothing, one row with NULL setting and value). The one reading of
/// the arm list: the workload harness and the recording scripts take it from here.
#[pg_extern(stable, parallel_safe)]
fn ruvector_dag_arms() -> TableIterator<
    'static,
    (
        name!(arm, i32),
        name!(name, String),
        name!(setting, Option<String>),
        name!(value, Option<String>),
    ),
> {
    let arms = guc::arms().unwrap_or_else(|e| {
        crate::fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: {e}"),
        )
    });
    let mut rows = Vec::new();
    for (i, (name, settings)) in arms.into_iter().enumerate() {
        if settings.is_empty() {
            rows.push((i as i32, name.clone(), None, None));
        }
        for (k, v) in settings {
            rows.push((i as i32, name.clone(), Some(k), Some(v)));
        }
    }
    TableIterator::new(rows)
}

/// Where the planner hook's time went in this session, phase by phase, while
/// `ruvector.dag_phase_timing` was on: each phase's total in microseconds and how many times
/// it ran, each its own time (the phases within it apart): together they add up to `total`, the
/// whole hook for in-scope statements, the only row with page faults (those the hook took).
/// Reads nothing else: the learned state is not loaded for it.
#[pg_extern(volatile, parallel_restricted)]
fn ruvector_dag_phases() -> TableIterator<
    'static,
    (
        name!(phase, String),
        name!(total_us, f64),
        name!(times, i64),
        name!(page_faults, Option<i64>),
    ),
> {
    TableIterator::new(
        hooks::phases::totals()
            .into_iter()
            .map(|(name, us, n, f)| (name.to_string(), us, n as i64, f.map(|f| f as i64))),
    )
}

#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_status() -> TableIterator<'static, (name!(key, String), name!(value, String))> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| rows.push((k.to_string(), v));
    put("version", env!("CARGO_PKG_VERSION").to_string());
    put("preloaded", hooks::installed().to_string());
    put("mode", guc::mode_shown());
    put(
        "neural_dag_enabled",
        guc::NEURAL_DAG_ENABLED.get().to_string(),
    );
    put(
        "enabled_tables",
        scope::enabled_count().map_or_else(|e| format!("not readable: {e}"), |n| n.to_string()),
    );
    match guc::arms() {
        Ok(arms) => {
            put("arms", arms.len().to_string());
            put(
                "arm_names",
                arms.iter()
                    .map(|a| a.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
        Err(e) => put("arms", format!("invalid: {e}")),
    }
    let attention = guc::attention_setting();
    put("attention_type", attention.to_string());
    if let guc::AttentionSetting::Plugin(name) = &attention {
        put(
            "attention_plugin_in_planner",
            match plugins::planner_status() {
                None => format!("{name}: not read yet (no in-scope statement planned)"),
                Some((what, None)) => format!("{what}: the attention selector may pick it"),
                Some((what, Some(why))) => {
                    format!("{what}: not used again in this session: {why}")
                }
            },
        );
        if let Some(arms) = hooks::plugin_selector_stats() {
            put("attention_plugin_selector", arms);
        }
    }
    put(
        "config",
        match guc::core_config().validate() {
            Ok(()) => "valid".to_string(),
            Err(e) => format!("invalid: {e}"),
        },
    );
    put("is_admin", scope::is_admin().to_string());
    let c = hooks::counters();
    put("backend_planned_in_scope", c.planned_in_scope.to_string());
    put("backend_decided_lean", c.lean.to_string());
    put("backend_arms_applied", c.applied.to_string());
    put("backend_planned_alone", c.planned_alone.to_string());
    put("backend_planned_alone_missed", c.alone_missed.to_string());
    put("backend_uncopied", c.uncopied.to_string());
    put("backend_recalled", c.recalled.to_string());
    put("backend_observed", c.observed.to_string());
    put("backend_timed_nodes", c.timed_nodes.to_string());
    put("backend_pushed", c.pushed.to_string());
    put("backend_reverted", c.reverted.to_string());
    put("backend_cut_short", c.cut_short.to_string());
    put("backend_reloads", c.reloads.to_string());
    // Before the rows below, which load a lean copy's model to count its patterns.
    put(
        "backend_model",
        match hooks::lean_copy() {
            None => "not loaded",
            Some(true) => "lean: the snapshot's head alone (no cost model, no patterns)",
            Some(false) => "full",
        }
        .to_string(),
    );
    put("backend_candidate_sets", c.candidate_sets.to_string());
    put("backend_candidate_plans", c.candidate_plans.to_string());
    put(
        "backend_candidate_planning_ms",
        format!("{:.3}", c.candidate_us as f64 / 1000.0),
    );
    put(
        "backend_phase_us",
        hooks::phases::summary().unwrap_or_else(|| {
            if guc::PHASE_TIMING.get() {
                "nothing planned in scope yet".into()
            } else {
                "off (ruvector.dag_phase_timing)".into()
            }
        }),
    );
    put("backend_fallbacks", c.fallbacks.to_string());
    put("backend_plugin_fallbacks", c.plugin_fallbacks.to_string());
    put(
        "backend_plugin_last_error",
        hooks::plugin_error().unwrap_or_else(|| "none".into()),
    );
    put(
        "backend_last_decision",
        hooks::last_decision().unwrap_or_else(|| "none".into()),
    );
    put(
        "backend_last_error",
        hooks::last_error().unwrap_or_else(|| "none".into()),
    );
    for (k, v) in hooks::evidence_summary().unwrap_or_default() {
        put(k, v);
    }
    if let Some((version, kept)) = hooks::loaded_info() {
        put("backend_state_version", version.to_string());
        if !kept.is_empty() {
            put(
                "settings_kept_as_learned",
                format!(
                    "{} (take effect after ruvector_dag_reset())",
                    kept.join(", ")
                ),
            );
        }
    }
    if let Some(r) = shared::stats() {
        put("ring_pushed", r.pushed.to_string());
        put("ring_advice_pushed", r.advice_pushed.to_string());
        // Arms raising work_mem where their plans run (ruvector.dag_work_mem_max).
        let [now, peak, granted, refused] = shared::work_mem_grants();
        put("work_mem_raised_kb", now.to_string());
        put("work_mem_raised_peak_kb", peak.to_string());
        put("work_mem_raised_runs", granted.to_string());
        put("work_mem_raise_refused", refused.to_string());
        put("ring_taken", r.taken.to_string());
        put("ring_dropped", r.dropped.to_string());
        put("ring_pending", r.pending.to_string());
        put("ring_bytes_used", r.bytes_used.to_string());
        put("ring_bytes", shared::ring_bytes().to_string());
        let db = crate::database();
        put("learner_pid", shared::learner_pid(db).to_string());
        put("explorer_pid", shared::explorer_pid(db).to_string());
        // Explorers start on demand: 0 above with true here is an explorer that stopped for
        // want of offers and starts again at the next.
        put(
            "explorer_available",
            shared::explorer_available(db).to_string(),
        );
        put("explorer_paused", shared::explorers_paused().to_string());
        put("explorer_in_run", shared::explorer_in_run(db).to_string());
        put(
            "explorer_quiet_ms",
            shared::explorer_quiet_ms(db).to_string(),
        );
        let (users, explorers) = shared::executing();
        put("executing_users", users.to_string());
        put("executing_explorers", explorers.to_string());
        put("explorer_queued", shared::queued(db).to_string());
        let counters = shared::explorer_counters(db);
        for (c, n) in shared::ExplorerCounter::ALL.iter().zip(counters) {
            let n = match c {
                shared::ExplorerCounter::RunUs | shared::ExplorerCounter::WaitUs => n / 1000,
                _ => n,
            };
            put(c.name(), n.to_string());
        }
        if let Some(b) = crate::book::stats(db) {
            put(
                "shared_book",
                if b.seeded {
                    format!(
                        "{} query shapes of {} slots (all databases), seeded from version {}",
                        b.shapes, b.capacity, b.seeded_from
                    )
                } else if crate::guc::standby() {
                    "not used on a standby (the primary's learned state replicates)".into()
                } else {
                    format!(
                        "not seeded yet (the first session that loads the learned state seeds it; {} slots)",
                        b.capacity
                    )
                },
            );
            put("shared_book_shapes", b.shapes.to_string());
            put("shared_book_evicted", b.evicted.to_string());
            put("shared_book_too_large", b.too_large.to_string());
            put("shared_book_unreadable", b.unreadable.to_string());
        }
        if let Some([held, alone, missed, too_large, unreadable]) = crate::hooks::settled::stats(db)
        {
            // Statements settled on a verified plan, planned under its arm alone in any session.
            put("settled_statements", held.to_string());
            put("settled_planned_alone", alone.to_string());
            put("settled_planned_alone_missed", missed.to_string());
            put("settled_too_large", too_large.to_string());
            put("settled_unreadable", unreadable.to_string());
        }
        if let Some([held, decided, kept, too_large, unreadable]) =
            crate::hooks::recalled::stats(db)
        {
            // Shapes whose last lean decision's recall is kept: decided without a copy of the
            // learned state in sessions that have none current.
            put("recalled_shapes", held.to_string());
            put("recalled_decisions", decided.to_string());
            put("recalled_kept", kept.to_string());
            put("recalled_too_large", too_large.to_string());
            put("recalled_unreadable", unreadable.to_string());
        }
        if let Some([held, uncopied, missed]) = crate::hooks::plain::stats() {
            // Statements settled on the default plan, planned without a copy of their Query.
            put("plain_statements", held.to_string());
            put("plain_uncopied", uncopied.to_string());
            put("plain_uncopied_missed", missed.to_string());
        }
        put("worker_cycles", r.worker_cycles.to_string());
        // Trajectories still in the ring when the server stopped or crashed were lost then.
        put(
            "ring_started_at",
            shared::started_at().unwrap_or_else(|| "unknown".into()),
        );
    }
    let learned = crate::guarded(|| {
        Spi::connect(|c| {
            let mut rows = c.select(
                "SELECT version, octet_length(snapshot)::bigint, \
                        coalesce(octet_length(pending), 0)::bigint, cycles \
                   FROM ruvector_dag.learned_state WHERE id = 1",
                Some(1),
                &[],
            )?;
            match rows.next() {
                Some(r) => Ok(Some((
                    r.get::<i64>(1)?.unwrap_or(0),
                    r.get::<i64>(2)?.unwrap_or(0),
                    r.get::<i64>(3)?.unwrap_or(0),
                    r.get::<i64>(4)?.unwrap_or(0),
                ))),
                None => Ok(None),
            }
        })
        .map_err(|e: pgrx::spi::Error| e.to_string())
    });
    match learned {
        Ok(Some((v, bytes, pending, cycles))) => {
            put("learned_version", v.to_string());
            // The model every backend loads; the trajectories waiting for the next training
            // are stored beside it (the learner reads them).
            put("learned_state_bytes", bytes.to_string());
            put("learned_pending_bytes", pending.to_string());
            put("learned_cycles", cycles.to_string());
        }
        Ok(None) => put("learned_version", "0 (nothing learned yet)".into()),
        Err(e) => put("learned_version", format!("not readable: {e}")),
    }
    put(
        "model_cache",
        match crate::model_cache::stats(crate::database()) {
            None => "off (ruvector.dag_model_cache = 0, or not preloaded)".into(),
            Some((mine, too_large, capacity)) => {
                let here = match mine {
                    Some((v, bytes, hits)) if v != 0 => {
                        format!("version {v}, {bytes} bytes, {hits} loads from it")
                    }
                    Some((_, _, hits)) => {
                        format!("nothing usable cached ({hits} loads from it before)")
                    }
                    None => "this database has no slot".into(),
                };
                format!(
                    "{here}; {capacity} bytes per database; {too_large} models too large for it"
                )
            }
        },
    );
    TableIterator::new(rows)
}

/// Run a learning cycle now (administrative): drain this database's trajectories from the
/// shared ring, train the cost model, fold new patterns, and write the learned state. Returns
/// what the cycle did.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_learn() -> TableIterator<
    'static,
    (
        name!(trajectories, i64),
        name!(rejected, i64),
        name!(patterns_created, i64),
        name!(patterns, i64),
        name!(loss_before, f64),
        name!(reverted, i64),
        name!(state_version, i64),
        name!(state_bytes, i64),
    ),
> {
    scope::require_admin("ruvector_dag_learn");
    crate::require_primary("ruvector_dag_learn");
    crate::require_preload("ruvector_dag_learn");
    match hooks::learn_now() {
        Ok(o) => TableIterator::once((
            o.drained as i64,
            o.rejected as i64,
            o.report.patterns_created as i64,
            o.report.patterns as i64,
            f64::from(o.report.loss_before),
            o.healed.len() as i64,
            o.version,
            o.snapshot.len() as i64,
        )),
        Err(e) => crate::fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("ruvector_dag_learn: {e}"),
        ),
    }
}

/// The patterns of the learned state this backend uses, most members first: how many
/// executions they hold, the arm with the best mean time, its confidence, and the mean times
/// of that arm and of the default plan.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_patterns() -> TableIterator<
    'static,
    (
        name!(pattern, i64),
        name!(members, i64),
        name!(best_arm, Option<String>),
        name!(confidence, f32),
        name!(runs, i64),
        name!(best_mean_ms, Option<f64>),
        name!(default_mean_ms, Option<f64>),
    ),
> {
    crate::require_preload("ruvector_dag_patterns");
    let rows = match hooks::with_optimizer(|o| learner::pattern_rows(o)) {
        Ok(r) => r,
        Err(e) => crate::fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("ruvector_dag_patterns: {e}"),
        ),
    };
    TableIterator::new(rows.into_iter().map(|p| {
        (
            p.id,
            p.members,
            p.best_arm,
            p.confidence,
            p.runs,
            p.best_mean_ms,
            p.default_mean_ms,
        )
    }))
}
