//! Measured evidence per query shape: what each distinct plan of the shape took, whether a
//! plan is verified faster than the default plan, and the exploration budget.
//!
//! The decision policy rests on this, not on the shared cost model (DESIGN, "Optimizer":
//! measured evidence first, the model second, the default when unsure). Measured on TPC-H at
//! scale 1, a policy led by one shared model generalised one arm to every query and made the
//! workload slower; here a plan other than the default is applied only when this shape's own
//! runs show it faster, with a margin and a one-sided test on log latency.
//!
//! Choices are distinct plans, not arms: arms whose plans are identical are one candidate, and a
//! run of any arm whose plan is the default plan is a run of the default.

use alloc::collections::BTreeMap;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::reasoning_bank::{ArmStats, MAX_ARMS};
use super::ArmId;

/// Runs a plan gets in trial before it is given up as not clearly faster.
pub const MAX_TRIAL: u32 = 6;
/// Floor of the variance of ln(ms) used in the test (a standard deviation of 0.05, about
/// PostgreSQL's run-to-run noise of one plan on a quiet machine).
pub const VAR_FLOOR: f64 = 0.0025;
/// One-sided z for "verified faster" (95%).
pub const Z_VERIFY: f64 = 1.645;
/// Applied runs of a verified plan after which the default plan is measured once again, so a
/// drift of the data that makes the default better is noticed.
pub const RECHECK_EVERY: u32 = 50;
/// Candidates the planner costs this many times above the default plan are not explored
/// blind (only when a similar shape verified the same arm).
pub const MAX_COST_RATIO: f64 = 5.0;
/// Runs' worth of budget share a shape brings when its default plan is first measured (two: a
/// first candidate that loses does not hold up the second), kept for
/// that shape (not the pool) until its explorations spend it: a new shape can explore early,
/// before its own runs have earned it, even when other shapes' losers overdrew the pool.
pub const NEW_SHAPE_LOAN: f64 = 2.0;
/// Runs over which a candidate's possible saving is weighed against its possible loss: a plan
/// is explored only when what its run could cost above the reference (the planner's cost ratio
/// times the default's time) is at most what it could save over this many runs of the
/// reference. Binds only after a large verified win (a 7.5 ms verified plan is not risked on a plan the
/// planner costs 1.3x a 250 ms default: on the correlated query it ran 4.3 s); with the default
/// or a modest win as reference it allows any ratio the planner screen does.
pub const RISK_HORIZON: f64 = 20.0;
/// Weight of the planner's predicted extra time in the stake an exploration needs.
pub const RISK_WEIGHT: f64 = 1.0;
/// Share of the time a verified plan saves that is added to the exploration budget.
pub const SAVINGS_SHARE: f64 = 0.5;
/// The exploration pool holds at most this many times one round of budget (the budget share
/// of the sum of every shape's default time): saved-up budget cannot be spent in one burst.
pub const POOL_ROUNDS: f64 = 1.0;

/// What the measurements say of a plan against the default plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Verified faster by the margin (one-sided test at [`Z_VERIFY`]).
    Faster,
    /// Shown not faster by the margin (or slower).
    NotFaster,
    /// Not enough runs to say.
    Unknown,
}

/// One distinct plan of a query shape (not the default plan).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanEvidence {
    /// [`crate::PlanDag::shape_hash`] of the plan.
    pub plan: u64,
    /// Arms known to produce it (bit `a` for arm `a`).
    pub arms: u16,
    /// Its planner cost over the default plan's (0 when never costed).
    pub cost_ratio: f32,
    /// Latency of its runs (log ms).
    pub stats: ArmStats,
    /// Given up: not faster than the default by the margin on its first run, not faster
    /// after its trial, or a verified plan that regressed. Never explored or applied again.
    pub refuted: bool,
    /// Was verified faster at some point (a later refutation is then a revert).
    pub was_verified: bool,
    /// Consecutive runs slower than the default plan's typical time by the margin.
    pub slow_streak: u32,
}

impl PlanEvidence {
    /// The arms that produce this plan, lowest first.
    pub fn arm_list(&self) -> impl Iterator<Item = ArmId> + '_ {
        (0..MAX_ARMS as ArmId).filter(move |a| self.arms & (1 << a) != 0)
    }
}

