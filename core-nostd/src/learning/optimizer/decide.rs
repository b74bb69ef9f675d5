//! [`Optimizer::decide`]: the rules, in order, each a small function of the decision being
//! made (the plan's identity, embeddings, what similar shapes say: [`Optimizer::prepare`]) and
//! this shape's measured evidence. Whether a plan may be explored is not decided here but in
//! [`super::choose`].

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::choose::usable_arm;
use super::{Decision, Exploration, Optimizer, Recalled, Rule};
use crate::attention::AttentionKind;
use crate::dag::PlanDag;
use crate::embed::EMBED_DIM;
use crate::error::NeuralDagError;
use crate::error::Result;
use crate::learning::btsp::BtspVerdict;
use crate::learning::evidence::{ShapeEvidence, RECHECK_EVERY};
use crate::learning::ArmId;

/// What a rule chose: the arm, the rule, the plan it is expected to produce.
type Choice = (ArmId, Rule, u64);

/// The planner's total cost of a plan (the sum over its roots).
fn default_cost(dag: &PlanDag) -> f64 {
    dag.roots()
        .iter()
        .map(|&r| dag.node(r as usize).total_cost)
        .sum()
}

/// A decision for `dag`'s default plan with no rule applied yet and no model's view: what a
/// lean decision reads (the key of kind `attention`, BTSP memory's `(blocked, promising)`
/// arms), `recalled` when those were recalled for another plan of the shape.
fn lean_decision(
    dag: &PlanDag,
    attention: AttentionKind,
    key: Vec<f32>,
    (blocked, promising): (Vec<ArmId>, Vec<(ArmId, f32, f32)>),
    recalled: bool,
) -> Decision {
    let fp = dag.shape_hash();
    Decision {
        arm: 0,
        rule: Rule::Default,
        pattern: None,
        similarity: 0.0,
        confidence: 0.0,
        attention,
        plugin_error: None,
        predicted_ms: f32::NAN,
        default_predicted_ms: f32::NAN,
        blocked,
        promising,
        reason: String::new(),
        fingerprint: fp,
        plan: fp,
        wants_candidates: false,
        background: false,
        default_cost: default_cost(dag),
        hdc: crate::hdc::Hypervector::zero(),
        key,
        input: Vec::new(),
        model_view: false,
        default_plan: None,
        recalled,
    }
}

impl Optimizer {
    /// Choose a plan for a query, given its default plan (what the planner made with no arm
    /// applied). When the decision `wants_candidates`, the host plans the statement under the
    /// other arms and calls [`Optimizer::choose`].
    pub fn decide(&mut self, dag: &PlanDag) -> Result<Decision> {
        self.decide_with(dag, Exploration::Here)
    }

    /// [`decide`](Self::decide), with the statement's untried plans run where `exploration`
    /// says: in it (the trial and explore rules), by the background explorer
    /// ([`Decision::background`]) or nowhere; in the last two cases it gets the verified plan
    /// or the default plan.
    pub fn decide_with(&mut self, dag: &PlanDag, exploration: Exploration) -> Result<Decision> {
        let (d, preds) = self.prepare(dag)?;
        self.decide_from(d, &preds, exploration)
    }

    /// [`decide_with`](Self::decide_with) computing only what the outcome depends on where
    /// nothing is explored in the statement itself (`exploration` is not
    /// [`Exploration::Here`], or learning is off): the plan's key embedding, what BTSP memory
    /// recalls for it and the shape's evidence. The arm, rule, plan, blocked and promising arms
    /// and the reason are those `decide_with` gives; the model's view (HDC fingerprint, the
    /// estimator's input and predictions, the matching pattern) is left out
    /// ([`Decision::model_view`] false): a backend decides without it, and the learner
    /// computes it for the run's trajectory ([`complete_trajectory`](Self::complete_trajectory)),
    /// off the statement's path. Where the statement itself may explore, the full decision.
    pub fn decide_lean(&mut self, dag: &PlanDag, exploration: Exploration) -> Result<Decision> {
        let cfg = &self.state.cfg;
        let learning = cfg.learning_enabled && cfg.attention_exploration > 0.0;
        if learning && exploration == Exploration::Here {
            return self.decide_with(dag, exploration);
        }
        let d = self.prepare_lean(dag)?;
        self.decide_from(d, &[], exploration)
    }

