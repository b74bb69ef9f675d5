//! SONA, the learning layer: configuration, trajectories, the attention selector, the BTSP
//! one-shot memory, the ReasoningBank, the LoRA cost estimator with EWC++, and the
//! [`Optimizer`] that ties them together; [`snapshot`] is the persisted form.

pub mod btsp;
pub mod config;
pub mod estimator;
pub mod evidence;
pub mod optimizer;
pub mod reasoning_bank;
pub mod selector;
pub mod snapshot;
pub mod trajectory;

pub use btsp::{BtspMemory, BtspVerdict};
pub use config::NeuralDagConfig;
pub use estimator::CostEstimator;
pub use evidence::{Budget, BudgetDelta, EvidenceBook, PlanEvidence, ShapeEvidence, Verdict};
pub use optimizer::{
    explore_timeout_ms, Candidate, CycleReport, Decision, Exploration, Forgotten, Machinery,
    Observed, Optimizer, OptimizerStats, Recalled, Rule, RunKind, Step, EXPLORE_MAX_RUNS,
};
pub use reasoning_bank::{Pattern, ReasoningBank};
pub use selector::{AttentionSelector, PluginArms};
pub use trajectory::{Trajectory, TrajectoryBuffer};

/// An arm: one set of planner settings, by its index in the configured arm list (0 = default).
pub type ArmId = u8;

/// Dot product over the common length, accumulated in eight independent partial sums: a fixed
/// summation order (the same result on every platform) that the compiler can vectorise.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

/// Squared Euclidean distance over the common length, summed like [`dot`].
pub fn dist2(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut acc = [0.0f32; 8];
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc[i] += d * d;
        }
    }
    let mut s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += (x - y) * (x - y);
    }
    s
}

/// FNV-1a over 64-bit words and bytes: a digest the same in every process and build target
/// (not a defence against crafted input).
pub(crate) struct Fnv(u64);

impl Fnv {
    pub(crate) fn new() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn bytes(&mut self, b: &[u8]) {
        for &x in b {
            self.0 = (self.0 ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn u64(&mut self, x: u64) {
        self.bytes(&x.to_le_bytes());
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// Cosine similarity of two equally long vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (na, nb) = (dot(a, a), dot(b, b));
    if na <= 0.0 || nb <= 0.0 {
        0.0
    } else {
        dot(a, b) / libm::sqrtf(na * nb)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_and_dist2_match_the_naive_sums() {
        let a: alloc::vec::Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: alloc::vec::Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        let naive_d: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
        assert!((super::dot(&a, &b) - naive).abs() < 1e-4);
        assert!((super::dist2(&a, &b) - naive_d).abs() < 1e-4);
        assert!((super::cosine(&a, &a) - 1.0).abs() < 1e-6);
        assert_eq!(super::cosine(&a, &[0.0; 37]), 0.0);
    }
}
