//! The built-in ensemble (all seven DAG attention mechanisms, mixed by the host's ensemble
//! weights) compiled as a plugin: the same core code, run in the sandbox. The tests check it
//! against the native ensemble on every TPC-H fixture.
use ruvector_dag_core::attention::Ensemble;
use ruvector_dag_core::AttentionConfig;

ruvector_dag_core::export_attention!(|cfg: &AttentionConfig| Ensemble::new(cfg));
