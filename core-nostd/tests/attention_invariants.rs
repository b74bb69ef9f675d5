//! Invariants every attention mechanism keeps, checked over random valid DAGs of 1..=200 nodes
//! (seeded generator: failures reproduce), and one semantic test per mechanism.

#![allow(clippy::needless_range_loop)] // tests index several parallel arrays by node

use ruvector_dag_core::attention::{critical_path, lorentz_inner, lorentz_positions, mechanism};
use ruvector_dag_core::mincut::plan_min_cut;
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_core::synth::{random_permutation, random_plan, SynthOptions};
use ruvector_dag_core::{
    AttentionConfig, AttentionContext, AttentionKind, AttentionMap, OpKind, PlanDag, PlanNode,
};

fn attend(kind: AttentionKind, dag: &PlanDag, ctx: &AttentionContext) -> AttentionMap {
    mechanism(kind, &AttentionConfig::default())
        .unwrap()
        .attend(dag, ctx)
        .unwrap()
}

fn random_history(seed: u64, n: usize, runs: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(seed);
    (0..runs)
        .map(|_| {
            let raw: Vec<f32> = (0..n).map(|_| rng.next_f32().powi(3)).collect();
            let s: f32 = raw.iter().sum::<f32>().max(1e-9);
            raw.iter().map(|x| x / s).collect()
        })
        .collect()
}

/// `upstream[i]`: shortest hop count from each node j up to i (None if j is not upstream),
/// by BFS over children, independent of the library's walk.
fn hops_from(dag: &PlanDag, i: usize) -> Vec<Option<u32>> {
    let mut hops = vec![None; dag.len()];
    hops[i] = Some(0);
    let mut frontier = vec![i];
    let mut h = 0;
    while !frontier.is_empty() {
        h += 1;
        let mut next = Vec::new();
        for v in frontier {
            for &c in dag.children(v) {
                if hops[c as usize].is_none() {
                    hops[c as usize] = Some(h);
                    next.push(c as usize);
                }
            }
        }
        frontier = next;
    }
    hops
}

fn cases() -> Vec<(u64, PlanDag)> {
    (0..120u64)
        .map(|seed| {
            let n = 1 + (seed as usize * 37) % 200;
            let opts = SynthOptions {
                share_probability: 0.08,
                with_actuals: seed % 3 == 0,
            };
            (seed, random_plan(seed, n, opts))
        })
        .collect()
}

#[test]
fn weights_are_a_distribution_deterministic_and_follow_renumbering() {
    let cfg = AttentionConfig::default();
    for (seed, dag) in cases() {
        let n = dag.len();
        let history = random_history(seed, n, 5);
        let perm = random_permutation(seed ^ 0xABC, n);
        let permuted = dag.permuted(&perm).unwrap();
        let permuted_history: Vec<Vec<f32>> = history
            .iter()
            .map(|h| {
                let mut p = vec![0.0; n];
                for v in 0..n {
                    p[perm[v]] = h[v];
                }
                p
            })
            .collect();
        for kind in AttentionKind::ALL {
            let ctx = AttentionContext {
                history: &history,
                ensemble_weights: None,
                want_pairwise: true,
            };
            let m = mechanism(kind, &cfg).unwrap();
            let a = m.attend(&dag, &ctx).unwrap();
            assert_eq!(a.kind, kind);
            assert_eq!(a.alpha.len(), n);
            assert!(
                a.alpha.iter().all(|w| w.is_finite() && *w >= 0.0),
                "{kind:?} seed {seed}"
            );
            let sum: f64 = a.alpha.iter().map(|&w| f64::from(w)).sum();
            assert!((sum - 1.0).abs() < 1e-6, "{kind:?} seed {seed}: sum {sum}");
            if n == 1 {
                assert_eq!(a.alpha, vec![1.0]);
            }
            // Same input, same output, also from a freshly built mechanism.
            assert_eq!(
                a,
                mechanism(kind, &cfg).unwrap().attend(&dag, &ctx).unwrap()
            );
            // Renumbering permutes the output the same way.
            let pctx = AttentionContext {
                history: &permuted_history,
                ..ctx
            };
            let b = m.attend(&permuted, &pctx).unwrap();
            for v in 0..n {
                let (x, y) = (a.alpha[v], b.alpha[perm[v]]);
                assert!(
                    (x - y).abs() <= 1e-5 + 1e-4 * x.abs(),
                    "{kind:?} seed {seed} node {v}: {x} vs {y}"
                );
            }
        }
    }
}

