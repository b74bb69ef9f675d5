//! Statistics advice: where PostgreSQL's row estimate for a scan is off by [`FACTOR`] or more
//! and the scan filters on two or more columns of its table, the columns most likely do not
//! vary independently (PostgreSQL multiplies their selectivities unless extended statistics
//! on them say otherwise), and `CREATE STATISTICS (dependencies, ndistinct, mcv)` on them is
//! the fix a DBA would try.
//!
//! Found at ExecutorEnd on runs timed per node (their instrumentation holds each scan's actual
//! rows), in user statements of any mode that records runs; carried to the learner through the
//! shared ring as the table's OID, the column numbers, the query shape and the two row counts
//! (never a constant); kept in `ruvector_dag.statistics_advice` by the learner;
//! listed by `ruvector_dag_advice()` with the statement to run. A column set that extended
//! statistics already cover is listed as covered, not proposed again.
//!
//! What it does not see: a misestimate on a join (extended statistics do not change join
//! estimates in PostgreSQL 15-18), on one column (ANALYZE's per-column statistics, or a
//! non-equality predicate), or in a statement never timed per node
//! (`ruvector.dag_node_timing_rate`).

use pgrx::pg_sys;
use pgrx::prelude::*;
use serde::{Deserialize, Serialize};

use crate::plantree::Measured;

/// A scan's estimate off by this factor or more (either way) is a misestimate.
pub const FACTOR: f64 = 10.0;
/// ... when the larger of the two row counts (per loop) is at least this: 1 row expected and 8
/// come is no plan-changing error.
pub const MIN_ROWS: f64 = 100.0;
/// PostgreSQL's limit on the columns of one statistics object.
pub const MAX_COLUMNS: usize = 8;
/// Column sets the learner keeps (the most recently seen).
pub const KEPT: i64 = 1000;
/// Query shapes remembered per column set.
pub const SHAPES_KEPT: usize = 16;

/// One misestimated scan, as the ring carries it to the learner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Misestimate {
    /// The statement's query shape (its default plan's fingerprint).
    pub fingerprint: u64,
    /// The scanned table.
    pub relid: u32,
    /// The table's columns the scan filters on (attribute numbers, ascending).
    pub columns: Vec<i16>,
    /// Rows per loop: estimated and measured.
    pub estimated: f64,
    pub actual: f64,
    /// What the background explorer measured with the statistics (None: not verified).
    pub verified: Option<Verified>,
}

/// The background explorer's measurement of one piece of advice: the statement of the shape it
/// was found on, run with the statistics created and the table analyzed (in a transaction
/// rolled back), against its default plan's typical time without them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Verified {
    /// Without the statistics: the default plan's typical time, ms.
    pub before_ms: f64,
    /// With them, ms (when `cut`: cut short at this time, at least that slow).
    pub after_ms: f64,
    pub cut: bool,
}

/// With the statistics the statement must run at most this share of its time without them for
/// the advice to count as verified.
pub const VERIFIED_SHARE: f64 = 0.8;

impl Misestimate {
    /// How far off the estimate was (>= 1).
    pub fn factor(&self) -> f64 {
        factor(self.estimated, self.actual)
    }
}

/// How far off `estimated` is from `actual` (rows; >= 1, either way; each at least 1 row).
pub fn factor(estimated: f64, actual: f64) -> f64 {
    let (e, a) = (estimated.max(1.0), actual.max(1.0));
    if e > a {
        e / a
    } else {
        a / e
    }
}

/// A session reports the same misestimate (table, columns, query shape) at most once in this
/// many seconds: the advice needs to know it happens, not every run of a statement that runs
/// thousands of times a minute (each report is a record in the shared ring).
pub const REPORT_EVERY_S: u64 = 60;

thread_local! {
    /// When this session last reported each misestimate, by (table, columns, shape).
    static REPORTED: std::cell::RefCell<std::collections::HashMap<(u32, Vec<i16>, u64), std::time::Instant>> =
        std::cell::RefCell::new(std::collections::HashMap::new());
}

