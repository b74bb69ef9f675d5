//! SONA, the learning layer: configuration, trajectories, the attention selector and the BTSP
//! one-shot memory. (The cost estimator, EWC++, the ReasoningBank and the optimizer that ties
//! them together arrive with the rest of issue 3.)

pub mod btsp;
pub mod config;
pub mod estimator;
pub mod reasoning_bank;
pub mod selector;
pub mod snapshot;
pub mod trajectory;

pub use btsp::{BtspMemory, BtspVerdict};
pub use config::NeuralDagConfig;
pub use estimator::CostEstimator;
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
