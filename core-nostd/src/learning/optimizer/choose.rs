//! Whether a plan may be explored, in one place: the endorsements of similar shapes, the
//! screens (the planner's cost, the risk horizon), the stake the budget must afford, and
//! [`Optimizer::choose`], which ranks the untried candidate plans the host planned and tries
//! the most promising one.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::{Candidate, Decision, Optimizer, Rule};
use crate::error::{NeuralDagError, Result};
use crate::learning::evidence::{
    EvidenceBook, PlanEvidence, ShapeEvidence, MAX_COST_RATIO, RISK_HORIZON,
};
use crate::learning::ArmId;

/// A similar shape's pattern endorses its best arm for exploration when similarity x
/// confidence exceeds this.
pub const PATTERN_RULE: f32 = 0.8;
/// How much an endorsement (a similar shape verified the arm, or BTSP memory recalls it as much
/// faster) lowers a candidate's rank score (log units).
const ENDORSED_BONUS: f64 = 2.0;
/// Weight of the cost model's log-ratio prediction in a candidate's rank score, for a model
/// that predicts the shape's measured default time exactly; it falls linearly to 0 as that
/// prediction misses by [`MODEL_TRUST_SPAN`] (a model trained on other shapes knows nothing
/// about this one's plans and must not outrank the planner's own costs).
const MODEL_WEIGHT: f64 = 0.5;
/// Planner cost ratios within this share of each other are a tie: an untried plan costed no
/// more than a trial plan's ratio x (1 + this) is explored before the trial goes on.
const TRIAL_TIE: f64 = 0.02;
/// A default-time prediction off by this factor or more gives the cost model no say.
const MODEL_TRUST_SPAN: f64 = 2.0;

/// The arm that runs plan `p`: the first that produces it and is neither the default nor
/// blocked by BTSP memory (None: the plan cannot be run).
pub(super) fn usable_arm(p: &PlanEvidence, blocked: &[ArmId]) -> Option<ArmId> {
    p.arm_list().find(|&a| a != 0 && !blocked.contains(&a))
}

/// What similar shapes say for an arm (see [`Optimizer::endorsement`]).
enum Endorsement {
    /// A close pattern verified it: (pattern, similarity, confidence).
    Pattern(u64, f32, f32),
    /// BTSP memory recalls it much faster than the default on a similar plan:
    /// (ratio to the default, similarity).
    Btsp(f32, f32),
}

impl Endorsement {
    fn describe(&self) -> String {
        match *self {
            Endorsement::Pattern(id, similarity, confidence) => format!(
                "pattern {id} (similarity {similarity:.3} x confidence {confidence:.3} = {:.3} > {PATTERN_RULE}) found it faster on similar queries",
                similarity * confidence
            ),
            Endorsement::Btsp(ratio, similarity) => format!(
                "BTSP memory: it ran {:.1}x faster than the default on a similar plan (similarity {similarity:.3})",
                1.0 / ratio
            ),
        }
    }
}

/// What the screens say of an untried plan.
enum Screen {
    /// It may be explored; the planner cost ratio it is staked and ranked at.
    Explorable(f64),
    /// The planner costs it over [`MAX_COST_RATIO`]x the default: not explored blind.
    Costly,
    /// It could cost more above the reference than it could save over [`RISK_HORIZON`] runs.
    Risky,
}

impl Optimizer {
    /// What similar shapes say for `arm`: a close pattern verified it, or BTSP memory recalls
    /// it much faster than the default on a similar plan.
    fn endorsement(&self, d: &Decision, arm: ArmId) -> Option<Endorsement> {
        if let Some(p) = d.pattern.and_then(|id| self.state.bank.get(id)) {
            if p.best_arm() == Some(arm) && d.similarity * p.confidence() > PATTERN_RULE {
                return Some(Endorsement::Pattern(p.id, d.similarity, p.confidence()));
            }
        }
        d.promising
            .iter()
            .find(|(a, _, _)| *a == arm)
            .map(|&(_, ratio, similarity)| Endorsement::Btsp(ratio, similarity))
    }

    /// Whether some arm producing `p` is endorsed.
    pub(super) fn endorsed(&self, d: &Decision, p: &PlanEvidence) -> bool {
        p.arm_list().any(|a| self.endorsement(d, a).is_some())
    }

