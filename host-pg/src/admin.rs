//! Administrative SQL: `ruvector_dag_export()`, `ruvector_dag_import(bytea)`,
//! `ruvector_dag_reset()`, the health report `ruvector_dag_health()`, and
//! `ruvector_dag_explorer_pause()` / `ruvector_dag_explorer_resume()`.

use pgrx::prelude::*;
use pgrx::PgRelation;
use ruvector_dag_core::learning::Optimizer;

use crate::{fail, guc, hooks, learner, scope, shared};

/// The learned state as bytes (the core's checksummed snapshot): what `ruvector_dag_import`
/// takes, on this server or another with the same arms.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_export() -> Vec<u8> {
    scope::require_admin("ruvector_dag_export");
    match learner::read_state(true) {
        Ok(Some((_, Some(bytes)))) => bytes,
        Ok(_) => fail(
            PgSqlErrorCode::ERRCODE_NO_DATA_FOUND,
            "ruvector_dag_export: nothing learned yet (run ruvector_dag_learn() after some in-scope queries)",
        ),
        Err(e) => fail(PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("ruvector_dag_export: {e}")),
    }
}

/// Replace the learned state with `state` (from `ruvector_dag_export`). The bytes are checked
/// completely first; on any problem the ERROR names it and the current state stays. Returns
/// the number of patterns imported.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_import(state: &[u8]) -> i64 {
    scope::require_admin("ruvector_dag_import");
    crate::require_primary("ruvector_dag_import");
    let opt = match learner::restore(state) {
        Ok(o) => o,
        Err(e) => fail(
            PgSqlErrorCode::ERRCODE_DATA_CORRUPTED,
            format!("ruvector_dag_import: the bytes are not a usable learned state: {e}"),
        ),
    };
    let arms =
        guc::arms().unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e));
    let names: Vec<String> = arms.into_iter().map(|a| a.0).collect();
    if opt.arms() != names.as_slice() {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "ruvector_dag_import: the state was learned for the arms '{}' but ruvector.dag_arms lists '{}'",
                opt.arms().join("|"),
                names.join("|")
            ),
        );
    }
    let patterns = opt.bank().patterns().len() as i64;
    let version = learner::replace(&opt).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_import: {e}"),
        )
    });
    hooks::adopt(
        opt,
        version,
        shared::learned_version(),
        crate::book::Holding::detached(),
    );
    patterns
}

/// Forget everything learned (patterns, cost model, blocked arms; the healing log and the
/// trajectory history stay).
/// Returns the number of patterns forgotten.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_reset() -> i64 {
    scope::require_admin("ruvector_dag_reset");
    crate::require_primary("ruvector_dag_reset");
    let before = learner::read_state(true)
        .ok()
        .flatten()
        .and_then(|s| s.1)
        .and_then(|b| Optimizer::restore(&b).ok())
        .map_or(0, |o| o.bank().patterns().len() as i64);
    let names: Vec<String> = guc::arms()
        .unwrap_or_else(|e| fail(PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE, e))
        .into_iter()
        .map(|a| a.0)
        .collect();
    let fresh = Optimizer::new(guc::core_config(), names).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag_reset: {e}"),
        )
    });
    let version = learner::replace(&fresh).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_reset: {e}"),
        )
    });
    Spi::run("DELETE FROM ruvector_dag.shape_tables").unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_reset: {e}"),
        )
    });
    hooks::adopt(
        fresh,
        version,
        shared::learned_version(),
        crate::book::Holding::detached(),
    );
    before
}

/// Forget what was learned about statements that read `tbl`: their query shapes' baselines,
/// history and pending trajectories, the arms blocked or recalled for them, and the patterns
/// that could decide for them. The cost model, shared by all statements, stays. Returns the
/// number of patterns forgotten.
#[pg_extern(name = "ruvector_dag_reset", volatile, parallel_unsafe)]
fn ruvector_dag_reset_table(tbl: PgRelation) -> i64 {
    scope::require_admin("ruvector_dag_reset");
    crate::require_primary("ruvector_dag_reset");
    match learner::forget_table(tbl.oid().to_u32()) {
        Ok(Some((gone, version, opt))) => {
            hooks::adopt(
                opt,
                version,
                shared::learned_version(),
                crate::book::Holding::detached(),
            );
            gone.patterns as i64
        }
        Ok(None) => 0,
        Err(e) => fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("ruvector_dag_reset({}): {e}", tbl.name()),
        ),
    }
}

