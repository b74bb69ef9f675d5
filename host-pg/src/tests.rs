// Tests through SQL, as a user would call the functions (`cargo pgrx test pg15`).

use pgrx::prelude::*;

fn setup() {
    Spi::run(
        "CREATE TABLE IF NOT EXISTS t_orders (id int PRIMARY KEY, customer int, amount numeric);
         CREATE TABLE IF NOT EXISTS t_customers (id int PRIMARY KEY, region text);
         INSERT INTO t_customers SELECT g, 'r' || (g % 7) FROM generate_series(1, 500) g
           ON CONFLICT DO NOTHING;
         INSERT INTO t_orders SELECT g, 1 + g % 500, g % 97 FROM generate_series(1, 5000) g
           ON CONFLICT DO NOTHING;
         ANALYZE t_orders; ANALYZE t_customers;",
    )
    .expect("setup");
}

const JOIN: &str = "SELECT c.region, sum(o.amount) FROM t_orders o JOIN t_customers c \
                    ON c.id = o.customer WHERE o.amount > 10 GROUP BY c.region ORDER BY 2 DESC";

fn one<T: FromDatum + IntoDatum>(sql: &str) -> T {
    Spi::get_one::<T>(sql).expect("query").expect("a value")
}

#[pg_test]
fn analyze_has_one_row_per_explain_node_and_weights_sum_to_one() {
    setup();
    let nodes: i64 = one(&format!(
        "SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)"
    ));
    let explain = Spi::get_one::<pgrx::Json>(&format!("EXPLAIN (FORMAT JSON) {JOIN}"))
        .expect("explain")
        .expect("a plan")
        .0
        .to_string();
    let explain_nodes = explain.matches("\"Node Type\"").count() as i64;
    assert!(nodes >= 5, "{nodes}");
    assert_eq!(nodes, explain_nodes);
    let sum: f64 = one(&format!(
        "SELECT sum(attention) FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)"
    ));
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    let critical: i64 = one(&format!(
        "SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$) WHERE critical"
    ));
    assert!(critical >= 2 && critical < nodes, "{critical} of {nodes}");
    // The root has no consumer; every other node has at least one.
    let orphans: i64 = one(&format!(
        "SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$) \
         WHERE cardinality(consumers) = 0"
    ));
    assert_eq!(orphans, 1);
}

#[pg_test]
fn every_kind_weighs_the_plan_and_kinds_disagree() {
    setup();
    let mut tops = Vec::new();
    for kind in [
        "topological",
        "causal_cone",
        "critical_path",
        "mincut_gated",
        "hierarchical_lorentz",
        "parallel_branch",
        "temporal_btsp",
        "ensemble",
    ] {
        let sum: f64 = one(&format!(
            "SELECT sum(weight) FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, '{kind}')"
        ));
        assert!((sum - 1.0).abs() < 1e-4, "{kind}: {sum}");
        let same: bool = one(&format!(
            "SELECT array_agg(weight ORDER BY node) = (SELECT array_agg(weight ORDER BY node) \
             FROM ruvector_dag.ruvector_attention_{kind}($q${JOIN}$q$)) \
             FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, '{kind}')"
        ));
        assert!(same, "{kind}: per-kind function differs");
        let top: String = one(&format!(
            "SELECT string_agg(round(weight::numeric, 3)::text, ',' ORDER BY node) \
             FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, '{kind}')"
        ));
        tops.push(top);
    }
    tops.sort();
    tops.dedup();
    assert!(tops.len() >= 5, "kinds should weigh the plan differently: {tops:?}");
}

#[pg_test(
    error = "ruvector_dag: unknown attention kind \"nope\"; expected one of topological, causal_cone, critical_path, mincut_gated, hierarchical_lorentz, parallel_branch, temporal_btsp, ensemble"
)]
fn unknown_kind_is_named() {
    setup();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_attention_scores('SELECT 1', 'nope')").unwrap();
}