/// Whether this session reports misestimate `m` now ([`REPORT_EVERY_S`]); if so, it is noted as
/// reported.
pub fn report_now(m: &Misestimate) -> bool {
    REPORTED.with(|r| {
        let mut r = r.borrow_mut();
        let now = std::time::Instant::now();
        let every = std::time::Duration::from_secs(REPORT_EVERY_S);
        if r.len() >= 256 {
            r.retain(|_, t| now.duration_since(*t) < every);
            if r.len() >= 1024 {
                r.clear();
            }
        }
        let key = (m.relid, m.columns.clone(), m.fingerprint);
        if r.get(&key).is_some_and(|t| now.duration_since(*t) < every) {
            return false;
        }
        r.insert(key, now);
        true
    })
}

/// Forget what this session reported (tests: the next misestimate is reported at once).
#[cfg(any(test, feature = "pg_test"))]
pub fn forget_reported() {
    REPORTED.with(|r| r.borrow_mut().clear());
}

/// Whether a scan that expected `estimated` rows per loop and returned `actual` is a
/// misestimate worth advice.
pub fn misestimated(estimated: f64, actual: f64) -> bool {
    estimated.max(actual) >= MIN_ROWS && factor(estimated, actual) >= FACTOR
}

/// The misestimated scans of an executed plan that filter on two or more columns of their
/// table: `plans` are the plan nodes' addresses (by the node ids of `dag`, the executed plan
/// with its measurements, see [`crate::plantree::dag_with_actuals_and_plans`]).
///
/// # Safety
/// `stmt` is the valid `PlannedStmt` `dag` and `plans` were read from.
pub unsafe fn find(
    stmt: *mut pg_sys::PlannedStmt,
    dag: &ruvector_dag_core::PlanDag,
    plans: &[usize],
    measured: &std::collections::HashMap<usize, Measured>,
    fingerprint: u64,
) -> Vec<Misestimate> {
    let mut out = Vec::new();
    for (&addr, node) in plans.iter().zip(dag.nodes()) {
        let Some(m) = measured.get(&addr) else {
            continue;
        };
        // Never started (the other side of a join came out empty): nothing was measured.
        if m.loops < 1.0 {
            continue;
        }
        let actual = m.rows / m.loops;
        if !misestimated(node.est_rows, actual) {
            continue;
        }
        if let Some((relid, columns)) = scan_columns(stmt, addr as *mut pg_sys::Plan) {
            if columns.len() >= 2 {
                out.push(Misestimate {
                    fingerprint,
                    relid,
                    columns,
                    estimated: node.est_rows,
                    actual,
                    verified: None,
                });
            }
        }
    }
    out
}

/// The table a scan node reads and the columns of it its conditions name (filter, index and
/// recheck conditions; ascending, at most [`MAX_COLUMNS`]: a set larger than PostgreSQL's limit
/// is left out). None: not a scan of a table.
///
/// # Safety
/// `plan` is a node of the valid `PlannedStmt` `stmt`.
unsafe fn scan_columns(
    stmt: *mut pg_sys::PlannedStmt,
    plan: *mut pg_sys::Plan,
) -> Option<(u32, Vec<i16>)> {
    use pg_sys::NodeTag::*;
    let tag = (*plan).type_;
    let quals: Vec<*mut pg_sys::List> = match tag {
        T_SeqScan => vec![(*plan).qual],
        T_IndexScan => {
            let s = plan as *mut pg_sys::IndexScan;
            vec![(*plan).qual, (*s).indexqualorig]
        }
        T_IndexOnlyScan => {
            let s = plan as *mut pg_sys::IndexOnlyScan;
            vec![(*plan).qual, (*s).recheckqual]
        }
        T_BitmapHeapScan => {
            let s = plan as *mut pg_sys::BitmapHeapScan;
            vec![(*plan).qual, (*s).bitmapqualorig]
        }
        _ => return None,
    };
    let scanrelid = (*(plan as *mut pg_sys::Scan)).scanrelid;
    let relid = crate::plantree::scanned_table(stmt, scanrelid)?;
    let mut attnos: *mut pg_sys::Bitmapset = std::ptr::null_mut();
    for q in quals.into_iter().filter(|q| !q.is_null()) {
        pg_sys::pull_varattnos(q as *mut pg_sys::Node, scanrelid, &mut attnos);
    }
    let mut columns = Vec::new();
    let mut member = -1;
    loop {
        member = pg_sys::bms_next_member(attnos, member);
        if member < 0 {
            break;
        }
        // Offset by FirstLowInvalidHeapAttributeNumber; system columns and whole-row
        // references are not statistics material.
        let attno = member + pg_sys::FirstLowInvalidHeapAttributeNumber;
        if attno > 0 {
            columns.push(attno as i16);
        }
    }
    pg_sys::bms_free(attnos);
    (columns.len() <= MAX_COLUMNS).then_some((relid.to_u32(), columns))
}

