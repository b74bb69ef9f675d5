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
}

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
    let rtable = (*stmt).rtable;
    let i = (scanrelid as usize).checked_sub(1)?;
    if rtable.is_null() || i >= (*rtable).length as usize {
        return None;
    }
    let rte = (*(*rtable).elements.add(i)).ptr_value as *mut pg_sys::RangeTblEntry;
    if rte.is_null() || (*rte).rtekind != pg_sys::RTEKind::RTE_RELATION {
        return None;
    }
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
    (columns.len() <= MAX_COLUMNS).then_some(((*rte).relid.to_u32(), columns))
}

/// The statistics advice: per table and column set the scans misestimated on
/// (`ruvector_dag.statistics_advice`), the statement that would create the extended statistics
/// (and ANALYZE the table so that they are filled in), and whether statistics covering those
/// columns exist already (then it is listed as covered: the estimate was off without them, or
/// before they were analyzed). Most promising first (the worst misestimate times its runs).
/// Column names as they are now; a table dropped since is left out.
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
        name!(last_seen, pgrx::datum::TimestampWithTimeZone),
    ),
> {
    let rows = Spi::connect(|c| {
        let rows = c.select(
            "SELECT a.relid::text, cols.names, cov.stxname::text, \
                    format('CREATE STATISTICS %I (dependencies, ndistinct, mcv) ON %s FROM %s; ANALYZE %s;', \
                           left('ruvector_dag_' || c.relname || '_' || array_to_string(cols.names, '_'), 63), \
                           cols.list, a.relid, a.relid), \
                    a.worst_factor, a.estimated_rows, a.actual_rows, a.runs, \
                    cardinality(a.shapes), a.last_seen \
               FROM ruvector_dag.statistics_advice a \
               JOIN pg_catalog.pg_class c ON c.oid = a.relid \
              CROSS JOIN LATERAL ( \
                    SELECT array_agg(att.attname::text ORDER BY att.attnum) AS names, \
                           string_agg(quote_ident(att.attname), ', ' ORDER BY att.attnum) AS list, \
                           count(*) AS n \
                      FROM pg_catalog.pg_attribute att \
                     WHERE att.attrelid = a.relid AND att.attnum = ANY (a.columns) \
                       AND NOT att.attisdropped) cols \
               LEFT JOIN LATERAL ( \
                    SELECT s.stxname FROM pg_catalog.pg_statistic_ext s \
                     WHERE s.stxrelid = a.relid AND a.columns <@ s.stxkeys::int2[] \
                       AND s.stxkind && ARRAY['f', 'm']::\"char\"[] \
                     ORDER BY s.stxname LIMIT 1) cov ON true \
              WHERE cols.n = cardinality(a.columns) \
              ORDER BY a.worst_factor * a.runs DESC, a.relid, a.columns",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            let covered: Option<String> = r.get(3)?;
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
                match covered {
                    Some(name) => format!("covered by the statistics {name}"),
                    None => "proposed (not verified yet: measure the statement after running it)"
                        .to_string(),
                },
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<f64>(5)?.unwrap_or_default(),
                r.get::<f64>(6)?.unwrap_or_default(),
                r.get::<f64>(7)?.unwrap_or_default(),
                r.get::<i64>(8)?.unwrap_or_default(),
                r.get::<i32>(9)?.unwrap_or_default(),
                r.get::<pgrx::datum::TimestampWithTimeZone>(10)?
                    .expect("last_seen is NOT NULL"),
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
}
