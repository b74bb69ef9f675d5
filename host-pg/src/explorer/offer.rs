//! What a backend hands the background explorer: a statement as its user ran it (the text of
//! that one statement, its parameters, the role, and the settings that change plans), checked
//! to be a plain read-only SELECT first. Kept in shared memory only (never in a table or a log)
//! and dropped after use or at restart.

use std::ffi::{CStr, CString};

use pgrx::pg_sys;
use serde::{Deserialize, Serialize};

use crate::guc;

/// A statement offered to the explorer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Offer {
    /// The role that ran it (the explorer runs it as that role).
    pub role: u32,
    /// Its query shape (the default plan's fingerprint when it was offered).
    pub fingerprint: u64,
    /// The tables in scope it reads.
    pub relids: Vec<u32>,
    /// The text of the one statement.
    pub query: String,
    /// Its parameters: (type OID, text form; None for NULL).
    pub params: Vec<(u32, Option<String>)>,
    /// The settings that change plans or parse constants, as the session had them.
    pub settings: Vec<(String, String)>,
}

/// Settings copied from the session: what changes a plan, and what changes how the text's
/// constants are read.
const SESSION_SETTINGS: &[&str] = &[
    "search_path",
    "DateStyle",
    "IntervalStyle",
    "TimeZone",
    "standard_conforming_strings",
    "row_security",
    "work_mem",
    "hash_mem_multiplier",
    "maintenance_work_mem",
    "effective_cache_size",
    "effective_io_concurrency",
    "random_page_cost",
    "seq_page_cost",
    "cpu_tuple_cost",
    "cpu_index_tuple_cost",
    "cpu_operator_cost",
    "parallel_setup_cost",
    "parallel_tuple_cost",
    "min_parallel_table_scan_size",
    "min_parallel_index_scan_size",
    "max_parallel_workers_per_gather",
    "parallel_leader_participation",
    "from_collapse_limit",
    "join_collapse_limit",
    "geqo",
    "geqo_threshold",
    "constraint_exclusion",
    "cursor_tuple_fraction",
    "plan_cache_mode",
    "jit",
    "jit_above_cost",
    "jit_inline_above_cost",
    "jit_optimize_above_cost",
    "enable_async_append",
    "enable_bitmapscan",
    "enable_gathermerge",
    "enable_hashagg",
    "enable_hashjoin",
    "enable_incremental_sort",
    "enable_indexonlyscan",
    "enable_indexscan",
    "enable_material",
    "enable_memoize",
    "enable_mergejoin",
    "enable_nestloop",
    "enable_parallel_append",
    "enable_parallel_hash",
    "enable_partition_pruning",
    "enable_partitionwise_aggregate",
    "enable_partitionwise_join",
    "enable_seqscan",
    "enable_sort",
    "enable_tidscan",
];

/// Why the statement `parse` (before planning) cannot be run by the explorer, or None. Only
/// plain SELECTs: no data-modifying WITH, no FOR UPDATE / SHARE, no temporary table, and no
/// volatile function anywhere (an advisory lock, a remote call or a sleep is not stopped by
/// a read-only transaction; PostgreSQL's own volatility marks decide).
///
/// # Safety
/// `parse` is a valid Query.
pub unsafe fn ineligible(parse: *mut pg_sys::Query) -> Option<&'static str> {
    let q = &*parse;
    if q.commandType != pg_sys::CmdType::CMD_SELECT || !q.utilityStmt.is_null() {
        return Some("it is not a SELECT");
    }
    if q.hasModifyingCTE {
        return Some("it has a data-modifying WITH");
    }
    if !q.rowMarks.is_null() {
        return Some("it locks rows (FOR UPDATE / SHARE)");
    }
    if pg_sys::contain_volatile_functions(parse.cast()) {
        return Some("it calls a volatile function");
    }
    if reads_temporary(parse) {
        return Some("it reads a temporary table");
    }
    None
}

/// Whether the query reads a temporary table (its subqueries' and WITH queries' range tables
/// too: [`crate::hooks::query_relations`]; one in a sublink of WHERE is found when the explorer
/// cannot see it: then the shape is refused, once).
unsafe fn reads_temporary(parse: *mut pg_sys::Query) -> bool {
    let mut rels = Vec::new();
    crate::hooks::query_relations(parse, &mut rels, 0);
    rels.into_iter().any(|r| {
        pg_sys::get_rel_persistence(pg_sys::Oid::from(r)) == pg_sys::RELPERSISTENCE_TEMP as i8
    })
}

