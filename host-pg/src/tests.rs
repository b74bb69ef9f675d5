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
    error = "ruvector_dag: unknown attention kind \"nope\"; expected one of topological, causal_cone, critical_path, mincut_gated, hierarchical_lorentz, parallel_branch, temporal_btsp, ensemble, or plugin:<name> for a registered attention plugin"
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

#[pg_test]
fn the_web_demo_reads_explain_json_and_weighs_it_as_the_extension_does() {
    setup();
    let doc: pgrx::Json = one(&format!(
        "SELECT ruvector_dag.ruvector_dag_explain_json($q${JOIN}$q$)"
    ));
    let page = ruvector_dag_web::analyze_document(&doc.0.to_string(), &[]).expect("the demo reads it");
    assert_eq!(page["source"], "ruvector_dag_explain_json");
    let ours = doc.0["nodes"].as_array().unwrap();
    let theirs = page["nodes"].as_array().unwrap();
    assert_eq!(ours.len(), theirs.len());
    for (a, b) in ours.iter().zip(theirs) {
        for kind in page["kinds"].as_array().unwrap() {
            let k = kind.as_str().unwrap();
            let (x, y) = (a["attention"][k].as_f64().unwrap(), b["weights"][k].as_f64().unwrap());
            assert!((x - y).abs() < 1e-6, "node {} {k}: extension {x}, demo {y}", a["id"]);
        }
        assert_eq!(a["critical"], b["critical"]);
    }
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
    assert_eq!(status("enabled_tables"), "1");
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
    let admin = status("is_admin");
    assert_eq!(admin, "true");
}

#[pg_test]
fn status_reflects_settings() {
    let mode = status("mode");
    assert_eq!(mode, "observe");
    Spi::run("SET ruvector.dag_mode = 'learn'").unwrap();
    let mode = status("mode");
    assert_eq!(mode, "learn");
    let arms = status("arms");
    assert_eq!(arms, "8");
    let (ring, setting): (String, i64) = Spi::get_two(
        "SELECT (SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'ring_bytes'),
                pg_size_bytes(current_setting('ruvector.dag_ring_size'))",
    )
    .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or(0)))
    .unwrap();
    assert_eq!(ring, setting.to_string());
    assert!(setting >= 1 << 20);
    Spi::run("SET ruvector.dag_arms = 'default|enable_seqscan=off'").unwrap();
    let arms = status("arms");
    assert_eq!(arms, "2");
    // A malformed arm list is refused when set, with the reason, and the old value stays.
    Spi::run(
        "CREATE TEMP TABLE guc_errors (msg text, detail text);
         DO $$ DECLARE d text; BEGIN
           SET ruvector.dag_arms = 'seqscan_off';
         EXCEPTION WHEN invalid_parameter_value THEN
           GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
           INSERT INTO guc_errors VALUES (SQLERRM, d);
         END $$;",
    )
    .unwrap();
    let detail: String = one("SELECT detail FROM guc_errors");
    assert_eq!(detail, "ruvector.dag_arms: the first arm must be 'default', not 'seqscan_off'");
    let arms = status("arms");
    assert_eq!(arms, "2");
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
        lines.iter().any(|l| l.starts_with("ruvector_dag reason: measuring the default plan first")),
        "{lines:?}"
    );
    // The plan itself is still printed, unchanged in observe mode.
    assert_eq!(lines[0], before[0]);
    let planned = status("backend_planned_in_scope");
    assert!(planned.parse::<u64>().unwrap() >= 1);
}

#[pg_test]
fn an_explored_arm_is_applied_while_planning_and_leaves_the_session_settings_alone() {
    setup();
    learn_exploring_one_arm(true);
    Spi::run("SET enable_nestloop = on").unwrap();
    // First run: the default plan, whose time exploration waits for.
    Spi::run(JOIN).unwrap();
    // Now the statement is planned under the other arm too, and its plan explored.
    let lines = explain_lines(JOIN);
    assert!(
        lines.iter().any(|l| l.contains("arm 'enable_hashjoin=off;enable_mergejoin=off' (applied; rule explore)")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.contains("Nested Loop")), "the arm shaped the plan: {lines:?}");
    assert!(lines.iter().any(|l| l.contains("1 arms planned: 1 distinct plans")), "{lines:?}");
    assert!(counter("backend_candidate_sets") >= 1);
    let hashjoin: String = one("SELECT current_setting('enable_hashjoin')");
    assert_eq!(hashjoin, "on");
}

#[pg_test]
fn an_error_while_planning_under_an_arm_falls_back_and_leaks_no_setting() {
    setup();
    // Folded at plan time (immutable, constant argument), and failing only under the arm.
    Spi::run(
        "CREATE FUNCTION rv_boom(int) RETURNS int IMMUTABLE LANGUAGE plpgsql AS $$
         BEGIN
           IF current_setting('enable_hashjoin') = 'off' THEN RAISE EXCEPTION 'planned under the arm'; END IF;
           RETURN $1;
         END $$;
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_arms = 'default|enable_hashjoin=off;enable_mergejoin=off';
         SET ruvector.dag_explore_min_ms = 0;
         SET ruvector.dag_attention_exploration = 1.0;",
    )
    .unwrap();
    let q = format!("SELECT count(*) FROM ({JOIN}) q WHERE q.sum > rv_boom(1)");
    let first: i64 = one(&q);
    let fallbacks = counter("backend_fallbacks");
    // The second run plans the candidates: planning under the arm raises, is rolled back, and
    // the statement runs with the default plan.
    let second: i64 = one(&q);
    assert_eq!(first, second);
    assert!(counter("backend_fallbacks") > fallbacks);
    let last = status("backend_last_error");
    assert!(last.contains("planned under the arm"), "{last}");
    let (hashjoin, mergejoin): (String, String) = Spi::get_two(
        "SELECT current_setting('enable_hashjoin'), current_setting('enable_mergejoin')",
    )
    .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or_default()))
    .unwrap();
    assert_eq!((hashjoin.as_str(), mergejoin.as_str()), ("on", "on"));
}

#[pg_test]
fn executed_statements_become_trajectories_and_learn_makes_patterns() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'observe';
         SET ruvector.dag_node_timing_rate = 1;",
    )
    .unwrap();
    for _ in 0..12 {
        let _: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    }
    let observed = status("backend_observed");
    assert!(observed.parse::<u64>().unwrap() >= 12, "{observed}");
    let (trajectories, patterns): (i64, i64) = Spi::get_two(
        "SELECT trajectories, patterns FROM ruvector_dag.ruvector_dag_learn()",
    )
    .map(|(a, b)| (a.unwrap_or(0), b.unwrap_or(0)))
    .unwrap();
    assert!(trajectories >= 12, "{trajectories}");
    assert!(patterns >= 1, "{patterns}");
    // Per-node actual times: every node of the executed plan measured, shares summing to 1.
    let timed: i64 = one(
        "SELECT count(*) FROM ruvector_dag.trajectory_history
         WHERE timed_nodes >= 5 AND timed_nodes = cardinality(node_shares)
           AND abs((SELECT sum(x) FROM unnest(node_shares) x) - 1) < 0.01
           AND (SELECT count(*) FROM unnest(node_shares) x WHERE x > 0) >= 2",
    );
    assert!(timed >= 12, "{timed}");
    // No query text or constants in what is kept.
    let texty: i64 = one(
        "SELECT count(*) FROM ruvector_dag.trajectory_history WHERE arm LIKE '%t_orders%'",
    );
    assert_eq!(texty, 0);
    let (members, listed): (i64, i64) = Spi::get_two(
        "SELECT max(members), count(*) FROM ruvector_dag.ruvector_dag_patterns()",
    )
    .map(|(a, b)| (a.unwrap_or(0), b.unwrap_or(0)))
    .unwrap();
    assert!(members >= 12, "{members}");
    let stored: i64 = one("SELECT count(*) FROM ruvector_dag.patterns");
    assert_eq!(stored, listed);
}