    /// The one rule of whether an untried plan may be explored: an endorsed plan always; any
    /// other only when the planner costs it at most [`MAX_COST_RATIO`]x the default and what
    /// its run could cost above `reference` is worth what it could save
    /// ([`EvidenceBook::worth_the_risk`]).
    fn screen(&self, d: &Decision, p: &PlanEvidence, default_ms: f64, reference: f64) -> Screen {
        let ratio = if p.cost_ratio > 0.0 {
            f64::from(p.cost_ratio)
        } else {
            1.0
        };
        if self.endorsed(d, p) {
            Screen::Explorable(ratio)
        } else if ratio > MAX_COST_RATIO {
            Screen::Costly
        } else if !EvidenceBook::worth_the_risk(default_ms, reference, ratio) {
            Screen::Risky
        } else {
            Screen::Explorable(ratio)
        }
    }

    /// A trial waits after its first run while an untried plan the planner costs no more
    /// (within [`TRIAL_TIE`]) may be explored and the budget affords it (or the trial would wait
    /// for ever).
    pub(super) fn trial_waits_for_a_rival(
        &self,
        d: &Decision,
        e: &ShapeEvidence,
        p: &PlanEvidence,
    ) -> bool {
        let margin = f64::from(self.state.cfg.min_gain);
        let Some(default_ms) = e.default_ms() else {
            return false;
        };
        let reference = e.reference_ms(margin).unwrap_or(default_ms);
        let rival = p.stats.count == 1
            && p.cost_ratio > 0.0
            && e.candidates_known
            && e.untried().any(|q| {
                usable_arm(q, &d.blocked).is_some()
                    && q.cost_ratio > 0.0
                    && f64::from(q.cost_ratio) <= f64::from(p.cost_ratio) * (1.0 + TRIAL_TIE)
                    && matches!(
                        self.screen(d, q, default_ms, reference),
                        Screen::Explorable(_)
                    )
            });
        rival && self.candidates_fundable(d, e, default_ms).is_ok()
    }

    /// Planning the candidates costs the statement one planning per arm: only when the budget
    /// affords the cheapest stake an untried plan could need (the least planner cost ratio seen
    /// for one; 1 when unknown, or for a plan similar shapes endorse). `Err`: why not (the
    /// reason's tail).
    pub(super) fn candidates_fundable(
        &self,
        d: &Decision,
        e: &ShapeEvidence,
        default_ms: f64,
    ) -> core::result::Result<(), String> {
        let margin = f64::from(self.state.cfg.min_gain);
        let share = f64::from(self.state.cfg.attention_exploration);
        let reference = e.reference_ms(margin).unwrap_or(default_ms);
        let ratio = if !e.candidates_known {
            1.0
        } else {
            e.untried()
                .filter(|p| usable_arm(p, &d.blocked).is_some())
                .map(|p| {
                    if self.endorsed(d, p) || p.cost_ratio <= 0.0 {
                        1.0
                    } else {
                        f64::from(p.cost_ratio)
                    }
                })
                .fold(f64::INFINITY, f64::min)
                .min(MAX_COST_RATIO)
        };
        if !EvidenceBook::worth_the_risk(default_ms, reference, ratio) {
            return Err(format!(
                "every untried plan could cost more above the verified plan's {reference:.3} ms than it could save over {RISK_HORIZON} runs (candidates not planned)"
            ));
        }
        let stake = EvidenceBook::stake(default_ms, reference, share, ratio);
        if self.state.evidence.affords(d.fingerprint, stake, share) {
            Ok(())
        } else {
            Err(format!(
                "the exploration budget holds {:.1} ms, less than the {:.1} ms the cheapest untried plan needs (candidates not planned until the runs repay it)",
                self.state.evidence.pool_ms,
                stake.min(self.state.evidence.pool_cap(share))
            ))
        }
    }

