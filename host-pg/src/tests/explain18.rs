// EXPLAIN in every format on PostgreSQL 18 (the EXPLAIN extension points).

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
