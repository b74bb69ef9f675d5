// Who may call what, privileges as EXPLAIN has them, no query constant in any table.

/// Every function of the extension, called as a user would: the administrative ones and the
/// ones any user may call. A function missing from both lists fails the test below.
const ADMIN_CALLS: [(&str, &str); 11] = [
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
    ("ruvector_dag_explorer_pause", "SELECT ruvector_dag.ruvector_dag_explorer_pause()"),
    ("ruvector_dag_explorer_resume", "SELECT ruvector_dag.ruvector_dag_explorer_resume()"),
];

fn plain_calls() -> Vec<(String, String)> {
    let mut calls: Vec<(String, String)> = [
        ("ruvector_dag_analyze", format!("SELECT * FROM ruvector_dag.ruvector_dag_analyze($q${JOIN}$q$)")),
        ("ruvector_attention_scores", format!("SELECT * FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'ensemble')")),
        ("ruvector_dag_mincut", format!("SELECT * FROM ruvector_dag.ruvector_dag_mincut($q${JOIN}$q$)")),
        ("ruvector_dag_explain_json", format!("SELECT ruvector_dag.ruvector_dag_explain_json($q${JOIN}$q$)")),
        ("ruvector_dag_compare_json", format!("SELECT ruvector_dag.ruvector_dag_compare_json($q${JOIN}$q$)")),
        ("ruvector_dag_status", "SELECT * FROM ruvector_dag.ruvector_dag_status()".to_string()),
        ("ruvector_dag_arms", "SELECT * FROM ruvector_dag.ruvector_dag_arms()".to_string()),
        ("ruvector_dag_phases", "SELECT * FROM ruvector_dag.ruvector_dag_phases()".to_string()),
        ("ruvector_dag_patterns", "SELECT * FROM ruvector_dag.ruvector_dag_patterns()".to_string()),
        ("ruvector_dag_plugins", "SELECT * FROM ruvector_dag.ruvector_dag_plugins()".to_string()),
        ("ruvector_dag_health", "SELECT * FROM ruvector_dag.ruvector_dag_health()".to_string()),
        ("ruvector_dag_advice", "SELECT * FROM ruvector_dag.ruvector_dag_advice()".to_string()),
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