    /// Record the plans the host made under each arm for the shape `fingerprint` (arms with
    /// identical plans are one candidate; arms whose plan is the default plan are the default),
    /// with their planner cost over the default plan's (`default_cost`, as
    /// [`Decision::default_cost`]). Nothing is chosen: [`Optimizer::choose`] does that in the
    /// user's statement, [`Optimizer::explore_step`] in the background.
    pub fn note_candidates(
        &mut self,
        fingerprint: u64,
        default_cost: f64,
        candidates: &[Candidate],
    ) -> Result<()> {
        let n = self.state.arms.len();
        if let Some(c) = candidates
            .iter()
            .find(|c| usize::from(c.arm) >= n || !(c.cost.is_finite() && c.cost >= 0.0))
        {
            return Err(NeuralDagError::InvalidConfig(format!(
                "candidate of arm {} (cost {}): want an arm below {n} and a finite cost >= 0",
                c.arm, c.cost
            )));
        }
        self.state.stats.candidate_sets += 1;
        let base = default_cost.max(1e-9);
        let planned: Vec<(u64, ArmId, f64)> = candidates
            .iter()
            .map(|c| (c.plan, c.arm, c.cost / base))
            .collect();
        self.state.evidence.candidates(fingerprint, &planned);
        Ok(())
    }

    /// `reason` with the arms BTSP memory blocks for the decision's plan, if any.
    pub(super) fn with_blocked(&self, mut reason: String, d: &Decision) -> String {
        if !d.blocked.is_empty() {
            let names: Vec<&str> = d.blocked.iter().map(|&a| self.arm_name(a)).collect();
            let _ = write!(reason, "; blocked by BTSP memory: {}", names.join(", "));
        }
        reason
    }