#[pg_test]
fn off_mode_ignores_and_frozen_mode_records_nothing() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'off';",
    )
    .unwrap();
    let lines = explain_lines(JOIN);
    assert!(!lines.iter().any(|l| l.starts_with("ruvector_dag")), "{lines:?}");
    let observed = || counter("backend_observed");
    let before = observed();
    Spi::run(JOIN).unwrap();
    assert_eq!(observed(), before);
    Spi::run("SET ruvector.dag_mode = 'frozen'").unwrap();
    let lines = explain_lines(JOIN);
    assert!(lines.iter().any(|l| l.starts_with("ruvector_dag: arm")), "{lines:?}");
    Spi::run(JOIN).unwrap();
    assert_eq!(observed(), before);
    Spi::run("SET ruvector.dag_mode = 'observe'").unwrap();
    Spi::run(JOIN).unwrap();
    assert_eq!(observed(), before + 1);
    // Statements cheaper than ruvector.dag_replan_min_cost are left alone.
    Spi::run("SET ruvector.dag_replan_min_cost = 1e9").unwrap();
    Spi::run(JOIN).unwrap();
    assert_eq!(observed(), before + 1);
    let lines = explain_lines(JOIN);
    assert!(!lines.iter().any(|l| l.starts_with("ruvector_dag")), "{lines:?}");
}

/// Orders whose region, country and city always agree (the planner multiplies their
/// selectivities and expects 1 row where 1,000 match), joined to items through an index on a
/// low-cardinality column: the default plan is a nested loop that probes 800 items per order;
/// with `enable_nestloop=off` it is a hash join, tens of times faster.
fn correlated_setup() {
    Spi::run(
        "CREATE TABLE IF NOT EXISTS corr_orders (id int PRIMARY KEY, region int, country int, city int, item int);
         CREATE TABLE IF NOT EXISTS corr_items (id int, sku int, bucket int, price numeric);
         TRUNCATE corr_orders, corr_items;
         INSERT INTO corr_orders SELECT g, g % 50, g % 50, g % 50, g % 20000 FROM generate_series(1, 50000) g;
         INSERT INTO corr_items SELECT g, g % 20000, g % 50, g % 97 FROM generate_series(1, 40000) g;
         CREATE INDEX IF NOT EXISTS corr_items_bucket ON corr_items (bucket);
         ANALYZE corr_orders; ANALYZE corr_items;
         SELECT ruvector_dag.ruvector_enable_neural_dag('corr_orders');
         SET ruvector.dag_replan_min_cost = 0;",
    )
    .unwrap();
}

const CORRELATED: &str = "SELECT count(*), sum(i.price) FROM corr_orders o JOIN corr_items i \
     ON i.bucket = o.region AND i.sku = o.item WHERE o.region = 7 AND o.country = 7 AND o.city = 7";

fn timed_run(sql: &str) -> f64 {
    let t0 = std::time::Instant::now();
    Spi::run(sql).unwrap();
    t0.elapsed().as_secs_f64() * 1000.0
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[pg_test]
fn learn_mode_finds_the_faster_arm_for_correlated_columns() {
    setup();
    correlated_setup();
    Spi::run("SET ruvector.dag_mode = 'off'").unwrap();
    let default_ms = median((0..3).map(|_| timed_run(CORRELATED)).collect());
    let fast_ms = {
        Spi::run("SET enable_nestloop = off").unwrap();
        let ms = median((0..3).map(|_| timed_run(CORRELATED)).collect());
        Spi::run("RESET enable_nestloop").unwrap();
        ms
    };
    assert!(default_ms >= 5.0 * fast_ms, "dataset: default {default_ms:.1} ms, nestloop off {fast_ms:.1} ms");
    // The shipped defaults (exploration budget, explore_min_ms, arms): a faster plan is
    // verified and applied within 5 runs, and learning goes on to the fastest candidate.
    Spi::run("SET ruvector.dag_mode = 'learn'").unwrap();
    // Adopted: a plan verified faster for the shape, applied from then on (or the fallback of
    // an exploration that goes on, charged against it).
    let mut adopted = None;
    let mut runs = 0;
    let mut reasons = Vec::new();
    let mut after_adoption = Vec::new();
    for run in 1..=16 {
        let ms = timed_run(CORRELATED);
        if adopted.is_some() {
            after_adoption.push(ms);
        }
        runs = run;
        let lines = explain_lines(CORRELATED);
        if lines.iter().any(|l| l.contains("verified: the plan of")) {
            adopted.get_or_insert(run);
        }
        reasons.push(format!("after run {run}: {}", lines.iter().filter(|l| l.starts_with("ruvector_dag")).cloned().collect::<Vec<_>>().join(" / ")));
    }
    let first = adopted.unwrap_or_else(|| panic!("nothing adopted: {reasons:#?}"));
    assert!(first <= 5, "first adoption after {first} runs: {reasons:#?}");
    // Once a plan is verified, exploring goes on only where it risks less than it could save:
    // no run as slow as the default plan again.
    assert!(
        after_adoption.iter().all(|&ms| ms < default_ms),
        "after adoption: {after_adoption:?} ms against the default's {default_ms:.1} ms: {reasons:#?}"
    );
    // Frozen: the verified plan applies, nothing is explored, and EXPLAIN says why.
    Spi::run("SET ruvector.dag_mode = 'frozen'").unwrap();
    let lines = explain_lines(CORRELATED);
    let decision = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")).unwrap();
    assert!(decision.contains("(applied; rule verified)"), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("reason: verified: the plan of")), "{lines:?}");
    assert!(!decision.contains("arm 'default'"), "{lines:?}");
    let learned_ms = median((0..5).map(|_| timed_run(CORRELATED)).collect());
    assert!(
        learned_ms * 1.2 < default_ms,
        "learned {learned_ms:.1} ms vs default {default_ms:.1} ms after {runs} runs"
    );
}

#[pg_test]
fn a_regressing_arm_is_reverted_and_blocked() {
    setup();
    correlated_setup();
    // Without the correlated predicates the default is a hash join; the only other arm forces
    // the nested loop, which is far slower.
    let fair = "SELECT count(*), sum(i.price) FROM corr_orders o JOIN corr_items i \
                ON i.bucket = o.region AND i.sku = o.item WHERE o.region = 7";
    learn_exploring_one_arm(false);
    timed_run(fair); // the default plan: the baseline
    timed_run(fair); // the other arm's plan is either screened out or explored once
    let lines = explain_lines(fair);
    let reason = lines
        .iter()
        .find(|l| l.starts_with("ruvector_dag reason"))
        .cloned()
        .unwrap_or_default();
    if status("backend_reverted") == "0" {
        // The planner costs the forced nested loop far above the hash join: never run blind.
        assert!(reason.contains("not explored blind"), "{lines:?}");
        assert!(lines.iter().any(|l| l.starts_with("ruvector_dag: arm 'default'")), "{lines:?}");
        return;
    }
    // Explored once, a regression: blocked at once, and the learner logs it for every backend.
    assert!(
        reason.contains("blocked by BTSP memory: enable_hashjoin=off;enable_mergejoin=off"),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("ruvector_dag: arm 'default'")), "{lines:?}");
}