/// Everything measured of one query shape.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ShapeEvidence {
    /// Runs of the default plan (whatever arm produced it).
    pub default: ArmStats,
    /// Other plans seen as candidates or run.
    pub plans: Vec<PlanEvidence>,
    /// Whether the host has planned this shape's candidates at least once.
    pub candidates_known: bool,
    /// Runs of other plans since the default plan last ran.
    pub since_default: u32,
    /// Verified plans that later regressed and were reverted.
    pub reverts: u32,
    /// Logical time of the last use (least recently used shapes go first at capacity).
    pub seen: u64,
    /// What is left of the budget this shape brought ([`NEW_SHAPE_LOAN`]), ms.
    pub loan_ms: f64,
}

/// Weight, in pseudo-observations, of the prior variance [`PRIOR_VAR`] in the pooled estimate.
pub const PRIOR_WEIGHT: f64 = 2.0;
/// Prior variance of ln(ms) between runs of one plan of one shape (a standard deviation of
/// 0.14): the same shape may run with other constants, so two runs that agree closely must
/// not look like certainty. (0.25 let no real 1.2x win verify on TPC-H; see README.)
pub const PRIOR_VAR: f64 = 0.02;

/// z of "`p` is faster than the default by `margin`" (positive: faster). The variance is
/// pooled over both plans' runs and shrunk towards [`PRIOR_VAR`], floored at [`VAR_FLOOR`].
/// Shared with the patterns' confidence.
pub(crate) fn z_faster(default: &ArmStats, p: &ArmStats, margin: f64) -> f64 {
    let dof = f64::from(default.count.saturating_sub(1)) + f64::from(p.count.saturating_sub(1));
    let var =
        ((default.m2 + p.m2 + PRIOR_WEIGHT * PRIOR_VAR) / (dof + PRIOR_WEIGHT)).max(VAR_FLOOR);
    let n = |s: &ArmStats| f64::from(s.count.max(1));
    let se = libm::sqrt(var / n(default) + var / n(p));
    (default.mean - p.mean - libm::log1p(margin)) / se
}

/// The standard normal CDF at `z` (logistic approximation, error below 0.01).
pub(crate) fn normal_cdf(z: f64) -> f64 {
    1.0 / (1.0 + libm::exp(-1.702 * z))
}

/// Consecutive slow runs after which a verified plan is taken to have regressed.
pub const REGRESSION_STREAK: u32 = 2;

/// What the runs of `plan` say against runs `default` of the default plan. A plan verified
/// before stays verified until it regressed: [`REGRESSION_STREAK`] runs in a row slower than
/// the default by the margin (one slow run of an applied plan is noise), or a mean that
/// caught up with the default's.
fn verdict_of(default: &ArmStats, plan: &PlanEvidence, margin: f64) -> Verdict {
    let p = &plan.stats;
    // One run of the default suffices with two of the plan: the pooled variance, shrunk to
    // the prior, keeps small samples honest (a 1.4x gain is needed at 1 + 2 runs).
    if default.count < 1 || p.count < 2 {
        return Verdict::Unknown;
    }
    if plan.was_verified {
        let caught_up = p.count >= 3 && z_faster(default, p, 0.0) <= 0.0;
        return if caught_up || plan.slow_streak >= REGRESSION_STREAK {
            Verdict::NotFaster
        } else {
            Verdict::Faster
        };
    }
    // Futility: with two runs each, a plan whose mean is not faster by the margin will not
    // verify soon; it is given up rather than alternated with the default for MAX_TRIAL runs.
    let futile = default.mean - p.mean < libm::log1p(margin);
    if z_faster(default, p, margin) >= Z_VERIFY {
        Verdict::Faster
    } else if futile || z_faster(default, p, 0.0) <= -Z_VERIFY || p.count >= MAX_TRIAL {
        Verdict::NotFaster
    } else {
        Verdict::Unknown
    }
}

/// Apply the verdict of `p`'s runs against `default` to `p`'s flags: verified once, refuted for
/// good (a verified plan refuted is a revert). `unpromising_first`: its first run was not
/// faster than the default by the margin, which refutes it at once.
fn settle(
    p: &mut PlanEvidence,
    default: &ArmStats,
    margin: f64,
    unpromising_first: bool,
) -> Recorded {
    let mut out = Recorded::default();
    if p.refuted {
        return out;
    }
    match verdict_of(default, p, margin) {
        Verdict::Faster if !p.was_verified => {
            p.was_verified = true;
            out.verified = true;
        }
        Verdict::NotFaster => {
            p.refuted = true;
            out.refuted = true;
            out.reverted = p.was_verified;
        }
        _ if unpromising_first => {
            p.refuted = true;
            out.refuted = true;
        }
        _ => {}
    }
    out
}