#[pg_test]
fn mincut_and_explain_json_are_computed() {
    setup();
    let cut_rows: f64 = one(&format!(
        "SELECT max(cut_rows) FROM ruvector_dag.ruvector_dag_mincut($q${JOIN}$q$)"
    ));
    let parts: f64 = one(&format!(
        "SELECT sum(rows) FROM ruvector_dag.ruvector_dag_mincut($q${JOIN}$q$)"
    ));
    assert!(cut_rows > 0.0 && (cut_rows - parts).abs() < 1e-6 * cut_rows.max(1.0));
    let n: i64 = one(&format!(
        "SELECT jsonb_array_length(ruvector_dag.ruvector_dag_explain_json($q${JOIN}$q$)::jsonb -> 'nodes')"
    ));
    let m: i64 = one(&format!(
        "SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)"
    ));
    assert_eq!(n, m);
}

#[pg_test(error = "ruvector_dag: the query text holds 2 statements; give exactly one")]
fn two_statements_are_refused() {
    setup();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_analyze('SELECT 1; DROP TABLE t_orders')")
        .unwrap();
}

#[pg_test]
fn the_query_is_planned_not_run() {
    setup();
    let before: i64 = one("SELECT count(*) FROM t_orders");
    let nodes: i64 = one(
        "SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze('DELETE FROM t_orders WHERE id > 10')",
    );
    assert!(nodes >= 2);
    assert_eq!(one::<i64>("SELECT count(*) FROM t_orders"), before);
}

#[pg_test(error = "syntax error at or near \"SELEC\"")]
fn invalid_query_text_is_postgres_own_error() {
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_analyze('SELEC 1')").unwrap();
}

#[pg_test(error = "ruvector_dag: the query text is empty")]
fn empty_query_is_refused() {
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_analyze('  ; ')").unwrap();
}

#[pg_test(error = "relation \"no_such_table\" does not exist")]
fn unknown_table_in_query_is_postgres_own_error() {
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_analyze('SELECT * FROM no_such_table')")
        .unwrap();
}

#[pg_test]
fn enable_and_disable_tables() {
    setup();
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    assert!(!one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    let listed: i64 = one(
        "SELECT count(*) FROM ruvector_dag.enabled_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(listed, 1);
    let status: String =
        one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'enabled_tables'");
    assert_eq!(status, "1");
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_disable_neural_dag('t_orders')"));
    assert!(!one::<bool>("SELECT ruvector_dag.ruvector_disable_neural_dag('t_orders')"));
}

#[pg_test(error = "relation \"no_such_table\" does not exist")]
fn enabling_an_unknown_table_is_an_error() {
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('no_such_table')").unwrap();
}

#[pg_test(
    error = "ruvector_dag: \"t_orders_pkey\" is not a table (only tables, partitioned tables and materialized views can be enabled)"
)]
fn enabling_an_index_is_an_error() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders_pkey')").unwrap();
}

#[pg_test(
    error = "ruvector_dag: ruvector_enable_neural_dag needs a superuser or a member of role ruvector_dag_admin"
)]
fn a_non_admin_cannot_enable_tables() {
    setup();
    Spi::run(
        "DROP ROLE IF EXISTS rv_plain_user; CREATE ROLE rv_plain_user;
         GRANT SELECT ON t_orders TO rv_plain_user;
         SET ROLE rv_plain_user;
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');",
    )
    .unwrap();
}

#[pg_test]
fn an_admin_member_can_enable_tables() {
    setup();
    Spi::run(
        "DROP ROLE IF EXISTS rv_admin_user; CREATE ROLE rv_admin_user IN ROLE ruvector_dag_admin;
         GRANT SELECT ON t_orders TO rv_admin_user;
         SET ROLE rv_admin_user;",
    )
    .unwrap();
    assert!(one::<bool>("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"));
    let admin: String =
        one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'is_admin'");
    assert_eq!(admin, "true");
}

#[pg_test]
fn status_reflects_settings() {
    let mode: String = one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'mode'");
    assert_eq!(mode, "observe");
    Spi::run("SET ruvector.dag_mode = 'learn'").unwrap();
    let mode: String = one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'mode'");
    assert_eq!(mode, "learn");
    let arms: String = one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'arms'");
    assert_eq!(arms, "8");
    Spi::run("SET ruvector.dag_arms = 'default|enable_seqscan=off'").unwrap();
    let arms: String = one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'arms'");
    assert_eq!(arms, "2");
    Spi::run("SET ruvector.dag_arms = 'seqscan_off'").unwrap();
    let arms: String = one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'arms'");
    assert!(arms.starts_with("invalid: ruvector.dag_arms: the first arm must be 'default'"), "{arms}");
}

