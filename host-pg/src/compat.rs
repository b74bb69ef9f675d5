//! Everything that differs between the PostgreSQL majors this extension builds for, in one
//! place. PostgreSQL 15 and 18 are built and tested, 16 is built (scripts/test.sh); 17 follows
//! its headers as documented and is never built here.
//!
//! - EXPLAIN of one query: 15 and 16 have no `standard_ExplainOneQuery`, so the hook does what
//!   PostgreSQL's own `ExplainOneQuery` does (plan, time it, `ExplainOnePlan`); 17 and 18 call
//!   it. `ExplainOnePlan` takes memory counters from 17 on; `instr_time` is `ticks` from 16 on.
//! - Where the decision goes in EXPLAIN: before 18 a text line appended after the plan (other
//!   formats carry nothing); 18 has `explain_per_plan_hook` / `explain_per_node_hook` and
//!   registered EXPLAIN options, so the decision is a structured group in every format
//!   (see `hooks::explain18`).

use pgrx::pg_sys;

/// Whether this build prints the decision through PostgreSQL 18's EXPLAIN extension points
/// (structured, every format) rather than as a text line.
pub const STRUCTURED_EXPLAIN: bool = cfg!(feature = "pg18");

/// EXPLAIN one query the way PostgreSQL does without any hook.
///
/// # Safety
/// The arguments are those of an `ExplainOneQuery_hook` call.
#[cfg(any(feature = "pg17", feature = "pg18"))]
pub unsafe fn standard_explain_one_query(
    query: *mut pg_sys::Query,
    cursor_options: i32,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    pg_sys::standard_ExplainOneQuery(
        query,
        cursor_options,
        into,
        es,
        query_string,
        params,
        query_env,
    );
}

/// EXPLAIN one query the way PostgreSQL does without any hook: plan (timing it and its buffer
/// use), then explain the plan.
///
/// # Safety
/// The arguments are those of an `ExplainOneQuery_hook` call.
#[cfg(any(feature = "pg15", feature = "pg16"))]
pub unsafe fn standard_explain_one_query(
    query: *mut pg_sys::Query,
    cursor_options: i32,
    into: *mut pg_sys::IntoClause,
    es: *mut pg_sys::ExplainState,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
) {
    let buffers_before = pg_sys::pgBufferUsage;
    let t0 = std::time::Instant::now();
    let plan = pg_sys::pg_plan_query(query, query_string, cursor_options, params);
    let planduration = instr_time(t0.elapsed());
    let mut bufusage = pg_sys::BufferUsage::default();
    pg_sys::BufferUsageAccumDiff(
        &mut bufusage,
        &raw const pg_sys::pgBufferUsage,
        &buffers_before,
    );
    pg_sys::ExplainOnePlan(
        plan,
        into,
        es,
        query_string,
        params,
        query_env,
        &planduration,
        if (*es).buffers {
            &bufusage
        } else {
            std::ptr::null()
        },
    );
}

#[cfg(feature = "pg15")]
fn instr_time(d: std::time::Duration) -> pg_sys::instr_time {
    pg_sys::instr_time {
        tv_sec: d.as_secs() as _,
        tv_nsec: d.subsec_nanos() as _,
    }
}

#[cfg(feature = "pg16")]
fn instr_time(d: std::time::Duration) -> pg_sys::instr_time {
    // Nanoseconds on every platform with clock_gettime.
    pg_sys::instr_time {
        ticks: d.as_nanos() as _,
    }
}
