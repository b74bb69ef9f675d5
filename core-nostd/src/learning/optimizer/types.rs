//! What the optimizer's calls take and return: [`Rule`], [`Exploration`], [`RunKind`],
//! [`Candidate`], [`Decision`], [`Step`], [`Observed`], [`Forgotten`], [`CycleReport`],
//! [`OptimizerStats`].

use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::attention::AttentionKind;
use crate::hdc::Hypervector;
use crate::learning::ArmId;

/// Which rule made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// A plan this shape's own runs verified faster than the default plan.
    Verified,
    /// A plan under trial (tried, not yet verified or refuted), or the default plan measured
    /// again for it.
    Trial,
    /// The first run of an untried candidate plan.
    Explore,
    /// Nothing better known: the default plan.
    Default,
}

impl Rule {
    /// Every rule, in [`OptimizerStats::decisions`] order.
    pub const ALL: [Rule; 4] = [Rule::Verified, Rule::Trial, Rule::Explore, Rule::Default];

    /// Lower-case name, as EXPLAIN shows it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Verified => "verified",
            Rule::Trial => "trial",
            Rule::Explore => "explore",
            Rule::Default => "default",
        }
    }
}

/// Where a statement's untried plans may be run, for [`super::Optimizer::decide_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exploration {
    /// In the user's statement (the trial and explore rules, within the exploration budget).
    Here,
    /// By the background explorer, off the user's path: the decision says so
    /// ([`Decision::background`]) and the statement gets the verified or the default plan.
    Explorer,
    /// Nowhere: the statement gets the verified or the default plan.
    Nowhere,
}

/// How a run ended and who ran it, for [`super::Optimizer::observe_run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RunKind {
    /// Cut short (a statement timeout, a cancel, an error) after the time it ran: at least
    /// that slow; its plan, when not the default plan, is given up for the shape at once.
    pub cut: bool,
    /// Run by the background explorer: no user waited for it, so the exploration budget is
    /// neither charged nor credited.
    pub background: bool,
}

/// What the background explorer runs next for a shape ([`super::Optimizer::explore_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The default plan (its time is not known yet, or a trial needs it measured again).
    Default,
    /// A plan under trial or never run, and the arm that produces it.
    Plan {
        /// The arm to plan with.
        arm: ArmId,
        /// [`PlanDag::shape_hash`] of the plan it produced when its candidates were planned.
        plan: u64,
    },
    /// Nothing left to run: every candidate was run and settled (or none is usable).
    Done,
}

/// One arm the host planned the statement under, for [`super::Optimizer::choose`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The arm.
    pub arm: ArmId,
    /// [`PlanDag::shape_hash`] of the plan it produced.
    pub plan: u64,
    /// The planner's total cost of that plan, without PostgreSQL's `disable_cost` penalties.
    pub cost: f64,
}

/// What [`super::Optimizer::decide`] chose, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The arm to plan with.
    pub arm: ArmId,
    /// Which rule chose it.
    pub rule: Rule,
    /// The best matching pattern, if any.
    pub pattern: Option<u64>,
    /// Its cosine similarity to the plan's key (0 without a pattern).
    pub similarity: f32,
    /// Its confidence (0 without a pattern).
    pub confidence: f32,
    /// The attention kind the selector chose for the estimator's input (the key's kind when
    /// the selector chose the plugin and it failed).
    pub attention: AttentionKind,
    /// The plugin the selector chose failed on this plan: its error. The decision went on
    /// with the key's built-in kind instead.
    pub plugin_error: Option<String>,
    /// The estimator's prediction for the chosen arm, ms.
    pub predicted_ms: f32,
    /// The estimator's prediction for the default arm, ms.
    pub default_predicted_ms: f32,
    /// Arms BTSP memory blocks for this plan.
    pub blocked: Vec<ArmId>,
    /// Arms BTSP memory recalls as much faster than the default on a similar plan:
    /// `(arm, ratio to the default, similarity)`.
    pub promising: Vec<(ArmId, f32, f32)>,
    /// Human-readable explanation (EXPLAIN prints it).
    pub reason: String,
    /// [`PlanDag::shape_hash`] of the default plan: the query shape.
    pub fingerprint: u64,
    /// [`PlanDag::shape_hash`] of the plan `arm` is expected to produce (the fingerprint for
    /// the default plan).
    pub plan: u64,
    /// The host should plan the statement under every arm but the default and those in
    /// `blocked`, and pass the plans to [`super::Optimizer::choose`] (learn mode, exploration due).
    pub wants_candidates: bool,
    /// The background explorer should run this shape's untried plans (or its trial): with
    /// [`Exploration::Explorer`], in learn mode, where `wants_candidates` or a trial would have
    /// been chosen in the user's statement (whatever the budget and the screens say: the
    /// explorer's runs cost no user any time, and its timeout cuts a loser short).
    pub background: bool,
    /// The default plan's total cost (the planner's), the reference for candidates' costs.
    pub default_cost: f64,
    /// HDC fingerprint of the plan.
    pub hdc: Hypervector,
    /// Embedding under the default attention kind (the pattern and BTSP key).
    pub key: Vec<f32>,
    /// Embedding under `attention` (the estimator's input).
    pub input: Vec<f32>,
    /// Whether the model's view of the plan was computed: its HDC fingerprint, the estimator's
    /// input and predictions and the matching pattern. False for a
    /// [`lean`](super::Optimizer::decide_lean) decision, which computes only what its outcome
    /// depends on (the key embedding, what BTSP memory recalls for it, the evidence): then
    /// `hdc` is all zeros, `input` empty, `pattern` None and the predictions NaN, and its
    /// trajectories are completed where the model lives
    /// ([`complete_trajectory`](super::Optimizer::complete_trajectory)).
    pub model_view: bool,
    /// The default plan the decision was made on, kept by the host for a lean decision: what
    /// its runs' trajectories are completed from. None otherwise.
    pub default_plan: Option<alloc::sync::Arc<crate::dag::PlanDag>>,
    /// Made by [`decide_recalled`](super::Optimizer::decide_recalled): on what another lean
    /// decision on a plan of this shape recalled ([`Recalled`]), by an optimizer that holds
    /// the rules and no learned memory of its own.
    pub recalled: bool,
}