#[pg_test(error = "invalid value for parameter \"ruvector.dag_mode\": \"sometimes\"")]
fn bad_mode_is_refused_by_postgres() {
    Spi::run("SET ruvector.dag_mode = 'sometimes'").unwrap();
}

#[pg_test(error = "1.5 is outside the valid range for parameter \"ruvector.dag_attention_exploration\" (0 .. 1)")]
fn bad_exploration_is_refused_by_postgres() {
    Spi::run("SET ruvector.dag_attention_exploration = 1.5").unwrap();
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

#[pg_test]
fn explain_shows_the_decision_for_enabled_tables_only() {
    setup();
    let before = explain_lines(JOIN);
    assert!(!before.iter().any(|l| l.starts_with("ruvector_dag")), "{before:?}");
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    let lines = explain_lines(JOIN);
    let decision = lines
        .iter()
        .find(|l| l.starts_with("ruvector_dag: arm 'default' (the default plan; rule default)"))
        .unwrap_or_else(|| panic!("no decision in {lines:?}"));
    assert!(decision.contains("attention topological"), "{decision}");
    assert!(
        lines.iter().any(|l| l.starts_with("ruvector_dag reason: no pattern learned yet")),
        "{lines:?}"
    );
    // The plan itself is still printed, unchanged in observe mode.
    assert_eq!(lines[0], before[0]);
    let planned: String = one(
        "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_planned_in_scope'",
    );
    assert!(planned.parse::<u64>().unwrap() >= 1);
}

#[pg_test]
fn an_applied_arm_leaves_the_session_settings_alone_even_on_error() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_arms = 'default|enable_hashjoin=off;enable_mergejoin=off';
         SET ruvector.dag_attention_exploration = 1.0;
         SET ruvector.dag_replan_min_cost = 0;
         SET enable_nestloop = on;",
    )
    .unwrap();
    // First run: the default arm, which gives the baseline exploration waits for.
    Spi::run(JOIN).unwrap();
    // Now the other arm is explored, so it is applied while planning.
    let lines = explain_lines(JOIN);
    assert!(
        lines.iter().any(|l| l.contains("arm 'enable_hashjoin=off;enable_mergejoin=off' (applied")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("Nested Loop")), "the arm shaped the plan: {lines:?}");
    let hashjoin: String = one("SELECT current_setting('enable_hashjoin')");
    assert_eq!(hashjoin, "on");
    // A statement that fails at execution, under the applied arm, inside a subtransaction.
    Spi::run(&format!(
        "DO $$ BEGIN PERFORM count(*) FROM ({JOIN}) q WHERE 1 / (length(q.region) - length(q.region)) = 1;
         EXCEPTION WHEN division_by_zero THEN NULL; END $$"
    ))
    .unwrap();
    let hashjoin: String = one("SELECT current_setting('enable_hashjoin')");
    let mergejoin: String = one("SELECT current_setting('enable_mergejoin')");
    assert_eq!((hashjoin.as_str(), mergejoin.as_str()), ("on", "on"));
    let applied: String = one(
        "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_arms_applied'",
    );
    assert!(applied.parse::<u64>().unwrap() >= 1, "{applied}");
}

#[pg_test]
fn executed_statements_become_trajectories_and_learn_makes_patterns() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'observe';",
    )
    .unwrap();
    for _ in 0..12 {
        let _: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    }
    let observed: String =
        one("SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_observed'");
    assert!(observed.parse::<u64>().unwrap() >= 12, "{observed}");
    let (trajectories, patterns): (i64, i64) = Spi::get_two(
        "SELECT trajectories, patterns FROM ruvector_dag.ruvector_dag_learn()",
    )
    .map(|(a, b)| (a.unwrap_or(0), b.unwrap_or(0)))
    .unwrap();
    assert!(trajectories >= 12, "{trajectories}");
    assert!(patterns >= 1, "{patterns}");
}
