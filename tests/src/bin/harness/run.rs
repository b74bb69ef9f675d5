//! Running one query instance under a mode, and the oracle (every arm, best kept).

use postgres::error::SqlState;
use serde::Serialize;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Stock,
    Learn,
    Frozen,
    Oracle,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Stock, Mode::Learn, Mode::Frozen, Mode::Oracle];
    pub fn name(self) -> &'static str {
        match self {
            Mode::Stock => "stock",
            Mode::Learn => "learn",
            Mode::Frozen => "frozen",
            Mode::Oracle => "oracle",
        }
    }
    /// The extension's `ruvector.dag_mode` for this mode's session.
    pub fn dag_mode(self) -> &'static str {
        match self {
            Mode::Stock | Mode::Oracle => "off",
            Mode::Learn => "learn",
            Mode::Frozen => "frozen",
        }
    }
}

/// One execution: planning + execution time from EXPLAIN (ANALYZE, TIMING OFF), and the
/// extension's decision from its EXPLAIN line.
#[derive(Clone, Debug, Serialize)]
pub struct Exec {
    pub workload: String,
    pub round: u32,
    /// The instance's number in the workload (1-based, in arrival order): the x of the curve.
    pub seq: u32,
    pub template: String,
    pub mode: Mode,
    pub ms: f64,
    pub planning_ms: f64,
    pub arm: String,
    pub rule: String,
    pub applied: bool,
    pub timed_out: bool,
    pub error: Option<String>,
    /// Oracle only: distinct plans among the arms, and how many ran.
    pub plans: u32,
    pub ran: u32,
    /// The first instance its session ran (a session loads the learned state then).
    pub first_in_session: bool,
    /// Oracle only, with more than [`FIRST_ARMS`] arms: the oracle over the first
    /// [`FIRST_ARMS`] (the list before the larger choice), from the same runs.
    pub first_arms_ms: Option<f64>,
    /// Oracle only: every arm's time in this instance (the held-out oracle chooses among them
    /// on the other rounds, see `report::held_out`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub oracle_arms: Vec<ArmTime>,
}

/// One arm's time in an oracle instance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ArmTime {
    pub arm: String,
    /// The median of its plan's runs, ms; when `censored`, the time its first run was cut
    /// short at (the best plan's so far: the arm's plan is at least that slow).
    pub ms: f64,
    pub censored: bool,
}

/// What one EXPLAIN ANALYZE (text) said.
#[derive(Debug, Default, PartialEq)]
pub struct Explained {
    pub planning_ms: f64,
    pub execution_ms: f64,
    pub arm: String,
    pub rule: String,
    pub applied: bool,
}

pub fn parse_explain_text(lines: &[String]) -> Result<Explained, String> {
    let mut e = Explained {
        arm: "-".into(),
        rule: "-".into(),
        ..Explained::default()
    };
    let mut saw_exec = false;
    let num = |l: &str| -> Result<f64, String> {
        l.split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("unreadable EXPLAIN line {l:?}"))
    };
    for l in lines {
        if l.starts_with("Planning Time:") {
            e.planning_ms = num(l)?;
        } else if l.starts_with("Execution Time:") {
            e.execution_ms = num(l)?;
            saw_exec = true;
        } else if let Some(rest) = l.strip_prefix("ruvector_dag: arm '") {
            // ruvector_dag: arm 'NAME' (applied; rule verified), pattern ...
            let (name, tail) = rest
                .split_once("' (")
                .ok_or_else(|| format!("unreadable decision line {l:?}"))?;
            e.arm = name.to_string();
            e.applied = tail.starts_with("applied") || tail.starts_with("the default plan");
            e.rule = tail
                .split_once("rule ")
                .and_then(|(_, r)| r.split(')').next())
                .unwrap_or("-")
                .to_string();
        }
    }
    if !saw_exec {
        return Err("EXPLAIN ANALYZE output without an Execution Time line".into());
    }
    Ok(e)
}

/// A PostgreSQL error with the server's message (the client's Display says only "db error").
pub fn pg_error(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut m = format!("{} ({})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                m.push_str(&format!("; {d}"));
            }
            m
        }
        None => e.to_string(),
    }
}

pub enum Outcome {
    Done(Explained),
    TimedOut,
    Failed(String),
}

fn explain_lines(client: &mut postgres::Client, sql: &str) -> Result<Vec<String>, postgres::Error> {
    let mut lines = Vec::new();
    for m in client.simple_query(sql)? {
        if let postgres::SimpleQueryMessage::Row(r) = m {
            lines.push(r.get(0).unwrap_or_default().to_string());
        }
    }
    Ok(lines)
}

