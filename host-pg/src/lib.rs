//! `ruvector_dag`, the PostgreSQL extension: the core's plan analysis, attention, min cut and
//! (arriving in steps) its learning engine, inside PostgreSQL 15.
//!
//! Modules:
//! - [`guc`]: every `ruvector.*` setting, registered in `_PG_init`;
//! - [`plan`]: a query's plan as the core sees it (EXPLAIN JSON -> `PlanDag`), one statement only;
//! - [`analyze`]: `ruvector_dag_analyze`, `ruvector_attention_*`, `ruvector_dag_mincut`,
//!   `ruvector_dag_explain_json`;
//! - [`scope`]: the tables learning is enabled for, and who may change that;
//! - [`status`] holds `ruvector_dag_status()`.
//!
//! Errors are PostgreSQL ERRORs that name the problem; nothing panics across the FFI boundary
//! (pgrx turns a Rust panic into an ERROR, and the core does not panic on outside data).

// Set-returning functions spell their columns in the signature (pgrx's `name!`).
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;

pub mod analyze;
pub mod guc;
pub mod plan;
pub mod scope;
pub mod status;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", bootstrap);

/// Called when the library is loaded (at `CREATE EXTENSION`, or at server start with
/// `shared_preload_libraries`).
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
}

/// Raise an ERROR with `code` and `message`. Never returns.
pub(crate) fn fail(code: PgSqlErrorCode, message: impl AsRef<str>) -> ! {
    ereport!(ERROR, code, message.as_ref().to_string());
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    // `#[pg_schema]` needs an inline module; the tests live in their own file.
    include!("tests.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}
