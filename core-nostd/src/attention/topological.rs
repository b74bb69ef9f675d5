//! Topological attention: each node attends, by scaled dot product of projected features, to
//! its upstream set (itself included) limited to a window of `topo_window` levels below it.
//! "Nearest in topological order" is measured in levels (height from the leaves), which unlike
//! a position in one particular topological order does not depend on node numbering.
//! Logits add a work salience term (see `work_salience` in the module root).

use super::{
    masked_dot_product, normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap,
    DagAttention, Projection,
};
use crate::dag::PlanDag;
use crate::error::Result;
use crate::features::node_features;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Topological {
    proj: Projection,
    window: u32,
    salience: f32,
}

impl Topological {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        Topological {
            proj: Projection::new(cfg.seed, cfg.proj_dim),
            window: cfg.topo_window,
            salience: cfg.work_salience,
        }
    }
}

impl DagAttention for Topological {
    fn kind(&self) -> AttentionKind {
        AttentionKind::Topological
    }

    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let feats = node_features(dag);
        let (alpha, pairs) = masked_dot_product(
            dag,
            &self.proj,
            &feats,
            ctx.want_pairwise,
            self.salience,
            0.0,
            |w, i| w.walk(dag, i, u32::MAX, dag.height(i).saturating_sub(self.window)),
        );
        normalised(self.kind(), alpha, pairs)
    }
}