#[pg_test]
fn export_import_round_trip_and_corrupt_bytes_are_refused() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    for _ in 0..6 {
        Spi::run(JOIN).unwrap();
    }
    let patterns: i64 = one("SELECT patterns FROM ruvector_dag.ruvector_dag_learn()");
    assert!(patterns >= 1);
    Spi::run("CREATE TEMP TABLE saved AS SELECT ruvector_dag.ruvector_dag_export() AS b").unwrap();
    let forgotten: i64 = one("SELECT ruvector_dag.ruvector_dag_reset()");
    assert_eq!(forgotten, patterns);
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, 0);
    let imported: i64 = one("SELECT ruvector_dag.ruvector_dag_import(b) FROM saved");
    assert_eq!(imported, patterns);
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, patterns);
    // One flipped byte in the middle: refused, named, and the state stays.
    Spi::run(
        "CREATE TEMP TABLE import_errors (msg text);
         DO $$ BEGIN
           PERFORM ruvector_dag.ruvector_dag_import(
             set_byte(b, length(b) / 2, get_byte(b, length(b) / 2) # 1)) FROM saved;
         EXCEPTION WHEN data_corrupted THEN
           INSERT INTO import_errors VALUES (SQLERRM);
         END $$;",
    )
    .unwrap();
    let err: String = one("SELECT coalesce(string_agg(msg, ' '), 'accepted') FROM import_errors");
    assert!(err.contains("ruvector_dag_import: the bytes are not a usable learned state"), "{err}");
    let now: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(now, patterns);
}

#[pg_test(
    error = "ruvector_dag_import: the bytes are not a usable learned state: learned state cannot be read: 5 bytes is shorter than the 20-byte header"
)]
fn garbage_import_is_refused() {
    Spi::run("SELECT ruvector_dag.ruvector_dag_import('\\x0102030405'::bytea)").unwrap();
}

#[pg_test(error = "invalid value for parameter \"ruvector.dag_arms\": \"nodefault|x\"")]
fn bad_arms_are_refused_by_postgres() {
    Spi::run("SET ruvector.dag_arms = 'nodefault|x'").unwrap();
}

#[pg_test]
fn works_alongside_pg_stat_statements() {
    setup();
    Spi::run(
        "CREATE EXTENSION IF NOT EXISTS pg_stat_statements;
         SET pg_stat_statements.track = 'all';
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';",
    )
    .unwrap();
    for _ in 0..3 {
        Spi::run(JOIN).unwrap();
    }
    let lines = explain_lines(JOIN);
    assert!(lines.iter().any(|l| l.starts_with("ruvector_dag: arm")), "{lines:?}");
    let observed = status("backend_observed");
    assert!(observed.parse::<u64>().unwrap() >= 3);
    let calls: i64 = one(
        "SELECT coalesce(sum(calls), 0)::bigint FROM pg_stat_statements WHERE query LIKE '%t_customers c ON c.id = o.customer%'",
    );
    assert!(calls >= 1, "{calls}");
}

#[pg_test]
fn health_reports_and_repairs_an_invalid_index() {
    setup();
    Spi::run(
        "CREATE INDEX IF NOT EXISTS t_orders_customer ON t_orders (customer);
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         UPDATE pg_index SET indisvalid = false WHERE indexrelid = 't_orders_customer'::regclass;",
    )
    .unwrap();
    let status: String = one(
        "SELECT status FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'invalid_index' AND object = 't_orders_customer'",
    );
    assert_eq!(status, "warning");
    Spi::run("SET ruvector.dag_healing_repair = on").unwrap();
    let status: String = one(
        "SELECT status FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'invalid_index' AND object = 't_orders_customer'",
    );
    assert_eq!(status, "repaired");
    let valid: bool =
        one("SELECT indisvalid FROM pg_index WHERE indexrelid = 't_orders_customer'::regclass");
    assert!(valid);
}

#[pg_test(
    error = "ruvector_dag: ruvector_dag_learn needs a superuser or a member of role ruvector_dag_admin"
)]
fn a_non_admin_cannot_learn() {
    Spi::run(
        "DROP ROLE IF EXISTS rv_plain_user2; CREATE ROLE rv_plain_user2;
         SET ROLE rv_plain_user2;
         SELECT * FROM ruvector_dag.ruvector_dag_learn();",
    )
    .unwrap();
}

#[pg_test]
fn reset_of_one_table_forgets_only_its_statements() {
    setup();
    let customers = "SELECT region, count(*) FROM t_customers GROUP BY region ORDER BY 2";
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SELECT ruvector_dag.ruvector_enable_neural_dag('t_customers');",
    )
    .unwrap();
    for _ in 0..6 {
        Spi::run(JOIN).unwrap();
        Spi::run(customers).unwrap();
    }
    let (patterns, rejected): (i64, i64) =
        Spi::get_two("SELECT patterns, rejected FROM ruvector_dag.ruvector_dag_learn()")
            .map(|(a, b)| (a.unwrap_or(0), b.unwrap_or(-1)))
            .unwrap();
    assert!(patterns >= 2, "{patterns}");
    let all: String = one("SELECT string_agg(relid::regclass::text || ':' || fingerprint, ', ') FROM ruvector_dag.shape_tables");
    assert_eq!(rejected, 0, "{all}");
    let shapes: i64 = one(
        "SELECT count(*) FROM ruvector_dag.shape_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(shapes, 1, "the join is the only shape reading t_orders: {all}");
    let forgotten: i64 = one("SELECT ruvector_dag.ruvector_dag_reset('t_orders'::regclass)");
    assert!(forgotten >= 1 && forgotten < patterns, "{forgotten} of {patterns}");
    let left: i64 = one("SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()");
    assert_eq!(left, patterns - forgotten);
    let shapes: i64 = one(
        "SELECT count(*) FROM ruvector_dag.shape_tables WHERE relid = 't_orders'::regclass",
    );
    assert_eq!(shapes, 0);
    // The customers query still finds its pattern; the join starts over.
    let lines = explain_lines(customers);
    let d = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")).unwrap();
    assert!(d.contains("similarity 1.000") || d.contains("similarity 0.99"), "{d}");
    let lines = explain_lines(JOIN);
    let d = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")).unwrap();
    assert!(!d.contains("similarity 1.000"), "{d}");
}

#[pg_test]
fn unknown_arm_settings_are_refused_and_bad_values_fall_back_to_the_default_plan() {
    setup();
    Spi::run(
        "CREATE TEMP TABLE guc_errors2 (detail text);
         DO $$ DECLARE d text; BEGIN
           SET ruvector.dag_arms = 'default|enable_nestlop=off';
         EXCEPTION WHEN invalid_parameter_value THEN
           GET STACKED DIAGNOSTICS d = PG_EXCEPTION_DETAIL;
           INSERT INTO guc_errors2 VALUES (d);
         END $$;",
    )
    .unwrap();
    let detail: String = one("SELECT detail FROM guc_errors2");
    assert_eq!(
        detail,
        "ruvector.dag_arms: arm 1 'enable_nestlop=off': unknown setting 'enable_nestlop'"
    );
    // A known setting with a value PostgreSQL refuses only shows when the arm is applied: the
    // statement then runs with the default plan and the fallback is counted and named.
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_arms = 'default|enable_nestloop=maybe';
         SET ruvector.dag_explore_min_ms = 0;
         SET ruvector.dag_attention_exploration = 1.0;",
    )
    .unwrap();
    let first: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    let second: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    assert_eq!(first, second);
    let last = status("backend_last_error");
    assert!(
        last.contains("PostgreSQL refused the arm's setting enable_nestloop = 'maybe'"),
        "{last}"
    );
    let nestloop: String = one("SELECT current_setting('enable_nestloop')");
    assert_eq!(nestloop, "on");
}