    /// [`decide_lean`](Self::decide_lean) on `dag` with what another lean decision on a plan
    /// of its shape recalled (`recalled`: its key and BTSP memory's verdicts) instead of
    /// computing them: the rules on the shape's evidence as this optimizer holds it, which
    /// may hold nothing learned ([`rules_only`](Self::rules_only)). The arm, rule, plan and
    /// reason are those `decide_lean` gives on a plan with that key. An error where the
    /// statement itself may explore (a full decision needs the model), for a plan of another
    /// shape, or for a recalled key or arm this optimizer cannot have made.
    pub fn decide_recalled(
        &mut self,
        dag: &PlanDag,
        recalled: &Recalled,
        exploration: Exploration,
    ) -> Result<Decision> {
        let cfg = &self.state.cfg;
        if cfg.learning_enabled
            && cfg.attention_exploration > 0.0
            && exploration == Exploration::Here
        {
            return Err(NeuralDagError::ModelNotLoaded(
                "a decision that may explore in the statement itself",
            ));
        }
        let fp = dag.shape_hash();
        let arms = self.state.arms.len();
        let bad = |m: String| Err(NeuralDagError::InvalidDagStructure(m));
        if recalled.fingerprint != fp {
            return bad(alloc::format!(
                "what was recalled for shape {:016x} given for a plan of shape {fp:016x}",
                recalled.fingerprint
            ));
        }
        if recalled.attention != cfg.default_attention || recalled.key.len() != EMBED_DIM {
            return bad(alloc::format!(
                "a recalled key of {} values under {} attention, want {EMBED_DIM} under {}",
                recalled.key.len(),
                recalled.attention.name(),
                cfg.default_attention.name()
            ));
        }
        let arm_ok = |a: ArmId| a != 0 && usize::from(a) < arms;
        if !recalled.blocked.iter().all(|&a| arm_ok(a))
            || !recalled.promising.iter().all(|&(a, _, _)| arm_ok(a))
        {
            return bad(alloc::format!(
                "recalled verdicts name an arm this optimizer of {arms} arms does not have"
            ));
        }
        let d = lean_decision(
            dag,
            recalled.attention,
            recalled.key.clone(),
            (recalled.blocked.clone(), recalled.promising.clone()),
            true,
        );
        self.decide_from(d, &[], exploration)
    }

    /// The model's view of a lean decision ([`decide_lean`](Self::decide_lean)) on `dag`, its
    /// default plan, filled in after the fact: the attention kind the selector picks, the HDC
    /// fingerprint, the cost model's input and its predictions for the decision's arm and the
    /// default, the matching pattern. The arm, rule, plan and reason stay as decided (the same
    /// as [`decide_with`](Self::decide_with) gives). EXPLAIN shows the view; computed when it
    /// prints, it is not part of the statement's planning time, as it is not part of a
    /// statement that is not EXPLAINed. A decision with its view is left as it is; another
    /// shape's plan is an error.
    pub fn fill_model_view(&self, d: &mut Decision, dag: &PlanDag) -> Result<()> {
        if d.model_view {
            return Ok(());
        }
        if dag.shape_hash() != d.fingerprint {
            return Err(crate::error::NeuralDagError::InvalidDagStructure(
                alloc::format!(
                "the model's view of a decision on shape {:016x} asked for a plan of shape {:016x}",
                d.fingerprint,
                dag.shape_hash()
            ),
            ));
        }
        let (full, preds) = self.prepare(dag)?;
        let at = |a: ArmId| preds.get(usize::from(a)).copied().unwrap_or(f32::NAN);
        d.predicted_ms = at(d.arm);
        d.default_predicted_ms = at(0);
        (d.pattern, d.similarity, d.confidence) = (full.pattern, full.similarity, full.confidence);
        d.attention = full.attention;
        d.plugin_error = full.plugin_error;
        d.hdc = full.hdc;
        d.input = full.input;
        d.model_view = true;
        Ok(())
    }

