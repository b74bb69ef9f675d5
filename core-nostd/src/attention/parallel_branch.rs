//! Parallel branch attention. Mass 1 enters at the root and flows down the plan: a node keeps
//! the share of its incoming mass that its own work is of its subtree's work (at least
//! `branch_keep_min`), and splits the rest among its inputs, the sibling branches, in
//! proportion to `subtree work ^ branch_balance`. With balance 0.5 a branch ten times cheaper
//! than its sibling still gets about a quarter of the mass, so concurrent branches are weighed
//! together instead of the cheaper one vanishing; equal branches always get equal mass.

use alloc::vec;

use super::floored_work;
use super::{
    normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap, DagAttention,
};
use crate::dag::PlanDag;
use crate::error::Result;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct ParallelBranch {
    balance: f64,
    keep_min: f64,
}

impl ParallelBranch {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        ParallelBranch {
            balance: f64::from(cfg.branch_balance),
            keep_min: f64::from(cfg.branch_keep_min),
        }
    }
}

impl DagAttention for ParallelBranch {
    fn kind(&self) -> AttentionKind {
        AttentionKind::ParallelBranch
    }

    fn attend(&self, dag: &PlanDag, _ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let n = dag.len();
        let work = floored_work(dag);
        // Subtree work over the owner tree (a shared input counts under its first consumer).
        let mut subtree = work.clone();
        for &v in dag.topo_order() {
            let v = v as usize;
            if let Some(&p) = dag.parents(v).first() {
                subtree[p as usize] += subtree[v];
            }
        }
        let share = |v: usize| libm::pow(subtree[v], self.balance);
        let mut mass = vec![0.0f64; n];
        let root_total: f64 = dag.roots().iter().map(|&r| share(r as usize)).sum();
        for &r in dag.roots() {
            mass[r as usize] = share(r as usize) / root_total;
        }
        let mut alpha = vec![0.0f32; n];
        for &v in dag.topo_order().iter().rev() {
            let v = v as usize;
            let kids = dag.children(v);
            if kids.is_empty() {
                alpha[v] = mass[v] as f32;
                continue;
            }
            let keep = (work[v] / subtree[v]).clamp(self.keep_min, 1.0);
            alpha[v] = (mass[v] * keep) as f32;
            let pass = mass[v] * (1.0 - keep);
            let denom: f64 = kids.iter().map(|&c| share(c as usize)).sum();
            for &c in kids {
                mass[c as usize] += pass * share(c as usize) / denom;
            }
        }
        normalised(self.kind(), alpha, None)
    }
}
