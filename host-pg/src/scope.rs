//! Scope: the tables learning is enabled for. Changing it is administrative: superusers and
//! members of `ruvector_dag_admin` only.

use pgrx::prelude::*;
use pgrx::spi::Spi;
use pgrx::PgRelation;

use crate::fail;

/// Whether the current user may run administrative functions.
pub fn is_admin() -> bool {
    // SAFETY: plain catalog lookups in a transaction.
    unsafe {
        if pg_sys::superuser() {
            return true;
        }
        let role = pg_sys::get_role_oid(c"ruvector_dag_admin".as_ptr(), true);
        role != pg_sys::InvalidOid && pg_sys::has_privs_of_role(pg_sys::GetUserId(), role)
    }
}

/// Raise an ERROR unless the current user is an administrator; `what` names the function.
pub fn require_admin(what: &str) {
    if !is_admin() {
        fail(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            format!(
                "ruvector_dag: {what} needs a superuser or a member of role ruvector_dag_admin"
            ),
        );
    }
}

fn require_table(rel: &PgRelation) {
    // SAFETY: rd_rel is valid for an open relation.
    let kind = unsafe { (*rel.rd_rel).relkind } as u8;
    #[allow(clippy::unnecessary_cast)] // relkind constants are u8 on some targets, i8 on others
    let ok = [
        pg_sys::RELKIND_RELATION,
        pg_sys::RELKIND_PARTITIONED_TABLE,
        pg_sys::RELKIND_MATVIEW,
    ]
    .iter()
    .any(|&k| k as u8 == kind);
    if !ok {
        fail(
            PgSqlErrorCode::ERRCODE_WRONG_OBJECT_TYPE,
            format!(
                "ruvector_dag: \"{}\" is not a table (only tables, partitioned tables and materialized views can be enabled)",
                rel.name()
            ),
        );
    }
}

fn change(sql: &str, rel: &PgRelation, enable: bool) -> bool {
    let changed = Spi::connect_mut(|client| {
        let rows = client.update(sql, None, &[rel.oid().into()])?;
        Ok::<_, pgrx::spi::Error>(!rows.is_empty())
    });
    if changed.is_ok() {
        crate::hooks::scope_changed(rel.oid().to_u32(), enable);
    }
    changed.unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag: cannot change enabled tables: {e}"),
        )
    })
}

/// Enable learning for statements touching `tbl`. Returns whether it was newly enabled.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_enable_neural_dag(tbl: PgRelation) -> bool {
    require_admin("ruvector_enable_neural_dag");
    crate::require_primary("ruvector_enable_neural_dag");
    require_table(&tbl);
    if !crate::shared::available() {
        warning!(
            "ruvector_dag is not in shared_preload_libraries: \"{}\" is recorded as enabled, but nothing is learned until it is preloaded and PostgreSQL restarted",
            tbl.name()
        );
    }
    // This database learns from now on: the launcher starts its learner.
    crate::shared::want_learner(crate::database());
    change(
        "INSERT INTO ruvector_dag.enabled_tables (relid) VALUES ($1::oid::regclass) \
         ON CONFLICT (relid) DO NOTHING RETURNING relid",
        &tbl,
        true,
    )
}

/// Disable learning for `tbl`. Returns whether it had been enabled.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_disable_neural_dag(tbl: PgRelation) -> bool {
    require_admin("ruvector_disable_neural_dag");
    crate::require_primary("ruvector_disable_neural_dag");
    change(
        "DELETE FROM ruvector_dag.enabled_tables WHERE relid = $1::oid::regclass RETURNING relid",
        &tbl,
        false,
    )
}

/// Number of enabled tables.
pub fn enabled_count() -> Result<i64, String> {
    crate::guarded(|| {
        Spi::get_one::<i64>("SELECT count(*) FROM ruvector_dag.enabled_tables")
            .map(|n| n.unwrap_or(0))
            .map_err(|e| e.to_string())
    })
}
