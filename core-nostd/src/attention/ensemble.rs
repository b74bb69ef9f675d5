//! Ensemble: the weighted mean of the seven mechanisms' node weights. The weights are the
//! attention selector's reward means (how well each kind lets the cost model predict latency),
//! passed in [`AttentionContext::ensemble_weights`]; uniform without them. Topological
//! attention is computed once and shared with the two mechanisms built on it.

use alloc::format;
use alloc::vec;

use super::{
    normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap, CausalCone,
    CriticalPath, DagAttention, HierarchicalLorentz, MinCutGated, ParallelBranch, TemporalBtsp,
    Topological,
};
use crate::dag::PlanDag;
use crate::error::{NeuralDagError, Result};

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct Ensemble {
    topological: Topological,
    cone: CausalCone,
    critical: CriticalPath,
    mincut: MinCutGated,
    lorentz: HierarchicalLorentz,
    branch: ParallelBranch,
    temporal: TemporalBtsp,
}

impl Ensemble {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        Ensemble {
            topological: Topological::new(cfg),
            cone: CausalCone::new(cfg),
            critical: CriticalPath::new(cfg),
            mincut: MinCutGated::new(cfg),
            lorentz: HierarchicalLorentz::new(cfg),
            branch: ParallelBranch::new(cfg),
            temporal: TemporalBtsp::new(cfg),
        }
    }
}

impl DagAttention for Ensemble {
    fn kind(&self) -> AttentionKind {
        AttentionKind::Ensemble
    }

    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let weights = ctx.ensemble_weights.unwrap_or([1.0; 7]);
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) || weights.iter().sum::<f32>() <= 0.0
        {
            return Err(NeuralDagError::AttentionComputationFailed(format!(
                "ensemble: weights {weights:?} must be finite, non-negative and not all zero"
            )));
        }
        let inner = AttentionContext {
            want_pairwise: false,
            ..*ctx
        };
        let topo = self.topological.attend(dag, &inner)?;
        let mut alpha = vec![0.0f32; dag.len()];
        let mut add = |w: f32, map: &AttentionMap| {
            for (a, m) in alpha.iter_mut().zip(&map.alpha) {
                *a += w * m;
            }
        };
        add(weights[0], &topo);
        let skip = |k: usize| weights[k] == 0.0;
        if !skip(1) {
            add(weights[1], &self.cone.attend(dag, &inner)?);
        }
        if !skip(2) {
            add(weights[2], &self.critical.attend(dag, &inner)?);
        }
        if !skip(3) {
            add(weights[3], &self.mincut.gate(dag, &topo)?);
        }
        if !skip(4) {
            add(weights[4], &self.lorentz.attend(dag, &inner)?);
        }
        if !skip(5) {
            add(weights[5], &self.branch.attend(dag, &inner)?);
        }
        if !skip(6) {
            add(weights[6], &self.temporal.with_base(dag, &inner, &topo)?);
        }
        normalised(self.kind(), alpha, None)
    }
}
