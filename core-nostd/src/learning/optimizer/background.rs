//! Exploration off the users' path: what is left to run for a shape
//! ([`Optimizer::left_to_run`]) and what the background explorer runs next
//! ([`Optimizer::explore_step`]). The explorer records the candidates it planned with
//! [`Optimizer::note_candidates`] and its runs with [`Optimizer::observe_run`] and
//! [`super::RunKind::background`]; the evidence test that settles them is the foreground's.

use super::choose::usable_arm;
use super::{Decision, Optimizer, Step};
use crate::learning::evidence::ShapeEvidence;

/// A background candidate run is cut short at this many times the default plan's typical time
/// (plus [`EXPLORE_TIMEOUT_SLACK_MS`]): a plan that slow cannot verify faster, so nothing is
/// lost by not finishing it.
pub const EXPLORE_TIMEOUT_RATIO: f64 = 2.0;
/// Added to every background run's timeout (timer and start-up noise of short statements), ms.
pub const EXPLORE_TIMEOUT_SLACK_MS: f64 = 50.0;
/// Most background runs for one offered statement.
pub const EXPLORE_MAX_RUNS: usize = 24;

/// The timeout of a background run of a candidate plan of a shape whose default plan
/// typically takes `default_ms`, ms.
pub fn explore_timeout_ms(default_ms: f64) -> f64 {
    EXPLORE_TIMEOUT_RATIO * default_ms + EXPLORE_TIMEOUT_SLACK_MS
}

/// How much an endorsement (a similar shape verified the arm, or BTSP memory recalls it much
/// faster) moves an untried plan ahead in the explorer's order (log units of planner cost).
const ENDORSED_FIRST: f64 = 2.0;

impl Optimizer {
    /// Whether anything of shape `e` is left to run for `d`: its candidates were never
    /// planned, a plan is under trial, or a candidate was never run (each by an arm BTSP
    /// memory does not block for the plan).
    pub fn left_to_run(&self, d: &Decision, e: &ShapeEvidence) -> bool {
        let margin = f64::from(self.state.cfg.min_gain);
        !e.candidates_known
            || e.in_trial(margin)
                .is_some_and(|p| usable_arm(p, &d.blocked).is_some())
            || e.untried().any(|p| usable_arm(p, &d.blocked).is_some())
    }

