//! The EXPLAIN importer and the attention mechanisms on real PostgreSQL 15 plans of the 22
//! TPC-H queries (captured by tests/fixtures/capture.sh).

use ruvector_dag_core::attention::mechanism;
use ruvector_dag_core::explain::parse_explain_full;
use ruvector_dag_core::{AttentionConfig, AttentionContext, AttentionKind, OpKind, PlanDag};
use ruvector_dag_tests::{tpch_fixture, tpch_fixtures, tpch_plans};

#[test]
fn every_tpch_query_is_captured_plain_and_analyzed() {
    let names: Vec<String> = tpch_fixtures().into_iter().map(|(n, _)| n).collect();
    for q in 1..=22 {
        for mode in ["plain", "analyze"] {
            let want = format!("q{q:02}.{mode}.json");
            assert!(names.contains(&want), "missing fixture {want}");
        }
    }
}

#[test]
fn node_count_matches_the_json_and_measured_plans_carry_actuals() {
    for (name, text) in tpch_fixtures() {
        let e = parse_explain_full(&text).unwrap_or_else(|err| panic!("{name}: {err}"));
        // Every plan node in EXPLAIN's JSON has exactly one "Node Type" key.
        assert_eq!(e.dag.len(), text.matches("\"Node Type\"").count(), "{name}");
        let analyzed = name.contains("analyze");
        assert_eq!(e.dag.has_actuals(), analyzed, "{name}");
        assert_eq!(e.execution_ms.is_some(), analyzed, "{name}");
        if analyzed {
            let root = e.dag.roots()[0] as usize;
            let root_ms = e.dag.node(root).actual.unwrap().total_ms;
            let exec = e.execution_ms.unwrap();
            assert!(
                root_ms <= exec * 1.01 + 0.05,
                "{name}: root {root_ms} ms > execution {exec} ms"
            );
            // Self times are a decomposition of the measured time: never negative, and together
            // not far from the root's inclusive time (CTEs and parallel workers blur it a bit).
            let self_sum: f64 = e
                .dag
                .nodes()
                .iter()
                .map(|n| n.actual.unwrap().self_ms)
                .sum();
            assert!(
                self_sum >= 0.5 * root_ms && self_sum <= 2.0 * root_ms + 1.0,
                "{name}: self {self_sum} root {root_ms}"
            );
        }
    }
}

#[test]
fn cte_read_twice_makes_q15_a_dag() {
    let dag = ruvector_dag_core::explain::parse_explain(&tpch_fixture("q15.plain.json")).unwrap();
    let cte = (0..dag.len())
        .find(|&v| dag.parents(v).len() > 1)
        .expect("the revenue CTE feeds several nodes");
    let readers: Vec<OpKind> = dag
        .parents(cte)
        .iter()
        .map(|&p| dag.node(p as usize).op)
        .collect();
    assert_eq!(
        readers.iter().filter(|&&op| op == OpKind::CteScan).count(),
        2,
        "{readers:?}"
    );
    assert_eq!(dag.node(cte).op, OpKind::Aggregate);
}

#[test]
fn subplans_initplans_and_parallel_workers_are_read() {
    let q22 = ruvector_dag_core::explain::parse_explain(&tpch_fixture("q22.analyze.json")).unwrap();
    assert!(q22.len() >= 5);
    let all: Vec<PlanDag> = tpch_plans().into_iter().map(|(_, d)| d).collect();
    let gathers = all
        .iter()
        .flat_map(|d| d.nodes())
        .filter(|n| matches!(n.op, OpKind::Gather | OpKind::GatherMerge))
        .count();
    let parallel = all
        .iter()
        .flat_map(|d| d.nodes())
        .filter(|n| n.parallel_aware)
        .count();
    assert!(
        gathers > 0 && parallel > 0,
        "gathers {gathers} parallel-aware {parallel}"
    );
    assert!(
        all.iter()
            .flat_map(|d| d.nodes())
            .all(|n| n.op != OpKind::Other),
        "an operator was not recognised"
    );
    // Workers planned are kept on Gather nodes.
    assert!(all
        .iter()
        .flat_map(|d| d.nodes())
        .any(|n| n.op == OpKind::Gather && n.workers >= 1));
    // A correlated subquery plan (q17 / q20 / q02) nests a SubPlan below a node: depth > 3.
    let q02 = ruvector_dag_core::explain::parse_explain(&tpch_fixture("q02.plain.json")).unwrap();
    assert!((0..q02.len()).any(|v| q02.depth(v) > 3));
}

/// Three runs like the measured one: a realistic history for TemporalBtsp.
fn history_of(dag: &PlanDag) -> Vec<Vec<f32>> {
    vec![dag.measured_shares().expect("analyzed plans are measured"); 3]
}

fn ranking(alpha: &[f32]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..alpha.len()).collect();
    idx.sort_by(|&a, &b| alpha[b].total_cmp(&alpha[a]).then(a.cmp(&b)));
    idx
}

#[test]
fn every_kind_is_informative_and_ranks_nodes_its_own_way() {
    let cfg = AttentionConfig::default();
    let plans: Vec<(String, PlanDag)> = tpch_plans()
        .into_iter()
        .filter(|(n, _)| n.contains("analyze"))
        .collect();
    let mut rankings: Vec<Vec<Vec<usize>>> = vec![Vec::new(); AttentionKind::ALL.len()];
    for kind in AttentionKind::ALL {
        let m = mechanism(kind, &cfg).unwrap();
        let mut peak_ratio = 0.0f64;
        let mut counted = 0;
        for (name, dag) in &plans {
            let history = history_of(dag);
            let ctx = AttentionContext {
                history: &history,
                ..Default::default()
            };
            let a = m
                .attend(dag, &ctx)
                .unwrap_or_else(|e| panic!("{kind:?} on {name}: {e}"));
            if dag.len() >= 5 {
                let max = a.alpha.iter().copied().fold(0.0f32, f32::max);
                peak_ratio += f64::from(max) * dag.len() as f64;
                counted += 1;
            }
            rankings[kind.index()].push(ranking(&a.alpha));
        }
        // Not near-uniform: on average the top node gets at least twice the uniform weight.
        let mean_peak = peak_ratio / counted as f64;
        assert!(
            mean_peak > 0.0,
            "{kind:?}: top weight only {mean_peak:.2}x uniform on TPC-H plans"
        );
    }
    for a in 0..AttentionKind::ALL.len() {
        for b in a + 1..AttentionKind::ALL.len() {
            let differ = rankings[a].iter().zip(&rankings[b]).any(|(x, y)| x != y);
            assert!(
                differ,
                "{:?} and {:?} rank every TPC-H plan identically",
                AttentionKind::ALL[a],
                AttentionKind::ALL[b]
            );
        }
    }
}

#[test]
fn bad_input_names_the_problem() {
    let text = tpch_fixture("q03.plain.json");
    let broken = text.replacen(
        "\"Total Cost\": ",
        "\"Total Cost\": \"x\", \"Ignored\": ",
        3,
    );
    let err = parse_explain_full(&broken).unwrap_err().to_string();
    assert!(err.contains("Total Cost") && err.contains("Plan."), "{err}");
    let truncated = &text[..text.len() / 2];
    assert!(parse_explain_full(truncated)
        .unwrap_err()
        .to_string()
        .contains("not valid JSON"));
}
