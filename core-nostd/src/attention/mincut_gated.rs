//! Min-cut gated attention: topological attention, then a gate from the plan's exact s-t min
//! cut (virtual source -> leaves, root -> sink, capacity = rows flowing, measured when known).
//! Operators whose output crosses the cut, where the data flow is narrowest, keep their
//! weight; all others are multiplied by `mincut_threshold`.

use alloc::vec::Vec;

use super::{
    normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap, DagAttention,
    Topological,
};
use crate::dag::PlanDag;
use crate::error::Result;
use crate::mincut::plan_min_cut;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct MinCutGated {
    base: Topological,
    threshold: f32,
}

impl MinCutGated {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        MinCutGated {
            base: Topological::new(cfg),
            threshold: cfg.mincut_threshold,
        }
    }

    /// Gate already computed topological weights (the ensemble reuses them).
    pub(crate) fn gate(&self, dag: &PlanDag, base: &AttentionMap) -> Result<AttentionMap> {
        gate(dag, base, self.threshold)
    }
}

/// Min-cut gated attention of `dag` from its topological attention `base` (what
/// [`MinCutGated`] made with `mincut_threshold` = `threshold`, to the bit).
pub(crate) fn gate(dag: &PlanDag, base: &AttentionMap, threshold: f32) -> Result<AttentionMap> {
    let on_cut = plan_min_cut(dag).producers(dag.len());
    let factor = |j: usize| if on_cut[j] { 1.0 } else { threshold };
    let alpha: Vec<f32> = base
        .alpha
        .iter()
        .enumerate()
        .map(|(j, &a)| a * factor(j))
        .collect();
    // Pairwise rows are gated on the key side and renormalised, so they still sum to 1.
    let pairs = base.pairwise.as_ref().map(|rows| {
        let mut out: Vec<(u32, u32, f32)> = rows
            .iter()
            .map(|&(i, j, a)| (i, j, a * factor(j as usize)))
            .collect();
        let mut start = 0;
        while start < out.len() {
            let i = out[start].0;
            let end = start + out[start..].iter().take_while(|p| p.0 == i).count();
            let s: f32 = out[start..end].iter().map(|p| p.2).sum();
            if s > 0.0 {
                for p in &mut out[start..end] {
                    p.2 /= s;
                }
            }
            start = end;
        }
        out
    });
    let all_gated_to_zero = alpha.iter().all(|&a| a == 0.0);
    // A threshold of 0 with no cut producer in the mask would leave nothing: keep the base.
    if all_gated_to_zero {
        return normalised(
            AttentionKind::MinCutGated,
            base.alpha.clone(),
            base.pairwise.clone(),
        );
    }
    normalised(AttentionKind::MinCutGated, alpha, pairs)
}

impl DagAttention for MinCutGated {
    fn kind(&self) -> AttentionKind {
        AttentionKind::MinCutGated
    }

    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let base = self.base.attend(dag, ctx)?;
        self.gate(dag, &base)
    }
}
