//! "misestimate": attend to where the planner's row estimates are (or are likely to be) wrong.
//!
//! With actuals (the plan ran under EXPLAIN ANALYZE or the extension's instrumentation), a
//! node's weight is `|ln((actual rows + 1) / (estimated rows x loops + 1))|`: a 10x
//! misestimate weighs ln 10, either way round. Without actuals it is the estimate's
//! uncertainty: errors compound through joins (Ioannidis & Christodoulakis, SIGMOD 1991), so a
//! node weighs `(1 + joins in its subtree) x ln(1 + estimated rows)`. A small floor keeps every
//! node visible and the sum positive.
use ruvector_dag_core::attention::{AttentionContext, AttentionKind, AttentionMap, DagAttention};
use ruvector_dag_core::{AttentionConfig, PlanDag, Result};

/// Weights below this share of the largest are raised to it.
const FLOOR: f32 = 1e-3;

pub struct Misestimate;

impl DagAttention for Misestimate {
    fn kind(&self) -> AttentionKind {
        // Plugins are not one of the built-in kinds; the host ignores this.
        AttentionKind::Ensemble
    }

    fn attend(&self, dag: &PlanDag, _ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let n = dag.len();
        let mut raw = vec![0.0f32; n];
        if dag.has_actuals() {
            for (v, node) in dag.nodes().iter().enumerate() {
                if let Some(a) = &node.actual {
                    let est = node.est_rows * node.loops.max(1.0);
                    raw[v] = ((a.rows + 1.0) / (est + 1.0)).ln().abs() as f32;
                }
            }
        } else {
            // Joins at or below each node, inputs before outputs (topological order).
            let mut joins = vec![0.0f64; n];
            for &v in dag.topo_order() {
                let v = v as usize;
                let below: f64 = dag.children(v).iter().map(|&c| joins[c as usize]).sum();
                joins[v] = below + if dag.node(v).op.is_join() { 1.0 } else { 0.0 };
            }
            for (v, node) in dag.nodes().iter().enumerate() {
                raw[v] = ((1.0 + joins[v]) * (1.0 + node.est_rows).ln()) as f32;
            }
        }
        let max = raw.iter().copied().fold(0.0f32, f32::max).max(1.0);
        for w in &mut raw {
            *w = w.max(FLOOR * max);
        }
        let sum: f32 = raw.iter().sum();
        Ok(AttentionMap {
            kind: AttentionKind::Ensemble,
            alpha: raw.into_iter().map(|w| w / sum).collect(),
            pairwise: None,
        })
    }
}

ruvector_dag_core::export_attention!(|_cfg: &AttentionConfig| Misestimate);