    /// What the background explorer runs next for `d`'s shape (after
    /// [`Optimizer::note_candidates`]): the default plan first; a plan under trial, alternating
    /// with the default plan as the trial rule does, until the evidence settles it; then each
    /// untried plan, endorsed ones first, then by the planner's cost. No budget and no cost
    /// screen: the explorer's runs cost no user any time, and its timeout cuts a loser short.
    pub fn explore_step(&self, d: &Decision) -> Step {
        let margin = f64::from(self.state.cfg.min_gain);
        let Some(e) = self.state.evidence.get(d.fingerprint) else {
            return Step::Default;
        };
        if e.default.count == 0 {
            return Step::Default;
        }
        if let Some(p) = e.in_trial(margin) {
            if let Some(arm) = usable_arm(p, &d.blocked) {
                return if p.stats.count < 2 || p.stats.count <= e.default.count {
                    Step::Plan { arm, plan: p.plan }
                } else {
                    Step::Default
                };
            }
        }
        let rank = |p: &crate::learning::evidence::PlanEvidence| {
            let ratio = if p.cost_ratio > 0.0 {
                f64::from(p.cost_ratio)
            } else {
                1.0
            };
            libm::log(ratio.max(1e-3))
                - if self.endorsed(d, p) {
                    ENDORSED_FIRST
                } else {
                    0.0
                }
        };
        e.untried()
            .filter_map(|p| usable_arm(p, &d.blocked).map(|arm| (rank(p), arm, p.plan)))
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map_or(Step::Done, |(_, arm, plan)| Step::Plan { arm, plan })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::{Candidate, Exploration, Rule, RunKind};
    use super::*;
    use crate::dag::PlanDag;
    use crate::learning::NeuralDagConfig;

    /// One background run of `step` for `p` in world `w`: what the explorer does.
    fn background_run(opt: &mut Optimizer, p: &PlanDag, w: &World, step: Step) {
        let mut d = opt.decide_with(p, Exploration::Explorer).unwrap();
        let (arm, plan) = match step {
            Step::Default => (0, d.fingerprint),
            Step::Plan { arm, plan } => (arm, plan),
            Step::Done => panic!("nothing to run"),
        };
        d.arm = arm;
        d.plan = plan;
        let t = opt
            .trajectory(&d, arm, None, w.ms[usize::from(arm)])
            .unwrap();
        let kind = RunKind {
            cut: false,
            background: true,
        };
        opt.observe_run(t, kind, true).unwrap();
    }

    /// One user execution with the explorer in charge of exploring: what the foreground does.
    fn step_with(opt: &mut Optimizer, p: &PlanDag, w: &World, exploration: Exploration) {
        let d = opt.decide_with(p, exploration).unwrap();
        assert!(!d.wants_candidates && matches!(d.rule, Rule::Default | Rule::Verified));
        let t = opt
            .trajectory(&d, d.arm, None, w.ms[usize::from(d.arm)])
            .unwrap();
        opt.observe(t).unwrap();
    }

    /// Run what the explorer would for `p` until it is done (at most `cap` runs); the runs.
    fn explore(opt: &mut Optimizer, p: &PlanDag, w: &World, cap: usize) -> usize {
        let d = opt.decide_with(p, Exploration::Explorer).unwrap();
        let cands: alloc::vec::Vec<Candidate> = w.candidates(&d);
        opt.note_candidates(d.fingerprint, d.default_cost, &cands)
            .unwrap();
        let mut runs = 0;
        while runs < cap {
            let d = opt.decide_with(p, Exploration::Explorer).unwrap();
            match opt.explore_step(&d) {
                Step::Done => break,
                step => background_run(opt, p, w, step),
            }
            runs += 1;
        }
        runs
    }

    #[test]
    fn the_foreground_asks_for_the_explorer_and_never_explores_itself() {
        let mut opt = learner();
        let p = plan(61);
        let w = World::new(&p, 20.0, 115.0);
        // The default plan's time is measured first, in the user's statement.
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        assert!(!d.background && !d.wants_candidates, "{}", d.reason);
        step_with(&mut opt, &p, &w, Exploration::Explorer);
        // No budget at all: the explorer is still asked for, and the user gets the default.
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        assert!(d.background && !d.wants_candidates, "{}", d.reason);
        assert_eq!((d.arm, d.rule), (0, Rule::Default));
        assert!(d.reason.contains("background explorer"), "{}", d.reason);
        // Nowhere: neither.
        let d = opt.decide_with(&p, Exploration::Nowhere).unwrap();
        assert!(!d.background && !d.wants_candidates, "{}", d.reason);
        assert_eq!(d.arm, 0);
    }

    #[test]
    fn the_explorer_verifies_the_winner_without_spending_the_budget_and_the_foreground_applies_it()
    {
        let mut opt = learner();
        let p = plan(62);
        // Arms 1 and 3 give a 5x faster plan, which the planner costs 50x the default (never
        // explored blind in the foreground: over MAX_COST_RATIO).
        let mut w = World::new(&p, 20.0, 115.0);
        w.cost[1] = 50_000.0;
        w.cost[3] = 50_000.0;
        step_with(&mut opt, &p, &w, Exploration::Explorer);
        let pool = opt.evidence().pool_ms;
        let spent = opt.evidence().spent_ms;
        let runs = explore(&mut opt, &p, &w, 40);
        assert!(runs > 2 && runs < 40, "{runs} runs");
        assert_eq!(opt.evidence().spent_ms, spent);
        assert_eq!(opt.evidence().pool_ms, pool);
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1), "{}", d.reason);
        // Every loser was run once and given up; nothing is left to run.
        let e = opt.evidence().get(d.fingerprint).unwrap();
        assert!(e.plans.iter().all(|q| q.stats.count > 0 || q.arms == 0));
        assert_eq!(opt.explore_step(&d), Step::Done);
        assert!(!d.background, "{}", d.reason);
    }

    #[test]
    fn arms_appended_keep_what_was_learned_and_their_plans_are_explored() {
        use alloc::string::{String, ToString};
        let mut opt = learner();
        let p = plan(64);
        let w = World::new(&p, 20.0, 115.0);
        step_with(&mut opt, &p, &w, Exploration::Explorer);
        explore(&mut opt, &p, &w, 40);
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1), "{}", d.reason);
        let extra: alloc::vec::Vec<String> = ["enable_memoize=off", "join_collapse_limit=1"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let bytes = opt.snapshot().unwrap();
        // Without its model, with an arm listed twice, or over the limit: refused, unchanged.
        let mut lean = Optimizer::restore_lean(&bytes, opt.machinery()).unwrap();
        assert!(matches!(
            lean.append_arms(&extra),
            Err(crate::error::NeuralDagError::ModelNotLoaded(_))
        ));
        let mut full = Optimizer::restore(&bytes).unwrap();
        let twice = [extra[0].clone(), arms()[2].clone()];
        assert!(full.append_arms(&twice).is_err());
        let many: alloc::vec::Vec<String> = (0..crate::learning::reasoning_bank::MAX_ARMS)
            .map(|i| alloc::format!("a{i}=on"))
            .collect();
        assert!(full.append_arms(&many).is_err());
        assert_eq!(full.arms(), opt.arms());
        full.append_arms(&extra).unwrap();
        assert_eq!(full.arms().len(), 6);
        assert_eq!(&full.arms()[4..], &extra[..]);
        // What was learned holds, through a snapshot too.
        let mut full = Optimizer::restore(&full.snapshot().unwrap()).unwrap();
        let d = full.decide_with(&p, Exploration::Explorer).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1), "{}", d.reason);
        // A new shape whose best plan only a new arm makes: explored and verified.
        let q = plan(65);
        let mut w = World::new(&q, 90.0, 115.0);
        w.plans.extend([44, 55]);
        w.cost.extend([1200.0, 1400.0]);
        w.ms.extend([95.0, 10.0]);
        step_with(&mut full, &q, &w, Exploration::Explorer);
        explore(&mut full, &q, &w, 60);
        let d = full.decide_with(&q, Exploration::Explorer).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 5), "{}", d.reason);
    }

    #[test]
    fn a_loser_cut_short_in_the_background_is_given_up_at_once() {
        let mut opt = learner();
        let p = plan(63);
        let w = World::new(&p, 20.0, 115.0);
        step_with(&mut opt, &p, &w, Exploration::Explorer);
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        opt.note_candidates(d.fingerprint, d.default_cost, &w.candidates(&d))
            .unwrap();
        let Step::Plan { arm, plan } = opt.explore_step(&d) else {
            panic!("a candidate is due");
        };
        let mut d = d;
        (d.arm, d.plan) = (arm, plan);
        let t = opt.trajectory(&d, arm, None, 40.0).unwrap();
        let kind = RunKind {
            cut: true,
            background: true,
        };
        let o = opt.observe_run(t, kind, true).unwrap();
        assert!(o.refuted);
        let d = opt.decide_with(&p, Exploration::Explorer).unwrap();
        assert_ne!(opt.explore_step(&d), Step::Plan { arm, plan });
    }

    /// A learner whose state has every kind of shape: verified plans, refuted candidates, a
    /// plan BTSP memory blocks, trained cost model and patterns.
    fn trained() -> (Optimizer, alloc::vec::Vec<PlanDag>) {
        let mut opt = learner();
        let plans: alloc::vec::Vec<PlanDag> = (0..10).map(|i| plan(200 + i)).collect();
        for round in 0..4 {
            for (i, p) in plans.iter().enumerate() {
                // Even shapes have a fast candidate, odd ones only losers (one catastrophic).
                let (fast, slow) = if i % 2 == 0 {
                    (30.0, 150.0)
                } else {
                    (160.0, 900.0)
                };
                let w = World::new(p, fast, slow);
                step_with(&mut opt, p, &w, Exploration::Explorer);
                if round == 1 {
                    explore(&mut opt, p, &w, 24);
                }
            }
            opt.learn_cycle().unwrap();
        }
        (opt, plans)
    }

    #[test]
    fn a_lean_decision_decides_as_the_full_one_and_its_runs_complete_to_the_same_trajectory() {
        let (mut opt, plans) = trained();
        let (mut verified, mut blocked) = (0, 0);
        for p in &plans {
            for ex in [Exploration::Explorer, Exploration::Nowhere] {
                let full = opt.decide_with(p, ex).unwrap();
                let lean = opt.decide_lean(p, ex).unwrap();
                assert!(full.model_view && !lean.model_view);
                assert_eq!(
                    (lean.arm, lean.rule, lean.plan, lean.fingerprint),
                    (full.arm, full.rule, full.plan, full.fingerprint)
                );
                assert_eq!(
                    (&lean.blocked, &lean.promising),
                    (&full.blocked, &full.promising)
                );
                assert_eq!(lean.reason, full.reason);
                assert_eq!(
                    (lean.wants_candidates, lean.background, lean.default_cost),
                    (full.wants_candidates, full.background, full.default_cost)
                );
                assert_eq!(lean.key, full.key);
                assert!(lean.input.is_empty() && lean.predicted_ms.is_nan());
                // Its view filled in afterwards (what EXPLAIN prints): the full decision's.
                let mut shown = lean.clone();
                opt.fill_model_view(&mut shown, p).unwrap();
                assert!(shown.model_view);
                assert_eq!(
                    (
                        shown.pattern,
                        shown.similarity,
                        shown.confidence,
                        shown.attention
                    ),
                    (
                        full.pattern,
                        full.similarity,
                        full.confidence,
                        full.attention
                    )
                );
                assert_eq!(
                    (shown.predicted_ms, shown.default_predicted_ms),
                    (full.predicted_ms, full.default_predicted_ms)
                );
                assert_eq!((&shown.hdc, &shown.input), (&full.hdc, &full.input));
                assert_eq!((shown.arm, &shown.reason), (full.arm, &full.reason));
                verified += usize::from(full.rule == Rule::Verified);
                blocked += usize::from(!full.blocked.is_empty());
                // Its runs, completed where the model is, are the full decision's trajectories:
                // the arm it chose and another, with and without the executed plan.
                for (arm, executed) in [(full.arm, None), (0, Some(p)), (2, Some(p))] {
                    let want = opt.trajectory(&full, arm, executed, 37.5).unwrap();
                    let mut got = opt.trajectory(&lean, arm, executed, 37.5).unwrap();
                    assert!(got.input.is_empty() && got.executed.is_empty());
                    opt.complete_trajectory(&mut got, p, executed).unwrap();
                    assert_eq!(got, want);
                }
            }
        }
        // The state had something to decide on: verified plans and a BTSP block.
        assert!(
            verified > 0 && blocked > 0,
            "verified {verified}, blocked {blocked}"
        );
        // Where the statement itself may explore, a lean decision is the full one.
        let mut here = learner();
        let d = here.decide_lean(&plans[0], Exploration::Here).unwrap();
        assert!(d.model_view);
    }

    #[test]
    fn a_decision_on_what_another_recalled_is_the_lean_one_and_its_runs_teach_the_same_evidence() {
        use crate::error::NeuralDagError;
        let (mut opt, plans) = trained();
        let cfg = opt.config().clone();
        let mut rules =
            Optimizer::rules_only(cfg.clone(), opt.arms().to_vec(), opt.machinery()).unwrap();
        assert!(rules.is_rules_only() && !rules.has_model() && !opt.is_rules_only());
        let (mut verified, mut blocked, mut background) = (0, 0, 0);
        // And a shape whose default plan alone was measured: its candidates wait for the
        // explorer.
        let fresh = plan(999);
        for _ in 0..3 {
            run(&mut opt, &fresh, 0, 100.0);
        }
        for p in plans.iter().chain([&fresh]) {
            let fp = p.shape_hash();
            for ex in [Exploration::Explorer, Exploration::Nowhere] {
                let lean = opt.decide_lean(p, ex).unwrap();
                let recalled = lean.recalled().unwrap();
                // The rules copy holds nothing of its own: the host brings the shape's evidence in.
                rules
                    .evidence_mut()
                    .put(fp, opt.evidence().get(fp).cloned());
                rules.evidence_mut().set_budget(&opt.evidence().budget());
                let got = rules.decide_recalled(p, &recalled, ex).unwrap();
                assert!(got.recalled && !got.model_view && got.recalled().is_none());
                assert_eq!(
                    (got.arm, got.rule, got.plan, got.fingerprint, &got.reason),
                    (
                        lean.arm,
                        lean.rule,
                        lean.plan,
                        lean.fingerprint,
                        &lean.reason
                    )
                );
                assert_eq!(
                    (got.wants_candidates, got.background, got.default_cost),
                    (lean.wants_candidates, lean.background, lean.default_cost)
                );
                assert_eq!((&got.blocked, &got.key), (&lean.blocked, &lean.key));
                verified += usize::from(lean.rule == Rule::Verified);
                blocked += usize::from(!lean.blocked.is_empty());
                background += usize::from(lean.background);
            }
            // A run of what it decided teaches the rules copy the evidence the learned copy
            // learns from the lean decision's run.
            let lean = opt.decide_lean(p, Exploration::Explorer).unwrap();
            let got = rules
                .decide_recalled(p, &lean.recalled().unwrap(), Exploration::Explorer)
                .unwrap();
            let mut twin =
                Optimizer::restore_sharing(&opt.snapshot().unwrap(), opt.machinery()).unwrap();
            let a = twin.trajectory(&lean, lean.arm, None, 42.0).unwrap();
            let b = rules.trajectory(&got, got.arm, None, 42.0).unwrap();
            twin.observe_unqueued(a).unwrap();
            rules.observe_unqueued(b).unwrap();
            // (`seen` is each copy's own clock of use.)
            let unclocked = |o: &Optimizer| {
                o.evidence().get(fp).cloned().map(|mut e| {
                    e.seen = 0;
                    e
                })
            };
            assert_eq!(unclocked(&rules), unclocked(&twin));
            assert!(unclocked(&rules).is_some());
        }
        assert!(
            verified > 0 && blocked > 0 && background > 0,
            "verified {verified}, blocked {blocked}, background {background}"
        );
        // Refused: the statement itself exploring, another shape, a key or an arm that does not
        // fit; and the rules copy never loads a model.
        let p = &plans[0];
        let recalled = opt
            .decide_lean(p, Exploration::Explorer)
            .unwrap()
            .recalled()
            .unwrap();
        let mut exploring = Optimizer::rules_only(
            NeuralDagConfig {
                learning_enabled: true,
                attention_exploration: 0.1,
                ..cfg.clone()
            },
            opt.arms().to_vec(),
            opt.machinery(),
        )
        .unwrap();
        assert!(matches!(
            exploring.decide_recalled(p, &recalled, Exploration::Here),
            Err(NeuralDagError::ModelNotLoaded(_))
        ));
        let shape = |r: Result<Decision, NeuralDagError>, what: &str| match r {
            Err(NeuralDagError::InvalidDagStructure(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{other:?}"),
        };
        shape(
            rules.decide_recalled(&plans[1], &recalled, Exploration::Explorer),
            "given for a plan of shape",
        );
        let mut short = recalled.clone();
        short.key.pop();
        shape(
            rules.decide_recalled(p, &short, Exploration::Explorer),
            "recalled key",
        );
        let mut foreign = recalled.clone();
        foreign.blocked.push(9);
        shape(
            rules.decide_recalled(p, &foreign, Exploration::Explorer),
            "does not have",
        );
        assert!(matches!(
            rules.load_model(&opt.snapshot_model().unwrap()),
            Err(NeuralDagError::ModelNotLoaded(_))
        ));
    }

    #[test]
    fn the_recall_digest_moves_with_btsp_memory_the_arms_and_the_configuration_only() {
        let (mut opt, plans) = trained();
        let d = opt.recall_digest().unwrap();
        // A copy restored, lean or not, has it; training the model does not move it.
        let bytes = opt.snapshot_model().unwrap();
        let lean = Optimizer::restore_lean(&bytes, opt.machinery()).unwrap();
        assert_eq!(lean.recall_digest().unwrap(), d);
        opt.learn_cycle().unwrap();
        assert_eq!(opt.recall_digest().unwrap(), d);
        // A surprising run writes BTSP memory: it moves.
        let p = &plans[0];
        let dec = opt.decide_lean(p, Exploration::Nowhere).unwrap();
        let t = opt.trajectory(&dec, 3, None, 100_000.0).unwrap();
        let o = opt.observe_unqueued(t).unwrap();
        assert!(o.surprising);
        let written = opt.recall_digest().unwrap();
        assert_ne!(written, d);
        // So do a tunable and another arm list.
        let mut tuned = opt.config().clone();
        tuned.min_gain += 0.01;
        opt.retune(&tuned).unwrap();
        assert_ne!(opt.recall_digest().unwrap(), written);
        let mut more = Optimizer::restore_sharing(&bytes, opt.machinery()).unwrap();
        more.append_arms(&["enable_material=off".into()]).unwrap();
        assert_ne!(more.recall_digest().unwrap(), d);
    }

    #[test]
    fn a_copy_restored_lean_decides_as_the_full_one_and_loads_its_model_when_asked() {
        use crate::error::NeuralDagError;
        let (opt, plans) = trained();
        let bytes = opt.snapshot_model().unwrap();
        let m = opt.machinery();
        let mut full = Optimizer::restore_sharing(&bytes, m).unwrap();
        let mut lean = Optimizer::restore_lean(&bytes, m).unwrap();
        assert!(full.has_model() && !lean.has_model());
        for p in &plans {
            for ex in [Exploration::Explorer, Exploration::Nowhere] {
                let a = full.decide_lean(p, ex).unwrap();
                let b = lean.decide_lean(p, ex).unwrap();
                assert_eq!(
                    (
                        a.arm,
                        a.rule,
                        a.plan,
                        &a.key,
                        &a.blocked,
                        &a.promising,
                        &a.reason
                    ),
                    (
                        b.arm,
                        b.rule,
                        b.plan,
                        &b.key,
                        &b.blocked,
                        &b.promising,
                        &b.reason
                    )
                );
                assert_eq!(
                    (a.background, a.default_cost),
                    (b.background, b.default_cost)
                );
            }
        }
        // It learns a lean run's evidence as the full copy does.
        let p = &plans[3];
        let d = lean.decide_lean(p, Exploration::Explorer).unwrap();
        full.decide_lean(p, Exploration::Explorer).unwrap();
        let t = lean.trajectory(&d, 0, None, 71.0).unwrap();
        full.observe_unqueued(t.clone()).unwrap();
        lean.observe_unqueued(t).unwrap();
        assert_eq!(
            lean.evidence().get(p.shape_hash()),
            full.evidence().get(p.shape_hash())
        );
        // Whatever needs the model is refused by name, and nothing is written without it.
        let refused = |r: Result<(), NeuralDagError>| {
            assert!(matches!(r, Err(NeuralDagError::ModelNotLoaded(_))), "{r:?}")
        };
        refused(lean.decide_with(p, Exploration::Explorer).map(|_| ()));
        let mut shown = d.clone();
        refused(lean.fill_model_view(&mut shown, p));
        let mut t = lean.trajectory(&d, 0, None, 71.0).unwrap();
        refused(lean.complete_trajectory(&mut t, p, None));
        refused(lean.predict_ms(p, 1).map(|_| ()));
        refused(lean.learn_cycle().map(|_| ()));
        refused(lean.snapshot().map(|_| ()));
        refused(lean.snapshot_model().map(|_| ()));
        let mut wants = d.clone();
        wants.wants_candidates = true;
        refused(lean.choose(&mut wants, &[]));
        // Another snapshot's model is refused and leaves it lean; a damaged model too (the
        // lean restore never read it); its own loads, keeping what it learned since.
        let mut other = Optimizer::restore_sharing(&bytes, m).unwrap();
        other
            .observe_unqueued(lean.trajectory(&d, 0, None, 5.0).unwrap())
            .unwrap();
        let other_bytes = other.snapshot_model().unwrap();
        assert!(matches!(
            lean.load_model(&other_bytes),
            Err(NeuralDagError::CorruptState(_))
        ));
        let mut damaged = bytes.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x10;
        assert!(Optimizer::restore_lean(&damaged, m).is_ok());
        match lean.load_model(&damaged) {
            Err(NeuralDagError::CorruptState(e)) => assert!(e.contains("checksum"), "{e}"),
            r => panic!("{r:?}"),
        }
        assert!(!lean.has_model());
        lean.load_model(&bytes).unwrap();
        assert!(lean.has_model());
        assert!(lean.snapshot_model().unwrap() == full.snapshot_model().unwrap());
        let (a, b) = (
            full.decide_with(p, Exploration::Explorer).unwrap(),
            lean.decide_with(p, Exploration::Explorer).unwrap(),
        );
        assert_eq!(
            (a.pattern, a.predicted_ms, &a.input),
            (b.pattern, b.predicted_ms, &b.input)
        );
        // Learning rates retuned before the model is loaded apply to it, as to a full copy.
        let mut cfg = full.config().clone();
        cfg.micro_lora_lr *= 0.5;
        cfg.ewc_lambda *= 2.0;
        let mut full = Optimizer::restore_sharing(&bytes, m).unwrap();
        let mut lean = Optimizer::restore_lean(&bytes, m).unwrap();
        full.retune(&cfg).unwrap();
        lean.retune(&cfg).unwrap();
        lean.load_model(&bytes).unwrap();
        assert!(lean.snapshot_model().unwrap() == full.snapshot_model().unwrap());
        // A damaged head is refused by the lean restore itself.
        let mut bad_head = bytes.clone();
        bad_head[20 + 4 + 12 + 3] ^= 0x01;
        match Optimizer::restore_lean(&bad_head, m) {
            Err(NeuralDagError::CorruptState(e)) => assert!(e.contains("head"), "{e}"),
            r => panic!("{:?}", r.map(|_| ())),
        }
    }

    #[test]
    fn a_run_without_the_model_view_teaches_a_copy_its_evidence_and_is_never_queued() {
        let (mut opt, plans) = trained();
        let p = &plans[1];
        let mut twin = Optimizer::restore(&opt.snapshot().unwrap()).unwrap();
        let full = opt.decide_with(p, Exploration::Explorer).unwrap();
        let lean = twin.decide_lean(p, Exploration::Explorer).unwrap();
        let a = opt.trajectory(&full, 0, None, 99.0).unwrap();
        let b = twin.trajectory(&lean, 0, None, 99.0).unwrap();
        // Queued incomplete: refused, nothing learned.
        let before = twin.evidence().get(p.shape_hash()).cloned();
        assert!(twin.observe(b.clone()).is_err());
        assert_eq!(twin.evidence().get(p.shape_hash()).cloned(), before);
        // Unqueued (a backend's copy): the same evidence as the full run.
        opt.observe_unqueued(a).unwrap();
        twin.observe_unqueued(b.clone()).unwrap();
        assert_eq!(
            twin.evidence().get(p.shape_hash()),
            opt.evidence().get(p.shape_hash())
        );
        // Its view asked for on another shape's plan: refused, left without it.
        let mut shown = lean.clone();
        assert!(twin.fill_model_view(&mut shown, &plans[2]).is_err());
        assert!(!shown.model_view && shown.input.is_empty());
        // Completed with another shape's plan: refused.
        let mut c = b;
        assert!(twin.complete_trajectory(&mut c, &plans[2], None).is_err());
        assert!(c.input.is_empty());
    }
}