/// The text of the one statement `parse` came from, when it is a plain SELECT's (not EXPLAIN,
/// CREATE TABLE AS, PREPARE, DECLARE or COPY around it).
unsafe fn statement_text(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
) -> Result<String, &'static str> {
    if query_string.is_null() {
        return Err("its text is not known");
    }
    let all = CStr::from_ptr(query_string).to_bytes();
    let (loc, len) = ((*parse).stmt_location, (*parse).stmt_len);
    let start = usize::try_from(loc).unwrap_or(0).min(all.len());
    let end = if len > 0 {
        (start + len as usize).min(all.len())
    } else {
        all.len()
    };
    let text = std::str::from_utf8(&all[start..end])
        .map_err(|_| "its text is not UTF-8")?
        .trim()
        .trim_end_matches(';')
        .trim();
    let text = without_prepare(without_explain(text));
    let first = first_word(text).to_ascii_lowercase();
    if !matches!(first.as_str(), "select" | "with" | "values" | "table") {
        return Err(
            "its text is not a plain SELECT (CREATE TABLE AS, PREPARE, DECLARE or COPY around it)",
        );
    }
    Ok(text.to_string())
}

/// `text` without a leading `PREPARE name [(types)] AS`: the statement prepared (an EXECUTE
/// plans it with its source text; the parameters are the EXECUTE's, bound).
pub(crate) fn without_prepare(text: &str) -> &str {
    let Some(rest) = after_keyword(text, "prepare") else {
        return text;
    };
    // The name: an identifier or a quoted one.
    let rest = match rest.strip_prefix('"') {
        Some(q) => match q.find('"') {
            Some(i) => &q[i + 1..],
            None => return text,
        },
        None => {
            let w = first_word(rest);
            if w.is_empty() || !rest.starts_with(w) {
                return text;
            }
            &rest[w.len()..]
        }
    };
    let Some(rest) = after_parenthesis(rest.trim_start()) else {
        return text;
    };
    after_keyword(rest, "as").unwrap_or(text)
}

/// `text` after its leading keyword `kw` (any case), when it starts with it.
fn after_keyword<'a>(text: &'a str, kw: &str) -> Option<&'a str> {
    let t = text.trim_start();
    let head = t.get(..kw.len())?;
    (head.eq_ignore_ascii_case(kw) && first_word(t).eq_ignore_ascii_case(kw))
        .then(|| t[kw.len()..].trim_start())
}

/// `text` after a leading parenthesised list (`text` itself without one; None when it is
/// never closed).
fn after_parenthesis(text: &str) -> Option<&str> {
    match text.strip_prefix('(') {
        Some(inner) => inner.find(')').map(|i| inner[i + 1..].trim_start()),
        None => Some(text),
    }
}

/// `text` without a leading `EXPLAIN` and its options (`EXPLAIN (ANALYZE, ...)`, `EXPLAIN
/// ANALYZE VERBOSE`): the statement it explains (the planner hook sees that statement).
pub(crate) fn without_explain(text: &str) -> &str {
    let Some(rest) = after_keyword(text, "explain") else {
        return text;
    };
    if rest.starts_with('(') {
        return after_parenthesis(rest).unwrap_or(text);
    }
    let mut rest = rest;
    while let Some(r) = ["analyze", "analyse", "verbose"]
        .iter()
        .find_map(|k| after_keyword(rest, k))
    {
        rest = r;
    }
    rest
}

/// The first word of SQL text, after blanks, comments and opening parentheses.
pub(crate) fn first_word(mut text: &str) -> &str {
    loop {
        let t = text.trim_start_matches(|c: char| c.is_whitespace() || c == '(');
        if let Some(rest) = t.strip_prefix("--") {
            text = rest.split_once('\n').map_or("", |(_, r)| r);
        } else if let Some(rest) = t.strip_prefix("/*") {
            text = rest.split_once("*/").map_or("", |(_, r)| r);
        } else {
            let end = t
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(t.len());
            return &t[..end];
        }
    }
}