#[test]
fn pairwise_attention_stays_inside_its_mask_and_rows_sum_to_one() {
    let cfg = AttentionConfig::default();
    for (seed, dag) in cases().into_iter().step_by(3) {
        let n = dag.len();
        let ctx = AttentionContext {
            want_pairwise: true,
            ..Default::default()
        };
        let hops: Vec<Vec<Option<u32>>> = (0..n).map(|i| hops_from(&dag, i)).collect();
        for kind in [
            AttentionKind::Topological,
            AttentionKind::CausalCone,
            AttentionKind::MinCutGated,
        ] {
            let a = attend(kind, &dag, &ctx);
            let pairs = a.pairwise.expect("pairwise requested");
            let mut row_sum = vec![0.0f64; n];
            let mut count = vec![0usize; n];
            for &(i, j, w) in &pairs {
                let (i, j) = (i as usize, j as usize);
                let h = hops[i][j]
                    .unwrap_or_else(|| panic!("{kind:?} seed {seed}: {j} is not upstream of {i}"));
                match kind {
                    AttentionKind::CausalCone => assert!(h <= cfg.cone_depth),
                    _ => assert!(dag.height(i) - dag.height(j) <= cfg.topo_window),
                }
                assert!(w.is_finite() && w >= 0.0);
                row_sum[i] += f64::from(w);
                count[i] += 1;
            }
            for i in 0..n {
                assert!(
                    (row_sum[i] - 1.0).abs() < 1e-5,
                    "{kind:?} seed {seed} row {i}: {}",
                    row_sum[i]
                );
                // Every allowed pair is present (the mask is exactly the allowed set).
                let allowed = (0..n)
                    .filter(|&j| match (kind, hops[i][j]) {
                        (_, None) => false,
                        (AttentionKind::CausalCone, Some(h)) => h <= cfg.cone_depth,
                        (_, Some(_)) => dag.height(i) - dag.height(j) <= cfg.topo_window,
                    })
                    .count();
                assert_eq!(count[i], allowed, "{kind:?} seed {seed} row {i}");
            }
        }
    }
}

fn node(op: OpKind, rows: f64, cost: f64) -> PlanNode {
    PlanNode::new(op, rows, cost)
}

#[test]
fn critical_path_beats_off_path_nodes() {
    // Built plan: the hash join's outer side is expensive, the inner side cheap.
    let nodes = vec![
        node(OpKind::HashJoin, 100.0, 1_120.0),
        node(OpKind::SeqScan, 1e5, 1_000.0),
        node(OpKind::Hash, 100.0, 20.0),
        node(OpKind::IndexScan, 100.0, 15.0),
    ];
    let dag = PlanDag::new(nodes, vec![(1, 0), (2, 0), (3, 2)]).unwrap();
    let a = attend(
        AttentionKind::CriticalPath,
        &dag,
        &AttentionContext::default(),
    );
    assert!(
        a.alpha[1] > a.alpha[2] && a.alpha[1] > a.alpha[3],
        "{:?}",
        a.alpha
    );
    assert!(a.alpha[0] > a.alpha[3], "{:?}", a.alpha);

    // And on random plans: every node on the path outweighs every node with real slack.
    for (seed, dag) in cases() {
        let info = critical_path(&dag);
        let a = attend(
            AttentionKind::CriticalPath,
            &dag,
            &AttentionContext::default(),
        );
        let on_min = (0..dag.len())
            .filter(|&v| info.on_path[v])
            .map(|v| a.alpha[v])
            .fold(f32::MAX, f32::min);
        for v in (0..dag.len()).filter(|&v| info.slack[v] > 0.1 * info.length) {
            assert!(on_min > a.alpha[v], "seed {seed} node {v}");
        }
    }
}