#[pg_test]
fn a_user_who_cannot_read_the_extension_tables_still_runs_queries() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         DROP ROLE IF EXISTS rv_locked_out; CREATE ROLE rv_locked_out;
         GRANT SELECT ON t_orders, t_customers TO rv_locked_out;
         REVOKE SELECT ON ruvector_dag.enabled_tables, ruvector_dag.learned_state FROM PUBLIC;
         SET ROLE rv_locked_out;",
    )
    .unwrap();
    let rows: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    assert!(rows >= 1);
    let (enabled, learned): (String, String) = Spi::get_two(
        "SELECT (SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'enabled_tables'),
                (SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'learned_version')",
    )
    .map(|(a, b)| (a.unwrap_or_default(), b.unwrap_or_default()))
    .unwrap();
    assert_eq!(enabled, "not readable: permission denied for table enabled_tables");
    assert_eq!(learned, "not readable: permission denied for table learned_state");
}

#[pg_test]
fn sample_rate_zero_decides_but_times_nothing_and_node_timing_is_sampled_apart() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_sample_rate = 0;",
    )
    .unwrap();
    let (planned, observed) = (
        counter("backend_planned_in_scope"),
        counter("backend_observed"),
    );
    for _ in 0..3 {
        Spi::run(JOIN).unwrap();
    }
    assert_eq!(counter("backend_planned_in_scope"), planned + 3);
    assert_eq!(counter("backend_observed"), observed);
    // Observed, timed as a whole: per-node timing only at its own rate.
    Spi::run(
        "SET ruvector.dag_sample_rate = 1;
         SET ruvector.dag_mode = 'observe';
         SET ruvector.dag_node_timing_rate = 0;",
    )
    .unwrap();
    let nodes = counter("backend_timed_nodes");
    Spi::run(JOIN).unwrap();
    assert_eq!(counter("backend_observed"), observed + 1);
    assert_eq!(counter("backend_timed_nodes"), nodes);
    Spi::run("SET ruvector.dag_node_timing_rate = 1").unwrap();
    Spi::run(JOIN).unwrap();
    assert_eq!(counter("backend_observed"), observed + 2);
    assert!(counter("backend_timed_nodes") >= nodes + 5);
}

// ---- attention plugins (modules from host-wasm/plugins/build.sh, which test.sh runs first) ----

macro_rules! plugin_module {
    ($name:literal) => {
        include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../target/plugins/", $name, ".wasm"))
    };
}

fn register(name: &str, wasm: &[u8]) -> String {
    Spi::get_one_with_args::<String>(
        "SELECT ruvector_dag.ruvector_dag_register_attention($1, $2)",
        &[name.into(), wasm.into()],
    )
    .expect("register")
    .expect("a sha256")
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

fn plugin_scores(name: &str) -> String {
    format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:{name}')")
}

#[pg_test]
fn a_plugin_ensemble_equals_the_built_in_one_through_sql() {
    setup();
    let sha = register("guest_ensemble", plugin_module!("ensemble"));
    assert_eq!(sha.len(), 64);
    let worst: f64 = one(&format!(
        "SELECT max(abs(p.weight - b.weight))
           FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:guest_ensemble') p
           JOIN ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble') b USING (node)"
    ));
    assert!(worst <= 1e-5, "largest difference {worst}");
    let rows: i64 = one(&format!("SELECT count(*) FROM ({}) s", plugin_scores("guest_ensemble")));
    assert!(rows >= 5);
    // Registering the same bytes again changes nothing; the registry shows the calls.
    let at: String = one("SELECT registered_at::text FROM ruvector_dag.attention_plugins WHERE name = 'guest_ensemble'");
    assert_eq!(register("guest_ensemble", plugin_module!("ensemble")), sha);
    let again: String = one("SELECT registered_at::text FROM ruvector_dag.attention_plugins WHERE name = 'guest_ensemble'");
    assert_eq!(at, again);
    let (calls, failures): (Option<i64>, Option<i64>) = Spi::get_two(
        "SELECT calls, failures FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'guest_ensemble'",
    )
    .unwrap();
    assert_eq!((calls, failures), (Some(2), Some(0)));
    // Unregistered, it is gone, and asking for it names what is registered.
    let removed: String = one("SELECT ruvector_dag.ruvector_dag_unregister_attention('guest_ensemble')");
    assert_eq!(removed, sha);
    let e = error_of(&plugin_scores("guest_ensemble")).expect("an error");
    assert!(e.contains("no attention plugin named 'guest_ensemble'"), "{e}");
}

#[pg_test]
fn evil_plugins_get_clear_errors_and_the_backend_keeps_serving() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders'); SET ruvector.dag_mode = 'learn'").unwrap();
    Spi::run(JOIN).unwrap();
    let state_before: Option<i64> = Spi::get_one("SELECT version FROM ruvector_dag.learned_state").unwrap_or(None);
    let runtime: [(&str, &[u8], &str); 13] = [
        ("evil_spin", plugin_module!("evil_spin"), "ran out of fuel (limit 50,000,000)"),
        ("evil_memory_bomb", plugin_module!("evil_memory_bomb"), "hit its memory limit (67,108,864 bytes)"),
        ("evil_recursion", plugin_module!("evil_recursion"), "overflowed its stack (limit 524,288 bytes)"),
        ("evil_unreachable", plugin_module!("evil_unreachable"), "unreachable"),
        ("evil_panic", plugin_module!("evil_panic"), "trapped"),
        ("evil_wrong_length", plugin_module!("evil_wrong_length"), "weights for"),
        ("evil_nan", plugin_module!("evil_nan"), "NaN"),
        ("evil_negative", plugin_module!("evil_negative"), "-0.5"),
        ("evil_zeros", plugin_module!("evil_zeros"), "sum to zero"),
        ("evil_huge_output", plugin_module!("evil_huge_output"), "over the output limit"),
        ("evil_bad_pointer", plugin_module!("evil_bad_pointer"), "outside its"),
        ("evil_bad_alloc", plugin_module!("evil_bad_alloc"), "request buffer"),
        ("evil_garbage_output", plugin_module!("evil_garbage_output"), "does not decode"),
    ];
    for (name, wasm, words) in runtime {
        register(name, wasm);
        let e = error_of(&plugin_scores(name)).unwrap_or_else(|| panic!("{name} returned weights"));
        assert!(e.contains(&format!("plugin '{name}'")) && e.contains(words), "{name}: {e}");
        // The same session goes on: a query, and a good built-in analysis.
        let n: i64 = one("SELECT count(*) FROM t_orders");
        assert_eq!(n, 5000);
        let rows: i64 = one(&format!("SELECT count(*) FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble')"));
        assert!(rows >= 5);
        let (failures, last): (Option<i64>, Option<String>) = Spi::get_two_with_args(
            "SELECT failures, last_error FROM ruvector_dag.ruvector_dag_plugins() WHERE name = $1",
            &[name.into()],
        )
        .unwrap();
        assert_eq!(failures, Some(1), "{name}");
        assert!(last.unwrap_or_default().contains(words), "{name}");
    }
    // Modules that break the ABI are refused at registration, and nothing is stored.
    let refused: [(&str, &[u8], &str); 6] = [
        ("evil_wasi", plugin_module!("evil_wasi"), "imports WASI"),
        ("evil_unknown_import", plugin_module!("evil_unknown_import"), "env::read_host_secret"),
        ("evil_wrong_abi", plugin_module!("evil_wrong_abi"), "ABI version 999"),
        ("evil_missing_export", plugin_module!("evil_missing_export"), "does not export rvdag_attend"),
        ("evil_wrong_type", plugin_module!("evil_wrong_type"), "func(i32) -> i32"),
        ("not_wasm", b"this is not a wasm module", "not a valid WebAssembly module"),
    ];
    for (name, wasm, words) in refused {
        let e = error_of(&format!(
            "SELECT ruvector_dag.ruvector_dag_register_attention('{name}', '\\x{}'::bytea)",
            wasm.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ))
        .unwrap_or_else(|| panic!("{name} was registered"));
        assert!(e.contains(&format!("plugin '{name}'")) && e.contains(words), "{name}: {e}");
    }
    let stored: i64 = one("SELECT count(*) FROM ruvector_dag.attention_plugins WHERE name IN ('evil_wasi', 'evil_unknown_import', 'evil_wrong_abi', 'evil_missing_export', 'evil_wrong_type', 'not_wasm')");
    assert_eq!(stored, 0);
    // Limits come from the settings: a tighter fuel limit is the one reported.
    Spi::run("SET ruvector.dag_plugin_fuel = 20000").unwrap();
    let e = error_of(&plugin_scores("evil_spin")).unwrap();
    assert!(e.contains("ran out of fuel (limit 20,000)"), "{e}");
    // Nothing learned was touched.
    let state_after: Option<i64> = Spi::get_one("SELECT version FROM ruvector_dag.learned_state").unwrap_or(None);
    assert_eq!(state_before, state_after);
}

