//! `ruvector-dag-core`: every algorithm of ruvector_dag, with no knowledge of its hosts.
//!
//! The crate is `#![no_std]` + `alloc` so that the same code runs inside the PostgreSQL
//! extension (native), in the browser demo and inside the wasm plugin sandbox.
//!
//! Map of the crate:
//! - [`dag`]: [`PlanDag`], a validated plan graph (edges run child -> parent, data flows to the root);
//! - [`features`]: the documented 32-wide node feature vector;
//! - [`explain`] (feature `explain-json`): PostgreSQL `EXPLAIN (FORMAT JSON)` -> [`PlanDag`];
//! - [`attention`]: the seven DAG attention mechanisms and their ensemble;
//! - [`mincut`]: exact s-t min cut (Dinic) and global min cut (Stoer-Wagner), bottleneck reports;
//! - [`hdc`]: 10,000-bit hypervectors and plan fingerprints;
//! - [`embed`]: attention-pooled plan embedding (D = 256);
//! - [`plugin_abi`]: the versioned ABI of sandboxed attention plugins (and, with feature `guest`,
//!   the macro that exports a [`DagAttention`] as one);
//! - [`synth`]: seeded generator of random valid plan DAGs, for tests and benches;
//! - [`learning`]: SONA: config, trajectories, selector, BTSP memory, patterns, cost estimator,
//!   snapshot envelope.
//!
//! Invariant: nothing here panics on data that came from outside; invalid input is a
//! [`NeuralDagError`].
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

extern crate alloc;

pub mod attention;
pub mod dag;
pub mod embed;
pub mod error;
#[cfg(feature = "explain-json")]
pub mod explain;
pub mod features;
pub mod hdc;
pub mod learning;
pub mod mincut;
pub mod plugin_abi;
pub mod rng;
pub mod synth;

pub use attention::{
    AttentionConfig, AttentionContext, AttentionKind, AttentionMap, DagAttention, PluginId,
};
pub use dag::{Actuals, NodeId, OpKind, PlanDag, PlanNode};
pub use embed::{embed, PlanEmbedding, EMBED_DIM};
pub use error::{NeuralDagError, Result};
pub use features::{FeatureVector, FEATURE_DIM};