/// What a lean decision read of its plan through the learned model's memory: the plan's key
/// embedding and what BTSP memory recalled for it. With the shape's evidence and the
/// configuration it is everything the rules decide on ([`super::Optimizer::decide_recalled`]),
/// so a host may keep it where every process reads it and decide the next plan of the shape
/// without the learned state (the key of a plan of one shape moves with its estimates only).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Recalled {
    /// The shape ([`Decision::fingerprint`]).
    pub fingerprint: u64,
    /// The key's attention kind.
    pub attention: AttentionKind,
    /// The key embedding.
    pub key: Vec<f32>,
    /// Arms BTSP memory blocked for it.
    pub blocked: Vec<ArmId>,
    /// Arms BTSP memory recalled as much faster: `(arm, ratio, similarity)`.
    pub promising: Vec<(ArmId, f32, f32)>,
}

impl Decision {
    /// What this decision recalled of its plan ([`Recalled`]); None for a decision with the
    /// model's view (its attention kind may not be the key's) or one itself recalled.
    pub fn recalled(&self) -> Option<Recalled> {
        (!self.model_view && !self.recalled).then(|| Recalled {
            fingerprint: self.fingerprint,
            attention: self.attention,
            key: self.key.clone(),
            blocked: self.blocked.clone(),
            promising: self.promising.clone(),
        })
    }
}

/// What one [`super::Optimizer::observe`] did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observed {
    /// Whether anything was learned (false when learning is disabled).
    pub learned: bool,
    /// The trajectory's quality.
    pub quality: f32,
    /// The default arm's latency it was compared with, when known.
    pub baseline_ms: Option<f32>,
    /// Whether BTSP memory wrote an engram (a surprising outcome).
    pub surprising: bool,
    /// The plan that ran became verified faster than the default with this run.
    pub verified: bool,
    /// The plan that ran was given up with this run (never tried again).
    pub refuted: bool,
    /// A verified plan regressed and was reverted with this run (self-healing).
    pub reverted: bool,
    /// A self-healing event to report: `reverted`, or a non-default plan's run that BTSP
    /// memory found surprisingly slower than the default (its arm is now blocked for
    /// similar plans).
    pub regression: bool,
}

/// What [`super::Optimizer::forget`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Forgotten {
    /// Query shapes whose baseline or history was known.
    pub shapes: usize,
    /// Pending trajectories dropped.
    pub pending: usize,
    /// BTSP engrams forgotten.
    pub engrams: usize,
    /// Patterns forgotten.
    pub patterns: usize,
}

/// What one [`super::Optimizer::learn_cycle`] did.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CycleReport {
    /// Trajectories drained.
    pub trajectories: usize,
    /// Of those, ones that were not already counted in a pattern and were clustered.
    pub clustered: usize,
    /// Patterns created.
    pub patterns_created: usize,
    /// Patterns held after the cycle.
    pub patterns: usize,
    /// Mean squared log error of the estimator on the drained batch before training.
    pub loss_before: f32,
    /// Task boundaries EWC++ detected so far.
    pub boundaries: u64,
}

/// Counters, for status views.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OptimizerStats {
    /// Decisions made, by rule in [`Rule::ALL`] order.
    pub decisions: [u64; 4],
    /// Statements whose candidate plans were passed to [`super::Optimizer::choose`].
    pub candidate_sets: u64,
    /// Trajectories learned from.
    pub observed: u64,
    /// Trajectories refused as invalid.
    pub rejected: u64,
    /// Surprising outcomes written to BTSP memory (new engrams and refreshed ones).
    pub btsp_writes: u64,
    /// Background cycles run.
    pub cycles: u64,
}