#[pg_test]
fn analysis_functions_work_inside_a_plpgsql_block_that_has_written_nothing() {
    // A block with EXCEPTION is a subtransaction without a transaction id: SPI's read-only
    // mode, in which EXPLAIN used to be refused.
    Spi::run(
        "CREATE TEMP TABLE rv_rows (n bigint);
         DO $do$ BEGIN
           INSERT INTO rv_rows SELECT count(*) FROM ruvector_dag.ruvector_dag_analyze('SELECT 1');
         EXCEPTION WHEN OTHERS THEN INSERT INTO rv_rows VALUES (-1); END $do$",
    )
    .unwrap();
    let n: i64 = one("SELECT n FROM rv_rows");
    assert!(n >= 1, "{n}");
}

#[pg_test]
fn only_admins_register_or_unregister_plugins() {
    setup();
    register("mis", plugin_module!("misestimate"));
    Spi::run(
        "DROP ROLE IF EXISTS rv_plugin_user; CREATE ROLE rv_plugin_user;
         GRANT SELECT ON t_orders, t_customers TO rv_plugin_user;
         SET ROLE rv_plugin_user;",
    )
    .unwrap();
    let hex: String = plugin_module!("misestimate").iter().map(|b| format!("{b:02x}")).collect();
    let e = error_of(&format!("SELECT ruvector_dag.ruvector_dag_register_attention('mine', '\\x{hex}'::bytea)")).unwrap();
    assert!(e.contains("needs a superuser or a member of role ruvector_dag_admin"), "{e}");
    let e = error_of("SELECT ruvector_dag.ruvector_dag_unregister_attention('mis')").unwrap();
    assert!(e.contains("needs a superuser"), "{e}");
    // Using a registered plugin needs no privilege beyond the tables the query reads.
    let rows: i64 = one(&format!("SELECT count(*) FROM ({}) s", plugin_scores("mis")));
    assert!(rows >= 5);
    Spi::run("RESET ROLE").unwrap();
    let e = error_of("SELECT ruvector_dag.ruvector_dag_register_attention('Bad Name', '\\x00'::bytea)").unwrap();
    assert!(e.contains("is not valid"), "{e}");
    let e = error_of(&format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'no_such_kind')")).unwrap();
    assert!(e.contains("plugin:<name>"), "{e}");
}

/// Run `JOIN` (observed) and EXPLAIN it until the decision's attention is `want` (at most
/// `tries` times); the EXPLAIN line that says so, if any.
fn run_until_attention(want: &str, tries: usize) -> Option<String> {
    for _ in 0..tries {
        Spi::run(JOIN).unwrap();
        let lines = explain_lines(JOIN);
        if let Some(l) = lines.iter().find(|l| l.starts_with("ruvector_dag: arm")) {
            if l.contains(&format!("attention {want},")) {
                return Some(l.clone());
            }
        }
    }
    None
}

#[pg_test]
fn a_plugin_named_by_the_attention_setting_is_one_more_kind_the_selector_picks() {
    setup();
    register("mis", plugin_module!("misestimate"));
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_attention_type = 'plugin:mis';",
    )
    .unwrap();
    assert_eq!(status("attention_type"), "plugin:mis");
    // The analysis functions use it as the setting's kind.
    let worst: f64 = one(&format!(
        "SELECT max(abs(a.attention - p.weight))
           FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$) a
           JOIN ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'plugin:mis') p USING (node)"
    ));
    assert!(worst <= 1e-9, "{worst}");
    // The selector learns from predictions of a trained model: train it, then every built-in
    // kind is tried once before the plugin.
    for _ in 0..4 {
        Spi::run(JOIN).unwrap();
    }
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let line = run_until_attention("plugin:mis", 30)
        .unwrap_or_else(|| panic!("the selector never picked the plugin: {}", status("attention_plugin_in_planner")));
    assert!(line.contains("attention plugin:mis"), "{line}");
    assert!(status("attention_plugin_in_planner").contains("the attention selector may pick it"));
    // Its runs are learned from, credited to the plugin, and persisted by the learner.
    Spi::run(JOIN).unwrap();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let run_until_pulled = (0..20).find(|_| {
        Spi::run(JOIN).unwrap();
        Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
        !status("attention_plugin_selector").starts_with("0 pulls")
    });
    assert!(run_until_pulled.is_some(), "{}", status("attention_plugin_selector"));
    let (calls, failures): (Option<i64>, Option<i64>) = Spi::get_two(
        "SELECT calls, failures FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'mis'",
    )
    .unwrap();
    // 64 reference plans for its centre, then the statements it served.
    assert!(calls.unwrap_or(0) > 64, "{calls:?}");
    assert_eq!(failures, Some(0));
    assert_eq!(counter("backend_plugin_fallbacks"), 0);
    // The key stays built-in: what was learned is keyed as before.
    assert_eq!(status("backend_last_error"), "none");
}

