//! Critical path attention. The critical path is the leaf-to-root path with the most work
//! (measured self time when known, estimated self cost otherwise), found by dynamic
//! programming in O(n + e). A node's slack is how much shorter the longest path through it is;
//! weights fall as `exp(-sharpness * slack / L) * (1 + work / L)`, so nodes on the path come
//! first and, among them, the heaviest.

use alloc::vec;
use alloc::vec::Vec;

use super::floored_work;
use super::{
    normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap, DagAttention,
};
use crate::dag::PlanDag;
use crate::error::Result;

/// The critical path of a plan.
#[derive(Debug, Clone, PartialEq)]
pub struct CriticalPathInfo {
    /// Work along the critical path.
    pub length: f64,
    /// Per node: the longest path through it is this much shorter than `length`.
    pub slack: Vec<f64>,
    /// Per node: whether it lies on a critical path (slack ~ 0).
    pub on_path: Vec<bool>,
}

/// Longest work-weighted path leaf -> root. A tiny per-node work floor makes zero-cost plans
/// fall back to the longest path in hops.
pub fn critical_path(dag: &PlanDag) -> CriticalPathInfo {
    let n = dag.len();
    let work = floored_work(dag);
    // up[v]: heaviest path from a leaf up to v (inclusive); down[v]: from above v to a root.
    let mut up = vec![0.0f64; n];
    for &v in dag.topo_order() {
        let v = v as usize;
        let best = dag
            .children(v)
            .iter()
            .map(|&c| up[c as usize])
            .fold(0.0, f64::max);
        up[v] = work[v] + best;
    }
    let mut down = vec![0.0f64; n];
    for &v in dag.topo_order().iter().rev() {
        let v = v as usize;
        down[v] = dag
            .parents(v)
            .iter()
            .map(|&p| work[p as usize] + down[p as usize])
            .fold(0.0, f64::max);
    }
    let length = (0..n).map(|v| up[v] + down[v]).fold(0.0, f64::max);
    let slack: Vec<f64> = (0..n)
        .map(|v| (length - up[v] - down[v]).max(0.0))
        .collect();
    let tol = 1e-9 * length;
    let on_path = slack.iter().map(|&s| s <= tol).collect();
    CriticalPathInfo {
        length,
        slack,
        on_path,
    }
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct CriticalPath {
    sharpness: f64,
}

impl CriticalPath {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        CriticalPath {
            sharpness: f64::from(cfg.critical_sharpness),
        }
    }
}

impl DagAttention for CriticalPath {
    fn kind(&self) -> AttentionKind {
        AttentionKind::CriticalPath
    }

    fn attend(&self, dag: &PlanDag, _ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let info = critical_path(dag);
        let l = info.length.max(1e-300);
        let alpha = (0..dag.len())
            .map(|v| {
                let work = dag.self_work(v).max(0.0);
                (libm::exp(-self.sharpness * info.slack[v] / l) * (1.0 + work / l)) as f32
            })
            .collect();
        normalised(self.kind(), alpha, None)
    }
}
