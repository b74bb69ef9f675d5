//! Two plans side by side, on the real PostgreSQL plans recorded under every arm at TPC-H
//! scale 1 (tests/fixtures/tpch-sf1: `qNN.A.json` is query NN planned and run under arm A, arm 0
//! being PostgreSQL's default plan).

use std::collections::BTreeMap;
use std::path::PathBuf;

use ruvector_dag_web::{analyze_pair_document, is_comparison};
use serde_json::{json, Value};

fn sf1() -> BTreeMap<String, Vec<String>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tpch-sf1");
    let mut out: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let parts: Vec<&str> = name.split('.').collect();
        if parts.len() == 3 && parts[2] == "json" {
            out.entry(parts[0].to_string()).or_default().push((
                parts[1].parse().unwrap(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    assert!(out.len() >= 22, "22 TPC-H queries: {}", out.len());
    out.into_iter()
        .map(|(q, mut v)| {
            v.sort();
            (q, v.into_iter().map(|x| x.1).collect())
        })
        .collect()
}

/// The plan tree as PostgreSQL wrote it: node type, join type, strategy and relation, the
/// inputs in order. Read from the JSON directly, not through the engine.
fn tree(plan: &Value) -> String {
    let s = |k: &str| plan.get(k).and_then(Value::as_str).unwrap_or("");
    let inputs: Vec<String> = plan
        .get("Plans")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(tree).collect())
        .unwrap_or_default();
    format!(
        "{}/{}/{}({})",
        s("Node Type"),
        s("Relation Name"),
        s("Strategy"),
        inputs.join(",")
    )
}

fn nodes(side: &Value) -> &Vec<Value> {
    side["nodes"].as_array().unwrap()
}

fn status(n: &Value) -> &str {
    n["change"]["status"].as_str().unwrap()
}

/// Marks are consistent: a peer points back, `same` pairs have one operator and `changed`
/// pairs cover the same relations; `new` only on the right, `removed` only on the left.
fn check_marks(name: &str, pair: &Value) {
    let (l, r) = (nodes(&pair["left"]), nodes(&pair["right"]));
    for (mine, other, side) in [(l, r, "left"), (r, l, "right")] {
        for n in mine {
            let st = status(n);
            match n["change"]["peer"].as_u64() {
                Some(p) => {
                    let peer = &other[p as usize];
                    assert_eq!(
                        peer["change"]["peer"], n["id"],
                        "{name} {side}: peer symmetric"
                    );
                    assert_eq!(status(peer), st, "{name} {side}");
                    if st == "same" {
                        assert_eq!(peer["operator"], n["operator"], "{name} {side}");
                    } else {
                        assert_eq!(st, "changed", "{name} {side}");
                    }
                }
                None => assert_eq!(
                    st,
                    if side == "left" { "removed" } else { "new" },
                    "{name} {side}"
                ),
            }
        }
    }
    let c = &pair["changes"];
    let count = |side: &Vec<Value>, s: &str| side.iter().filter(|n| status(n) == s).count() as u64;
    assert_eq!(c["same"], json!(count(r, "same")), "{name}");
    assert_eq!(c["changed"], json!(count(r, "changed")), "{name}");
    assert_eq!(c["new"], json!(count(r, "new")), "{name}");
    assert_eq!(c["removed"], json!(count(l, "removed")), "{name}");
    assert_eq!(count(l, "same"), count(r, "same"), "{name}");
}

#[test]
fn a_plan_against_itself_is_unchanged() {
    for (q, arms) in sf1() {
        let p = analyze_pair_document(&arms[0], &arms[0], &[], &[]).unwrap();
        check_marks(&q, &p);
        assert_eq!(p["changes"]["identical"], json!(true), "{q}");
        for n in nodes(&p["right"]) {
            assert_eq!(
                n["change"]["peer"], n["id"],
                "{q}: each operator is its own peer"
            );
        }
    }
}

#[test]
fn changed_operators_are_marked_exactly_when_the_plans_differ() {
    let mut differing = 0;
    let mut pairs = 0;
    for (q, arms) in sf1() {
        let default: Value = serde_json::from_str(&arms[0]).unwrap();
        for (a, text) in arms.iter().enumerate().skip(1) {
            let name = format!("{q} arm {a}");
            let p = analyze_pair_document(&arms[0], text, &[], &[]).unwrap();
            check_marks(&name, &p);
            let other: Value = serde_json::from_str(text).unwrap();
            let differ = tree(&default[0]["Plan"]) != tree(&other[0]["Plan"]);
            assert_eq!(
                p["changes"]["identical"],
                json!(!differ),
                "{name}: the marks must say whether PostgreSQL's two plans differ"
            );
            pairs += 1;
            differing += usize::from(differ);
            // An operator type the default plan never uses is never `same`.
            let ops: Vec<&Value> = nodes(&p["left"]).iter().map(|n| &n["operator"]).collect();
            for n in nodes(&p["right"]) {
                if !ops.contains(&&n["operator"]) {
                    assert_ne!(status(n), "same", "{name}: {}", n["operator"]);
                }
            }
        }
    }
    // The arms do change most plans; the test must see both outcomes.
    assert!(
        differing > pairs / 2 && differing < pairs,
        "{differing} of {pairs} differ"
    );
}

/// Hash join of a and b (hash on b) against a merge join of the two sorted inputs, then
/// against the same hash join built the other way round.
#[test]
fn a_join_method_change_is_paired_operator_by_operator() {
    let scan = |rel: &str, rows: f64| {
        json!({"Node Type": "Seq Scan", "Relation Name": rel, "Alias": rel,
               "Startup Cost": 0.0, "Total Cost": rows / 10.0, "Plan Rows": rows, "Plan Width": 8})
    };
    let hash = json!([{"Plan": {"Node Type": "Hash Join", "Join Type": "Inner",
        "Startup Cost": 30.0, "Total Cost": 300.0, "Plan Rows": 1000.0, "Plan Width": 16,
        "Plans": [scan("a", 1000.0),
                  {"Node Type": "Hash", "Startup Cost": 20.0, "Total Cost": 20.0,
                   "Plan Rows": 200.0, "Plan Width": 8, "Plans": [scan("b", 200.0)]}]}}]);
    let sort = |rel: &str, rows: f64| {
        json!({"Node Type": "Sort", "Startup Cost": rows, "Total Cost": rows, "Plan Rows": rows,
               "Plan Width": 8, "Plans": [scan(rel, rows)]})
    };
    let merge = json!([{"Plan": {"Node Type": "Merge Join", "Join Type": "Inner",
        "Startup Cost": 1200.0, "Total Cost": 1300.0, "Plan Rows": 1000.0, "Plan Width": 16,
        "Plans": [sort("a", 1000.0), sort("b", 200.0)]}}]);
    let p = analyze_pair_document(&hash.to_string(), &merge.to_string(), &[], &[]).unwrap();
    check_marks("hand-made", &p);
    let by_op = |side: &Value, op: &str| -> Vec<(String, Value)> {
        nodes(side)
            .iter()
            .filter(|n| n["operator"] == op)
            .map(|n| (status(n).to_string(), n["change"]["peer"].clone()))
            .collect()
    };
    let merge_id = nodes(&p["right"])
        .iter()
        .find(|n| n["operator"] == "Merge Join")
        .unwrap()["id"]
        .clone();
    assert_eq!(
        by_op(&p["left"], "Hash Join"),
        vec![("changed".to_string(), merge_id)]
    );
    // The hash over b became the sort over b (both prepare b for the join); the sort over a
    // is new.
    let sorts: Vec<&Value> = nodes(&p["right"])
        .iter()
        .filter(|n| n["operator"] == "Sort")
        .collect();
    let sort_of = |rel: &str| {
        sorts
            .iter()
            .find(|s| nodes(&p["right"])[s["inputs"][0].as_u64().unwrap() as usize]["label"] == rel)
            .unwrap()
    };
    assert_eq!(
        by_op(&p["left"], "Hash"),
        vec![("changed".to_string(), sort_of("b")["id"].clone())]
    );
    assert_eq!(status(sort_of("a")), "new");
    assert!(by_op(&p["right"], "Seq Scan")
        .iter()
        .all(|(s, _)| s == "same"));
    assert_eq!(p["changes"]["changed"], json!(2));
    assert_eq!(p["changes"]["new"], json!(1));
    assert_eq!(p["changes"]["removed"], json!(0));
    // Both inputs swapped: the join is changed (same operator, inputs in another order).
    let swapped = json!([{"Plan": {"Node Type": "Hash Join", "Join Type": "Inner",
        "Startup Cost": 30.0, "Total Cost": 300.0, "Plan Rows": 1000.0, "Plan Width": 16,
        "Plans": [scan("b", 200.0),
                  {"Node Type": "Hash", "Startup Cost": 20.0, "Total Cost": 20.0,
                   "Plan Rows": 1000.0, "Plan Width": 8, "Plans": [scan("a", 1000.0)]}]}}]);
    let p = analyze_pair_document(&hash.to_string(), &swapped.to_string(), &[], &[]).unwrap();
    check_marks("swapped", &p);
    assert_eq!(
        by_op(&p["right"], "Hash Join")[0].0,
        "changed",
        "the hash is built on the other side"
    );
    assert_eq!(p["changes"]["identical"], json!(false));
}

#[test]
fn the_decision_comes_from_the_compare_document_or_postgresql_18_s_explain() {
    let arms = &sf1()["q05"];
    let decision = json!({"arm": "no_hashjoin", "applied": "applied", "rule": "exploit",
        "pattern": "3", "similarity": 0.97, "confidence": 0.8, "attention": "critical_path",
        "predicted_ms": 812.5, "reason": "learned: 1.4x faster for this pattern"});
    let doc = json!({
        "format": "ruvector_dag/compare/1",
        "decision": decision,
        "default": serde_json::from_str::<Value>(&arms[0]).unwrap(),
        "learned": serde_json::from_str::<Value>(&arms[2]).unwrap(),
    })
    .to_string();
    assert!(is_comparison(&doc));
    assert!(!is_comparison(&arms[0]));
    assert!(!is_comparison("not json"));
    let p = analyze_pair_document(&doc, "", &[], &[]).unwrap();
    assert_eq!(p["decision"], decision);
    assert!(p["right"]["title"]
        .as_str()
        .unwrap()
        .contains("no_hashjoin"));
    // The second document's own text is what the raw view shows.
    let right_text: Value = serde_json::from_str(p["right"]["text"].as_str().unwrap()).unwrap();
    assert_eq!(right_text, serde_json::from_str::<Value>(&arms[2]).unwrap());

    // PostgreSQL 18 prints the decision as a `ruvector_dag` group beside "Plan".
    let mut learned: Value = serde_json::from_str(&arms[2]).unwrap();
    learned[0]["ruvector_dag"] = json!({"Arm": "no_hashjoin", "Applied": "applied",
        "Rule": "exploit", "Similarity": 0.97, "Reason": "learned"});
    let p = analyze_pair_document(&arms[0], &learned.to_string(), &[], &[]).unwrap();
    assert_eq!(
        p["decision"],
        json!({"arm": "no_hashjoin", "applied": "applied", "rule": "exploit",
               "similarity": 0.97, "reason": "learned"})
    );
    // Plain EXPLAIN from 15: no decision.
    let p = analyze_pair_document(&arms[0], &arms[2], &[], &[]).unwrap();
    assert!(p["decision"].is_null());
}

#[test]
fn bad_pairs_name_the_plan_and_the_field() {
    let arms = &sf1()["q03"];
    let e = analyze_pair_document(&arms[0], "{", &[], &[]).unwrap_err();
    assert!(e.starts_with("second plan: not valid JSON"), "{e}");
    let e = analyze_pair_document("[{\"Plan\": 3}]", &arms[0], &[], &[]).unwrap_err();
    assert!(e.starts_with("first plan: "), "{e}");
    let e = analyze_pair_document(&arms[0], "", &[], &[]).unwrap_err();
    assert!(e.contains("two plans are needed"), "{e}");
    let doc = json!({"format": "ruvector_dag/compare/1", "default": serde_json::from_str::<Value>(&arms[0]).unwrap()}).to_string();
    let e = analyze_pair_document(&doc, "", &[], &[]).unwrap_err();
    assert!(e.starts_with("learned: "), "{e}");
    // A comparison pasted where one plan is expected says what it is.
    let doc = json!({"format": "ruvector_dag/compare/1"}).to_string();
    let e = ruvector_dag_web::analyze_document(&doc, &[]).unwrap_err();
    assert!(e.contains("two plans"), "{e}");
}

/// TPC-H Q18 at scale 1, the default plan against `enable_seqscan=off`: scans pair with the
/// scans of the same relation, and the two scans of lineitem pair by where they feed.
#[test]
fn q18_scans_pair_with_scans_of_the_same_relation() {
    let arms = &sf1()["q18"];
    let p = analyze_pair_document(&arms[0], &arms[4], &[], &[]).unwrap();
    check_marks("q18", &p);
    let (l, r) = (nodes(&p["left"]), nodes(&p["right"]));
    for n in l {
        let Some(peer) = n["change"]["peer"].as_u64() else {
            continue;
        };
        let peer = &r[peer as usize];
        if n["scans_relation"] == true {
            assert_eq!(peer["label"], n["label"], "{n} paired with {peer}");
            assert_eq!(peer["scans_relation"], true, "{n} paired with {peer}");
        }
    }
    // Every scan of the default plan has a counterpart: enable_seqscan=off changes how
    // relations are read, not which.
    for n in l.iter().filter(|n| n["scans_relation"] == true) {
        assert_ne!(status(n), "removed", "{n}");
    }
}
