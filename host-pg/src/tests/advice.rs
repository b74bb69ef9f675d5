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
    assert_eq!((runs, shapes), (3, 1));
    // What the advice says to run fixes the estimate: covered, and no new misestimate.
    Spi::run(&statement).unwrap();
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
    assert_eq!(rows[0].5, 3, "the estimate is right with the statistics: {rows:?}");
    // Never a constant (7) in what is kept: table, column numbers, shapes and row counts.
    let kept: String = one("SELECT a::text FROM ruvector_dag.statistics_advice a");
    assert!(kept.starts_with("(adv_orders,\"{2,3,4}\",3,"), "{kept}");
}