#[pg_test]
fn a_plugin_that_fails_while_planning_costs_the_statement_only_the_built_in_kind() {
    setup();
    register("spin", plugin_module!("evil_spin"));
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_plugin_fuel = 20000;
         SET ruvector.dag_attention_type = 'plugin:spin';",
    )
    .unwrap();
    // Inside this one test function, a statement run through SPI is planned under the
    // function's own snapshot, which predates the registration above; an EXPLAIN run through
    // read-write SPI plans its statement after SPI took a new snapshot, so it reads the
    // registry first (separate statements of a session see a registration at once).
    Spi::run(&format!("EXPLAIN {JOIN}")).unwrap();
    let planner = status("attention_plugin_in_planner");
    assert!(planner.contains("may pick it"), "{planner}");
    for _ in 0..4 {
        Spi::run(JOIN).unwrap();
    }
    let expected: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    // Every statement runs and answers; once the selector picks the plugin it fails, the
    // decision uses the key's kind, and the plugin is not used again in this session.
    for _ in 0..30 {
        let n: i64 = one(&format!("SELECT count(*) FROM ({JOIN}) q"));
        assert_eq!(n, expected);
        if counter("backend_plugin_fallbacks") > 0 {
            break;
        }
    }
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let last = status("backend_plugin_last_error");
    assert!(last.contains("plugin 'spin' ran out of fuel (limit 20,000)"), "{last}");
    let planner = status("attention_plugin_in_planner");
    assert!(planner.contains("not used again in this session"), "{planner}");
    let calls: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    for _ in 0..10 {
        Spi::run(JOIN).unwrap();
    }
    let again: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    assert_eq!(calls, again, "a failed plugin was called again");
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let lines = explain_lines(JOIN);
    assert!(!lines.iter().any(|l| l.contains("attention plugin:")), "{lines:?}");
    let (state, detail): (Option<String>, Option<String>) = Spi::get_two(
        "SELECT status, detail FROM ruvector_dag.ruvector_dag_health() WHERE check_name = 'attention_plugin'",
    )
    .unwrap();
    assert_eq!(state.as_deref(), Some("warning"));
    assert!(detail.unwrap_or_default().contains("ran out of fuel"));
    // Learning goes on, and registering the plugin again lets it be tried again (it fails
    // again, once, and the statement falls back again).
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(status("backend_last_error"), "none");
    Spi::run("SELECT ruvector_dag.ruvector_dag_unregister_attention('spin')").unwrap();
    register("spin", plugin_module!("evil_spin"));
    Spi::run(&format!("EXPLAIN {JOIN}")).unwrap();
    Spi::run(JOIN).unwrap();
    assert_eq!(counter("backend_plugin_fallbacks"), 2);
    let calls: i64 = one("SELECT calls FROM ruvector_dag.ruvector_dag_plugins() WHERE name = 'spin'");
    assert_eq!(calls, 1);
}

#[pg_test]
fn an_unregistered_or_misspelled_plugin_setting_is_handled() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_attention_type = 'plugin:nobody';",
    )
    .unwrap();
    for _ in 0..3 {
        Spi::run(JOIN).unwrap();
    }
    // Counted and reported once; the statements ran with the built-in kinds.
    assert_eq!(counter("backend_plugin_fallbacks"), 1);
    let last = status("backend_plugin_last_error");
    assert!(last.contains("no attention plugin named 'nobody'"), "{last}");
    assert!(counter("backend_planned_in_scope") >= 3);
    // The analysis functions raise it as an error.
    let e = error_of(&format!("SELECT * FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)")).unwrap();
    assert!(e.contains("no attention plugin named 'nobody'"), "{e}");
    // Names that cannot be a kind are refused when set, and the old value stays.
    for bad in ["bogus", "plugin:Bad Name", "plugin:"] {
        let e = error_of(&format!("SELECT set_config('ruvector.dag_attention_type', '{bad}', true)")).unwrap();
        assert!(e.contains("invalid value for parameter \"ruvector.dag_attention_type\""), "{bad}: {e}");
    }
    assert_eq!(status("attention_type"), "plugin:nobody");
    Spi::run("SET ruvector.dag_attention_type = 'critical_path'").unwrap();
    assert_eq!(status("attention_type"), "critical_path");
}

/// EXPLAIN `sql` with `options`, its output lines joined (every format is one text value per
/// row; JSON, YAML and XML come as a single row).
#[cfg(feature = "pg18")]
fn explain_text(options: &str, sql: &str) -> String {
    // JSON and XML come as json and xml values: read every format as text.
    Spi::run(
        "CREATE OR REPLACE FUNCTION pg_temp.explain_as_text(q text) RETURNS SETOF text
         LANGUAGE plpgsql AS $f$ DECLARE r record; BEGIN
           FOR r IN EXECUTE q LOOP RETURN NEXT r.\"QUERY PLAN\"::text; END LOOP; END $f$",
    )
    .unwrap();
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT pg_temp.explain_as_text($1)",
            None,
            &[format!("EXPLAIN ({options}) {sql}").into()],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<String>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(out.join("\n"))
    })
    .expect("explain")
}

#[cfg(feature = "pg18")]
#[pg_test]
fn on_postgresql_18_every_explain_format_carries_the_decision() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&explain_text("FORMAT JSON", JOIN)).expect("EXPLAIN JSON parses");
    let d = &json[0]["ruvector_dag"];
    assert_eq!(d["Arm"], "default", "{json}");
    assert_eq!(d["Rule"], "default");
    assert_eq!(d["Attention"], "topological");
    assert!(d["Reason"].as_str().unwrap().starts_with("measuring the default plan first"), "{d}");
    assert!(d["Similarity"].is_number() && d["Predicted Time"].is_number(), "{d}");
    assert!(json[0]["Plan"]["Node Type"].is_string());
    let yaml = explain_text("FORMAT YAML", JOIN);
    assert!(yaml.contains("ruvector_dag:") && yaml.contains("Arm: \"default\""), "{yaml}");
    let xml = explain_text("FORMAT XML", JOIN);
    assert!(xml.contains("<ruvector_dag>") && xml.contains("<Arm>default</Arm>"), "{xml}");
    // The text format keeps the line PostgreSQL 15 prints.
    let text = explain_text("FORMAT TEXT", JOIN);
    assert!(text.contains("ruvector_dag: arm 'default' (the default plan; rule default)"), "{text}");
    // EXPLAIN (ruvector_dag off) hides it; a table not in scope has none.
    let hidden = explain_text("FORMAT JSON, ruvector_dag off", JOIN);
    assert!(!hidden.contains("ruvector_dag"), "{hidden}");
    let other = explain_text("FORMAT JSON", "SELECT * FROM t_customers WHERE region = 'r1'");
    assert!(!other.contains("ruvector_dag"), "{other}");
    // ruvector_dag_weights: each operator's weight under the attention setting, summing to 1,
    // as ruvector_attention_scores computes them.
    let json: serde_json::Value =
        serde_json::from_str(&explain_text("FORMAT JSON, ruvector_dag_weights", JOIN)).unwrap();
    fn weights(node: &serde_json::Value, out: &mut Vec<f64>) {
        out.push(node["ruvector_dag Attention"].as_f64().expect("a weight on every node"));
        for child in node["Plans"].as_array().into_iter().flatten() {
            weights(child, out);
        }
    }
    let mut w = Vec::new();
    weights(&json[0]["Plan"], &mut w);
    let sum: f64 = w.iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "{w:?}");
    let mut scores: Vec<f64> = Spi::connect(|c| {
        let rows = c.select(
            &format!("SELECT weight FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'topological') ORDER BY node"),
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push(r.get::<f64>(1)?.unwrap_or_default());
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap();
    let mut w_sorted = w.clone();
    w_sorted.sort_by(f64::total_cmp);
    scores.sort_by(f64::total_cmp);
    assert_eq!(w_sorted.len(), scores.len());
    for (a, b) in w_sorted.iter().zip(&scores) {
        assert!((a - b).abs() < 1e-3, "{w_sorted:?} vs {scores:?}");
    }
    // A bad option value is PostgreSQL's own error, naming the option.
    Spi::run(
        "CREATE TEMP TABLE IF NOT EXISTS rv_caught (msg text); TRUNCATE rv_caught;
         DO $do$ BEGIN EXECUTE 'EXPLAIN (ruvector_dag maybe) SELECT 1';
         EXCEPTION WHEN OTHERS THEN INSERT INTO rv_caught VALUES (SQLERRM); END $do$",
    )
    .unwrap();
    let e: String = one("SELECT msg FROM rv_caught");
    assert!(e.contains("ruvector_dag requires a Boolean value"), "{e}");
}

#[pg_test]
fn statements_planned_through_the_plan_cache_are_observed() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'observe';",
    )
    .unwrap();
    Spi::run(JOIN).unwrap();
    let before = counter("backend_observed");
    assert!(before >= 1);
    // PREPARE / EXECUTE: five custom plans, then the generic one, each a copy the plan cache
    // made after the planner hook returned.
    Spi::run(&format!("PREPARE rv_cached AS {JOIN}")).unwrap();
    for _ in 0..7 {
        Spi::run("EXECUTE rv_cached").unwrap();
    }
    let prepared = counter("backend_observed");
    assert_eq!(prepared - before, 7, "EXECUTE runs observed");
    // The generic plan stays recognised while it runs, however many statements are planned
    // meanwhile: 70 open cursors keep 70 plannings alive (more than the 64 remembered).
    Spi::run("SET plan_cache_mode = force_generic_plan").unwrap();
    Spi::run("EXECUTE rv_cached").unwrap();
    for i in 0..70 {
        Spi::run(&format!(
            "DECLARE rv_cursor_{i} CURSOR FOR SELECT count(*) FROM t_orders WHERE amount > {i}"
        ))
        .unwrap();
    }
    let between = counter("backend_observed");
    for _ in 0..3 {
        Spi::run("EXECUTE rv_cached").unwrap();
    }
    assert_eq!(
        counter("backend_observed") - between,
        3,
        "the generic plan's runs after 70 other plannings"
    );
    Spi::run("RESET plan_cache_mode").unwrap();
    let prepared = counter("backend_observed");
    // PL/pgSQL plans its statements through the plan cache too.
    Spi::run(&format!(
        "CREATE FUNCTION pg_temp.rv_cached_fn() RETURNS int LANGUAGE plpgsql AS $f$
         BEGIN PERFORM count(*) FROM ({JOIN}) q; RETURN 1; END $f$"
    ))
    .unwrap();
    for _ in 0..3 {
        Spi::run("SELECT pg_temp.rv_cached_fn()").unwrap();
    }
    assert_eq!(counter("backend_observed") - prepared, 3, "PL/pgSQL runs observed");
}

