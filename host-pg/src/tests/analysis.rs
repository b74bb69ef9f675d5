// The analysis functions: the plan as a DAG, attention, min cut, the web demo's JSON, compare.

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
    for kind in ruvector_dag_core::AttentionKind::ALL.map(|k| k.name()) {
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

#[pg_test]
fn a_statement_cheap_every_time_is_planned_without_a_copy_and_decided_again_once_it_is_not() {
    setup();
    learn_exploring_one_arm(true);
    // One text, two costs: an index scan for a few ids, a scan of the table for most of them.
    let few = "SELECT id, amount FROM t_orders WHERE id < 5";
    let most = "SELECT id, amount FROM t_orders WHERE id < 4000";
    let cost = |sql: &str| -> f64 {
        compare(sql)["default"][0]["Plan"]["Total Cost"]
            .as_f64()
            .expect("a cost")
    };
    let (cheap, dear) = (cost(few), cost(most));
    assert!(cheap * 4.0 < dear, "{cheap} vs {dear}");
    let min = (cheap + dear) / 2.0;
    Spi::run(&format!("SET ruvector.dag_replan_min_cost = {min}")).unwrap();
    let note = |sql: &str| compare(sql)["note"].as_str().unwrap_or("").to_string();
    // Alternating, the streak never grows: each costly one is decided.
    for _ in 0..crate::hooks::CHEAP_STREAK + 1 {
        assert!(note(few).contains("below ruvector.dag_replan_min_cost"));
        let doc = compare(most);
        assert!(!doc["decision"].is_null(), "{doc}");
    }
    // Cheap in a row: the copy is skipped from then on; the one costly planning after it keeps
    // the default plan and says why, the next is decided again.
    for _ in 0..crate::hooks::CHEAP_STREAK {
        assert!(note(few).contains("below ruvector.dag_replan_min_cost"));
    }
    let skipped = compare(most);
    assert!(skipped["decision"].is_null(), "{skipped}");
    assert!(
        skipped["note"].as_str().unwrap_or("").contains("planned without a copy"),
        "{skipped}"
    );
    assert_eq!(node_types(&skipped["default"]), node_types(&skipped["learned"]));
    assert!(!compare(most)["decision"].is_null());
    // Another threshold starts every streak again.
    for _ in 0..crate::hooks::CHEAP_STREAK {
        note(few);
    }
    Spi::run(&format!("SET ruvector.dag_replan_min_cost = {}", min * 1.01)).unwrap();
    assert!(!compare(most)["decision"].is_null());
    // The key leaves constants out, not names.
    use crate::hooks::text_key as k;
    assert_eq!(k(b"SELECT a FROM t WHERE b = 1"), k(b"SELECT a FROM t WHERE b = 22"));
    assert_eq!(k(b"WHERE c = 'x'"), k(b"WHERE c = 'yz'"));
    assert_ne!(k(b"SELECT a FROM t WHERE b = 1"), k(b"SELECT a FROM t WHERE c = 1"));
    // Texts that differ in their length or in one byte past a word boundary.
    assert_ne!(k(b"SELECT a FROM t"), k(b"SELECT a FROM tt"));
    assert_ne!(k(b"SELECT a FROM t WHERE x = 1"), k(b"SELECT a FROM t WHERE y = 1"));
    assert_ne!(k(b"ab"), k(b"\0ab"));
    // Eight bytes at a time where no digit or quote is among them: the same key as a byte at a
    // time, at every alignment, with digits, quotes and bytes above 127 anywhere.
    let by_byte = |text: &[u8]| -> u64 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let mut mix = |w: u64| {
            h = (h ^ w).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            h ^= h >> 29;
        };
        let (mut word, mut filled, mut quoted) = (0u64, 0u32, false);
        for &c in text {
            if c == b'\'' {
                quoted = !quoted;
            } else if !quoted && !c.is_ascii_digit() {
                word = (word << 8) | u64::from(c);
                filled += 1;
                if filled == 8 {
                    mix(word);
                    (word, filled) = (0, 0);
                }
            }
        }
        mix(word);
        mix(u64::from(filled));
        h
    };
    let alphabet: &[u8] = b"SELECT abc FROM t WHERE x = 0123456789'\x00\x7f\x80\xff/:&";
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for len in 0..200 {
        for _ in 0..20 {
            let text: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    // Runs of plain text as well as the alphabet's odd bytes.
                    if seed % 3 == 0 {
                        alphabet[(seed >> 8) as usize % alphabet.len()]
                    } else {
                        b'a' + (seed >> 8) as u8 % 26
                    }
                })
                .collect();
            assert_eq!(k(&text), by_byte(&text), "{text:?}");
        }
    }
    for b in 0..=255u8 {
        let word = u64::from_ne_bytes([b'a', b'b', b, b'c', b'd', b'e', b'f', b'g']);
        assert_eq!(
            crate::hooks::has_digit_or_quote(word),
            b == b'\'' || b.is_ascii_digit(),
            "byte {b}"
        );
    }
}

#[pg_test]
fn temporal_attention_reads_the_shapes_recorded_history_and_says_when_there_is_none() {
    setup();
    Spi::run("SELECT ruvector_dag.ruvector_enable_neural_dag('t_orders')").unwrap();
    let runs = || -> i32 {
        one(&format!(
            "SELECT max(history_runs) FROM ruvector_dag.ruvector_attention_temporal_btsp($q${JOIN}$q$)"
        ))
    };
    let weights = |kind: &str| -> String {
        one(&format!(
            "SELECT string_agg(round(weight::numeric, 4)::text, ',' ORDER BY node) \
             FROM ruvector_dag.ruvector_attention_{kind}($q${JOIN}$q$)"
        ))
    };
    // Nothing measured yet: no history, and the weights are the topological ones.
    assert_eq!(runs(), 0);
    assert_eq!(weights("temporal_btsp"), weights("topological"));
    // Three runs timed per operator (observe mode records them): the shape's history.
    Spi::run(
        "SET ruvector.dag_mode = 'observe';
         SET ruvector.dag_sample_rate = 1;
         SET ruvector.dag_node_timing_rate = 1;",
    )
    .unwrap();
    for _ in 0..3 {
        Spi::run(JOIN).unwrap();
    }
    assert_eq!(runs(), 3);
    assert_ne!(weights("temporal_btsp"), weights("topological"));
    // The scores function reads the same history.
    let same: bool = one(&format!(
        "SELECT array_agg(weight ORDER BY node) = (SELECT array_agg(weight ORDER BY node) \
         FROM ruvector_dag.ruvector_attention_temporal_btsp($q${JOIN}$q$)) \
         FROM ruvector_dag.ruvector_attention_scores($q${JOIN}$q$, 'temporal_btsp')"
    ));
    assert!(same);
}