/// Whether the parameters can be given to the explorer (`Err`: why not).
unsafe fn parameters_known(params: pg_sys::ParamListInfo, text: &str) -> Result<(), &'static str> {
    if params.is_null() {
        // A generic plan is made without the values of its parameters.
        let has_param = text
            .as_bytes()
            .windows(2)
            .any(|w| w[0] == b'$' && w[1].is_ascii_digit());
        return if has_param {
            Err("it is a generic plan (its parameters' values are not known when it is planned)")
        } else {
            Ok(())
        };
    }
    if (*params).paramFetch.is_some() {
        return Err("its parameters are fetched by a procedural language");
    }
    Ok(())
}

/// The bound parameters' types and text forms (after [`parameters_known`]).
unsafe fn parameters(
    params: pg_sys::ParamListInfo,
) -> Result<Vec<(u32, Option<String>)>, &'static str> {
    if params.is_null() {
        return Ok(Vec::new());
    }
    let n = (*params).numParams.max(0) as usize;
    let values = (*params).params.as_slice(n);
    let mut out = Vec::with_capacity(n);
    for p in values {
        if p.ptype == pg_sys::InvalidOid {
            return Err("a parameter's type is not known");
        }
        if p.isnull {
            out.push((p.ptype.to_u32(), None));
            continue;
        }
        let (mut typoutput, mut varlena) = (pg_sys::InvalidOid, false);
        let ptype = p.ptype;
        let value = p.value;
        let shown = crate::guarded(|| {
            pg_sys::getTypeOutputInfo(ptype, &mut typoutput, &mut varlena);
            let c = pg_sys::OidOutputFunctionCall(typoutput, value);
            let s = CStr::from_ptr(c).to_string_lossy().into_owned();
            pg_sys::pfree(c.cast());
            Ok(s)
        })
        .map_err(|_| "a parameter's value cannot be shown as text")?;
        out.push((ptype.to_u32(), Some(shown)));
    }
    Ok(out)
}

/// The session's values of [`SESSION_SETTINGS`] (those this server has).
fn session_settings() -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(SESSION_SETTINGS.len());
    for name in SESSION_SETTINGS {
        let c = CString::new(*name).expect("no NUL");
        // SAFETY: missing_ok; the value is copied before anything else runs.
        unsafe {
            let v = pg_sys::GetConfigOptionByName(c.as_ptr(), std::ptr::null_mut(), true);
            if !v.is_null() {
                out.push((
                    name.to_string(),
                    CStr::from_ptr(v).to_string_lossy().into_owned(),
                ));
            }
        }
    }
    out
}

/// Whether the explorer can run the statement `parse` (a pristine copy, before planning): its
/// text when it can, or why not. Cheap (a walk of the query for volatile functions): the
/// planner hook asks before deciding, in learn mode with an explorer.
///
/// # Safety
/// The planner hook's arguments.
pub unsafe fn check(
    parse: *mut pg_sys::Query,
    query_string: *const std::ffi::c_char,
    params: pg_sys::ParamListInfo,
) -> Result<String, &'static str> {
    if let Some(why) = ineligible(parse) {
        return Err(why);
    }
    let query = statement_text(parse, query_string)?;
    parameters_known(params, &query)?;
    Ok(query)
}

/// The offer of the statement [`check`] gave the text `query` of, of shape `fingerprint`,
/// reading `relids`.
///
/// # Safety
/// The planner hook's `params`.
pub unsafe fn capture(
    query: String,
    params: pg_sys::ParamListInfo,
    fingerprint: u64,
    relids: &[u32],
) -> Result<Offer, &'static str> {
    let params = parameters(params)?;
    Ok(Offer {
        role: pg_sys::GetUserId().to_u32(),
        fingerprint,
        relids: relids.to_vec(),
        query,
        params,
        settings: session_settings(),
    })
}

/// Whether this database's statements can be explored in the background now: an explorer
/// runs for it or the launcher starts one when a statement is offered
/// ([`crate::shared::explorer_available`]), `ruvector.dag_explore_share` is above 0, and this
/// is not a standby.
pub fn explorer_available() -> bool {
    if guc::EXPLORE_SHARE.get() <= 0.0 {
        return false;
    }
    // SAFETY: reading backend globals.
    let (db, standby) = unsafe { (pg_sys::MyDatabaseId.to_u32(), pg_sys::RecoveryInProgress()) };
    !standby && crate::shared::explorer_available(db)
}
