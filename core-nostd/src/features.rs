//! The node feature vector: fixed width [`FEATURE_DIM`] = 32, every field documented here.
//!
//! | index  | field |
//! |--------|-------|
//! | 0..16  | operator one-hot bucket ([`OpKind::bucket`]): 0 seq/sample scan, 1 index/tid scan, 2 bitmap, 3 other scans, 4 nested loop, 5 hash join, 6 merge join, 7 hash, 8 sort, 9 aggregate/group/unique, 10 window/setop, 11 materialize/memoize, 12 gather, 13 append/union, 14 result/limit/modify/lock, 15 other |
//! | 16     | ln(1 + estimated rows per loop) / 10 |
//! | 17     | ln(1 + total cost) / 10 |
//! | 18     | ln(1 + startup cost) / 10 |
//! | 19     | ln(1 + self cost) / 10 (total cost minus inputs') |
//! | 20     | width / 1024 |
//! | 21     | depth (edges from the root) / 16 |
//! | 22     | fan-in (number of inputs) / 4 |
//! | 23     | ln(loops) / 10 |
//! | 24     | parallel aware (0/1) |
//! | 25     | reads a relation (0/1) |
//! | 26     | self cost share of the plan's total cost |
//! | 27     | height (edges from the farthest leaf) / 16 |
//! | 28     | ln((actual rows + 1) / (estimated rows x loops + 1)) / 5, when measured, else 0 |
//! | 29     | measured (0/1) |
//! | 30     | actual self time share of the plan's time, when measured, else 0 |
//! | 31     | ln(1 + actual self ms) / 10, when measured, else 0 |
//!
//! Logs are divided by 10 (or 5) so every field of a realistic plan stays within a few units:
//! attention logits and the embedding projection then need no per-plan normalisation.

use alloc::vec::Vec;

use crate::dag::{NodeId, PlanDag};

/// Width of the node feature vector.
pub const FEATURE_DIM: usize = 32;

/// One node's features.
pub type FeatureVector = [f32; FEATURE_DIM];

/// Number of operator buckets at the start of the vector.
pub const OP_BUCKETS: usize = 16;

fn ln1p(x: f64) -> f32 {
    libm::log1p(x.max(0.0)) as f32
}

/// Features of every node, in node order.
pub fn node_features(dag: &PlanDag) -> Vec<FeatureVector> {
    let plan_cost: f64 = dag
        .roots()
        .iter()
        .map(|&r| dag.node(r as usize).total_cost)
        .sum::<f64>()
        .max(1e-9);
    let plan_ms: f64 = dag
        .roots()
        .iter()
        .map(|&r| dag.node(r as usize).actual.map_or(0.0, |a| a.total_ms))
        .sum::<f64>()
        .max(1e-9);
    (0..dag.len())
        .map(|v| features_of(dag, v, plan_cost, plan_ms))
        .collect()
}

fn features_of(dag: &PlanDag, v: NodeId, plan_cost: f64, plan_ms: f64) -> FeatureVector {
    let node = dag.node(v);
    let mut f = [0.0f32; FEATURE_DIM];
    f[node.op.bucket()] = 1.0;
    f[16] = ln1p(node.est_rows) / 10.0;
    f[17] = ln1p(node.total_cost) / 10.0;
    f[18] = ln1p(node.startup_cost) / 10.0;
    f[19] = ln1p(dag.self_cost(v)) / 10.0;
    f[20] = (node.width / 1024.0).min(64.0) as f32;
    f[21] = dag.depth(v) as f32 / 16.0;
    f[22] = dag.children(v).len() as f32 / 4.0;
    f[23] = libm::log(node.loops.max(1.0)) as f32 / 10.0;
    f[24] = f32::from(u8::from(node.parallel_aware));
    f[25] = f32::from(u8::from(node.relation_hash != 0));
    f[26] = (dag.self_cost(v) / plan_cost).min(1.0) as f32;
    f[27] = dag.height(v) as f32 / 16.0;
    if let Some(a) = &node.actual {
        let est = node.est_rows * node.loops.max(1.0);
        f[28] = libm::log((a.rows + 1.0) / (est + 1.0)) as f32 / 5.0;
        f[29] = 1.0;
        f[30] = (a.self_ms / plan_ms).min(1.0) as f32;
        f[31] = ln1p(a.self_ms) / 10.0;
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dag::{Actuals, OpKind, PlanNode};
    use alloc::vec;

    #[test]
    fn fields_follow_the_table() {
        let mut scan = PlanNode::new(OpKind::IndexScan, 99.0, 40.0);
        scan.relation_hash = 1;
        scan.actual = Some(Actuals {
            rows: 999.0,
            self_ms: 3.0,
            total_ms: 3.0,
        });
        let mut top = PlanNode::new(OpKind::HashJoin, 10.0, 100.0);
        top.actual = Some(Actuals {
            rows: 10.0,
            self_ms: 1.0,
            total_ms: 4.0,
        });
        let dag = PlanDag::new(vec![top, scan], vec![(1, 0)]).unwrap();
        let f = node_features(&dag);
        assert_eq!(f[1][1], 1.0);
        assert_eq!(f[0][5], 1.0);
        assert_eq!(f[1][..16].iter().sum::<f32>(), 1.0);
        assert!((f[1][16] - libm::log1pf(99.0) / 10.0).abs() < 1e-6);
        assert!((f[0][19] - libm::log1pf(60.0) / 10.0).abs() < 1e-6);
        assert!((f[0][26] - 0.6).abs() < 1e-6);
        assert_eq!((f[1][21], f[0][21]), (1.0 / 16.0, 0.0));
        assert_eq!((f[0][22], f[1][22]), (0.25, 0.0));
        assert_eq!((f[1][25], f[0][25]), (1.0, 0.0));
        // 10x more rows than estimated.
        assert!((f[1][28] - libm::logf(1000.0 / 100.0) / 5.0).abs() < 1e-6);
        assert!((f[1][30] - 0.75).abs() < 1e-6);
        assert!(f.iter().flatten().all(|x| x.is_finite()));
    }
}