/// SQL: the statistics object's name for advice row `a` of table `c` (what the DBA is told to
/// create, what the learner creates), with its columns' names `cols.names`.
const NAME: &str =
    "left('ruvector_dag_' || c.relname || '_' || array_to_string(cols.names, '_'), 63)";

/// SQL: advice row `a`'s columns as they are now, a lateral join `cols`: their names
/// (`names`), their quoted names comma-separated (`list`), and how many exist (`n`: fewer than
/// the row's when one was dropped).
pub(crate) const COLUMNS: &str = "CROSS JOIN LATERAL ( \
       SELECT array_agg(att.attname::text ORDER BY att.attnum) AS names, \
              string_agg(quote_ident(att.attname), ', ' ORDER BY att.attnum) AS list, \
              count(*) AS n \
         FROM pg_catalog.pg_attribute att \
        WHERE att.attrelid = a.relid AND att.attnum = ANY (a.columns) \
          AND NOT att.attisdropped) cols";

/// SQL: the extended statistics (`s`) that cover advice row `a`'s columns (dependencies or an
/// MCV list on a superset of them).
pub(crate) const COVERING: &str = "SELECT s.stxname FROM pg_catalog.pg_statistic_ext s \
     WHERE s.stxrelid = a.relid AND a.columns <@ s.stxkeys::int2[] \
       AND s.stxkind && ARRAY['f', 'm']::\"char\"[]";

/// The statistics advice: per table and column set the scans misestimated on
/// (`ruvector_dag.statistics_advice`), the statement that would create the extended statistics
/// (and ANALYZE the table so that they are filled in), and its status: covered (statistics on
/// those columns exist already: the estimate was off without them, or before they were
/// analyzed), verified or refuted (what the background explorer measured: a statement of the
/// shape with the statistics, in a transaction it rolled back, against the default plan's
/// typical time without them), or proposed (not measured yet). Most promising first (the
/// worst misestimate times its runs). Column names as they are now; a table dropped since is
/// left out.
#[pg_extern(stable, parallel_safe)]
fn ruvector_dag_advice() -> TableIterator<
    'static,
    (
        name!(relation, String),
        name!(columns, Vec<String>),
        name!(status, String),
        name!(statement, String),
        name!(worst_factor, f64),
        name!(estimated_rows, f64),
        name!(actual_rows, f64),
        name!(runs, i64),
        name!(shapes, i32),
        name!(before_ms, Option<f64>),
        name!(after_ms, Option<f64>),
        name!(last_seen, pgrx::datum::TimestampWithTimeZone),
    ),
> {
    let rows = Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT a.relid::text, cols.names, cov.stxname::text, \
                        format('CREATE STATISTICS %I (dependencies, ndistinct, mcv) ON %s FROM %s; ANALYZE %s;', \
                               {NAME}, cols.list, a.relid, a.relid), \
                        a.worst_factor, a.estimated_rows, a.actual_rows, a.runs, \
                        cardinality(a.shapes), a.before_ms, a.after_ms, coalesce(a.after_cut, false), \
                        a.last_seen, a.applied_name::text \
                   FROM ruvector_dag.statistics_advice a \
                   JOIN pg_catalog.pg_class c ON c.oid = a.relid \
                   {COLUMNS} \
                   LEFT JOIN LATERAL ({COVERING} ORDER BY s.stxname LIMIT 1) cov ON true \
                  WHERE cols.n = cardinality(a.columns) \
                  ORDER BY a.worst_factor * a.runs DESC, a.relid, a.columns"
            ),
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let covered: Option<String> = r.get(3)?;
            let before: Option<f64> = r.get(10)?;
            let after: Option<f64> = r.get(11)?;
            let cut = r.get::<bool>(12)?.unwrap_or(false);
            let Some(last_seen) = r.get::<pgrx::datum::TimestampWithTimeZone>(13)? else {
                continue;
            };
            let applied: Option<String> = r.get(14)?;
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
                status(covered, applied, before, after, cut),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<f64>(5)?.unwrap_or_default(),
                r.get::<f64>(6)?.unwrap_or_default(),
                r.get::<f64>(7)?.unwrap_or_default(),
                r.get::<i64>(8)?.unwrap_or_default(),
                r.get::<i32>(9)?.unwrap_or_default(),
                before,
                after,
                last_seen,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| {
        crate::fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag: reading ruvector_dag.statistics_advice: {e}"),
        )
    });
    TableIterator::new(rows)
}

