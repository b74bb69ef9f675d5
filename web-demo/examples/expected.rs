//! Writes web-demo/dist/expected.json: for a few captured plans, what the native core computes
//! (each node's operator, label and weight under every kind; the edge count), which the browser
//! tests compare the page's drawing with; and for two plans of TPC-H Q18 at scale 1 (the
//! default and `enable_seqscan=off`) each operator's change as the native engine marks it.
use std::path::PathBuf;

use ruvector_dag_core::attention::mechanism;
use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::{AttentionConfig, AttentionContext, AttentionKind};
use serde_json::{json, Map, Value};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut plans = Map::new();
    for name in ["q05.analyze", "q15.analyze", "q02.plain"] {
        let text =
            std::fs::read_to_string(root.join(format!("../tests/fixtures/tpch/{name}.json")))
                .expect("fixture");
        let dag = parse_explain(&text).expect("a valid plan");
        let maps: Vec<(AttentionKind, Vec<f32>)> = AttentionKind::ALL
            .iter()
            .map(|&k| {
                let m = mechanism(k, &AttentionConfig::default())
                    .and_then(|m| m.attend(&dag, &AttentionContext::default()))
                    .expect("attention");
                (k, m.alpha)
            })
            .collect();
        let nodes: Vec<Value> = (0..dag.len())
            .map(|v| {
                let w: Map<String, Value> = maps
                    .iter()
                    .map(|(k, a)| (k.name().to_string(), json!(a[v])))
                    .collect();
                json!({"operator": dag.node(v).op.name(), "label": dag.node(v).label, "weights": w})
            })
            .collect();
        plans.insert(
            name.to_string(),
            json!({"text": text, "nodes": nodes, "edges": dag.edges().len()}),
        );
    }
    let sf1 = |f: &str| {
        std::fs::read_to_string(root.join(format!("../tests/fixtures/tpch-sf1/{f}")))
            .expect("fixture")
    };
    let (first, second) = (sf1("q18.0.json"), sf1("q18.4.json"));
    let p = ruvector_dag_web::analyze_pair_document(&first, &second, &[], &[]).expect("a pair");
    let marks = |side: &str| -> Vec<Value> {
        p[side]["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["change"].clone())
            .collect()
    };
    let pair = json!({"first": first, "second": second, "left": marks("left"),
                      "right": marks("right"), "changes": p["changes"]});
    let out = root.join("dist/expected.json");
    std::fs::write(&out, json!({"plans": plans, "pair": pair}).to_string())
        .expect("write expected.json");
    println!("{}", out.display());
}
