//! Learning from what ran: [`Optimizer::trajectory`] builds the record of one execution,
//! [`Optimizer::observe`] learns from it at once (evidence and budget, selector reward,
//! MicroLoRA step, BTSP write, the matched pattern's statistics, temporal history), and
//! [`Optimizer::learn_cycle`] is the background cycle (BaseLoRA and the heads under EWC++ with
//! rehearsal, MicroLoRA merged, K-means++ patterns).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{
    CycleReport, Decision, Observed, Optimizer, RunKind, CYCLE_EPOCHS, HISTORY_LEN, HISTORY_SHAPES,
    REHEARSAL,
};
use crate::attention::AttentionKind;
use crate::dag::PlanDag;
use crate::embed::EMBED_DIM;
use crate::error::{NeuralDagError, Result};
use crate::learning::reasoning_bank::MERGE_COSINE;
use crate::learning::{ArmId, AttentionSelector, Trajectory};

impl Optimizer {
    /// The trajectory of one execution of `decision`'s query: `arm` is the arm that really ran
    /// (the default in observe mode), `executed` the executed plan with its measurements when
    /// instrumented, `actual_ms` the execution time.
    pub fn trajectory(
        &self,
        decision: &Decision,
        arm: ArmId,
        executed: Option<&PlanDag>,
        actual_ms: f32,
    ) -> Result<Trajectory> {
        // A lean decision leaves the executed plan's embedding, like the rest of the model's
        // view, to `complete_trajectory`.
        let (exec_embedding, op_shares) = match executed {
            Some(dag) if decision.model_view => (
                self.executed_embedding(dag, decision.attention, decision.fingerprint)?,
                dag.measured_shares().unwrap_or_default(),
            ),
            Some(dag) => (Vec::new(), dag.measured_shares().unwrap_or_default()),
            None => (Vec::new(), Vec::new()),
        };
        let plan = match executed {
            Some(dag) => dag.shape_hash(),
            None if arm == decision.arm => decision.plan,
            None if arm == 0 => decision.fingerprint,
            // Another arm ran and its plan is unknown: a plan of its own, per arm.
            None => decision.fingerprint ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(arm))),
        };
        let predicted_ms = if arm == decision.arm || !decision.model_view {
            decision.predicted_ms
        } else {
            self.state
                .estimator
                .predict_ms(&decision.input, usize::from(arm))
                .unwrap_or(f32::NAN)
        };
        Ok(Trajectory {
            fingerprint: decision.fingerprint,
            hdc: decision.hdc.clone(),
            key: decision.key.clone(),
            input: decision.input.clone(),
            executed: exec_embedding,
            attention: decision.attention,
            pattern: decision
                .pattern
                .filter(|_| decision.similarity >= MERGE_COSINE),
            arm,
            plan,
            predicted_ms,
            actual_ms,
            op_shares,
            quality: 0.0,
        })
    }

    /// Complete the trajectory of a run decided without the model's view
    /// ([`decide_lean`](Self::decide_lean)): its HDC fingerprint, the estimator's input, the
    /// attention kind and the prediction for the arm that ran, the matching pattern, and the
    /// executed plan's embedding, computed by this optimizer from `default` (the default plan
    /// the decision was made on) and `executed` (the executed plan with its measurements, when
    /// instrumented). The result is what [`trajectory`](Self::trajectory) gives for the same
    /// run decided with [`decide_with`](Self::decide_with) by an optimizer in this state. A
    /// complete trajectory is left as it is.
    pub fn complete_trajectory(
        &self,
        t: &mut Trajectory,
        default: &PlanDag,
        executed: Option<&PlanDag>,
    ) -> Result<()> {
        if !t.input.is_empty() {
            return Ok(());
        }
        if default.shape_hash() != t.fingerprint {
            return Err(NeuralDagError::InvalidTrajectory(format!(
                "the default plan given (shape {:016x}) is not the trajectory's ({:016x})",
                default.shape_hash(),
                t.fingerprint
            )));
        }
        let (d, preds) = self.prepare(default)?;
        if let Some(dag) = executed {
            t.executed = self.executed_embedding(dag, d.attention, d.fingerprint)?;
        }
        t.predicted_ms = preds.get(usize::from(t.arm)).copied().unwrap_or(f32::NAN);
        t.pattern = d.pattern.filter(|_| d.similarity >= MERGE_COSINE);
        t.attention = d.attention;
        t.hdc = d.hdc;
        t.key = d.key;
        t.input = d.input;
        Ok(())
    }

    /// The executed plan's embedding under `attention` (empty when a plugin fails on it).
    fn executed_embedding(
        &self,
        dag: &PlanDag,
        attention: AttentionKind,
        fingerprint: u64,
    ) -> Result<Vec<f32>> {
        match self.embed_as(dag, attention, fingerprint) {
            Ok(e) => Ok(e),
            // A plugin that fails on the executed plan leaves its embedding unknown.
            Err(_) if !attention.is_builtin() => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    /// [`check`](Self::check) for a trajectory to queue (or queued): it must be complete.
    pub(super) fn check_queued(&self, t: &Trajectory) -> Result<()> {
        if t.input.is_empty() {
            return Err(NeuralDagError::InvalidTrajectory(
                "a trajectory without the model's view is completed before it is queued".into(),
            ));
        }
        self.check(t)
    }

    pub(super) fn check(&self, t: &Trajectory) -> Result<()> {
        let bad = |m: String| Err(NeuralDagError::InvalidTrajectory(m));
        // Not completed yet (a lean decision's run): no input; see `observe_inner`.
        if t.key.len() != EMBED_DIM || !(t.input.is_empty() || t.input.len() == EMBED_DIM) {
            return bad(format!(
                "key and input embeddings have {} and {} values, want {EMBED_DIM}",
                t.key.len(),
                t.input.len()
            ));
        }
        if !(t.executed.is_empty() || t.executed.len() == EMBED_DIM) {
            return bad(format!(
                "executed embedding has {} values, want {EMBED_DIM}",
                t.executed.len()
            ));
        }
        if let Some(x) = t
            .key
            .iter()
            .chain(&t.input)
            .chain(&t.executed)
            .chain(&t.op_shares)
            .find(|x| !x.is_finite())
        {
            return bad(format!("an embedding or share is {x}"));
        }
        if usize::from(t.arm) >= self.state.arms.len() {
            return bad(format!(
                "arm {} does not exist ({} arms)",
                t.arm,
                self.state.arms.len()
            ));
        }
        if !(t.actual_ms.is_finite()
            && t.actual_ms > 0.0
            && f64::from(t.actual_ms) < crate::dag::MAX_MS)
        {
            return bad(format!(
                "actual_ms {} is not a plausible duration",
                t.actual_ms
            ));
        }
        Ok(())
    }

    /// Learn from one execution at once: selector reward, MicroLoRA step, BTSP write, the
    /// matched pattern's statistics, the default-arm baseline; then queue it for the cycle.
    pub fn observe(&mut self, t: Trajectory) -> Result<Observed> {
        self.observe_run(t, RunKind::default(), true)
    }

    /// [`observe`](Self::observe) for a copy of the learned state that never runs a cycle (a
    /// PostgreSQL backend, whose learner observes the same execution and queues it there):
    /// everything `observe` learns at once, so that this copy's next decisions use it, but the
    /// trajectory is not queued, so the copy does not grow with what it executes.
    pub fn observe_unqueued(&mut self, t: Trajectory) -> Result<Observed> {
        self.observe_run(t, RunKind::default(), false)
    }

    /// [`observe`](Self::observe) of an execution cut short (a statement timeout, a cancel, an
    /// error) after `t.actual_ms`: it is at least that slow, and may never finish. Learned as a
    /// run of that time; then its plan, when not the default plan, is given up for the shape at
    /// once whatever its runs said (a verified plan is reverted, a plan in trial or explored
    /// refuted), never to be tried again, and the run is reported as a regression. `queue`: as
    /// `observe` (true) or [`observe_unqueued`](Self::observe_unqueued) (false).
    pub fn observe_cut_short(&mut self, t: Trajectory, queue: bool) -> Result<Observed> {
        let kind = RunKind {
            cut: true,
            background: false,
        };
        self.observe_run(t, kind, queue)
    }

    /// Learn from one run that ended as `kind` says: a run cut short as
    /// [`observe_cut_short`](Self::observe_cut_short), a background run without touching the
    /// exploration budget; `queue` as [`observe`](Self::observe) (true) or
    /// [`observe_unqueued`](Self::observe_unqueued) (false).
    pub fn observe_run(&mut self, t: Trajectory, kind: RunKind, queue: bool) -> Result<Observed> {
        let (fingerprint, plan) = (t.fingerprint, t.plan);
        let mut o = self.observe_inner(t, queue, Some(kind.background))?;
        if !kind.cut || !o.learned || plan == fingerprint {
            return Ok(o);
        }
        let r = self.state.evidence.refute(fingerprint, plan);
        o.refuted |= r.refuted;
        o.reverted |= r.reverted;
        o.regression = true;
        Ok(o)
    }

    /// [`observe`](Self::observe) of a run whose evidence was recorded where it ran (a
    /// PostgreSQL backend, into the evidence book it shares with every other backend): the
    /// learner queues it and learns everything else from it (cost model, selector, BTSP
    /// memory, patterns, history) but leaves the shape's evidence and the budget as they are.
    pub fn observe_recorded(&mut self, t: Trajectory) -> Result<Observed> {
        self.observe_inner(t, true, None)
    }

    /// `evidence`: record the run in the evidence book (Some(background)), or not (None).
    fn observe_inner(
        &mut self,
        t: Trajectory,
        queue: bool,
        evidence: Option<bool>,
    ) -> Result<Observed> {
        // A run decided without the model's view: this copy learns what needs no model (the
        // evidence, BTSP memory, the operator history); the learner completes it
        // (`complete_trajectory`) and learns the rest. It is never queued incomplete.
        let checked = if queue {
            self.check_queued(&t)
        } else {
            self.check(&t)
        };
        if let Err(e) = checked {
            self.state.stats.rejected += 1;
            return Err(e);
        }
        // The model learns from a complete trajectory, where it is loaded (a copy restored
        // lean learns the rest, as from an incomplete one).
        let complete = !t.input.is_empty() && self.lean.is_none();
        if !self.state.cfg.learning_enabled {
            return Ok(Observed {
                learned: false,
                quality: 0.0,
                baseline_ms: None,
                surprising: false,
                verified: false,
                refuted: false,
                reverted: false,
                regression: false,
            });
        }
        let st = &mut self.state;
        // An untrained model's errors say nothing about the attention kind: the selector
        // learns from predictions made after the first background cycle.
        if complete && st.estimator.trained_batches() > 0 {
            let reward = AttentionSelector::reward(t.predicted_ms, t.actual_ms);
            match t.attention {
                AttentionKind::Plugin(id) => self.plugin_arms.update(id, reward),
                kind => st.selector.update(kind, reward),
            }
        }
        if complete {
            st.estimator
                .observe(&t.input, usize::from(t.arm), t.actual_ms);
        }
        let baseline_ms = st
            .evidence
            .get(t.fingerprint)
            .and_then(|e| e.default_ms())
            .map(|b| b as f32);
        let (ms, margin) = (f64::from(t.actual_ms), f64::from(st.cfg.min_gain));
        let recorded = match evidence {
            Some(true) => st
                .evidence
                .record_background(t.fingerprint, t.plan, t.arm, ms, margin),
            Some(false) => {
                let share = f64::from(st.cfg.attention_exploration);
                st.evidence
                    .record(t.fingerprint, t.plan, t.arm, ms, share, margin)
            }
            None => Default::default(),
        };
        let mut surprising = false;
        if t.plan != t.fingerprint {
            if let Some(b) = baseline_ms {
                surprising = st.btsp.observe(&t.key, t.arm, t.actual_ms, b);
                st.stats.btsp_writes += u64::from(surprising);
            }
        }
        if let Some(id) = t.pattern.filter(|_| complete) {
            st.bank.observe(id, t.plan_arm(), f64::from(t.actual_ms));
        }
        if !t.op_shares.is_empty() {
            if st.history.len() >= HISTORY_SHAPES && !st.history.contains_key(&t.fingerprint) {
                st.history.pop_first();
            }
            let h = st.history.entry(t.fingerprint).or_default();
            if h.len() == HISTORY_LEN {
                h.remove(0);
            }
            h.push(t.op_shares.clone());
        }
        st.stats.observed += 1;
        let actual_ms = t.actual_ms;
        let quality = if queue {
            st.buffer.record(t)
        } else {
            st.buffer.note(t.fingerprint, actual_ms)
        };
        Ok(Observed {
            learned: true,
            quality,
            baseline_ms,
            surprising,
            verified: recorded.verified,
            refuted: recorded.refuted,
            reverted: recorded.reverted,
            regression: recorded.reverted
                || (surprising && baseline_ms.is_some_and(|b| actual_ms > b)),
        })
    }

    /// The background cycle: drain the trajectories, train BaseLoRA under EWC++, merge
    /// MicroLoRA, and fold the trajectories not yet counted in a pattern into the ReasoningBank.
    pub fn learn_cycle(&mut self) -> Result<CycleReport> {
        self.model_loaded("a learning cycle")?;
        let st = &mut self.state;
        st.estimator.flush();
        let ts = st.buffer.drain();
        if ts.is_empty() {
            return Ok(CycleReport {
                patterns: st.bank.patterns().len(),
                boundaries: st.estimator.boundaries,
                ..CycleReport::default()
            });
        }
        let samples: Vec<(&[f32], usize, f32)> = ts
            .iter()
            .map(|t| (t.input.as_slice(), usize::from(t.arm), t.actual_ms))
            .collect();
        let rehearsal: Vec<(&[f32], usize, f32)> = st
            .rehearsal
            .iter()
            .map(|(e, a, ms)| (e.as_slice(), usize::from(*a), *ms))
            .collect();
        let loss_before = st.estimator.train(&samples, &rehearsal, CYCLE_EPOCHS, true);
        for t in ts.iter().rev().take(REHEARSAL).rev() {
            if st.rehearsal.len() == REHEARSAL {
                st.rehearsal.pop_front();
            }
            st.rehearsal
                .push_back((t.input.clone(), t.arm, t.actual_ms));
        }
        st.estimator.merge_micro();
        let total = ts.len();
        let fresh: Vec<Trajectory> = ts.into_iter().filter(|t| t.pattern.is_none()).collect();
        let created = st.bank.learn(
            &fresh,
            st.cfg.pattern_clusters,
            st.cfg.quality_threshold,
            st.cfg.seed ^ st.stats.cycles,
        );
        st.stats.cycles += 1;
        Ok(CycleReport {
            trajectories: total,
            clustered: fresh.len(),
            patterns_created: created,
            patterns: st.bank.patterns().len(),
            loss_before,
            boundaries: st.estimator.boundaries,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::learning::optimizer::Rule;
    use crate::learning::NeuralDagConfig;
    use alloc::string::ToString;
    use alloc::vec;

    #[test]
    fn observing_unqueued_learns_the_same_at_once_and_queues_nothing() {
        // A backend's copy (unqueued) and the learner (queued) see the same executions.
        let (mut queued, mut copy) = (learner(), learner());
        let (p, q) = (plan(2), plan(3));
        let runs: Vec<(&PlanDag, ArmId, f32)> = (0..12)
            .map(|i| match i % 4 {
                0 => (&p, 0, 100.0),
                1 => (&q, 0, 60.0 + i as f32),
                2 => (&p, 2, 40.0),
                _ => (&q, 3, 55.0),
            })
            .chain([(&p, 1, 10_000.0)]) // a catastrophe: BTSP blocks arm 1 for p
            .collect();
        for &(dag, arm, ms) in &runs {
            let (dq, dc) = (queued.decide(dag).unwrap(), copy.decide(dag).unwrap());
            assert_eq!((dq.arm, &dq.reason), (dc.arm, &dc.reason));
            let tq = queued.trajectory(&dq, arm, None, ms).unwrap();
            let tc = copy.trajectory(&dc, arm, None, ms).unwrap();
            assert_eq!(
                queued.observe(tq).unwrap(),
                copy.observe_unqueued(tc).unwrap()
            );
        }
        assert_eq!(queued.pending(), runs.len());
        assert_eq!(copy.pending(), 0);
        for dag in [&p, &q] {
            let (dq, dc) = (queued.decide(dag).unwrap(), copy.decide(dag).unwrap());
            assert_eq!(
                (dq.arm, &dq.blocked, &dq.reason, dq.predicted_ms),
                (dc.arm, &dc.blocked, &dc.reason, dc.predicted_ms)
            );
        }
        assert_eq!(copy.decide(&p).unwrap().blocked, vec![1]);
        assert_eq!(copy.btsp().len(), queued.btsp().len());
        assert_eq!(copy.evidence().len(), queued.evidence().len());
    }

    /// A store that holds every shape's evidence and the budget for several copies (what the
    /// extension keeps in shared memory), and the protocol a copy follows with it.
    #[derive(Default)]
    struct Store {
        shapes: alloc::collections::BTreeMap<u64, crate::learning::ShapeEvidence>,
        budget: crate::learning::Budget,
    }

    impl Store {
        fn bring_in(&self, opt: &mut Optimizer, fp: u64) {
            let e = self.shapes.get(&fp).cloned();
            opt.evidence_mut().put(fp, e);
            opt.evidence_mut().set_budget(&self.budget);
        }

        /// Bring the shape in, run `f`, write back the shape and what `f` changed of the budget.
        fn update<R>(
            &mut self,
            opt: &mut Optimizer,
            fp: u64,
            f: impl FnOnce(&mut Optimizer) -> R,
        ) -> R {
            self.bring_in(opt, fp);
            let before = opt.evidence().budget();
            let r = f(opt);
            let delta = opt.evidence().budget().since(&before);
            let (mut ms, mut counts) = self.budget.fields();
            for i in 0..4 {
                ms[i] += delta.ms[i];
                counts[i] += delta.counts[i];
            }
            self.budget = crate::learning::Budget::from_fields(ms, counts);
            if let Some(e) = opt.evidence().get(fp) {
                self.shapes.insert(fp, e.clone());
            }
            r
        }
    }

    #[test]
    fn copies_sharing_one_evidence_store_decide_as_one_optimizer_would() {
        // Three backends' copies take turns with one store; a single optimizer sees every run.
        let mut one = learner();
        let mut copies = [learner(), learner(), learner()];
        let mut store = Store::default();
        let shapes: Vec<PlanDag> = (0..3).map(|i| plan(140 + i)).collect();
        let worlds: Vec<World> = shapes.iter().map(|p| World::new(p, 20.0, 115.0)).collect();
        let mut applied = 0;
        for i in 0..36 {
            let k = i % shapes.len();
            let (p, w) = (&shapes[k], &worlds[k]);
            let fp = p.shape_hash();
            let (d1, _) = step(&mut one, p, w);
            let c = &mut copies[(i / 2) % 3];
            store.bring_in(c, fp);
            let mut d = c.decide(p).unwrap();
            if d.wants_candidates {
                let cands = w.candidates(&d);
                store.update(c, fp, |c| c.choose(&mut d, &cands)).unwrap();
            }
            assert_eq!(
                (d.arm, d.rule, &d.reason),
                (d1.arm, d1.rule, &d1.reason),
                "run {i}"
            );
            applied += usize::from(d.rule == Rule::Verified);
            let t = c
                .trajectory(&d, d.arm, None, w.ms[usize::from(d.arm)])
                .unwrap();
            store.update(c, fp, |c| c.observe_unqueued(t)).unwrap();
        }
        assert!(applied > 0, "no copy applied a verified plan");
        for p in &shapes {
            let fp = p.shape_hash();
            let (mut a, mut b) = (
                one.evidence().get(fp).unwrap().clone(),
                store.shapes[&fp].clone(),
            );
            (a.seen, b.seen) = (0, 0);
            assert_eq!(a, b);
        }
        assert_eq!(
            one.evidence().budget().explorations,
            store.budget.explorations
        );
        assert!((one.evidence().pool_ms - store.budget.pool_ms).abs() < 1e-6);
    }

    #[test]
    fn observing_a_run_recorded_elsewhere_leaves_the_evidence_as_it_is() {
        let mut opt = learner();
        let p = plan(150);
        let d = opt.decide(&p).unwrap();
        let t = opt.trajectory(&d, 0, None, 80.0).unwrap();
        let o = opt.observe_recorded(t).unwrap();
        assert!(o.learned);
        assert!(opt.evidence().get(p.shape_hash()).is_none());
        assert_eq!(opt.pending(), 1);
    }

    #[test]
    fn a_run_cut_short_gives_its_plan_up_at_once_even_a_verified_one() {
        let mut opt = learner();
        fund(&mut opt, 10);
        let p = plan(45);
        let w = World::new(&p, 20.0, 115.0);
        // Default, the 1.1x-costed plan refuted, the winner explored, trialled, verified.
        for _ in 0..5 {
            step(&mut opt, &p, &w);
        }
        let d = opt.decide(&p).unwrap();
        assert_eq!((d.rule, d.arm), (Rule::Verified, 1), "{}", d.reason);
        // Its next run is cancelled after 15 ms, faster than it usually runs: still given up.
        let t = opt.trajectory(&d, d.arm, None, 15.0).unwrap();
        let o = opt.observe_cut_short(t, true).unwrap();
        assert!(o.reverted && o.refuted && o.regression, "{o:?}");
        assert_eq!(opt.evidence().reverts, 1);
        for _ in 0..20 {
            let (d, _) = step(&mut opt, &p, &w);
            assert_eq!(d.arm, 0, "{}", d.reason);
        }
        // An explored plan cut short is refuted and never explored again; a default run cut
        // short is just a run.
        let mut opt = learner();
        fund(&mut opt, 10);
        let q = plan(46);
        let w = World::new(&q, 20.0, 115.0);
        step(&mut opt, &q, &w);
        let mut d = opt.decide(&q).unwrap();
        assert!(d.wants_candidates, "{}", d.reason);
        let cands = w.candidates(&d);
        opt.choose(&mut d, &cands).unwrap();
        assert_eq!(d.rule, Rule::Explore);
        let explored = d.plan;
        let t = opt.trajectory(&d, d.arm, None, 5.0).unwrap();
        let o = opt.observe_cut_short(t, false).unwrap();
        assert!(o.refuted && !o.reverted && o.regression, "{o:?}");
        for _ in 0..20 {
            let (d, _) = step(&mut opt, &q, &w);
            assert_ne!(d.plan, explored, "{}", d.reason);
        }
        let d = opt.decide(&q).unwrap();
        let t = opt.trajectory(&d, 0, None, 50.0).unwrap();
        let o = opt.observe_cut_short(t, true).unwrap();
        assert!(!o.refuted && !o.regression, "{o:?}");
    }

    #[test]
    fn learn_cycle_makes_patterns_whose_confidence_is_about_beating_the_default() {
        let mut opt = optimizer();
        let p = plan(4);
        for i in 0..40 {
            let arm = (i % 4) as ArmId;
            let ms = if arm == 2 { 10.0 } else { 80.0 } * (1.0 + 0.01 * (i % 5) as f32);
            run(&mut opt, &p, arm, ms);
        }
        let report = opt.learn_cycle().unwrap();
        assert_eq!((report.trajectories, report.patterns_created), (40, 1));
        assert_eq!(opt.pending(), 0);
        let pat = &opt.bank().patterns()[0];
        assert_eq!(pat.best_arm(), Some(2));
        assert!(pat.confidence() > 0.8, "{}", pat.confidence());
        let d = opt.decide(&p).unwrap();
        assert!(d.similarity > 0.99 && d.confidence > 0.8);
        // Runs matched to the pattern count in it at once.
        let members = opt.bank().patterns()[0].arms[2].count;
        run(&mut opt, &p, 2, 10.0);
        assert_eq!(opt.bank().patterns()[0].arms[2].count, members + 1);
    }

    #[test]
    fn bad_trajectories_are_refused_by_name_and_change_nothing() {
        let mut opt = optimizer();
        let d = opt.decide(&plan(5)).unwrap();
        let before = opt.snapshot().unwrap();
        let good = opt.trajectory(&d, 0, None, 5.0).unwrap();
        let cases: [(&str, Trajectory); 4] = [
            (
                "actual_ms",
                Trajectory {
                    actual_ms: f32::NAN,
                    ..good.clone()
                },
            ),
            (
                "arm 9",
                Trajectory {
                    arm: 9,
                    ..good.clone()
                },
            ),
            (
                "key",
                Trajectory {
                    key: vec![1.0; 3],
                    ..good.clone()
                },
            ),
            (
                "is NaN",
                Trajectory {
                    op_shares: vec![f32::NAN],
                    ..good.clone()
                },
            ),
        ];
        for (what, t) in cases {
            match opt.observe(t) {
                Err(NeuralDagError::InvalidTrajectory(m)) => assert!(m.contains(what), "{m}"),
                other => panic!("{what}: {other:?}"),
            }
        }
        assert_eq!(opt.stats().rejected, 4);
        assert_eq!(opt.pending(), 0);
        let mut restored = Optimizer::restore(&before).unwrap();
        restored.state.stats.rejected = 4;
        assert_eq!(restored.snapshot().unwrap(), opt.snapshot().unwrap());
        // An invalid configuration or arm list is refused up front.
        assert!(matches!(
            Optimizer::new(NeuralDagConfig::default(), Vec::new()),
            Err(NeuralDagError::InvalidConfig(m)) if m.contains("arms")
        ));
        let twice = vec!["a".to_string(), "a".to_string()];
        assert!(Optimizer::new(NeuralDagConfig::default(), twice).is_err());
    }

    #[test]
    fn learning_disabled_observes_nothing() {
        let mut opt = Optimizer::new(
            NeuralDagConfig {
                learning_enabled: false,
                ..Default::default()
            },
            arms(),
        )
        .unwrap();
        let o = run(&mut opt, &plan(7), 0, 3.0);
        assert!(!o.learned);
        assert_eq!((opt.pending(), opt.stats().observed), (0, 0));
    }
}
