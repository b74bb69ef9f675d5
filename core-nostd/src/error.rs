//! The one error type of the core. Every variant is non-fatal to a host: it falls back to the
//! default planner behaviour and counts the fallback.

use alloc::string::String;
use core::fmt;

/// Result with [`NeuralDagError`].
pub type Result<T> = core::result::Result<T, NeuralDagError>;

/// What went wrong, with enough words to find the cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NeuralDagError {
    /// A configuration value is out of range; the string names the field.
    InvalidConfig(String),
    /// A table is not enabled for learning.
    TableNotEnabled(String),
    /// Too few trajectories for the requested learning step.
    InsufficientTrajectories,
    /// Pattern extraction failed; the string says why.
    PatternExtractionFailed(String),
    /// The EWC++ penalty could not be applied.
    EwcConstraintViolation,
    /// An attention mechanism could not produce weights; the string says why.
    AttentionComputationFailed(String),
    /// The plan graph is not a valid DAG (cycle, edge out of range, non-finite feature, ...).
    InvalidDagStructure(String),
    /// EXPLAIN JSON could not be read; the string names the field path.
    InvalidExplain(String),
    /// The pattern store is at capacity and nothing could be evicted.
    PatternStoreFull,
    /// A cached embedding was not found.
    EmbeddingCacheMiss,
    /// A min cut could not be computed; the string says why.
    MinCutComputationFailed(String),
    /// The graph is not connected.
    GraphDisconnected,
    /// An observed execution cannot be learned from; the string says which field is wrong.
    InvalidTrajectory(String),
    /// Persisted learned state is corrupt, truncated or foreign; the string says which.
    CorruptState(String),
    /// The optimizer was restored without its model (cost model and patterns:
    /// `Optimizer::restore_lean`) and the call needs it; the string names the call.
    /// `Optimizer::load_model` loads it.
    ModelNotLoaded(&'static str),
}

impl fmt::Display for NeuralDagError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Self::TableNotEnabled(t) => {
                write!(f, "table {t} is not enabled for neural DAG learning")
            }
            Self::InsufficientTrajectories => f.write_str("not enough trajectories to learn from"),
            Self::PatternExtractionFailed(m) => write!(f, "pattern extraction failed: {m}"),
            Self::EwcConstraintViolation => f.write_str("EWC++ constraint could not be applied"),
            Self::AttentionComputationFailed(m) => write!(f, "attention computation failed: {m}"),
            Self::InvalidDagStructure(m) => write!(f, "invalid plan DAG: {m}"),
            Self::InvalidExplain(m) => write!(f, "invalid EXPLAIN JSON: {m}"),
            Self::PatternStoreFull => f.write_str("pattern store is full"),
            Self::EmbeddingCacheMiss => f.write_str("embedding cache miss"),
            Self::MinCutComputationFailed(m) => write!(f, "min cut computation failed: {m}"),
            Self::GraphDisconnected => f.write_str("graph is disconnected"),
            Self::InvalidTrajectory(m) => write!(f, "invalid trajectory: {m}"),
            Self::CorruptState(m) => write!(f, "learned state cannot be read: {m}"),
            Self::ModelNotLoaded(what) => write!(
                f,
                "{what} needs the learned model, which this copy was restored without"
            ),
        }
    }
}

impl core::error::Error for NeuralDagError {}