fn compare(sql: &str) -> serde_json::Value {
    let doc: pgrx::Json = one(&format!(
        "SELECT ruvector_dag.ruvector_dag_compare_json($q${sql}$q$)"
    ));
    doc.0
}

/// Node types of a plan in EXPLAIN JSON, depth first.
fn node_types(plan: &serde_json::Value) -> Vec<String> {
    fn walk(n: &serde_json::Value, out: &mut Vec<String>) {
        out.push(n["Node Type"].as_str().unwrap_or("?").to_string());
        for c in n["Plans"].as_array().into_iter().flatten() {
            walk(c, out);
        }
    }
    let mut out = Vec::new();
    walk(&plan[0]["Plan"], &mut out);
    out
}

#[pg_test]
fn compare_json_carries_both_plans_and_the_decision_and_the_demo_marks_the_changes() {
    setup();
    // Nothing enabled: no decision, and the note says why; both plans are PostgreSQL's.
    let none = compare(JOIN);
    assert_eq!(none["format"], "ruvector_dag/compare/1");
    assert!(none["decision"].is_null(), "{none}");
    let why = none["note"].as_str().unwrap();
    assert!(why.contains("no table the query reads is enabled"), "{why}");
    assert_eq!(node_types(&none["default"]), node_types(&none["learned"]));

    learn_exploring_one_arm(true);
    // A plan too cheap to re-plan is named as the reason.
    Spi::run("SET ruvector.dag_replan_min_cost = 1e9").unwrap();
    let cheap = compare(JOIN);
    assert!(cheap["decision"].is_null());
    assert!(cheap["note"].as_str().unwrap().contains("ruvector.dag_replan_min_cost"), "{cheap}");
    Spi::run("SET ruvector.dag_replan_min_cost = 0").unwrap();

    // The default plan's first run, then the other arm is explored: applied, and its plan is
    // the second one.
    Spi::run(JOIN).unwrap();
    let doc = compare(JOIN);
    let d = &doc["decision"];
    assert_eq!(d["arm"], "enable_hashjoin=off;enable_mergejoin=off", "{doc}");
    assert_eq!(d["applied"], "applied");
    assert_eq!(d["rule"], "explore");
    assert_eq!(d["arm_index"], 1);
    assert_eq!(
        d["settings"],
        serde_json::json!(["enable_hashjoin=off", "enable_mergejoin=off"])
    );
    assert!(d["reason"].as_str().is_some_and(|r| !r.is_empty()));
    let (default, learned) = (node_types(&doc["default"]), node_types(&doc["learned"]));
    assert!(default.iter().any(|t| t == "Hash Join"), "{default:?}");
    assert!(learned.iter().any(|t| t == "Nested Loop"), "{learned:?}");
    assert!(!learned.iter().any(|t| t == "Hash Join" || t == "Merge Join"), "{learned:?}");
    // Comparing changed no setting of the session.
    let hashjoin: String = one("SELECT current_setting('enable_hashjoin')");
    assert_eq!(hashjoin, "on");

    // The web demo reads the document: the join is marked, the decision is above.
    let page = ruvector_dag_web::analyze_pair_document(&doc.to_string(), "", &[], &[])
        .expect("the demo reads it");
    assert_eq!(page["decision"]["rule"], "explore");
    assert_eq!(page["changes"]["identical"], false);
    let join = page["left"]["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["operator"] == "Hash Join")
        .unwrap();
    assert_eq!(join["change"]["status"], "changed", "{join}");
    let peer = &page["right"]["nodes"][join["change"]["peer"].as_u64().unwrap() as usize];
    assert_eq!(peer["operator"], "Nested Loop");

    // Off: no decision, and the note names the setting.
    Spi::run("SET ruvector.dag_mode = 'off'").unwrap();
    let off = compare(JOIN);
    assert!(off["decision"].is_null());
    assert_eq!(off["note"], "ruvector.dag_mode is off");
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

/// Every function of the extension, called as a user would: the administrative ones and the
/// ones any user may call. A function missing from both lists fails the test below.
const ADMIN_CALLS: [(&str, &str); 9] = [
    ("ruvector_dag_export", "SELECT ruvector_dag.ruvector_dag_export()"),
    ("ruvector_dag_import", "SELECT ruvector_dag.ruvector_dag_import('\\x00'::bytea)"),
    ("ruvector_dag_reset", "SELECT ruvector_dag.ruvector_dag_reset()"),
    ("ruvector_dag_reset", "SELECT ruvector_dag.ruvector_dag_reset('t_orders'::regclass)"),
    ("ruvector_dag_learn", "SELECT * FROM ruvector_dag.ruvector_dag_learn()"),
    ("ruvector_enable_neural_dag", "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')"),
    ("ruvector_disable_neural_dag", "SELECT ruvector_dag.ruvector_disable_neural_dag('t_orders')"),
    (
        "ruvector_dag_register_attention",
        "SELECT ruvector_dag.ruvector_dag_register_attention('p', '\\x0061736d'::bytea)",
    ),
    (
        "ruvector_dag_unregister_attention",
        "SELECT ruvector_dag.ruvector_dag_unregister_attention('p')",
    ),
];

fn plain_calls() -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = [
        ("ruvector_dag_analyze", format!("SELECT * FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)")),
        ("ruvector_attention_scores", format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble')")),
        ("ruvector_dag_mincut", format!("SELECT * FROM ruvector_dag.ruvector_dag_mincut($q${JOIN}$q$)")),
        ("ruvector_dag_explain_json", format!("SELECT ruvector_dag.ruvector_dag_explain_json($q${JOIN}$q$)")),
        ("ruvector_dag_compare_json", format!("SELECT ruvector_dag.ruvector_dag_compare_json($q${JOIN}$q$)")),
        ("ruvector_dag_status", "SELECT * FROM ruvector_dag.ruvector_dag_status()".to_string()),
        ("ruvector_dag_patterns", "SELECT * FROM ruvector_dag.ruvector_dag_patterns()".to_string()),
        ("ruvector_dag_plugins", "SELECT * FROM ruvector_dag.ruvector_dag_plugins()".to_string()),
        ("ruvector_dag_health", "SELECT * FROM ruvector_dag.ruvector_dag_health()".to_string()),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_string(), b))
    .collect();
    for kind in ruvector_dag_core::AttentionKind::ALL.map(|k| k.name()) {
        calls.push((
            format!("ruvector_attention_{kind}"),
            format!("SELECT * FROM ruvector_dag.ruvector_attention_{kind}($q${JOIN}$q$)"),
        ));
    }
    calls
}

#[pg_test]
fn every_administrative_function_refuses_a_plain_role_and_the_rest_serve_it() {
    setup();
    let functions = texts(
        "SELECT DISTINCT proname::text FROM pg_proc WHERE pronamespace = 'ruvector_dag'::regnamespace ORDER BY 1",
    );
    let plain = plain_calls();
    for f in &functions {
        let listed = ADMIN_CALLS.iter().any(|(_, sql)| sql.contains(&format!(".{f}(")))
            || plain.iter().any(|(n, _)| n == f);
        assert!(listed, "function {f} is in neither list: is it administrative?");
    }
    error_of("SELECT 1");
    Spi::run(
        "GRANT ALL ON rv_caught TO PUBLIC;
         DROP ROLE IF EXISTS rv_plain; CREATE ROLE rv_plain;
         GRANT SELECT ON t_orders, t_customers TO rv_plain;
         SET ROLE rv_plain;",
    )
    .unwrap();
    for (name, sql) in ADMIN_CALLS {
        let e = error_of(sql).unwrap_or_else(|| panic!("{sql} ran for a plain role"));
        assert!(
            e.contains(&format!("ruvector_dag: {name} needs a superuser or a member of role ruvector_dag_admin")),
            "{sql}: {e}"
        );
    }
    for (name, sql) in &plain {
        assert_eq!(error_of(sql), None, "{name} refused a plain role");
    }
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn analysis_functions_respect_table_privileges_as_explain_does() {
    setup();
    error_of("SELECT 1");
    Spi::run(
        "CREATE TABLE IF NOT EXISTS t_secret (id int, note text);
         GRANT ALL ON rv_caught TO PUBLIC;
         DROP ROLE IF EXISTS rv_nosecret; CREATE ROLE rv_nosecret;
         GRANT SELECT ON t_orders TO rv_nosecret;
         SET ROLE rv_nosecret;",
    )
    .unwrap();
    let q = "SELECT o.id FROM t_orders o JOIN t_secret s ON s.id = o.id";
    Spi::run("TRUNCATE rv_caught").unwrap();
    Spi::run(&format!(
        "DO $do$ BEGIN EXECUTE $x$EXPLAIN {q}$x$;
         EXCEPTION WHEN OTHERS THEN INSERT INTO rv_caught VALUES (SQLERRM); END $do$"
    ))
    .unwrap();
    let explain = Spi::get_one::<String>("SELECT (SELECT msg FROM rv_caught)").unwrap();
    let explain = explain.expect("EXPLAIN refuses the query");
    assert!(explain.contains("permission denied for table t_secret"), "{explain}");
    for sql in [
        format!("SELECT * FROM ruvector_dag.ruvector_dag_analyze($q${q}$q$)"),
        format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${q}$q$, 'topological')"),
        format!("SELECT * FROM ruvector_dag.ruvector_dag_mincut($q${q}$q$)"),
        format!("SELECT ruvector_dag.ruvector_dag_explain_json($q${q}$q$)"),
        format!("SELECT ruvector_dag.ruvector_dag_compare_json($q${q}$q$)"),
    ] {
        assert_eq!(error_of(&sql).as_deref(), Some(explain.as_str()), "{sql}");
    }
    Spi::run("RESET ROLE").unwrap();
}

#[pg_test]
fn no_table_of_the_extension_holds_a_query_constant() {
    setup();
    Spi::run(
        "SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders');
         SET ruvector.dag_mode = 'learn';
         SET ruvector.dag_explore_min_ms = 0;",
    )
    .unwrap();
    let secret = "zqx_secret_7731";
    let number = "987654321";
    for _ in 0..6 {
        Spi::run(&format!(
            "SELECT c.region, count(*) FROM t_orders o JOIN t_customers c ON c.id = o.customer \
             WHERE c.region <> '{secret}' AND o.amount <> {number} GROUP BY c.region"
        ))
        .unwrap();
    }
    let learned: i64 = one("SELECT trajectories FROM ruvector_dag.ruvector_dag_learn()");
    assert!(learned >= 6, "the runs were learned from: {learned}");
    let tables = texts(
        "SELECT relname::text FROM pg_class WHERE relnamespace = 'ruvector_dag'::regnamespace AND relkind = 'r'",
    );
    assert!(tables.len() >= 5, "{tables:?}");
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
    let mut rows_seen = 0i64;
    for t in &tables {
        rows_seen += one::<i64>(&format!("SELECT count(*) FROM ruvector_dag.{t}"));
        for needle in [secret.to_string(), number.to_string(), hex(secret), hex(number)] {
            let hits: i64 = one(&format!(
                "SELECT count(*) FROM ruvector_dag.{t} x WHERE x::text LIKE '%{needle}%'"
            ));
            assert_eq!(hits, 0, "{t} holds '{needle}'");
        }
    }
    assert!(rows_seen > 0, "the tables hold what was learned");
    let exported: bool = one(&format!(
        "SELECT position(convert_to('{secret}', 'UTF8') IN ruvector_dag.ruvector_dag_export()) = 0"
    ));
    assert!(exported, "the export holds the constant");
}

#[pg_test]
fn statements_inside_a_caught_exception_are_decided_observed_and_leak_no_setting() {
    setup();
    learn_exploring_one_arm(true);
    Spi::run(JOIN).unwrap();
    let before = counter("backend_observed");
    // The statement completes, then its block fails and the error is caught: it was decided
    // (an arm explored under the block's subtransaction) and observed.
    Spi::run(&format!(
        "DO $do$ BEGIN
           BEGIN PERFORM count(*) FROM ({JOIN}) q; RAISE EXCEPTION 'boom';
           EXCEPTION WHEN raise_exception THEN NULL; END;
         END $do$"
    ))
    .unwrap();
    assert_eq!(counter("backend_observed") - before, 1, "the statement before the error");
    // A statement that fails while it runs, inside a caught exception: not observed (it never
    // finished), and nothing of its arm's settings stays.
    let failed = counter("backend_observed");
    Spi::run(
        "DO $do$ BEGIN
           BEGIN PERFORM count(*) FROM t_orders o JOIN t_customers c ON c.id = o.customer
                 WHERE 1 / (o.amount - o.amount) > 0;
           EXCEPTION WHEN division_by_zero THEN NULL; END;
         END $do$",
    )
    .unwrap();
    assert_eq!(counter("backend_observed"), failed);
    let settings: String = one(
        "SELECT current_setting('enable_hashjoin') || current_setting('enable_mergejoin') || current_setting('enable_nestloop')",
    );
    assert_eq!(settings, "ononon");
    // The session goes on: decided (EXPLAIN says so) and observed.
    let lines = explain_lines(JOIN);
    assert!(lines.iter().any(|l| l.starts_with("ruvector_dag: arm")), "{lines:?}");
    Spi::run(JOIN).unwrap();
    assert_eq!(counter("backend_observed") - failed, 1);
    assert_eq!(status("backend_last_error"), "none");
}