    /// The rules, on a prepared decision and the cost model's predictions per arm (empty for
    /// a lean decision: NaN).
    fn decide_from(
        &mut self,
        mut d: Decision,
        preds: &[f32],
        exploration: Exploration,
    ) -> Result<Decision> {
        let cfg = &self.state.cfg;
        let learning = cfg.learning_enabled && cfg.attention_exploration > 0.0;
        let here = learning && exploration == Exploration::Here;
        let ev = self.state.evidence.get(d.fingerprint);
        let mut reason = String::new();
        let mut choice = None;
        if here {
            choice = ev.and_then(|e| self.trial(&d, e, &mut reason));
        }
        if choice.is_none() {
            choice = ev.and_then(|e| self.verified(&d, e, learning, &mut reason));
        }
        match (choice, ev) {
            (Some((_, Rule::Verified, _)), Some(e)) if here => {
                d.wants_candidates = self.explore_beside_verified(&d, e, &mut reason);
            }
            (Some((_, Rule::Verified, _)), Some(e)) if learning => {
                d.background = exploration == Exploration::Explorer
                    && e.default_ms()
                        .is_some_and(|ms| ms >= f64::from(self.state.cfg.explore_min_ms))
                    && self.left_to_run(&d, e);
                if d.background {
                    reason.push_str("; its untried rivals are run by the background explorer");
                }
            }
            (None, _) if here || !learning => {
                d.wants_candidates = self.explore_or_default(&d, ev, true, &mut reason)
            }
            (None, _) => {
                d.background = self.explore_or_default(&d, ev, false, &mut reason)
                    && exploration == Exploration::Explorer;
                if d.background {
                    reason.push_str(
                        "candidate plans are run by the background explorer, off the users' path: default plan meanwhile",
                    );
                } else if exploration == Exploration::Nowhere && reason.is_empty() {
                    reason.push_str("not explored in this statement: default plan");
                }
            }
            _ => {}
        }
        let (arm, rule, plan) = choice.unwrap_or((0, Rule::Default, d.fingerprint));
        let mut reason = self.with_blocked(reason, &d);
        if let Some(e) = &d.plugin_error {
            let _ = write!(
                reason,
                "; the attention plugin failed ({e}), {} attention used instead",
                self.state.cfg.default_attention.name()
            );
        }
        self.state.stats.decisions[rule as usize] += 1;
        let at = |a: ArmId| preds.get(usize::from(a)).copied().unwrap_or(f32::NAN);
        d.arm = arm;
        d.rule = rule;
        d.plan = plan;
        d.predicted_ms = at(arm);
        d.default_predicted_ms = at(0);
        d.reason = reason;
        Ok(d)
    }

    /// What the rules read of one plan and nothing more ([`decide_lean`](Self::decide_lean)):
    /// the key embedding, BTSP memory's verdicts for it and the default plan's cost.
    fn prepare_lean(&self, dag: &PlanDag) -> Result<Decision> {
        let fp = dag.shape_hash();
        let key_kind = self.state.cfg.default_attention;
        // A copy restored lean has no history of the shapes (format 8 keeps it in the model):
        // a key that reads it is the model's to compute.
        if key_kind.reads_history() {
            self.model_loaded("the shapes' history, which the key's attention kind reads")?;
        }
        let key = self.embed_as(dag, key_kind, fp)?;
        // One recall per arm serves both the blocked list and choose's endorsements.
        let recalled = self.recall(&key);
        Ok(lean_decision(dag, key_kind, key, recalled, false))
    }

    /// What BTSP memory recalls for a plan's key, per arm but the default: (blocked arms,
    /// promising arms with their ratio to the default and similarity).
    fn recall(&self, key: &[f32]) -> (Vec<ArmId>, Vec<(ArmId, f32, f32)>) {
        let mut blocked = Vec::new();
        let mut promising = Vec::new();
        for a in 1..self.state.arms.len() as ArmId {
            match self.state.btsp.recall(key, a) {
                Some(BtspVerdict::Blocked { .. }) => blocked.push(a),
                Some(BtspVerdict::Promising { ratio, similarity }) => {
                    promising.push((a, ratio, similarity))
                }
                None => {}
            }
        }
        (blocked, promising)
    }

