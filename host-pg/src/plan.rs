//! A query's plan as the core sees it. The query text must be exactly one statement (checked
//! with PostgreSQL's own parser: an SPI string may hold several commands and all of them would
//! run); it is planned with `EXPLAIN (FORMAT JSON)`, never executed, and the JSON goes through
//! the core's importer, whose errors name the field.

use pgrx::prelude::*;
use pgrx::spi::Spi;
use ruvector_dag_core::explain::parse_explain_full;
use ruvector_dag_core::PlanDag;

use crate::fail;

/// The plan of `query` as EXPLAIN JSON text.
pub fn explain_json(query: &str) -> String {
    let trimmed = query.trim();
    match statement_count(trimmed) {
        0 => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ruvector_dag: the query text is empty",
        ),
        1 => {}
        n => fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: the query text holds {n} statements; give exactly one"),
        ),
    }
    let sql = format!("EXPLAIN (FORMAT JSON, COSTS ON, VERBOSE OFF) {trimmed}");
    let Ok(sql) = std::ffi::CString::new(sql) else {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ruvector_dag: the query text contains a NUL byte",
        )
    };
    // EXPLAIN is a utility command, which SPI refuses in read-only mode ("EXPLAIN is not allowed
    // in a non-volatile function"), and pgrx's select() is read-only in any transaction (or
    // subtransaction, such as a PL/pgSQL block with EXCEPTION) that has not written yet; its
    // update() would assign a transaction id just to plan, which a standby cannot. So call SPI
    // directly with read_only = false: EXPLAIN without ANALYZE writes nothing.
    let text: Option<String> = Spi::connect(|_client| {
        // SAFETY: inside SPI_connect / SPI_finish (the closure); the result is read and copied
        // into a Rust String before the connection closes.
        unsafe {
            let rc = pg_sys::SPI_execute(sql.as_ptr(), false, 0);
            if rc < 0 || pg_sys::SPI_processed == 0 || pg_sys::SPI_tuptable.is_null() {
                return None;
            }
            let table = &*pg_sys::SPI_tuptable;
            let value = pg_sys::SPI_getvalue(*table.vals, table.tupdesc, 1);
            if value.is_null() {
                return None;
            }
            Some(
                std::ffi::CStr::from_ptr(value)
                    .to_string_lossy()
                    .into_owned(),
            )
        }
    });
    match text {
        Some(t) => t,
        None => fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            "ruvector_dag: EXPLAIN returned no plan",
        ),
    }
}

/// Statements in `query`, by PostgreSQL's raw parser (a syntax error is its own ERROR).
fn statement_count(query: &str) -> usize {
    let Ok(text) = std::ffi::CString::new(query) else {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            "ruvector_dag: the query text contains a NUL byte",
        )
    };
    // SAFETY: raw_parser reads a NUL-terminated string and returns a List in the current memory
    // context (NIL for an empty string); errors are raised as PostgreSQL ERRORs.
    unsafe {
        let list = pg_sys::raw_parser(text.as_ptr(), pg_sys::RawParseMode::RAW_PARSE_DEFAULT);
        if list.is_null() {
            0
        } else {
            (*list).length as usize
        }
    }
}

/// The plan of `query` as a validated `PlanDag`.
pub fn plan_of(query: &str) -> PlanDag {
    let text = explain_json(query);
    match parse_explain_full(&text) {
        Ok(p) => p.dag,
        Err(e) => fail(
            PgSqlErrorCode::ERRCODE_DATA_EXCEPTION,
            format!("ruvector_dag: cannot read the plan: {e}"),
        ),
    }
}