/// Health of the learning and of the enabled tables' indexes: one row per finding, each with
/// a status (`ok`, `warning`, `repaired`) and what it is based on. Invalid indexes are
/// rebuilt (REINDEX) only when `ruvector.dag_healing_repair` is on.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_health() -> TableIterator<
    'static,
    (
        name!(check_name, String),
        name!(object, String),
        name!(status, String),
        name!(detail, String),
    ),
> {
    let mut rows: Vec<(String, String, String, String)> = Vec::new();
    let c = hooks::counters();
    rows.push((
        "learning_fallbacks".into(),
        "this session".into(),
        if c.fallbacks == 0 { "ok" } else { "warning" }.into(),
        match hooks::last_error() {
            Some(e) => format!(
                "{} statements fell back to the default plan; last: {e}",
                c.fallbacks
            ),
            None => "no statement fell back to the default plan".into(),
        },
    ));
    if let crate::guc::AttentionSetting::Plugin(name) = crate::guc::attention_setting() {
        let db = crate::database();
        let (calls, failures, last) = shared::plugin_stats(db, &name);
        let fallbacks = c.plugin_fallbacks;
        let last = hooks::plugin_error().or(last);
        rows.push((
            "attention_plugin".into(),
            format!("plugin:{name}"),
            if fallbacks == 0 && failures == 0 { "ok" } else { "warning" }.into(),
            format!(
                "{fallbacks} statements of this session planned without it (the built-in kind instead); \
                 {failures} failures in {calls} calls since the server started{}",
                last.map_or_else(String::new, |e| format!("; last: {e}"))
            ),
        ));
    }
    if let Some(r) = shared::stats() {
        rows.push((
            "trajectory_ring".into(),
            "shared memory".into(),
            if r.dropped == 0 { "ok" } else { "warning" }.into(),
            format!(
                "{} pushed, {} learned from, {} dropped (ring full before a cycle), {} waiting",
                r.pushed, r.taken, r.dropped, r.pending
            ),
        ));
        let db = crate::database();
        let pid = shared::learner_pid(db);
        rows.push((
            "background_learner".into(),
            "ruvector_dag learner".into(),
            if pid > 0 { "ok" } else { "warning" }.into(),
            if pid > 0 {
                format!(
                    "running for this database as pid {pid}; {} cycles by all learners",
                    r.worker_cycles
                )
            } else {
                "none for this database: the launcher starts one within 10 s of the first \
                 in-scope statement unless ruvector.dag_database leaves this database out or \
                 max_worker_processes is reached (see the server log); or call \
                 ruvector_dag_learn() on a schedule"
                    .into()
            },
        ));
    }
    rows.push(regressions());
    rows.extend(index_findings(guc::HEALING_REPAIR.get()));
    TableIterator::new(rows)
}

/// Share of the plans applied (verified for their query shape) that may regress within an
/// hour before `regressions_reverted` warns: a verified plan that regresses is reverted, which
/// is the design working, but many of them mean the verification is being fooled (data that
/// changes under it, or noise taken for a win).
const REVERTS_PER_HOUR_WARN_SHARE: f64 = 0.25;

/// The `regressions_reverted` finding: reverts in the last hour against the plans applied.
fn regressions() -> (String, String, String, String) {
    let (recent, total) = Spi::get_two::<i64, i64>(
        "SELECT count(*) FILTER (WHERE at > now() - interval '1 hour'), count(*) \
         FROM ruvector_dag.healing_log",
    )
    .map(|(r, t)| (r.unwrap_or(0), t.unwrap_or(0)))
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_health: {e}"),
        )
    });
    // Applied plans: query shapes with a verified plan in the learned state, plus those
    // reverted within the hour (no longer verified).
    let verified = hooks::with_optimizer(|_| ()).and_then(|()| {
        let (e, margin) = hooks::full_evidence().ok_or("no learned state loaded")?;
        Ok(e.iter()
            .filter(|(_, s)| s.verified(margin).is_some())
            .count() as i64)
    });
    let (status, applied) = match verified {
        Ok(v) => {
            let applied = v + recent;
            let warn = recent > 0 && recent as f64 > REVERTS_PER_HOUR_WARN_SHARE * applied as f64;
            (
                if warn { "warning" } else { "ok" },
                format!("{v} query shapes have a verified plan"),
            )
        }
        Err(e) => ("warning", format!("the learned state is not readable: {e}")),
    };
    (
        "regressions_reverted".into(),
        "ruvector_dag.healing_log".into(),
        status.into(),
        format!(
            "{recent} verified plans reverted and blocked in the last hour, {total} in all; {applied} \
             (a warning above {:.0}% of the plans applied within the hour)",
            100.0 * REVERTS_PER_HOUR_WARN_SHARE
        ),
    )
}

