//! Hierarchical Lorentz attention. Nodes are placed on the hyperboloid
//! `{x : <x,x>_L = -1, x0 > 0}` (curvature -1), at hyperbolic distance `depth * lorentz_step`
//! from the origin, in the middle of an angular sector: the root owns the whole circle and each
//! node splits its sector among its inputs (outer first) in proportion to their subtree sizes.
//! Hyperbolic space has room for trees: sibling subtrees stay apart however deep they go.
//!
//! The query point is the Lorentz centroid of all nodes weighted by their work share
//! (`mu = s / sqrt(-<s,s>_L)` with `s = sum w_j x_j`; Law et al., ICML 2019), and node `j` gets
//! logit `-d_L(x_j, mu) / tau` with `d_L = arcosh(-<x_j, mu>_L)`. Attention thus gathers in the
//! region of the tree where the work is, including the operators that region hangs under.

use alloc::vec;
use alloc::vec::Vec;

use super::{
    normalised, softmax, AttentionConfig, AttentionContext, AttentionKind, AttentionMap,
    DagAttention,
};
use crate::dag::PlanDag;
use crate::error::{NeuralDagError, Result};

/// Minkowski inner product `-x0 y0 + x1 y1 + x2 y2`.
pub fn lorentz_inner(x: &[f64; 3], y: &[f64; 3]) -> f64 {
    -x[0] * y[0] + x[1] * y[1] + x[2] * y[2]
}

/// Hyperboloid coordinates of every node (see the module documentation).
pub fn lorentz_positions(dag: &PlanDag, step: f64) -> Vec<[f64; 3]> {
    let n = dag.len();
    // Owner tree: each node hangs under its first consumer.
    let owner = |v: usize| dag.parents(v).first().map(|&p| p as usize);
    let mut size = vec![1.0f64; n];
    for &v in dag.topo_order() {
        let v = v as usize;
        if let Some(p) = owner(v) {
            size[p] += size[v];
        }
    }
    let mut sector = vec![(0.0f64, 0.0f64); n];
    let roots = dag.roots();
    let total: f64 = roots.iter().map(|&r| size[r as usize]).sum();
    let mut a = 0.0;
    for &r in roots {
        let w = core::f64::consts::TAU * size[r as usize] / total;
        sector[r as usize] = (a, a + w);
        a += w;
    }
    for &v in dag.topo_order().iter().rev() {
        let v = v as usize;
        let (lo, hi) = sector[v];
        let owned: f64 = dag
            .children(v)
            .iter()
            .filter(|&&c| owner(c as usize) == Some(v))
            .map(|&c| size[c as usize])
            .sum();
        let mut at = lo;
        for &c in dag.children(v) {
            let c = c as usize;
            if owner(c) == Some(v) {
                let w = (hi - lo) * size[c] / owned;
                sector[c] = (at, at + w);
                at += w;
            }
        }
    }
    (0..n)
        .map(|v| {
            let rho = f64::from(dag.depth(v)) * step;
            let theta = 0.5 * (sector[v].0 + sector[v].1);
            let (sh, ch) = (libm::sinh(rho), libm::cosh(rho));
            [ch, sh * libm::cos(theta), sh * libm::sin(theta)]
        })
        .collect()
}

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct HierarchicalLorentz {
    step: f64,
    tau: f64,
}

impl HierarchicalLorentz {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        HierarchicalLorentz {
            step: f64::from(cfg.lorentz_step),
            tau: f64::from(cfg.lorentz_tau),
        }
    }
}

impl DagAttention for HierarchicalLorentz {
    fn kind(&self) -> AttentionKind {
        AttentionKind::HierarchicalLorentz
    }

    fn attend(&self, dag: &PlanDag, _ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let n = dag.len();
        let x = lorentz_positions(dag, self.step);
        let work: Vec<f64> = (0..n).map(|v| dag.self_work(v).max(0.0)).collect();
        let total: f64 = work.iter().sum();
        // A small uniform part keeps the centroid defined when nothing costs anything.
        let w = |v: usize| {
            if total > 0.0 {
                0.99 * work[v] / total + 0.01 / n as f64
            } else {
                1.0 / n as f64
            }
        };
        let mut s = [0.0f64; 3];
        for (v, xv) in x.iter().enumerate() {
            for k in 0..3 {
                s[k] += w(v) * xv[k];
            }
        }
        let norm = libm::sqrt(-lorentz_inner(&s, &s));
        if !(norm.is_finite() && norm > 0.0) {
            return Err(NeuralDagError::AttentionComputationFailed(
                "hierarchical_lorentz: the centroid is not on the hyperboloid (plan too deep for f64)".into(),
            ));
        }
        let mu = [s[0] / norm, s[1] / norm, s[2] / norm];
        let mut logits: Vec<f32> = x
            .iter()
            .map(|xv| (-libm::acosh((-lorentz_inner(xv, &mu)).max(1.0)) / self.tau) as f32)
            .collect();
        softmax(&mut logits);
        normalised(self.kind(), logits, None)
    }
}