impl Recorded {
    fn or(self, o: Recorded) -> Recorded {
        Recorded {
            refuted: self.refuted | o.refuted,
            reverted: self.reverted | o.reverted,
            verified: self.verified | o.verified,
        }
    }
}

impl ShapeEvidence {
    /// The default plan's typical latency, once it ran.
    pub fn default_ms(&self) -> Option<f64> {
        (self.default.count > 0).then(|| self.default.typical_ms())
    }

    /// What the runs say of `p` against the default plan, with `margin` (0.1: 10% faster).
    pub fn verdict(&self, p: &PlanEvidence, margin: f64) -> Verdict {
        verdict_of(&self.default, p, margin)
    }

    /// Confidence in [0, 1] that `p` beats the default plan by `margin`: the normal CDF of
    /// the test's z (logistic approximation), 0 before one default run and two of the plan.
    pub fn confidence(&self, p: &PlanEvidence, margin: f64) -> f32 {
        if self.default.count < 1 || p.stats.count < 2 {
            return 0.0;
        }
        normal_cdf(z_faster(&self.default, &p.stats, margin)) as f32
    }

    /// What the shape runs when nothing is explored: its verified plan's typical time, else
    /// the default plan's; None before the default is measured. Explorations are staked and
    /// charged against it.
    pub fn reference_ms(&self, margin: f64) -> Option<f64> {
        self.verified(margin)
            .map(|v| v.stats.typical_ms())
            .or_else(|| self.default_ms())
    }

    /// The fastest plan verified faster than the default, not refuted.
    pub fn verified(&self, margin: f64) -> Option<&PlanEvidence> {
        self.plans
            .iter()
            .filter(|p| !p.refuted && self.verdict(p, margin) == Verdict::Faster)
            .min_by(|a, b| a.stats.mean.total_cmp(&b.stats.mean))
    }

    /// A plan under trial: run at least once, neither refuted nor yet verified.
    pub fn in_trial(&self, margin: f64) -> Option<&PlanEvidence> {
        self.plans
            .iter()
            .filter(|p| {
                !p.refuted && p.stats.count > 0 && self.verdict(p, margin) == Verdict::Unknown
            })
            .min_by(|a, b| a.stats.mean.total_cmp(&b.stats.mean))
    }

    /// Candidates never run and not refuted.
    pub fn untried(&self) -> impl Iterator<Item = &PlanEvidence> {
        self.plans
            .iter()
            .filter(|p| !p.refuted && p.stats.count == 0)
    }

    fn plan_mut(&mut self, plan: u64) -> &mut PlanEvidence {
        let i = match self.plans.iter().position(|p| p.plan == plan) {
            Some(i) => i,
            None => {
                self.plans.push(PlanEvidence {
                    plan,
                    arms: 0,
                    cost_ratio: 0.0,
                    stats: ArmStats::default(),
                    refuted: false,
                    was_verified: false,
                    slow_streak: 0,
                });
                self.plans.len() - 1
            }
        };
        &mut self.plans[i]
    }
}

/// What one observed run did to the evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// The plan was given up with this run (a first run slower than the default, or a trial
    /// that did not verify).
    pub refuted: bool,
    /// A verified plan regressed and was reverted with this run.
    pub reverted: bool,
    /// The plan became verified faster with this run.
    pub verified: bool,
}

/// Evidence of every query shape, and the exploration budget they share.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvidenceBook {
    shapes: BTreeMap<u64, ShapeEvidence>,
    capacity: usize,
    tick: u64,
    /// Exploration budget left, ms.
    pub pool_ms: f64,
    /// Sum over shapes of the default plan's typical time, ms (one "round" of the workload).
    pub default_sum_ms: f64,
    /// Time explorations and trials cost above the default plan, ms.
    pub spent_ms: f64,
    /// Time runs of other plans saved against the default plan, ms.
    pub saved_ms: f64,
    /// Explorations started (first runs of a plan).
    pub explorations: u64,
    /// Plans refuted.
    pub refuted: u64,
    /// Verified plans reverted after a regression.
    pub reverts: u64,
    /// Shapes forgotten at capacity.
    pub evicted: u64,
}