    /// Everything the rules read of one plan, as a decision for the default plan with no
    /// reason yet, and the cost model's prediction per arm.
    pub(super) fn prepare(&self, dag: &PlanDag) -> Result<(Decision, Vec<f32>)> {
        self.model_loaded("the model's view of a plan")?;
        // What the rules read, then the model's view on top.
        let mut d = self.prepare_lean(dag)?;
        let fp = d.fingerprint;
        let key_kind = d.attention;
        let mincut = self.state.cfg.mincut_enabled;
        let plugin = self.plugin.as_ref().map(|p| p.id);
        let mut attention = self
            .state
            .selector
            .select_with_extra(
                |k| mincut || k != AttentionKind::MinCutGated,
                plugin.map(|id| self.plugin_arms.get(id)),
            )
            .or(plugin.map(AttentionKind::Plugin))
            .unwrap_or(key_kind);
        let input = if attention == key_kind {
            d.key.clone()
        } else {
            match self.embed_as(dag, attention, fp) {
                Ok(e) => e,
                // A failing plugin costs the decision nothing but the key's built-in kind.
                Err(e) if !attention.is_builtin() => {
                    d.plugin_error = Some(alloc::string::ToString::to_string(&e));
                    attention = key_kind;
                    d.key.clone()
                }
                Err(e) => return Err(e),
            }
        };
        let preds = self.state.estimator.predict_all_ms(&input);
        let hdc = self.fingerprint_of(dag, fp);
        if let Some(&(s, p)) = self.state.bank.search(&d.key, Some(&hdc), 1).first() {
            (d.pattern, d.similarity, d.confidence) = (Some(p.id), s, p.confidence());
        }
        d.attention = attention;
        d.hdc = hdc;
        d.input = input;
        d.model_view = true;
        Ok((d, preds))
    }

    fn margin(&self) -> f64 {
        f64::from(self.state.cfg.min_gain)
    }

    /// Rule 1 (learn mode): a plan under trial runs again, alternating with the default plan,
    /// until verified or refuted. It comes first when no plan is verified or it looks faster
    /// than the verified one, and waits after its first run while an untried plan the planner
    /// costs no more can be explored (one run each screens the equally promising plans before
    /// several runs go to one of them).
    fn trial(&self, d: &Decision, e: &ShapeEvidence, reason: &mut String) -> Option<Choice> {
        let margin = self.margin();
        let p = e.in_trial(margin)?;
        if e.verified(margin)
            .is_some_and(|v| p.stats.mean >= v.stats.mean)
        {
            return None;
        }
        if self.trial_waits_for_a_rival(d, e, p) {
            return None;
        }
        let a = usable_arm(p, &d.blocked)?;
        if p.stats.count < 2 || p.stats.count <= e.default.count {
            let _ = write!(
                reason,
                "trial of the plan of '{}': {:.3} ms over {} runs so far vs {:.3} ms for the default plan over {}",
                self.arm_name(a),
                p.stats.typical_ms(),
                p.stats.count,
                e.default.typical_ms(),
                e.default.count
            );
            Some((a, Rule::Trial, p.plan))
        } else {
            let _ = write!(
                reason,
                "measuring the default plan again for the trial of '{}' ({} runs vs {})",
                self.arm_name(a),
                p.stats.count,
                e.default.count
            );
            Some((0, Rule::Trial, d.fingerprint))
        }
    }

