//! SONA, the learning layer: configuration, trajectories, the attention selector, the BTSP
//! one-shot memory, the ReasoningBank, the LoRA cost estimator with EWC++, and the
//! [`Optimizer`] that ties them together; [`snapshot`] is the persisted form.

pub mod btsp;
pub mod config;
pub mod estimator;
pub mod optimizer;
pub mod reasoning_bank;
pub mod selector;
pub mod snapshot;
pub mod trajectory;

pub use btsp::{BtspMemory, BtspVerdict};
pub use config::NeuralDagConfig;
pub use estimator::CostEstimator;
pub use optimizer::{CycleReport, Decision, Observed, Optimizer, OptimizerStats, Rule};
pub use reasoning_bank::{Pattern, ReasoningBank};
pub use selector::AttentionSelector;
pub use trajectory::{Trajectory, TrajectoryBuffer};

/// An arm: one set of planner settings, by its index in the configured arm list (0 = default).
pub type ArmId = u8;

/// Cosine similarity of two equally long vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let (mut dot, mut na, mut nb) = (0.0f32, 0.0f32, 0.0f32);
    for (x, y) in a.iter().zip(b) {
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    if na <= 0.0 || nb <= 0.0 {
        0.0
    } else {
        dot / libm::sqrtf(na * nb)
    }
}
