// Helpers every SQL test file shares (the files are included into one module, lib.rs `tests`).

use pgrx::prelude::*;

/// Every test's transaction is rolled back, but the shared evidence book lives on in the test
/// server's shared memory, and the tests run at once in sessions of their own: each test that
/// learns waits for the others (a lock its rolled-back transaction holds to its end) and
/// starts from an empty book (seeded from the learned state again, as after a server start).
fn fresh_book() {
    Spi::run("SELECT pg_catalog.pg_advisory_xact_lock(7263, 1)").expect("the tests' lock");
    crate::book::clear(crate::database(), 0);
}

fn setup() {
    fresh_book();
    Spi::run(
        "CREATE TABLE IF NOT EXISTS t_orders (id int PRIMARY KEY, customer int, amount numeric);
         CREATE TABLE IF NOT EXISTS t_customers (id int PRIMARY KEY, region text);
         INSERT INTO t_customers SELECT g, 'r' || (g % 7) FROM generate_series(1, 500) g
           ON CONFLICT DO NOTHING;
         INSERT INTO t_orders SELECT g, 1 + g % 500, g % 97 FROM generate_series(1, 5000) g
           ON CONFLICT DO NOTHING;
         ANALYZE t_orders; ANALYZE t_customers;
         SET ruvector.dag_replan_min_cost = 0;",
    )
    .expect("setup");
}

/// Learn mode with one other arm (no hash or merge join), explored at its first chance;
/// `enable`: t_orders enabled first.
fn learn_exploring_one_arm(enable: bool) {
    if enable {
        Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    }
    Spi::run(
        "SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_arms = 'default|enable_hashjoin=off;enable_mergejoin=off';
         SET ruvector.dag_explore_min_ms = 0;
         SET ruvector.dag_attention_exploration = 1.0;",
    )
    .unwrap();
}

const JOIN: &str = "SELECT c.region, sum(o.amount) FROM t_orders o JOIN t_customers c \
                    ON c.id = o.customer WHERE o.amount > 10 GROUP BY c.region ORDER BY 2 DESC";

fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql).expect("query").expect("a value")
}

/// One value of `ruvector_dag_status()`.
fn status(key: &str) -> String {
    one(&format!(
        "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = '{key}'"
    ))
}

/// A counter of `ruvector_dag_status()`.
fn counter(key: &str) -> u64 {
    status(key).parse().expect("a number")
}

fn explain_lines(sql: &str) -> Vec<String> {
    Spi::connect(|c| {
        let rows = c.select(&format!("EXPLAIN {sql}"), None, &[])?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .expect("explain")
}

fn timed_run(sql: &str) -> f64 {
    let t0 = std::time::Instant::now();
    Spi::run(sql).unwrap();
    t0.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// The first line of EXPLAIN's decision (`ruvector_dag: arm '...' (...)`).
fn decision_line(sql: &str) -> String {
    let lines = explain_lines(sql);
    lines
        .iter()
        .find(|l| l.starts_with("ruvector_dag: arm"))
        .cloned()
        .unwrap_or_else(|| panic!("no decision in EXPLAIN: {lines:?}"))
}

/// The ERROR text of `sql`, caught in a subtransaction (None when it succeeded).
fn error_of(sql: &str) -> Option<String> {
    Spi::run(
        "CREATE TEMP TABLE IF NOT EXISTS rv_caught (msg text); TRUNCATE rv_caught;",
    )
    .unwrap();
    Spi::run(&format!(
        "DO $do$ BEGIN PERFORM * FROM ({sql}) s;
         EXCEPTION WHEN OTHERS THEN INSERT INTO rv_caught VALUES (SQLERRM); END $do$"
    ))
    .unwrap();
    Spi::get_one::<String>("SELECT (SELECT msg FROM rv_caught)").unwrap()
}

/// The first column of every row of `sql`, as text.
fn texts(sql: &str) -> Vec<String> {
    Spi::connect(|c| {
        let rows = c.select(sql, None, &[])?;
        rows.map(|r| r.get::<String>(1).map(Option::unwrap_or_default))
            .collect::<Result<Vec<_>, _>>()
    })
    .unwrap()
}