    /// Rule 2: a plan this shape's own runs verified faster than the default plan is applied
    /// (every [`RECHECK_EVERY`] applied runs the default plan is measured again, in learn mode).
    fn verified(
        &self,
        d: &Decision,
        e: &ShapeEvidence,
        learning: bool,
        reason: &mut String,
    ) -> Option<Choice> {
        let margin = self.margin();
        let p = e.verified(margin)?;
        let a = usable_arm(p, &d.blocked)?;
        if learning && e.since_default >= RECHECK_EVERY {
            let _ = write!(
                reason,
                "measuring the default plan again after {} runs of the verified plan of '{}'",
                e.since_default,
                self.arm_name(a)
            );
            return Some((0, Rule::Default, d.fingerprint));
        }
        let _ = write!(
            reason,
            "verified: the plan of '{}' typically {:.3} ms over {} runs vs {:.3} ms for the default plan over {} (confidence {:.3} that it is at least {:.0}% faster)",
            self.arm_name(a),
            p.stats.typical_ms(),
            p.stats.count,
            e.default.typical_ms(),
            e.default.count,
            e.confidence(p, margin),
            100.0 * margin
        );
        Some((a, Rule::Verified, p.plan))
    }

    /// A verified plan need not be the best: untried candidates are still explored, within the
    /// budget (it stays the choice when nothing is tried). Whether candidates are wanted.
    fn explore_beside_verified(
        &self,
        d: &Decision,
        e: &ShapeEvidence,
        reason: &mut String,
    ) -> bool {
        let Some(default_ms) = e.default_ms() else {
            return false;
        };
        let untried =
            !e.candidates_known || e.untried().any(|p| usable_arm(p, &d.blocked).is_some());
        if !untried || default_ms < f64::from(self.state.cfg.explore_min_ms) {
            return false;
        }
        match self.candidates_fundable(d, e, default_ms) {
            Ok(()) => true,
            Err(why) => {
                let _ = write!(reason, "; {why}");
                false
            }
        }
    }

