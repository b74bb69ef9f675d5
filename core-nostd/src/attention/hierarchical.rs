//! Hierarchical Lorentz attention. Nodes are embedded in the hyperbolic plane, on the
//! hyperboloid `{x : <x,x>_L = -1, x0 > 0}` (curvature -1), with Sarkar's construction
//! (Sarkar, "Low distortion Delaunay embedding of trees in hyperbolic plane", 2011): the root
//! sits at the origin, every input sits at hyperbolic distance `step` from its consumer, and the
//! inputs of a node fan out evenly over the directions pointing away from that node's own
//! consumer (a unary chain runs straight; a join's two inputs leave at +-120 degrees). Hyperbolic
//! space has room for trees: sibling subtrees diverge exponentially while an operator stays close
//! to the work below it. A shared input (a CTE) is placed under its first consumer.
//!
//! The query point is the Lorentz centroid of all nodes weighted by their work share
//! (`mu = s / sqrt(-<s,s>_L)` with `s = sum w_j x_j`; Law et al., ICML 2019), and node `j` gets
//! logit `-d_L(x_j, mu) / tau` with `d_L = arcosh(-<x_j, mu>_L)`. Attention thus gathers in the
//! region of the tree where the work is, and on the operators that region hangs under.
//!
//! Coordinates grow like `e^(depth * step)`; to keep distances exact in f64 the step shrinks so
//! that the deepest node stays within hyperbolic radius 8 of the root.

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

/// Largest hyperbolic distance from the root at which nodes are placed.
const MAX_RADIUS: f64 = 8.0;

/// `J (a x b)`: Minkowski-orthogonal to both `a` and `b`.
fn lorentz_cross(a: &[f64; 3], b: &[f64; 3]) -> [f64; 3] {
    [
        -(a[1] * b[2] - a[2] * b[1]),
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

fn scale_to_unit(u: [f64; 3]) -> [f64; 3] {
    let norm = libm::sqrt(lorentz_inner(&u, &u).max(1e-300));
    [u[0] / norm, u[1] / norm, u[2] / norm]
}

/// Hyperboloid coordinates of every node (see the module documentation).
pub fn lorentz_positions(dag: &PlanDag, step: f64) -> Vec<[f64; 3]> {
    let n = dag.len();
    let max_depth = (0..n).map(|v| dag.depth(v)).max().unwrap_or(0).max(1);
    let step = step.min(MAX_RADIUS / f64::from(max_depth));
    let (sh, ch) = (libm::sinh(step), libm::cosh(step));
    let owner = |v: usize| dag.parents(v).first().map(|&p| p as usize);
    let mut x = vec![[1.0f64, 0.0, 0.0]; n];
    // Reference direction at each node: towards its consumer. Roots (a PostgreSQL plan has one;
    // several all stand for "the result") sit at the origin with a fixed frame.
    for &v in dag.topo_order().iter().rev() {
        let v = v as usize;
        let xv = x[v];
        let (e1, e2) = match owner(v) {
            None => ([0.0, 1.0, 0.0], [0.0, 0.0, 1.0]),
            Some(p) => {
                // Log-map direction from v to its consumer, and its Minkowski-orthogonal partner.
                let xp = x[p];
                let ip = lorentz_inner(&xv, &xp);
                let toward =
                    scale_to_unit([xp[0] + ip * xv[0], xp[1] + ip * xv[1], xp[2] + ip * xv[2]]);
                (toward, scale_to_unit(lorentz_cross(&xv, &toward)))
            }
        };
        let owned: Vec<usize> = dag
            .children(v)
            .iter()
            .map(|&c| c as usize)
            .filter(|&c| owner(c) == Some(v))
            .collect();
        let m = owned.len() as f64;
        for (k, &c) in owned.iter().enumerate() {
            // Roots spread their inputs over the full circle; other nodes keep the direction of
            // their consumer free.
            let theta = if owner(v).is_none() {
                core::f64::consts::TAU * k as f64 / m
            } else {
                core::f64::consts::TAU * (k as f64 + 1.0) / (m + 1.0)
            };
            let (s, co) = (libm::sin(theta), libm::cos(theta));
            let u = [
                co * e1[0] + s * e2[0],
                co * e1[1] + s * e2[1],
                co * e1[2] + s * e2[2],
            ];
            // Exponential map, then re-projection onto the hyperboloid against rounding drift.
            let mut xc = [
                ch * xv[0] + sh * u[0],
                ch * xv[1] + sh * u[1],
                ch * xv[2] + sh * u[2],
            ];
            xc[0] = libm::sqrt(1.0 + xc[1] * xc[1] + xc[2] * xc[2]);
            x[c] = xc;
        }
    }
    x
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