/// The book-wide figures of an [`EvidenceBook`]: the exploration budget and its counters. A
/// host that keeps the shapes' evidence elsewhere (PostgreSQL's shared memory) keeps these
/// beside them, and adds what one update changed ([`Budget::since`]).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Budget {
    /// [`EvidenceBook::pool_ms`].
    pub pool_ms: f64,
    /// [`EvidenceBook::default_sum_ms`].
    pub default_sum_ms: f64,
    /// [`EvidenceBook::spent_ms`].
    pub spent_ms: f64,
    /// [`EvidenceBook::saved_ms`].
    pub saved_ms: f64,
    /// [`EvidenceBook::explorations`].
    pub explorations: u64,
    /// [`EvidenceBook::refuted`].
    pub refuted: u64,
    /// [`EvidenceBook::reverts`].
    pub reverts: u64,
    /// [`EvidenceBook::evicted`].
    pub evicted: u64,
}

impl Budget {
    /// What changed from `before` to `self`, field by field (the counters never go down).
    pub fn since(&self, before: &Budget) -> BudgetDelta {
        BudgetDelta {
            ms: [
                self.pool_ms - before.pool_ms,
                self.default_sum_ms - before.default_sum_ms,
                self.spent_ms - before.spent_ms,
                self.saved_ms - before.saved_ms,
            ],
            counts: [
                self.explorations.saturating_sub(before.explorations),
                self.refuted.saturating_sub(before.refuted),
                self.reverts.saturating_sub(before.reverts),
                self.evicted.saturating_sub(before.evicted),
            ],
        }
    }

    /// The figures in the order [`BudgetDelta`] lists them: (ms fields, count fields).
    pub fn fields(&self) -> ([f64; 4], [u64; 4]) {
        (
            [
                self.pool_ms,
                self.default_sum_ms,
                self.spent_ms,
                self.saved_ms,
            ],
            [self.explorations, self.refuted, self.reverts, self.evicted],
        )
    }

    /// The budget of these figures (in [`Budget::fields`]' order).
    pub fn from_fields(ms: [f64; 4], counts: [u64; 4]) -> Budget {
        Budget {
            pool_ms: ms[0],
            default_sum_ms: ms[1],
            spent_ms: ms[2],
            saved_ms: ms[3],
            explorations: counts[0],
            refuted: counts[1],
            reverts: counts[2],
            evicted: counts[3],
        }
    }
}

/// What one update changed of a [`Budget`] (in [`Budget::fields`]' order).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct BudgetDelta {
    /// Change of the ms fields (may be negative).
    pub ms: [f64; 4],
    /// Increase of the counters.
    pub counts: [u64; 4],
}

impl EvidenceBook {
    /// An empty book for at most `capacity` (>= 1) shapes.
    pub fn new(capacity: usize) -> Self {
        EvidenceBook {
            shapes: BTreeMap::new(),
            capacity: capacity.max(1),
            tick: 0,
            pool_ms: 0.0,
            default_sum_ms: 0.0,
            spent_ms: 0.0,
            saved_ms: 0.0,
            explorations: 0,
            refuted: 0,
            reverts: 0,
            evicted: 0,
        }
    }

    /// The evidence of a shape.
    pub fn get(&self, fingerprint: u64) -> Option<&ShapeEvidence> {
        self.shapes.get(&fingerprint)
    }

    /// Shapes held.
    pub fn len(&self) -> usize {
        self.shapes.len()
    }

    /// Whether no shape is held.
    pub fn is_empty(&self) -> bool {
        self.shapes.is_empty()
    }

    /// Capacity in shapes.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Every shape, by fingerprint.
    pub fn iter(&self) -> impl Iterator<Item = (&u64, &ShapeEvidence)> {
        self.shapes.iter()
    }

