//! Causal cone attention: each node attends to the nodes upstream of it within `cone_depth`
//! hops, with logit `q.k / sqrt(d) + salience - gamma * hops` (gamma = ln 2 halves the weight per hop), so
//! the nearest inputs matter most.

use super::{
    masked_dot_product, normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap,
    DagAttention, Projection,
};
use crate::dag::PlanDag;
use crate::error::Result;
use crate::features::node_features;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct CausalCone {
    proj: Projection,
    depth: u32,
    gamma: f32,
    salience: f32,
}

impl CausalCone {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        // A different stream from Topological's, so the two do not share projections.
        CausalCone {
            proj: Projection::new(cfg.seed ^ 0xC0_4E, cfg.proj_dim),
            depth: cfg.cone_depth,
            gamma: cfg.cone_gamma,
            salience: cfg.work_salience,
        }
    }
}

impl DagAttention for CausalCone {
    fn kind(&self) -> AttentionKind {
        AttentionKind::CausalCone
    }

    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let feats = node_features(dag);
        let (alpha, pairs) = masked_dot_product(
            dag,
            &self.proj,
            &feats,
            ctx.want_pairwise,
            self.salience,
            self.gamma,
            |w, i| w.walk(dag, i, self.depth, 0),
        );
        normalised(self.kind(), alpha, pairs)
    }
}