#[test]
fn mincut_gate_finds_the_narrow_edge() {
    // A chain root <- 1 <- 2 <- 3 <- 4 <- 5 where node 3 emits 10 rows and everything else 1e6.
    let mut nodes: Vec<PlanNode> = (0..6)
        .map(|i| node(OpKind::Sort, 1e6, 100.0 * (6 - i) as f64))
        .collect();
    nodes[3].est_rows = 10.0;
    let dag = PlanDag::new(nodes, (1..6).map(|i| (i, i - 1)).collect()).unwrap();
    let cut = plan_min_cut(&dag);
    assert_eq!(cut.edges, vec![(3, 2)]);
    assert_eq!(cut.value, 10.0);
    let ctx = AttentionContext::default();
    let topo = attend(AttentionKind::Topological, &dag, &ctx);
    let gated = attend(AttentionKind::MinCutGated, &dag, &ctx);
    // Gating halves everyone but node 3, so node 3's weight relative to any other doubles.
    for v in [0usize, 1, 2, 4, 5] {
        let before = topo.alpha[3] / topo.alpha[v];
        let after = gated.alpha[3] / gated.alpha[v];
        assert!(
            (after / before - 2.0).abs() < 1e-3,
            "node {v}: {before} -> {after}"
        );
    }
}

#[test]
fn cone_weights_fall_with_distance() {
    // Same plan with gamma = ln 2 and gamma = 0: per query row the ratio of the two weights
    // must fall by exactly half per hop, whatever the features say.
    let dag = random_plan(3, 60, SynthOptions::default());
    let ctx = AttentionContext {
        want_pairwise: true,
        ..Default::default()
    };
    let with = mechanism(AttentionKind::CausalCone, &AttentionConfig::default())
        .unwrap()
        .attend(&dag, &ctx)
        .unwrap();
    let flat_cfg = AttentionConfig {
        cone_gamma: 0.0,
        ..Default::default()
    };
    let without = mechanism(AttentionKind::CausalCone, &flat_cfg)
        .unwrap()
        .attend(&dag, &ctx)
        .unwrap();
    let (pw, p0) = (with.pairwise.unwrap(), without.pairwise.unwrap());
    assert_eq!(pw.len(), p0.len());
    let mut checked = 0;
    for i in 0..dag.len() as u32 {
        let hops = hops_from(&dag, i as usize);
        let row: Vec<(u32, f32, f32)> = pw
            .iter()
            .zip(&p0)
            .filter(|(a, _)| a.0 == i)
            .map(|(a, b)| (a.1, a.2, b.2))
            .collect();
        let self_ratio = row.iter().find(|r| r.0 == i).map(|r| r.1 / r.2).unwrap();
        for (j, w, w0) in row {
            let h = hops[j as usize].unwrap() as i32;
            let expect = 0.5f32.powi(h);
            assert!(
                ((w / w0) / self_ratio - expect).abs() < 1e-4 * expect.max(1e-2),
                "row {i} key {j} hops {h}"
            );
            checked += 1;
        }
    }
    assert!(checked > 100);
}

#[test]
fn equal_cost_branches_get_equal_total_weight() {
    // Hash join over two branches with the same total cost but different shapes:
    // left: Sort(60) <- SeqScan(40); right: Hash(10) <- Aggregate(30) <- IndexScan(60).
    let nodes = vec![
        node(OpKind::HashJoin, 10.0, 250.0),
        node(OpKind::Sort, 10.0, 100.0),
        node(OpKind::SeqScan, 10.0, 40.0),
        node(OpKind::Hash, 10.0, 100.0),
        node(OpKind::Aggregate, 10.0, 90.0),
        node(OpKind::IndexScan, 10.0, 60.0),
    ];
    let dag = PlanDag::new(nodes, vec![(1, 0), (2, 1), (3, 0), (4, 3), (5, 4)]).unwrap();
    let a = attend(
        AttentionKind::ParallelBranch,
        &dag,
        &AttentionContext::default(),
    );
    let left = a.alpha[1] + a.alpha[2];
    let right = a.alpha[3] + a.alpha[4] + a.alpha[5];
    assert!((left - right).abs() < 1e-6, "{left} vs {right}");
    // A branch ten times cheaper is flattened, not erased: more than its pure cost share.
    let nodes = vec![
        node(OpKind::HashJoin, 1.0, 111.0),
        node(OpKind::SeqScan, 1.0, 100.0),
        node(OpKind::SeqScan, 1.0, 10.0),
    ];
    let dag = PlanDag::new(nodes, vec![(1, 0), (2, 0)]).unwrap();
    let a = attend(
        AttentionKind::ParallelBranch,
        &dag,
        &AttentionContext::default(),
    );
    let share = a.alpha[2] / (a.alpha[1] + a.alpha[2]);
    assert!(share > 0.2 && share < 0.3, "{share}");
}