    fn entry(&mut self, fingerprint: u64) -> &mut ShapeEvidence {
        if !self.shapes.contains_key(&fingerprint) && self.shapes.len() >= self.capacity {
            let oldest = self
                .shapes
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(&f, _)| f);
            if let Some(f) = oldest {
                self.remove(f);
                self.evicted += 1;
            }
        }
        self.tick += 1;
        let tick = self.tick;
        let e = self.shapes.entry(fingerprint).or_default();
        e.seen = tick;
        e
    }

    fn remove(&mut self, fingerprint: u64) -> bool {
        match self.shapes.remove(&fingerprint) {
            Some(s) => {
                if let Some(d) = s.default_ms() {
                    self.default_sum_ms = (self.default_sum_ms - d).max(0.0);
                }
                true
            }
            None => false,
        }
    }

    /// The book-wide figures.
    pub fn budget(&self) -> Budget {
        Budget {
            pool_ms: self.pool_ms,
            default_sum_ms: self.default_sum_ms,
            spent_ms: self.spent_ms,
            saved_ms: self.saved_ms,
            explorations: self.explorations,
            refuted: self.refuted,
            reverts: self.reverts,
            evicted: self.evicted,
        }
    }

    /// Take the book-wide figures another copy holds.
    pub fn set_budget(&mut self, b: &Budget) {
        self.pool_ms = b.pool_ms;
        self.default_sum_ms = b.default_sum_ms;
        self.spent_ms = b.spent_ms;
        self.saved_ms = b.saved_ms;
        self.explorations = b.explorations;
        self.refuted = b.refuted;
        self.reverts = b.reverts;
        self.evicted = b.evicted;
    }

    /// Hold `e` for `fingerprint` as another copy holds it (None: that copy has no evidence of
    /// it), replacing what this book held. The book-wide figures are not touched (they come
    /// with [`set_budget`](Self::set_budget)); at capacity the least recently used other
    /// shape is dropped from this copy without being counted as evicted.
    pub fn put(&mut self, fingerprint: u64, e: Option<ShapeEvidence>) {
        let Some(mut e) = e else {
            self.shapes.remove(&fingerprint);
            return;
        };
        if !self.shapes.contains_key(&fingerprint) && self.shapes.len() >= self.capacity {
            let oldest = self
                .shapes
                .iter()
                .min_by_key(|(_, s)| s.seen)
                .map(|(&f, _)| f);
            if let Some(f) = oldest {
                self.shapes.remove(&f);
            }
        }
        self.tick += 1;
        e.seen = self.tick;
        self.shapes.insert(fingerprint, e);
    }

    /// Replace every shape and the book-wide figures with another copy's, `shapes` least
    /// recently used first (past capacity the oldest are left out).
    pub fn replace_all(&mut self, shapes: Vec<(u64, ShapeEvidence)>, b: &Budget) {
        self.shapes.clear();
        let skip = shapes.len().saturating_sub(self.capacity);
        for (f, e) in shapes.into_iter().skip(skip) {
            self.put(f, Some(e));
        }
        self.set_budget(b);
    }

    /// Forget shapes; returns how many were known.
    pub fn forget(&mut self, fingerprints: &[u64]) -> usize {
        fingerprints.iter().filter(|&&f| self.remove(f)).count()
    }

    /// Record the candidate plans the host planned for a shape: `(plan, arm, cost ratio)` for
    /// each arm planned; plans equal to `fingerprint` (the default plan) are not candidates.
    pub fn candidates(&mut self, fingerprint: u64, planned: &[(u64, ArmId, f64)]) {
        let e = self.entry(fingerprint);
        e.candidates_known = true;
        for &(plan, arm, ratio) in planned {
            if plan == fingerprint || usize::from(arm) >= MAX_ARMS {
                continue;
            }
            let p = e.plan_mut(plan);
            p.arms |= 1 << arm;
            if ratio.is_finite() && ratio > 0.0 {
                p.cost_ratio = ratio as f32;
            }
        }
    }

    /// The upper bound of the pool: [`POOL_ROUNDS`] rounds of budget.
    pub fn pool_cap(&self, share: f64) -> f64 {
        POOL_ROUNDS * share * self.default_sum_ms
    }

    /// Record one run of `plan` (produced by `arm`) for the shape `fingerprint`, taking
    /// `ms`; `share` is the exploration budget's share of the default time and `margin` the
    /// gain a plan must verify.
    pub fn record(
        &mut self,
        fingerprint: u64,
        plan: u64,
        arm: ArmId,
        ms: f64,
        share: f64,
        margin: f64,
    ) -> Recorded {
        self.record_as(fingerprint, plan, arm, ms, share, margin, true)
    }

    /// [`record`](Self::record) of a run the background explorer made: the same verdicts, but
    /// it cost no user any time, so the exploration budget is neither charged nor credited
    /// (and a shape first measured this way brings no loan).
    pub fn record_background(
        &mut self,
        fingerprint: u64,
        plan: u64,
        arm: ArmId,
        ms: f64,
        margin: f64,
    ) -> Recorded {
        self.record_as(fingerprint, plan, arm, ms, 0.0, margin, false)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_as(
        &mut self,
        fingerprint: u64,
        plan: u64,
        arm: ArmId,
        ms: f64,
        share: f64,
        margin: f64,
        paid: bool,
    ) -> Recorded {
        let mut out = Recorded::default();
        let is_default = plan == fingerprint;
        let e = self.entry(fingerprint);
        let before = e.default_ms();
        // What this run is charged against: what the shape would have run otherwise, the
        // verified plan when there is one (the verified plan's own runs are not charged).
        let verified = e
            .verified(margin)
            .filter(|v| v.plan != plan)
            .map(|v| v.stats.typical_ms());
        let reference = verified.or(before).unwrap_or(ms);
        let mut spent = 0.0;
        let mut saved = 0.0;
        let mut first_run = false;
        if is_default {
            e.default.push(ms);
            e.since_default = 0;
            // The default's new run moves every comparison: settle every plan again.
            let d = e.default;
            for p in e.plans.iter_mut() {
                out = out.or(settle(p, &d, margin, false));
            }
        } else {
            e.since_default = e.since_default.saturating_add(1);
            let default_stats = e.default;
            let p = e.plan_mut(plan);
            if usize::from(arm) < MAX_ARMS {
                p.arms |= 1 << arm;
            }
            first_run = p.stats.count == 0;
            p.stats.push(ms);
            let slow = before.is_some_and(|d| ms > d * (1.0 + margin));
            p.slow_streak = if slow { p.slow_streak + 1 } else { 0 };
            // A first run earns a trial only when it looks faster by the margin: plans as fast
            // as the default are not worth the runs a verification takes.
            let unpromising = before.is_some_and(|d| ms * (1.0 + margin) > d);
            out = settle(p, &default_stats, margin, first_run && unpromising);
            if ms > reference {
                spent = ms - reference;
            } else {
                saved = reference - ms;
            }
        }
        // The shape's own loan pays first.
        let mut from_loan = 0.0;
        if paid {
            from_loan = spent.min(e.loan_ms);
            e.loan_ms -= from_loan;
            if before.is_none() && is_default {
                e.loan_ms = NEW_SHAPE_LOAN * share * ms;
            }
        }
        e.reverts += u32::from(out.reverted);
        let after = e.default_ms();
        if let Some(a) = after {
            self.default_sum_ms = (self.default_sum_ms - before.unwrap_or(0.0) + a).max(0.0);
        }
        self.explorations += u64::from(first_run);
        self.refuted += u64::from(out.refuted);
        self.reverts += u64::from(out.reverted);
        if !paid {
            return out;
        }
        self.spent_ms += spent;
        self.saved_ms += saved;
        let credit = share * after.unwrap_or(reference) + SAVINGS_SHARE * saved;
        self.pool_ms = (self.pool_ms + credit - (spent - from_loan)).min(self.pool_cap(share));
        out
    }

    /// Give up plan `plan` of the shape `fingerprint` at once, whatever its runs say: a run of
    /// it was cut short (a statement timeout, a cancel, an error), so it is at least as slow as
    /// it ran and may never finish. A verified plan given up is a revert. Nothing for the
    /// default plan, a plan not known, or one already given up.
    pub fn refute(&mut self, fingerprint: u64, plan: u64) -> Recorded {
        let mut out = Recorded::default();
        if plan == fingerprint {
            return out;
        }
        let Some(e) = self.shapes.get_mut(&fingerprint) else {
            return out;
        };
        let Some(p) = e.plans.iter_mut().find(|p| p.plan == plan && !p.refuted) else {
            return out;
        };
        p.refuted = true;
        out.refuted = true;
        out.reverted = p.was_verified;
        e.reverts += u32::from(out.reverted);
        self.refuted += 1;
        self.reverts += u64::from(out.reverted);
        out
    }

    /// Whether the budget allows exploring a plan of a shape whose default plan takes
    /// `default_ms`: the pool must hold at least one run's share of it (`share` x default).
    /// The budget is charged what a run really cost above the default, so one loser
    /// overdraws the pool and exploration waits until the shapes' runs have repaid it:
    /// amortised, exploring costs about `share` on top of the default plans.
    /// What is left of the loan of shape `fingerprint` counts too.
    pub fn affords(&self, fingerprint: u64, stake_ms: f64, share: f64) -> bool {
        let loan = self.shapes.get(&fingerprint).map_or(0.0, |e| e.loan_ms);
        let funds = self.pool_ms.max(0.0) + loan;
        share > 0.0 && funds > 0.0 && funds >= stake_ms.min(self.pool_cap(share).max(loan))
    }

    /// What the pool must hold to explore a plan the planner costs `cost_ratio` times the
    /// default plan (`default_ms`) when the shape otherwise runs in `reference_ms` (the default,
    /// or a verified plan): one run's share of the reference, plus [`RISK_WEIGHT`] of what the
    /// run would cost above the reference if it were as much slower than the default as the
    /// planner says. [`EvidenceBook::affords`] caps it at what the pool can hold (a workload of
    /// one query then explores whenever its pool is full).
    pub fn stake(default_ms: f64, reference_ms: f64, share: f64, cost_ratio: f64) -> f64 {
        let ratio = if cost_ratio.is_finite() {
            cost_ratio.max(1.0)
        } else {
            2.0
        };
        reference_ms * share + RISK_WEIGHT * (default_ms * ratio - reference_ms).max(0.0)
    }

    /// Whether exploring a plan the planner costs `cost_ratio` times the default plan
    /// (`default_ms`) is worth the risk when the shape otherwise runs in `reference_ms`
    /// ([`RISK_HORIZON`]).
    pub fn worth_the_risk(default_ms: f64, reference_ms: f64, cost_ratio: f64) -> bool {
        let ratio = if cost_ratio.is_finite() {
            cost_ratio.max(1.0)
        } else {
            2.0
        };
        default_ms * ratio - reference_ms <= RISK_HORIZON * reference_ms
    }

    /// Check sizes and numbers after a restore.
    pub fn check(&self) -> Result<(), alloc::string::String> {
        if self.shapes.len() > self.capacity {
            return Err(alloc::format!(
                "{} query shapes for a capacity of {}",
                self.shapes.len(),
                self.capacity
            ));
        }
        let finite = |x: f64| x.is_finite();
        if ![
            self.pool_ms,
            self.default_sum_ms,
            self.spent_ms,
            self.saved_ms,
        ]
        .into_iter()
        .all(finite)
        {
            return Err("a budget figure is not finite".into());
        }
        for (f, s) in &self.shapes {
            if s.plans.len() > 4 * MAX_ARMS {
                return Err(alloc::format!("shape {f:016x} has {} plans", s.plans.len()));
            }
            if !(s.loan_ms.is_finite() && s.loan_ms >= 0.0) {
                return Err(alloc::format!(
                    "shape {f:016x} has a loan of {} ms",
                    s.loan_ms
                ));
            }
            let stats = core::iter::once(&s.default).chain(s.plans.iter().map(|p| &p.stats));
            for st in stats {
                if !(st.mean.is_finite() && st.m2.is_finite() && st.m2 >= 0.0) {
                    return Err(alloc::format!("shape {f:016x} has non-finite statistics"));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    const SHARE: f64 = 0.1;
    const MARGIN: f64 = 0.1;

    fn book() -> EvidenceBook {
        EvidenceBook::new(4)
    }

    #[test]
    fn a_clearly_faster_plan_is_verified_after_one_default_run_and_two_of_its_own() {
        let mut b = book();
        b.record(1, 1, 0, 100.0, SHARE, MARGIN);
        let r = b.record(1, 7, 3, 20.0, SHARE, MARGIN);
        assert!(!r.verified && !r.refuted);
        assert!(b.get(1).unwrap().verified(MARGIN).is_none());
        assert_eq!(b.get(1).unwrap().in_trial(MARGIN).unwrap().plan, 7);
        // Its second run makes it decidable: 5x is far beyond what the prior variance allows.
        let r = b.record(1, 7, 3, 22.0, SHARE, MARGIN);
        assert!(r.verified);
        // A default run later confirms it (nothing new to report).
        let r = b.record(1, 1, 0, 104.0, SHARE, MARGIN);
        assert!(!r.verified && !r.reverted);
        let e = b.get(1).unwrap();
        let p = e.verified(MARGIN).expect("verified");
        assert_eq!((p.plan, p.arm_list().collect::<Vec<_>>()), (7, vec![3]));
        assert!(e.confidence(p, MARGIN) > 0.95);
        assert!(b.saved_ms > 150.0 && b.spent_ms == 0.0);
    }

    #[test]
    fn a_slower_first_run_refutes_and_a_marginal_plan_is_given_up() {
        let mut b = book();
        b.record(1, 1, 0, 100.0, SHARE, MARGIN);
        let r = b.record(1, 5, 2, 130.0, SHARE, MARGIN);
        assert!(r.refuted);
        assert!(b.get(1).unwrap().in_trial(MARGIN).is_none());
        assert!((b.spent_ms - 30.0).abs() < 1e-9);
        // 3% faster, within noise: never verified, given up after MAX_TRIAL runs.
        b.record(1, 1, 0, 101.0, SHARE, MARGIN);
        let mut gave_up = false;
        for i in 0..MAX_TRIAL {
            let r = b.record(1, 6, 4, 97.0 + (i % 2) as f64, SHARE, MARGIN);
            assert!(!r.verified);
            gave_up |= r.refuted;
        }
        assert!(gave_up);
        assert_eq!(b.refuted, 2);
    }

    #[test]
    fn a_verified_plan_that_regresses_is_reverted() {
        let mut b = book();
        for _ in 0..2 {
            b.record(1, 1, 0, 100.0, SHARE, MARGIN);
            b.record(1, 9, 1, 30.0, SHARE, MARGIN);
        }
        b.record(1, 9, 1, 30.0, SHARE, MARGIN);
        assert!(b.get(1).unwrap().verified(MARGIN).is_some());
        let mut reverted = false;
        for _ in 0..30 {
            reverted |= b.record(1, 9, 1, 400.0, SHARE, MARGIN).reverted;
            if reverted {
                break;
            }
        }
        assert!(reverted);
        assert!(b.get(1).unwrap().verified(MARGIN).is_none());
        assert_eq!((b.reverts, b.get(1).unwrap().reverts), (1, 1));
    }

    #[test]
    fn the_pool_earns_a_share_of_default_time_and_is_capped() {
        let mut b = book();
        for _ in 0..100 {
            b.record(1, 1, 0, 100.0, SHARE, MARGIN);
        }
        assert!((b.default_sum_ms - 100.0).abs() < 1e-6);
        assert!((b.pool_ms - POOL_ROUNDS * SHARE * 100.0).abs() < 1e-6);
        b.record(1, 3, 1, 150.0, SHARE, MARGIN);
        let cap = POOL_ROUNDS * SHARE * 100.0;
        // The shape's loan pays its first loss before the pool does.
        let loan = NEW_SHAPE_LOAN * SHARE * 100.0;
        assert!(
            (b.pool_ms - (cap + SHARE * 100.0 - (50.0 - loan))).abs() < 1e-6,
            "{}",
            b.pool_ms
        );
    }

    #[test]
    fn a_new_shape_explores_on_its_own_loan_when_the_pool_is_overdrawn() {
        let mut b = book();
        b.record(1, 1, 0, 100.0, SHARE, MARGIN);
        b.record(1, 3, 1, 5_000.0, SHARE, MARGIN); // a catastrophe overdraws the pool
        assert!(b.pool_ms < 0.0, "{}", b.pool_ms);
        assert!(!b.affords(1, SHARE * 100.0, SHARE));
        b.record(2, 2, 0, 400.0, SHARE, MARGIN); // a new shape: its loan is its own
        assert!((b.get(2).unwrap().loan_ms - NEW_SHAPE_LOAN * SHARE * 400.0).abs() < 1e-9);
        assert!(b.affords(2, SHARE * 400.0, SHARE));
        assert!(!b.affords(1, SHARE * 100.0, SHARE));
        // Its exploration's loss comes out of its loan first, then the pool.
        let pool = b.pool_ms;
        b.record(2, 7, 1, 500.0, SHARE, MARGIN);
        assert_eq!(b.get(2).unwrap().loan_ms, 0.0);
        let loan = NEW_SHAPE_LOAN * SHARE * 400.0;
        assert!(
            (b.pool_ms - (pool + SHARE * 400.0 - (100.0 - loan))).abs() < 1e-9,
            "{}",
            b.pool_ms
        );
    }

    #[test]
    fn candidates_group_arms_and_skip_the_default_plan() {
        let mut b = book();
        b.candidates(1, &[(1, 1, 1.0), (8, 2, 1.5), (8, 5, 1.5), (9, 3, 2.0)]);
        let e = b.get(1).unwrap();
        assert!(e.candidates_known);
        assert_eq!(e.plans.len(), 2);
        assert_eq!(e.plans[0].arm_list().collect::<Vec<_>>(), vec![2, 5]);
        assert_eq!(e.untried().count(), 2);
    }

    #[test]
    fn the_least_recently_used_shape_goes_at_capacity() {
        let mut b = book();
        for f in 1..=4u64 {
            b.record(f, f, 0, 10.0 * f as f64, SHARE, MARGIN);
        }
        b.record(1, 1, 0, 10.0, SHARE, MARGIN);
        b.record(5, 5, 0, 50.0, SHARE, MARGIN);
        assert!(b.get(2).is_none() && b.get(1).is_some() && b.get(5).is_some());
        assert_eq!((b.len(), b.evicted), (4, 1));
        assert!((b.default_sum_ms - (10.0 + 30.0 + 40.0 + 50.0)).abs() < 1e-6);
        assert_eq!(b.forget(&[1, 77]), 1);
        assert!(b.check().is_ok());
    }
}