    /// Rule 3 (learn mode), or else rule 4: with nothing verified or under trial, ask the host
    /// for the candidate plans when an exploration may follow; otherwise the default plan, and
    /// why. Whether candidates are wanted.
    ///
    /// Outside the user's statement (`d.background` wanted, or nowhere) the budget is not
    /// asked: whether anything is left to run ([`Optimizer::left_to_run`]) is the answer, and
    /// the reason is left to the caller.
    fn explore_or_default(
        &self,
        d: &Decision,
        ev: Option<&ShapeEvidence>,
        here: bool,
        reason: &mut String,
    ) -> bool {
        let cfg = &self.state.cfg;
        let learning = cfg.learning_enabled && cfg.attention_exploration > 0.0;
        let default_ms = ev.and_then(|e| e.default_ms());
        match (ev, default_ms) {
            _ if !learning => reason.push_str(if cfg.learning_enabled {
                "no plan verified faster for this query shape; not exploring (exploration budget 0): default plan"
            } else {
                "no plan verified faster for this query shape: default plan"
            }),
            (_, None) => reason.push_str(
                "measuring the default plan first (no plan is explored before its time is known)",
            ),
            (_, Some(ms)) if ms < f64::from(cfg.explore_min_ms) => {
                let _ = write!(
                    reason,
                    "the default plan takes {ms:.3} ms, below explore_min_ms {:.1}: not worth exploring",
                    cfg.explore_min_ms
                );
            }
            (Some(e), Some(_)) if !here && self.left_to_run(d, e) => {
                // The caller says where (the explorer, or nowhere).
                return true;
            }
            (Some(e), Some(_))
                if e.candidates_known
                    && !e.untried().any(|p| usable_arm(p, &d.blocked).is_some()) =>
            {
                reason.push_str(
                    "every candidate plan was tried and none verified faster: default plan",
                );
            }
            (_, Some(_)) if d.blocked.len() + 1 >= self.state.arms.len() => {
                reason.push_str("every other arm is blocked by BTSP memory: default plan");
            }
            (Some(e), Some(ms)) => match self.candidates_fundable(d, e, ms) {
                Ok(()) => {
                    reason.push_str("candidate plans wanted");
                    return true;
                }
                Err(why) => {
                    let _ = write!(reason, "{why}: default plan");
                }
            },
            (None, Some(_)) => {
                reason.push_str("candidate plans wanted");
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::embed::EMBED_DIM;
    use crate::learning::NeuralDagConfig;
    use alloc::vec;

    #[test]
    fn a_fresh_optimizer_keeps_the_default_and_says_why() {
        let mut opt = Optimizer::new(NeuralDagConfig::default(), arms()).unwrap();
        let d = opt.decide(&plan(1)).unwrap();
        assert_eq!((d.arm, d.rule, d.pattern), (0, Rule::Default, None));
        assert!(!d.wants_candidates);
        assert!(
            d.reason.contains("measuring the default plan first"),
            "{}",
            d.reason
        );
        assert_eq!(d.plan, d.fingerprint);
        assert_eq!((d.key.len(), d.input.len()), (EMBED_DIM, EMBED_DIM));
        assert!(d.predicted_ms.is_finite() && d.predicted_ms > 0.0);
        assert_eq!(opt.stats().decisions[Rule::Default as usize], 1);
    }

    #[test]
    fn frozen_applies_verified_plans_only_and_never_explores() {
        let mut opt = learner();
        fund(&mut opt, 10);
        let (p, q) = (plan(41), plan(42));
        let (wp, wq) = (World::new(&p, 20.0, 115.0), World::new(&q, 20.0, 115.0));
        for _ in 0..6 {
            step(&mut opt, &p, &wp);
        }
        step(&mut opt, &q, &wq);
        let frozen = NeuralDagConfig {
            attention_exploration: 0.0,
            ..Default::default()
        };
        opt.retune(&frozen).unwrap();
        for _ in 0..RECHECK_EVERY as usize + 5 {
            let dp = opt.decide(&p).unwrap();
            assert_eq!(
                (dp.rule, dp.arm, dp.wants_candidates),
                (Rule::Verified, 1, false)
            );
            let dq = opt.decide(&q).unwrap();
            assert_eq!(
                (dq.rule, dq.arm, dq.wants_candidates),
                (Rule::Default, 0, false)
            );
        }
    }

    #[test]
    fn a_verified_plan_that_regresses_is_reverted_and_the_default_rechecked() {
        let mut opt = learner();
        fund(&mut opt, 10);
        let p = plan(44);
        let mut w = World::new(&p, 20.0, 115.0);
        for _ in 0..6 {
            step(&mut opt, &p, &w);
        }
        // The default is measured again after RECHECK_EVERY applied runs.
        let mut rechecked = false;
        for _ in 0..RECHECK_EVERY + 1 {
            let (d, _) = step(&mut opt, &p, &w);
            rechecked |= d.arm == 0 && d.reason.contains("measuring the default plan again");
        }
        assert!(rechecked);
        // The data changes: the applied plan now takes 400 ms.
        w.ms[1] = 400.0;
        w.ms[3] = 400.0;
        let mut reverted = false;
        for _ in 0..10 {
            let (_, o) = step(&mut opt, &p, &w);
            reverted |= o.reverted;
        }
        assert!(reverted);
        assert_eq!(opt.evidence().reverts, 1);
        let d = opt.decide(&p).unwrap();
        assert_eq!(d.arm, 0, "{}", d.reason);
    }

    #[test]
    fn one_catastrophe_blocks_the_arm_for_similar_plans() {
        let mut opt = optimizer();
        let (p, q) = (plan(2), plan(3));
        for _ in 0..3 {
            run(&mut opt, &p, 0, 100.0);
            run(&mut opt, &q, 0, 100.0);
        }
        // Arm 1 is a catastrophe for p: blocked at once, before any cycle, only for p.
        let o = run(&mut opt, &p, 1, 10_000.0);
        assert!(o.surprising && o.refuted);
        assert!(o.baseline_ms.is_some_and(|b| (b - 100.0).abs() < 1.0));
        let d = opt.decide(&p).unwrap();
        assert_eq!(d.blocked, vec![1]);
        assert!(
            d.reason.contains("blocked by BTSP memory: nestloop=off"),
            "{}",
            d.reason
        );
        assert!(opt.decide(&q).unwrap().blocked.is_empty());
    }
}
