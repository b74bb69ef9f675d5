//! Temporal BTSP attention, after behavioural-timescale synaptic plasticity (Bittner et al.,
//! Science 2017): an eligibility trace remembers which operators took the time in the plan's
//! recent runs, and a plateau, an operator suddenly taking far more than its trace, gates that
//! operator up at once instead of waiting for the trace to catch up.
//!
//! trace_i = sum_age decay^age * share_i(age) / sum_age decay^age over the last `btsp_window`
//! runs; gate_i = 1 + gain when the latest share exceeds `btsp_plateau` times the trace of the
//! runs before it; alpha = 0.9 * normalise(trace * gate) + 0.1 * topological. Without history it
//! is topological attention.

use alloc::vec;
use alloc::vec::Vec;

use super::{
    normalised, AttentionConfig, AttentionContext, AttentionKind, AttentionMap, DagAttention,
    Topological,
};
use crate::dag::PlanDag;
use crate::error::Result;

/// See the module documentation.
#[derive(Debug, Clone)]
pub struct TemporalBtsp {
    base: Topological,
    window: usize,
    decay: f32,
    plateau: f32,
    gain: f32,
}

impl TemporalBtsp {
    /// From a validated configuration.
    pub fn new(cfg: &AttentionConfig) -> Self {
        TemporalBtsp {
            base: Topological::new(cfg),
            window: cfg.btsp_window,
            decay: cfg.btsp_decay,
            plateau: cfg.btsp_plateau,
            gain: cfg.btsp_gain,
        }
    }

    /// Mix the trace into already computed topological weights (the ensemble reuses them).
    pub(crate) fn with_base(
        &self,
        dag: &PlanDag,
        ctx: &AttentionContext<'_>,
        base: &AttentionMap,
    ) -> Result<AttentionMap> {
        let n = dag.len();
        let runs: Vec<&Vec<f32>> = ctx
            .history
            .iter()
            .filter(|h| h.len() == n && h.iter().all(|x| x.is_finite() && *x >= 0.0))
            .collect();
        let runs = &runs[runs.len().saturating_sub(self.window)..];
        let Some((latest, earlier)) = runs.split_last() else {
            return normalised(self.kind(), base.alpha.clone(), base.pairwise.clone());
        };
        let trace = |set: &[&Vec<f32>], i: usize| {
            let (mut num, mut den, mut w) = (0.0f32, 0.0f32, 1.0f32);
            for run in set.iter().rev() {
                num += w * run[i];
                den += w;
                w *= self.decay;
            }
            if den > 0.0 {
                num / den
            } else {
                0.0
            }
        };
        let mut gated = vec![0.0f32; n];
        for (i, g) in gated.iter_mut().enumerate() {
            let before = trace(earlier, i);
            let plateau = !earlier.is_empty()
                && latest[i] > self.plateau * before
                && latest[i] > 1.0 / n as f32;
            *g = trace(runs, i) * if plateau { 1.0 + self.gain } else { 1.0 };
        }
        let sum: f32 = gated.iter().sum();
        if !(sum > 0.0 && sum.is_finite()) {
            return normalised(self.kind(), base.alpha.clone(), base.pairwise.clone());
        }
        let alpha = gated
            .iter()
            .zip(&base.alpha)
            .map(|(g, b)| 0.9 * g / sum + 0.1 * b)
            .collect();
        normalised(self.kind(), alpha, None)
    }
}

impl DagAttention for TemporalBtsp {
    fn kind(&self) -> AttentionKind {
        AttentionKind::TemporalBtsp
    }

    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let base = self.base.attend(dag, ctx)?;
        self.with_base(dag, ctx, &base)
    }
}