    /// Pick among the plans the host made under each arm for a decision that
    /// [`Decision::wants_candidates`]: record them (arms with identical plans are one
    /// candidate; arms whose plan is the default plan are the default), then try the most
    /// promising untried one if the exploration budget allows. Updates `decision`
    /// in place; it stays the default plan when nothing is worth trying.
    pub fn choose(&mut self, decision: &mut Decision, candidates: &[Candidate]) -> Result<()> {
        if !decision.wants_candidates {
            return Ok(());
        }
        self.model_loaded("choosing among candidate plans")?;
        decision.wants_candidates = false;
        self.note_candidates(decision.fingerprint, decision.default_cost, candidates)?;
        let fp = decision.fingerprint;
        let same = candidates.iter().filter(|c| c.plan == fp).count();
        let Some(e) = self.state.evidence.get(fp) else {
            return Ok(());
        };
        let Some(default_ms) = e.default_ms() else {
            return Ok(());
        };
        let trained = self.state.estimator.trained_batches() > 0;
        let preds = self.state.estimator.predict_all_ms(&decision.input);
        // How far the model's say goes for this shape: how well it predicts its default.
        let trust = match preds.first() {
            Some(&p0) if trained && p0 > 0.0 => (1.0
                - libm::fabs(libm::log(f64::from(p0) / default_ms)) / libm::log(MODEL_TRUST_SPAN))
            .clamp(0.0, 1.0),
            _ => 0.0,
        };
        let blocked = &decision.blocked;
        let margin = f64::from(self.state.cfg.min_gain);
        let reference = e.reference_ms(margin).unwrap_or(default_ms);
        // (score, plan, arm, cost ratio, endorsement)
        let mut best: Option<(f64, u64, ArmId, f64, Option<String>)> = None;
        let mut costly = 0;
        let mut risky = 0;
        let mut distinct = 0;
        for p in e.untried() {
            let Some(arm) = usable_arm(p, blocked) else {
                continue;
            };
            distinct += 1;
            let ratio = match self.screen(decision, p, default_ms, reference) {
                Screen::Explorable(ratio) => ratio,
                Screen::Costly => {
                    costly += 1;
                    continue;
                }
                Screen::Risky => {
                    risky += 1;
                    continue;
                }
            };
            let endorsed = p
                .arm_list()
                .find_map(|a| self.endorsement(decision, a))
                .map(|e| e.describe());
            let model = match (preds.get(usize::from(arm)), preds.first()) {
                (Some(&pa), Some(&p0)) if trust > 0.0 && pa > 0.0 && p0 > 0.0 => {
                    MODEL_WEIGHT * trust * libm::log(f64::from(pa) / f64::from(p0))
                }
                _ => 0.0,
            };
            let score = libm::log(ratio.max(1e-3)) + model
                - if endorsed.is_some() {
                    ENDORSED_BONUS
                } else {
                    0.0
                };
            if best.as_ref().is_none_or(|b| score < b.0) {
                best = Some((score, p.plan, arm, ratio, endorsed));
            }
        }
        let prior = match decision.rule {
            Rule::Verified => format!("{}; ", decision.reason),
            _ => String::new(),
        };
        let keep = if decision.arm == 0 {
            String::from("default plan")
        } else {
            format!(
                "keeping the verified plan of '{}'",
                self.arm_name(decision.arm)
            )
        };
        let mut reason = format!(
            "{prior}{} arms planned: {} distinct plans besides the default ({same} arms give the default plan)",
            candidates.len(),
            e.plans.iter().filter(|p| p.arms != 0).count()
        );
        let Some((_, plan, arm, ratio, endorsed)) = best else {
            if costly > 0 {
                let _ = write!(
                    reason,
                    "; {costly} untried plans costed over {MAX_COST_RATIO}x the default by the planner are not explored blind"
                );
            }
            if risky > 0 {
                let _ = write!(
                    reason,
                    "; {risky} untried plans could cost more above the verified plan's {reference:.3} ms than they could save over {RISK_HORIZON} runs"
                );
            }
            if costly + risky == 0 {
                reason.push_str("; none untried");
            }
            let _ = write!(reason, ": {keep}");
            decision.reason = self.with_blocked(reason, decision);
            return Ok(());
        };
        let share = f64::from(self.state.cfg.attention_exploration);
        let pool = self.state.evidence.pool_ms;
        let stake_ratio = if endorsed.is_some() { 1.0 } else { ratio };
        let stake = EvidenceBook::stake(default_ms, reference, share, stake_ratio);
        if !self.state.evidence.affords(fp, stake, share) {
            let _ = write!(
                reason,
                "; the exploration budget holds {pool:.1} ms, less than the {:.1} ms the most promising untried plan (planner cost {ratio:.2}x) needs: {keep} until the runs repay it",
                stake.min(self.state.evidence.pool_cap(share))
            );
            decision.reason = self.with_blocked(reason, decision);
            return Ok(());
        }
        let _ = write!(
            reason,
            "; exploring the plan of '{}' (the most promising of {distinct} untried; planner cost {ratio:.2}x the default",
            self.arm_name(arm)
        );
        if trained {
            let _ = write!(
                reason,
                ", cost model {:.3} ms vs {:.3} ms (trusted {trust:.2}: it predicts the default's measured {default_ms:.3} ms as {:.3} ms)",
                preds.get(usize::from(arm)).copied().unwrap_or(f32::NAN),
                preds.first().copied().unwrap_or(f32::NAN),
                preds.first().copied().unwrap_or(f32::NAN)
            );
        }
        if let Some(why) = &endorsed {
            let _ = write!(reason, "; {why}");
        }
        let _ = write!(reason, "; exploration budget {pool:.1} ms)");
        let st = &mut self.state.stats;
        st.decisions[decision.rule as usize] =
            st.decisions[decision.rule as usize].saturating_sub(1);
        st.decisions[Rule::Explore as usize] += 1;
        decision.arm = arm;
        decision.rule = Rule::Explore;
        decision.plan = plan;
        decision.predicted_ms = preds.get(usize::from(arm)).copied().unwrap_or(f32::NAN);
        decision.reason = self.with_blocked(reason, decision);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::learning::Rule;
    use alloc::vec;

    #[test]
    fn a_faster_plan_is_explored_verified_and_applied_within_five_runs() {
        let mut opt = learner();
        fund(&mut opt, 10);
        let p = plan(40);
        let w = World::new(&p, 20.0, 115.0);
        let mut rules = Vec::new();
        for _ in 0..6 {
            let (d, _) = step(&mut opt, &p, &w);
            rules.push((d.rule, d.arm));
        }
        // Default first; the cheaper-costed plan (arm 2, 1.1x) is tried first and refuted
        // at once; then arms 1 and 3's plan: explored, one trial run, then verified (5x
        // faster over one default run and two of its own).
        assert_eq!(
            rules,
            vec![
                (Rule::Default, 0),
                (Rule::Explore, 2),
                (Rule::Explore, 1),
                (Rule::Trial, 1),
                (Rule::Verified, 1),
                (Rule::Verified, 1),
            ]
        );
        let e = opt.evidence().get(p.shape_hash()).unwrap();
        assert_eq!(e.plans.len(), 2);
        assert!(e
            .plans
            .iter()
            .any(|x| x.plan == 22 && x.refuted && x.stats.count == 1));
        let (d, _) = step(&mut opt, &p, &w);
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1));
        assert!(
            d.reason.starts_with("verified: the plan of 'nestloop=off'"),
            "{}",
            d.reason
        );
        assert!(d.confidence >= 0.0);
        // The loser never runs again, whatever happens.
        for _ in 0..60 {
            let (d, _) = step(&mut opt, &p, &w);
            assert_ne!(d.arm, 2);
        }
        assert!(opt.evidence().saved_ms > 0.0);
    }

    #[test]
    fn after_a_large_verified_win_a_plan_that_could_lose_more_is_not_explored() {
        let mut opt = learner();
        fund(&mut opt, 10);
        let p = plan(43);
        // Arms 1 and 3: a plan costed 1.1x that runs 50x faster; arm 2: costed 1.3x.
        let mut w = World::new(&p, 2.0, 90.0);
        w.cost = vec![1000.0, 1100.0, 1300.0, 1100.0];
        let mut ran = Vec::new();
        for _ in 0..40 {
            let (d, _) = step(&mut opt, &p, &w);
            ran.push(d.arm);
        }
        assert!(ran.iter().filter(|&&a| a == 1).count() >= 30, "{ran:?}");
        // 1.3 x 100 ms - 2 ms above the verified plan is more than 20 runs of it could save.
        assert!(!ran.contains(&2), "{ran:?}");
        let d = opt.decide(&p).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1), "{}", d.reason);
        assert!(!d.wants_candidates, "{}", d.reason);
        assert!(
            d.reason
                .contains(&format!("than it could save over {RISK_HORIZON} runs")),
            "{}",
            d.reason
        );
        // Had the win been modest, the same plan would be worth a run.
        assert!(EvidenceBook::worth_the_risk(100.0, 50.0, 1.3));
        assert!(!EvidenceBook::worth_the_risk(100.0, 2.0, 1.3));
    }

    #[test]
    fn exploration_waits_for_budget_and_skips_plans_costed_far_above() {
        let mut opt = learner();
        let p = plan(43);
        let mut w = World::new(&p, 20.0, 400.0);
        // The pool holds a little: the best-ranked plan is explored, loses (300 ms over), and
        // the pool stays overdrawn until the runs repay it.
        fund(&mut opt, 2);
        step(&mut opt, &p, &w);
        let (d, o) = step(&mut opt, &p, &w);
        assert_eq!((d.rule, d.arm), (Rule::Explore, 2));
        assert!(o.refuted);
        for _ in 0..20 {
            let (d, _) = step(&mut opt, &p, &w);
            assert_eq!(d.arm, 0);
            assert!(
                d.reason.contains("exploration budget holds"),
                "{}",
                d.reason
            );
        }
        let spent = opt.evidence().spent_ms;
        assert!((spent - 300.0).abs() < 1e-3, "{spent}");
        // Plans costed over 4x the default are not explored blind.
        let mut opt = learner();
        fund(&mut opt, 30);
        w.cost = vec![1000.0, 9000.0, 8000.0, 9000.0];
        step(&mut opt, &p, &w);
        let (d, _) = step(&mut opt, &p, &w);
        assert_eq!(d.arm, 0);
        assert!(d.reason.contains("not explored blind"), "{}", d.reason);
        // Below explore_min_ms nothing is planned at all.
        let mut opt = learner();
        fund(&mut opt, 30);
        w.ms[0] = 2.0;
        step(&mut opt, &p, &w);
        let d = opt.decide(&p).unwrap();
        assert!(
            !d.wants_candidates && d.reason.contains("explore_min_ms"),
            "{}",
            d.reason
        );
    }
}