/// Verified advice the learner creates per cycle at most.
pub const APPLY_PER_CYCLE: i64 = 4;

/// With `ruvector.dag_healing_repair = on`, in the learner's cycle (its transaction): create
/// the extended statistics of verified advice (at most [`APPLY_PER_CYCLE`] a cycle) and
/// ANALYZE their columns, each in a subtransaction (a lock not granted within 200 ms, or any
/// other failure, leaves it for a later cycle), named as `ruvector_dag_advice()` shows them.
/// Advice whose statistics were created once is never applied again: a DBA who drops them
/// (`DROP STATISTICS name`, what healing_log says undoes it) has the last word.
/// Returns how many were created.
pub fn apply_verified() -> Result<usize, String> {
    let due = Spi::connect(|c| {
        let rows = c.select(
            &format!(
                "SELECT a.relid::oid, a.columns, {NAME}, cols.list, a.relid::text, \
                        a.before_ms, a.after_ms, a.shapes[1], n.nspname::text \
                   FROM ruvector_dag.statistics_advice a \
                   JOIN pg_catalog.pg_class c ON c.oid = a.relid \
                   JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
                   {COLUMNS} \
                  WHERE cols.n = cardinality(a.columns) AND a.applied_at IS NULL \
                    AND a.verified_at IS NOT NULL AND NOT coalesce(a.after_cut, false) \
                    AND a.after_ms <= {VERIFIED_SHARE} * a.before_ms \
                    AND NOT EXISTS ({COVERING}) \
                  ORDER BY a.before_ms - a.after_ms DESC \
                  LIMIT {APPLY_PER_CYCLE}"
            ),
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<pg_sys::Oid>(1)?,
                r.get::<Vec<i16>>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<String>(5)?.unwrap_or_default(),
                r.get::<f64>(6)?.unwrap_or_default(),
                r.get::<f64>(7)?.unwrap_or_default(),
                r.get::<i64>(8)?.unwrap_or_default(),
                r.get::<String>(9)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .map_err(|e| format!("reading verified statistics advice: {e}"))?;
    let mut applied = 0;
    for (relid, columns, name, list, table, before_ms, after_ms, shape, schema) in due {
        let Some(relid) = relid else { continue };
        let quoted = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
        let create = format!(
            "SET LOCAL lock_timeout = 200; \
             CREATE STATISTICS {}.{} (dependencies, ndistinct, mcv) ON {list} FROM {table}; \
             ANALYZE {table} ({list})",
            quoted(&schema),
            quoted(&name)
        );
        if crate::guarded(|| Spi::run(&create).map_err(|e| e.to_string())).is_err() {
            continue;
        }
        Spi::run_with_args(
            "UPDATE ruvector_dag.statistics_advice SET applied_name = $3, applied_at = now() \
              WHERE relid = $1::regclass AND columns = $2",
            &[relid.into(), columns.into(), name.clone().into()],
        )
        .map_err(|e| format!("recording applied statistics advice: {e}"))?;
        let action = format!(
            "created the statistics {name} on {table} ({list}) and analyzed them: verified {after_ms:.1} ms against {before_ms:.1} ms (ruvector.dag_healing_repair); DROP STATISTICS {name} undoes it, and it is not created again"
        );
        Spi::run_with_args(
            "INSERT INTO ruvector_dag.healing_log \
               (fingerprint, pattern, arm, actual_ms, baseline_ms, action) \
             VALUES ($1, NULL, 'statistics advice', $2, $3, $4)",
            &[
                shape.into(),
                (after_ms as f32).into(),
                (before_ms as f32).into(),
                action.as_str().into(),
            ],
        )
        .map_err(|e| format!("logging applied statistics advice: {e}"))?;
        log!("ruvector_dag learner: {action}");
        applied += 1;
    }
    Ok(applied)
}

/// A piece of advice's status in words ([`ruvector_dag_advice`]): `covered`, the statistics on
/// its columns that exist; `applied`, the name the learner created them under.
fn status(
    covered: Option<String>,
    applied: Option<String>,
    before: Option<f64>,
    after: Option<f64>,
    cut: bool,
) -> String {
    let measured = match (before, after) {
        (Some(b), Some(a)) => format!(
            "; the background explorer measured {}{a:.1} ms with them, {b:.1} ms without",
            if cut { "at least " } else { "" }
        ),
        _ => String::new(),
    };
    match (covered, applied) {
        (Some(name), Some(made)) if name == made => {
            return format!("applied: the learner created the statistics {name} (ruvector.dag_healing_repair){measured}")
        }
        (Some(name), _) => return format!("covered by the statistics {name}{measured}"),
        (None, Some(made)) => {
            return format!("dropped: the statistics {made} the learner created are gone; not created again{measured}")
        }
        (None, None) => {}
    }
    match (before, after) {
        (Some(b), Some(a)) if !cut && a <= VERIFIED_SHARE * b => format!(
            "verified: a statement of the shape ran in {a:.1} ms with them, {b:.1} ms without ({:.1}x faster; measured by the background explorer in a transaction it rolled back)",
            b / a.max(1e-3)
        ),
        (Some(b), Some(a)) => format!(
            "refuted: a statement of the shape ran in {}{a:.1} ms with them, {b:.1} ms without (measured by the background explorer in a transaction it rolled back)",
            if cut { "at least " } else { "" }
        ),
        _ => "proposed (not measured yet: the background explorer measures it when it next runs a statement of the shape)".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_misestimate_is_ten_times_off_either_way_on_enough_rows() {
        assert!(misestimated(1.0, 4000.0));
        assert!(misestimated(4000.0, 0.0));
        assert!(misestimated(100.0, 10.0));
        assert!(!misestimated(100.0, 11.0));
        // 1 row expected, 50 came: off 50x, but no plan changes for 50 rows.
        assert!(!misestimated(1.0, 50.0));
        assert_eq!(factor(0.0, 0.0), 1.0);
        assert_eq!(factor(2.0, 500.0), 250.0);
        assert_eq!(factor(500.0, 2.0), 250.0);
    }

    #[test]
    fn the_status_says_what_was_measured() {
        let s = |covered: Option<&str>, applied: Option<&str>, b, a, cut| {
            status(covered.map(Into::into), applied.map(Into::into), b, a, cut)
        };
        assert_eq!(
            s(Some("s"), None, None, None, false),
            "covered by the statistics s"
        );
        assert!(s(Some("s"), None, Some(10.0), Some(1.0), false)
            .starts_with("covered by the statistics s; the background explorer measured 1.0 ms with them, 10.0 ms without"));
        assert!(s(Some("s"), Some("s"), Some(10.0), Some(1.0), false)
            .starts_with("applied: the learner created the statistics s"));
        assert!(s(None, Some("s"), Some(10.0), Some(1.0), false)
            .starts_with("dropped: the statistics s"));
        assert!(s(None, None, Some(10.0), Some(2.0), false).starts_with("verified: a statement of the shape ran in 2.0 ms with them, 10.0 ms without (5.0x faster"));
        assert!(s(None, None, Some(10.0), Some(9.0), false)
            .starts_with("refuted: a statement of the shape ran in 9.0 ms"));
        assert!(s(None, None, Some(10.0), Some(2.0), true)
            .starts_with("refuted: a statement of the shape ran in at least 2.0 ms"));
        assert!(s(None, None, None, None, false).starts_with("proposed"));
    }
}