#[test]
fn lorentz_points_lie_on_the_hyperboloid_and_attention_follows_the_work() {
    for (_, dag) in cases() {
        for x in lorentz_positions(&dag, 1.0) {
            assert!(
                (lorentz_inner(&x, &x) + 1.0).abs() < 1e-6 * x[0] * x[0],
                "{x:?}"
            );
            assert!(x[0] >= 1.0);
        }
    }
    // Two join branches; the deep left leaf carries nearly all the work.
    let nodes = vec![
        node(OpKind::NestedLoop, 1.0, 10_040.0),
        node(OpKind::Sort, 1.0, 10_010.0),
        node(OpKind::SeqScan, 1.0, 10_000.0),
        node(OpKind::Material, 1.0, 20.0),
        node(OpKind::SeqScan, 1.0, 10.0),
    ];
    let dag = PlanDag::new(nodes, vec![(1, 0), (2, 1), (3, 0), (4, 3)]).unwrap();
    let a = attend(
        AttentionKind::HierarchicalLorentz,
        &dag,
        &AttentionContext::default(),
    );
    assert!(
        a.alpha[2] > a.alpha[4] && a.alpha[1] > a.alpha[3],
        "{:?}",
        a.alpha
    );
}

#[test]
fn temporal_btsp_follows_history_and_fires_on_a_plateau() {
    let dag = random_plan(21, 30, SynthOptions::default());
    let n = dag.len();
    let ctx = AttentionContext::default();
    let topo = attend(AttentionKind::Topological, &dag, &ctx);
    // Without history it is topological attention.
    let fallback = attend(AttentionKind::TemporalBtsp, &dag, &ctx);
    for (a, b) in fallback.alpha.iter().zip(&topo.alpha) {
        assert!((a - b).abs() < 1e-6);
    }
    // Steady history: node 7 always takes half the time.
    let steady: Vec<f32> = (0..n)
        .map(|v| if v == 7 { 0.5 } else { 0.5 / (n - 1) as f32 })
        .collect();
    let mut history = vec![steady.clone(); 6];
    let h = attend(
        AttentionKind::TemporalBtsp,
        &dag,
        &AttentionContext {
            history: &history,
            ..ctx
        },
    );
    let top = (0..n)
        .max_by(|&a, &b| h.alpha[a].total_cmp(&h.alpha[b]))
        .unwrap();
    assert_eq!(top, 7);
    // Node 12 suddenly takes 40% of the latest run: a plateau gates it above its trace alone.
    let mut surge = steady.clone();
    surge[12] = 0.4;
    surge[7] = 0.1;
    history.push(surge);
    let fired = attend(
        AttentionKind::TemporalBtsp,
        &dag,
        &AttentionContext {
            history: &history,
            ..ctx
        },
    );
    let cfg = AttentionConfig {
        btsp_gain: 0.0,
        ..Default::default()
    };
    let no_gate = mechanism(AttentionKind::TemporalBtsp, &cfg)
        .unwrap()
        .attend(
            &dag,
            &AttentionContext {
                history: &history,
                ..ctx
            },
        )
        .unwrap();
    assert!(
        fired.alpha[12] > 1.5 * no_gate.alpha[12],
        "{} vs {}",
        fired.alpha[12],
        no_gate.alpha[12]
    );
}

#[test]
fn ensemble_mixes_by_the_given_weights() {
    let dag = random_plan(8, 50, SynthOptions::default());
    let mut w = [0.0f32; 7];
    w[2] = 1.0;
    let ctx = AttentionContext {
        ensemble_weights: Some(w),
        ..Default::default()
    };
    let e = attend(AttentionKind::Ensemble, &dag, &ctx);
    let cp = attend(
        AttentionKind::CriticalPath,
        &dag,
        &AttentionContext::default(),
    );
    for (a, b) in e.alpha.iter().zip(&cp.alpha) {
        assert!((a - b).abs() < 1e-6);
    }
    let bad = AttentionContext {
        ensemble_weights: Some([0.0; 7]),
        ..Default::default()
    };
    assert!(
        mechanism(AttentionKind::Ensemble, &AttentionConfig::default())
            .unwrap()
            .attend(&dag, &bad)
            .is_err()
    );
}
