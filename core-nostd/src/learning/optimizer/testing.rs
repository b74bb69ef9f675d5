//! What the optimizer's unit tests share: a small arm list, random plans, a host that plans
//! candidates as the extension does ([`World`], [`step`]), and a host attention plugin.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::{Candidate, Decision, Observed, Optimizer};
use crate::attention::{AttentionContext, AttentionKind, DagAttention, PluginId};
use crate::dag::PlanDag;
use crate::error::{NeuralDagError, Result};
use crate::learning::{ArmId, NeuralDagConfig};
use crate::synth::{random_plan, SynthOptions};

pub(super) fn arms() -> Vec<String> {
    ["default", "nestloop=off", "hashjoin=off", "seqscan=off"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

pub(super) fn plan(seed: u64) -> PlanDag {
    random_plan(seed, 20, SynthOptions::default())
}

pub(super) fn optimizer() -> Optimizer {
    Optimizer::new(
        NeuralDagConfig {
            attention_exploration: 0.0,
            ..Default::default()
        },
        arms(),
    )
    .unwrap()
}

pub(super) fn run(opt: &mut Optimizer, dag: &PlanDag, arm: ArmId, ms: f32) -> Observed {
    let d = opt.decide(dag).unwrap();
    let t = opt.trajectory(&d, arm, None, ms).unwrap();
    opt.observe(t).unwrap()
}

/// What the host would see for one query: per arm, the plan it makes, its planner cost
/// and what it takes to run.
pub(super) struct World {
    pub(super) plans: Vec<u64>,
    pub(super) cost: Vec<f64>,
    pub(super) ms: Vec<f32>,
}

impl World {
    /// Arms 1 and 3 make the same plan (planner cost 1.3x, `fast` ms); arm 2 a plan
    /// costed 1.1x that takes `slow` ms; the default takes 100 ms.
    pub(super) fn new(dag: &PlanDag, fast: f32, slow: f32) -> World {
        let fp = dag.shape_hash();
        World {
            plans: vec![fp, 11, 22, 11],
            cost: vec![1000.0, 1300.0, 1100.0, 1300.0],
            ms: vec![100.0, fast, slow, fast],
        }
    }
}

impl World {
    /// The plans the host makes for `d` under every arm `d` does not block.
    pub(super) fn candidates(&self, d: &Decision) -> Vec<Candidate> {
        (1..self.plans.len())
            .filter(|a| !d.blocked.contains(&(*a as ArmId)))
            .map(|a| Candidate {
                arm: a as ArmId,
                plan: self.plans[a],
                cost: self.cost[a] * d.default_cost / 1000.0,
            })
            .collect()
    }
}

/// One execution as the host runs it: decide, plan the candidates when asked, run.
pub(super) fn step(opt: &mut Optimizer, dag: &PlanDag, w: &World) -> (Decision, Observed) {
    let mut d = opt.decide(dag).unwrap();
    if d.wants_candidates {
        let cands = w.candidates(&d);
        opt.choose(&mut d, &cands).unwrap();
        assert!(!d.wants_candidates);
    }
    let t = opt
        .trajectory(&d, d.arm, None, w.ms[usize::from(d.arm)])
        .unwrap();
    assert_eq!(t.plan, w.plans[usize::from(d.arm)]);
    let o = opt.observe(t).unwrap();
    (d, o)
}

pub(super) fn learner() -> Optimizer {
    Optimizer::new(NeuralDagConfig::default(), arms()).unwrap()
}

/// Give the exploration budget some room (other shapes' default runs).
pub(super) fn fund(opt: &mut Optimizer, runs: usize) {
    for i in 0..runs {
        run(opt, &plan(77 + (i % 5) as u64), 0, 100.0);
    }
}

/// A host-supplied mechanism: weight by estimated rows (or fail on every plan).
pub(super) struct RowsPlugin {
    pub(super) id: PluginId,
    pub(super) fail: bool,
}

impl DagAttention for RowsPlugin {
    fn kind(&self) -> AttentionKind {
        AttentionKind::Plugin(self.id)
    }
    fn attend(
        &self,
        dag: &PlanDag,
        _ctx: &AttentionContext<'_>,
    ) -> Result<crate::attention::AttentionMap> {
        if self.fail {
            return Err(NeuralDagError::AttentionComputationFailed(
                "plugin 'rows' ran out of fuel (limit 10)".into(),
            ));
        }
        let w = (0..dag.len())
            .map(|v| libm::log1pf(dag.node(v).est_rows as f32))
            .collect();
        crate::attention::AttentionMap::from_weights(self.kind(), w)
    }
}

pub(super) fn rows_plugin(
    id: u64,
    fail: bool,
) -> Option<(PluginId, alloc::boxed::Box<dyn DagAttention + Send + Sync>)> {
    let id = PluginId(id);
    Some((id, alloc::boxed::Box::new(RowsPlugin { id, fail })))
}