/// Findings on the indexes of enabled tables: invalid ones (rebuilt when `repair`), never-used
/// ones.
fn index_findings(repair: bool) -> Vec<(String, String, String, String)> {
    let indexes = Spi::connect(|c| {
        let rows = c.select(
            "SELECT i.indexrelid::regclass::text, i.indrelid::regclass::text, i.indisvalid, \
                    coalesce(s.idx_scan, 0) \
             FROM ruvector_dag.enabled_tables e \
             JOIN pg_catalog.pg_index i ON i.indrelid = e.relid \
             LEFT JOIN pg_catalog.pg_stat_user_indexes s ON s.indexrelid = i.indexrelid \
             ORDER BY 1",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<String>(2)?.unwrap_or_default(),
                r.get::<bool>(3)?.unwrap_or(true),
                r.get::<i64>(4)?.unwrap_or(0),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_health: {e}"),
        )
    });
    let mut rows = Vec::new();
    for (index, table, valid, scans) in indexes {
        if !valid && repair {
            reindex(&index);
            rows.push((
                "invalid_index".into(),
                index,
                "repaired".into(),
                format!("on {table}: was invalid (a failed CREATE INDEX CONCURRENTLY?); rebuilt with REINDEX"),
            ));
        } else if !valid {
            rows.push((
                "invalid_index".into(),
                index,
                "warning".into(),
                format!("on {table}: invalid (a failed CREATE INDEX CONCURRENTLY?); REINDEX it, or set ruvector.dag_healing_repair = on"),
            ));
        } else if scans == 0 {
            rows.push((
                "unused_index".into(),
                index,
                "warning".into(),
                format!("on {table}: never used since statistics were last reset"),
            ));
        }
    }
    rows
}

/// The repair `ruvector.dag_healing_repair = on` allows: rebuild an invalid index (admin only).
fn reindex(index: &str) {
    scope::require_admin("ruvector_dag_health with ruvector.dag_healing_repair");
    Spi::run(&format!("REINDEX INDEX {index}")).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("REINDEX INDEX {index}: {e}"),
        )
    });
}

/// Pause every background explorer (administrative): returns once no run is in progress (a
/// run finishes within its timeout; this waits at most a minute, then says so in a WARNING),
/// so that what runs next runs alone; statements keep being queued, up to the queue's size.
/// Returns whether they were running before.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_explorer_pause() -> bool {
    scope::require_admin("ruvector_dag_explorer_pause");
    require_shared("ruvector_dag_explorer_pause");
    let was_paused = shared::pause_explorers(true);
    let t0 = std::time::Instant::now();
    while shared::any_explorer_running() {
        if t0.elapsed().as_secs() >= 60 {
            warning!("ruvector_dag_explorer_pause: an explorer's run is still in progress after 60 s; it stops after it");
            break;
        }
        // SAFETY: a plain sleep; a cancel interrupts it.
        unsafe { pg_sys::pg_usleep(10_000) };
        pgrx::check_for_interrupts!();
    }
    !was_paused
}

/// Let the background explorers run again (administrative). Returns whether they were paused.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_explorer_resume() -> bool {
    scope::require_admin("ruvector_dag_explorer_resume");
    require_shared("ruvector_dag_explorer_resume");
    shared::pause_explorers(false)
}

fn require_shared(what: &str) {
    if !shared::available() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!("{what}: ruvector_dag is not in shared_preload_libraries, so there is no explorer to pause or resume"),
        );
    }
}