fn outcome_of(r: Result<Vec<String>, postgres::Error>) -> Outcome {
    match r {
        Ok(lines) => match parse_explain_text(&lines) {
            Ok(e) => Outcome::Done(e),
            Err(e) => Outcome::Failed(e),
        },
        Err(e) if e.code() == Some(&SqlState::QUERY_CANCELED) => Outcome::TimedOut,
        Err(e) => Outcome::Failed(pg_error(&e)),
    }
}

/// EXPLAIN (ANALYZE, TIMING OFF) of `query` in the session (its mode set at connect).
pub fn run_once(client: &mut postgres::Client, query: &str, timeout_ms: u64) -> Outcome {
    let set = format!("SET statement_timeout = {timeout_ms}");
    if client.batch_execute(&set).is_err() {
        // A late timeout of the statement before: once more.
        if let Err(e) = client.batch_execute(&set) {
            return Outcome::Failed(pg_error(&e));
        }
    }
    outcome_of(explain_lines(
        client,
        &format!("EXPLAIN (ANALYZE, TIMING OFF) {query}"),
    ))
}

/// The arms of `ruvector.dag_arms` (as the extension parses them, `ruvector_dag_arms()`): name
/// and its `SET LOCAL` statements.
pub fn arms(client: &mut postgres::Client) -> Result<Vec<(String, String)>, String> {
    let rows = client
        .query(
            "SELECT name, coalesce(string_agg(format('SET LOCAL %s = %L;', setting, value), ' ') \
             FILTER (WHERE setting IS NOT NULL), '') \
             FROM ruvector_dag.ruvector_dag_arms() GROUP BY arm, name ORDER BY arm",
            &[],
        )
        .map_err(|e| format!("ruvector_dag_arms(): {}", pg_error(&e)))?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Run `body` in a transaction after `sets` (SET LOCAL statements), then roll back. A statement
/// timeout can be delivered to the statement after the one it was meant for (the timer fires as
/// the statement finishes): any failure of the transaction's own statements ends in a ROLLBACK,
/// retried once, so the session is never left in an aborted transaction.
fn in_rolled_back_txn(
    client: &mut postgres::Client,
    sets: &str,
    body: &str,
) -> Result<Vec<String>, postgres::Error> {
    let r = client
        .batch_execute(&format!("BEGIN; {sets}"))
        .and_then(|()| explain_lines(client, body));
    if client.batch_execute("ROLLBACK").is_err() {
        let _ = client.batch_execute("ROLLBACK");
    }
    r
}

fn plan_shape(client: &mut postgres::Client, sets: &str, query: &str) -> Result<u64, String> {
    let mut last = String::new();
    for _ in 0..2 {
        match in_rolled_back_txn(client, sets, &format!("EXPLAIN (FORMAT JSON) {query}")) {
            Ok(lines) => {
                // The extension's own notion of "the same plan" (`PlanDag::shape_hash`, what
                // it keys candidates by), so the oracle runs each plan the extension can tell
                // apart once.
                let dag = ruvector_dag_core::explain::parse_explain(&lines.concat())
                    .map_err(|e| format!("EXPLAIN JSON: {e}"))?;
                return Ok(dag.shape_hash());
            }
            // A late statement timeout of the arm run before: once more.
            Err(e) => last = pg_error(&e),
        }
    }
    Err(format!("planning under the arm: {last}"))
}

pub struct OracleResult {
    pub arm: String,
    pub ms: f64,
    pub planning_ms: f64,
    pub plans: u32,
    pub ran: u32,
    /// The best among the first [`FIRST_ARMS`] arms' plans, when there are more arms.
    pub first_arms_ms: Option<f64>,
    /// Every arm's time, in the arms' order (an arm whose plan an earlier arm has: that
    /// plan's time).
    pub arms: Vec<ArmTime>,
}

/// The arms the extension chose among before the larger choice (issue 23): the oracle over
/// them is reported beside the oracle over every arm, so the ceiling's move is measured.
pub const FIRST_ARMS: usize = 8;

/// Runs of each distinct plan the oracle times: the median is its time (one run with the best
/// of several kept would flatter the oracle: the winner's curse).
pub const ORACLE_RUNS: usize = 3;

/// The best plan of `query` among every arm's distinct plans, each timed as the median of
/// [`ORACLE_RUNS`] runs (the default plan's too), a plan whose run is slower than the best so far
/// cut short by `statement_timeout` and out. Runs in a session with the extension off.
pub fn oracle(
    client: &mut postgres::Client,
    arms: &[(String, String)],
    query: &str,
) -> Result<OracleResult, String> {
    let mut best: Option<OracleResult> = None;
    // Each distinct plan's time, by its shape.
    let mut seen: Vec<(u64, f64, bool)> = Vec::new();
    let mut times: Vec<ArmTime> = Vec::with_capacity(arms.len());
    let mut first_arms_ms = None;
    for (i, (name, sets)) in arms.iter().enumerate() {
        if i == FIRST_ARMS {
            first_arms_ms = best.as_ref().map(|b| b.ms);
        }
        let shape = plan_shape(client, sets, query)?;
        if let Some(&(_, ms, censored)) = seen.iter().find(|s| s.0 == shape) {
            times.push(ArmTime {
                arm: name.clone(),
                ms,
                censored,
            });
            continue;
        }
        let cap = best.as_ref().map(|b| b.ms);
        let typical = median_run(client, sets, query, cap)
            .map_err(|e| format!("oracle arm '{name}': {e}"))?;
        let (ms, censored) = match typical {
            Some((ms, _)) => (ms, false),
            // Cut short at the best so far: at least that slow.
            None => (cap.unwrap_or(f64::INFINITY), true),
        };
        seen.push((shape, ms, censored));
        times.push(ArmTime {
            arm: name.clone(),
            ms,
            censored,
        });
        let (plans, ran) = best.as_ref().map_or((0, 0), |b| (b.plans, b.ran));
        match typical {
            Some((ms, planning_ms)) if cap.is_none_or(|c| ms < c) => {
                best = Some(OracleResult {
                    arm: name.clone(),
                    ms,
                    planning_ms,
                    plans: plans + 1,
                    ran: ran + 1,
                    first_arms_ms: None,
                    arms: Vec::new(),
                });
            }
            _ => {
                if let Some(b) = best.as_mut() {
                    b.plans += 1;
                    b.ran += 1;
                }
            }
        }
    }
    let mut best = best.ok_or_else(|| "no arm to time".to_string())?;
    best.first_arms_ms = first_arms_ms;
    best.arms = times;
    Ok(best)
}

/// The median of [`ORACLE_RUNS`] runs of `query` under `sets` (SET LOCAL statements): (ms,
/// planning ms); None when a run took longer than `cap` ms (cut by `statement_timeout`).
fn median_run(
    client: &mut postgres::Client,
    sets: &str,
    query: &str,
    cap: Option<f64>,
) -> Result<Option<(f64, f64)>, String> {
    let timeout = cap.map_or(String::new(), |c| {
        format!(
            "SET LOCAL statement_timeout = {};",
            (c.ceil() as u64).max(1) + 1
        )
    });
    let mut runs = Vec::with_capacity(ORACLE_RUNS);
    for _ in 0..ORACLE_RUNS {
        match outcome_of(in_rolled_back_txn(
            client,
            &format!("{sets} {timeout}"),
            &format!("EXPLAIN (ANALYZE, TIMING OFF) {query}"),
        )) {
            Outcome::Done(e) => runs.push((e.planning_ms + e.execution_ms, e.planning_ms)),
            Outcome::TimedOut => return Ok(None),
            Outcome::Failed(e) => return Err(e),
        }
    }
    runs.sort_by(|a, b| a.0.total_cmp(&b.0));
    Ok(Some(runs[runs.len() / 2]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_times_and_the_decision() {
        let lines: Vec<String> = [
            "Hash Join  (cost=1.00..2.00 rows=1 width=8) (actual rows=10 loops=1)",
            "ruvector_dag: arm 'enable_nestloop=off' (applied; rule verified), pattern 3, similarity 0.991, confidence 0.800, attention topological, predicted 12.000 ms",
            "ruvector_dag reason: verified",
            "Planning Time: 0.250 ms",
            "Execution Time: 12.500 ms",
        ]
        .map(String::from)
        .to_vec();
        let e = parse_explain_text(&lines).unwrap();
        assert_eq!(e.arm, "enable_nestloop=off");
        assert_eq!(e.rule, "verified");
        assert!(e.applied);
        assert_eq!((e.planning_ms, e.execution_ms), (0.25, 12.5));
        let advice = [
            "ruvector_dag: arm 'x=off' (advice only, mode observe; rule explore), pattern none",
            "Execution Time: 1.0 ms",
        ]
        .map(String::from)
        .to_vec();
        let e = parse_explain_text(&advice).unwrap();
        assert!(!e.applied);
        assert_eq!(e.rule, "explore");
        assert!(parse_explain_text(&["Planning Time: 1 ms".to_string()]).is_err());
    }
}
