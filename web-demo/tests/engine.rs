//! The demo's engine on the captured TPC-H plans: what the page is handed agrees with the core
//! run natively, every node can be found in the pasted document, and bad input is named.

use std::path::PathBuf;

use ruvector_dag_core::attention::mechanism;
use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::{AttentionConfig, AttentionContext, AttentionKind};
use ruvector_dag_web::analyze_document;
use serde_json::Value;

fn fixtures() -> Vec<(String, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tpch");
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    out.sort();
    assert!(
        out.len() >= 44,
        "22 queries, plain and analyzed: {}",
        out.len()
    );
    out
}

/// The value at a path as the core spells it (`[0].Plan.Plans[1]`).
fn at<'a>(doc: &'a Value, path: &str) -> &'a Value {
    let mut v = doc;
    for part in path.split('.') {
        let (name, rest) = part.split_once('[').unwrap_or((part, ""));
        if !name.is_empty() {
            v = &v[name];
        }
        for idx in rest.split('[').filter(|s| !s.is_empty()) {
            v = &v[idx.trim_end_matches(']').parse::<usize>().unwrap()];
        }
    }
    v
}

#[test]
fn every_fixture_is_drawn_with_the_core_s_own_numbers() {
    let cfg = AttentionConfig::default();
    for (name, text) in fixtures() {
        let page = analyze_document(&text, &[]).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dag = parse_explain(&text).unwrap();
        let nodes = page["nodes"].as_array().unwrap();
        assert_eq!(nodes.len(), dag.len(), "{name}");
        assert_eq!(
            page["edges"].as_array().unwrap().len(),
            dag.edges().len(),
            "{name}"
        );
        for kind in AttentionKind::ALL {
            let native = mechanism(kind, &cfg)
                .unwrap()
                .attend(&dag, &AttentionContext::default())
                .unwrap();
            for (v, node) in nodes.iter().enumerate() {
                let w = node["weights"][kind.name()].as_f64().unwrap();
                assert!(
                    (w - f64::from(native.alpha[v])).abs() < 1e-7,
                    "{name} {} node {v}",
                    kind.name()
                );
            }
        }
        let doc: Value = serde_json::from_str(&text).unwrap();
        for node in nodes {
            let raw = at(&doc, node["path"].as_str().unwrap());
            assert_eq!(
                ruvector_dag_core::OpKind::from_explain_name(raw["Node Type"].as_str().unwrap())
                    .name(),
                node["operator"],
                "{name}: {}",
                node["path"]
            );
            assert!(node["x"].is_number() && node["y"].is_number());
        }
        let analyzed = name.contains("analyze");
        assert_eq!(page["analyzed"], analyzed, "{name}");
        if analyzed {
            assert!(
                nodes
                    .iter()
                    .any(|n| n["misestimate"].as_f64().unwrap() > 1.0),
                "{name}"
            );
        }
        assert!(nodes.iter().any(|n| n["critical"] == true));
    }
}

#[test]
fn the_extension_s_explain_json_is_read_too() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tpch/q05.plain.json"),
    )
    .unwrap();
    let page = analyze_document(&text, &[]).unwrap();
    // What ruvector_dag_explain_json returns for the same plan (its nodes and consumers).
    let nodes: Vec<Value> = page["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            serde_json::json!({
                "id": n["id"], "operator": n["operator"], "label": n["label"],
                "est_rows": n["est_rows"], "total_cost": n["total_cost"],
                "startup_cost": n["startup_cost"], "width": n["width"], "loops": n["loops"],
                "parallel_aware": n["parallel_aware"], "workers": n["workers"],
                "scans_relation": n["scans_relation"], "consumers": n["consumers"],
            })
        })
        .collect();
    let ours = serde_json::json!({"format": "ruvector_dag/explain/1", "nodes": nodes}).to_string();
    let again = analyze_document(&ours, &[]).unwrap();
    assert_eq!(again["source"], "ruvector_dag_explain_json");
    let sorted = |p: &Value| {
        let mut e: Vec<String> = p["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.to_string())
            .collect();
        e.sort();
        e
    };
    assert_eq!(sorted(&again), sorted(&page));
    for (a, b) in again["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .zip(page["nodes"].as_array().unwrap())
    {
        assert_eq!(a["weights"], b["weights"]);
    }
}

#[test]
fn bad_input_is_named() {
    let cases = [
        ("{not json", "not valid JSON"),
        ("[]", "empty array"),
        (
            r#"[{"Plan": {"Node Type": "Seq Scan", "Startup Cost": 0, "Total Cost": "x", "Plan Rows": 1, "Plan Width": 4}}]"#,
            "[0].Plan.\"Total Cost\": expected a number",
        ),
        (
            r#"{"format": "ruvector_dag/explain/1", "nodes": [{"operator": "Sort", "est_rows": 1, "total_cost": 1, "consumers": [7]}]}"#,
            "nodes[0].consumers: 7 is not a node id",
        ),
        (
            r#"{"Plan": {"Node Type": "Sort", "Startup Cost": 0, "Total Cost": 1, "Plan Rows": 1, "Plan Width": 4, "Plans": [{"Node Type": "Seq Scan"}]}}"#,
            "Plan.Plans[0]: missing",
        ),
    ];
    for (text, words) in cases {
        let e = analyze_document(text, &[]).unwrap_err();
        assert!(e.contains(words), "{text}: {e}");
    }
}

#[test]
fn collapsing_a_node_hides_its_inputs() {
    let text = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tpch/q02.plain.json"),
    )
    .unwrap();
    let all = analyze_document(&text, &[]).unwrap();
    let folded = analyze_document(&text, &[1]).unwrap();
    let visible = |p: &Value| {
        p["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["x"].is_number())
            .count()
    };
    let hidden = folded["nodes"][1]["hidden_below"].as_u64().unwrap() as usize;
    assert!(hidden >= 1);
    assert_eq!(visible(&folded) + hidden, visible(&all));
}

#[test]
fn synthetic_plans_of_5000_operators_are_read_and_laid_out() {
    for n in [1, 2, 500, 5000] {
        let text = ruvector_dag_web::synthetic_explain(n, 7);
        let page = analyze_document(&text, &[]).unwrap();
        assert_eq!(page["nodes"].as_array().unwrap().len(), n);
        assert_eq!(page["edges"].as_array().unwrap().len(), n - 1);
    }
}

#[test]
fn every_portability_workload_runs_and_an_unknown_one_is_named() {
    for w in ruvector_dag_web::WORKLOADS {
        let sum = ruvector_dag_web::run_workload_native(w, 100, 2).unwrap();
        assert!(sum.is_finite() && sum >= 0.0, "{w}: {sum}");
    }
    let e = ruvector_dag_web::run_workload_native("fastest", 10, 1).unwrap_err();
    assert!(e.contains("unknown workload \"fastest\""), "{e}");
}
