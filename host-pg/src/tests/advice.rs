// Statistics advice: misestimated scans on two or more columns of a table, from runs timed
// per node, kept by the learner and listed with the statement that fixes them.

const ADVISED: &str = "SELECT count(*), sum(i.price) FROM adv_orders o JOIN adv_items i \
     ON i.bucket = o.region AND i.sku = o.item WHERE o.region = 7 AND o.country = 7 AND o.city = 7";

/// (relation, columns, status, statement, worst factor, runs, shapes) of every row.
fn advice_rows() -> Vec<(String, Vec<String>, String, String, f64, i64, i32)> {
    Spi::connect(|c| {
        let rows = c.select(
            "SELECT relation, columns, status, statement, worst_factor, runs, shapes \
               FROM ruvector_dag.ruvector_dag_advice()",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for r in rows {
            out.push((
                r.get::<String>(1)?.unwrap_or_default(),
                r.get::<Vec<String>>(2)?.unwrap_or_default(),
                r.get::<String>(3)?.unwrap_or_default(),
                r.get::<String>(4)?.unwrap_or_default(),
                r.get::<f64>(5)?.unwrap_or_default(),
                r.get::<i64>(6)?.unwrap_or_default(),
                r.get::<i32>(7)?.unwrap_or_default(),
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap()
}

#[pg_test]
fn correlated_columns_a_scan_misestimated_are_advised_and_covered_once_created() {
    setup();
    orders_and_items("adv", 50);
    Spi::run(
        "SET ruvector.dag_mode = 'observe';
         SET ruvector.dag_node_timing_rate = 1.0;",
    )
    .unwrap();
    // Three agreeing filters: 1 row expected, 1,000 come.
    for _ in 0..3 {
        Spi::run(ADVISED).unwrap();
    }
    // As far off, on one column (an expression PostgreSQL guesses at): no extended statistics
    // help, no advice.
    for _ in 0..2 {
        Spi::run("SELECT count(*) FROM adv_orders WHERE city = 7 AND city + 0 = 7").unwrap();
    }
    assert!(advice_rows().is_empty(), "nothing is advised before the learner ran");
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let rows = advice_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (relation, columns, status, statement, factor, runs, shapes) = rows[0].clone();
    assert_eq!(relation, "adv_orders");
    assert_eq!(columns, ["region", "country", "city"]);
    assert!(status.starts_with("proposed"), "{status}");
    assert_eq!(
        statement,
        "CREATE STATISTICS ruvector_dag_adv_orders_region_country_city (dependencies, ndistinct, mcv) \
         ON region, country, city FROM adv_orders; ANALYZE adv_orders;"
    );
    assert!(factor >= 100.0, "{factor}");
    // Three runs, reported once: a session reports a misestimate at most once a minute.
    assert_eq!((runs, shapes), (1, 1));
    crate::advice::forget_reported();
    Spi::run(ADVISED).unwrap();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(advice_rows()[0].5, 2, "reported again once forgotten");
    // What the advice says to run fixes the estimate: covered, and no new misestimate.
    Spi::run(&statement).unwrap();
    crate::advice::forget_reported();
    for _ in 0..2 {
        Spi::run(ADVISED).unwrap();
    }
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    let rows = advice_rows();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        rows[0].2,
        "covered by the statistics ruvector_dag_adv_orders_region_country_city"
    );
    assert_eq!(rows[0].5, 2, "the estimate is right with the statistics: {rows:?}");
    // Never a constant (7) in what is kept: table, column numbers, shapes and row counts.
    let kept: String = one("SELECT a::text FROM ruvector_dag.statistics_advice a");
    assert!(kept.starts_with("(adv_orders,\"{2,3,4}\",2,"), "{kept}");
}

#[pg_test]
fn verified_advice_is_created_under_healing_repair_logged_and_never_again_once_dropped() {
    setup();
    orders_and_items("rep", 50);
    // What the background explorer records: (region, country, city) measured 10x faster with
    // the statistics, (region, country) no faster.
    Spi::run(
        "INSERT INTO ruvector_dag.statistics_advice (relid, columns, runs, shapes, worst_factor, \
           estimated_rows, actual_rows, before_ms, after_ms, after_cut, verified_at) \
         VALUES ('rep_orders', '{2,3,4}', 3, '{42}', 1000, 1, 1000, 100, 10, false, now()), \
                ('rep_orders', '{2,3}', 2, '{43}', 50, 20, 1000, 100, 95, false, now())",
    )
    .unwrap();
    let statistics = || -> i64 {
        one("SELECT count(*) FROM pg_statistic_ext WHERE stxrelid = 'rep_orders'::regclass")
    };
    let status_of = |columns: &str| -> String {
        one(&format!(
            "SELECT status FROM ruvector_dag.ruvector_dag_advice() WHERE columns = '{columns}'"
        ))
    };
    // Repairs off (the default): advice only.
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(statistics(), 0);
    assert!(status_of("{region,country,city}").starts_with("verified"));
    assert!(status_of("{region,country}").starts_with("refuted"));
    // Not a plain role's to turn on.
    error_of("SELECT 1");
    Spi::run(
        "GRANT ALL ON rv_caught TO PUBLIC;
         DROP ROLE IF EXISTS rv_plain_advice; CREATE ROLE rv_plain_advice;
         SET ROLE rv_plain_advice;",
    )
    .unwrap();
    let refused = error_of("SELECT set_config('ruvector.dag_healing_repair', 'on', false)");
    Spi::run("RESET ROLE").unwrap();
    assert!(
        refused.as_deref().is_some_and(|e| e.contains("permission denied")),
        "{refused:?}"
    );
    // On: the verified advice is created and analyzed, logged, shown as applied; the refuted
    // one is not.
    Spi::run("SET ruvector.dag_healing_repair = on").unwrap();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(statistics(), 1);
    let analyzed: i64 = one(
        "SELECT count(*) FROM pg_statistic_ext s JOIN pg_statistic_ext_data d ON d.stxoid = s.oid \
          WHERE s.stxname = 'ruvector_dag_rep_orders_region_country_city'",
    );
    assert_eq!(analyzed, 1, "created and analyzed");
    let logged: String = one(
        "SELECT action FROM ruvector_dag.healing_log WHERE arm = 'statistics advice'",
    );
    assert!(
        logged.contains("DROP STATISTICS ruvector_dag_rep_orders_region_country_city undoes it"),
        "{logged}"
    );
    assert!(status_of("{region,country,city}").starts_with("applied: the learner created the statistics ruvector_dag_rep_orders_region_country_city"));
    // The refuted one was not created; the statistics created cover its columns too.
    assert!(status_of("{region,country}")
        .starts_with("covered by the statistics ruvector_dag_rep_orders_region_country_city"));
    // The DBA drops them: never created again.
    Spi::run("DROP STATISTICS ruvector_dag_rep_orders_region_country_city").unwrap();
    Spi::run("SELECT * FROM ruvector_dag.ruvector_dag_learn()").unwrap();
    assert_eq!(statistics(), 0);
    assert!(status_of("{region,country,city}").starts_with("dropped"));
    let created: i64 =
        one("SELECT count(*) FROM ruvector_dag.healing_log WHERE arm = 'statistics advice'");
    assert_eq!(created, 1);
}
