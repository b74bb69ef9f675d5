//! The optimizer: what ties SONA together. [`Optimizer::decide`] picks a plan for a query,
//! [`Optimizer::choose`] picks among the candidate plans the host planned when `decide` asks
//! for them, [`Optimizer::observe`] learns at once from one execution (per-shape evidence,
//! exploration budget, MicroLoRA step, selector reward, BTSP write, pattern statistics), and
//! [`Optimizer::learn_cycle`] is the background cycle (BaseLoRA under EWC++, MicroLoRA merge,
//! K-means++ patterns).
//!
//! Policy (DESIGN, "Optimizer"): measured evidence first, the model second, the default when
//! unsure. In order:
//! 1. **trial** (learn mode): a plan whose first run was faster than the default by the margin
//!    runs again, alternating with the default plan, until it is verified or refuted (before a
//!    verified plan only when it looks faster than that one);
//! 2. **verified**: this shape's own runs show a plan faster than the default plan by
//!    `min_gain`, one-sided test on log latency ([`super::evidence`]): apply it (every
//!    [`RECHECK_EVERY`] applied runs the default plan is measured once more, in learn mode);
//! 3. **explore** (learn mode): once the default plan's time is known and at least
//!    `explore_min_ms`, the host plans the statement under every unblocked arm
//!    ([`Decision::wants_candidates`]) and [`Optimizer::choose`] tries the most promising
//!    untried distinct plan (ranked by the planner's cost, the cost model's prediction, and
//!    what similar shapes verified), one at a time, within the exploration budget
//!    (`attention_exploration` x default time, plus half of what verified plans save);
//! 4. otherwise the default plan.
//!
//! A plan slower than the default on its first run is never tried again; BTSP memory blocks an
//! arm after one catastrophic run on similar shapes; a verified plan that regresses is reverted.
//! There are no random draws: the same evidence gives the same decision in every backend.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{OnceCell, RefCell};
use core::fmt::Write;
use serde::{Deserialize, Serialize};

use super::btsp::BtspVerdict;
use super::evidence::{
    EvidenceBook, PlanEvidence, ShapeEvidence, MAX_COST_RATIO, RECHECK_EVERY, RISK_HORIZON,
};
use super::reasoning_bank::{MAX_ARMS, MERGE_COSINE};
use super::ArmId;
use super::{
    snapshot, AttentionSelector, BtspMemory, CostEstimator, NeuralDagConfig, PluginArms,
    ReasoningBank, Trajectory, TrajectoryBuffer,
};
use crate::attention::{mechanism, AttentionContext, AttentionKind, DagAttention, PluginId};
use crate::dag::PlanDag;
use crate::embed::{embed, EMBED_DIM};
use crate::error::{NeuralDagError, Result};
use crate::hdc::{HdcEncoder, Hypervector};
use crate::synth::{random_plan, SynthOptions};

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
/// Executions of one query shape remembered for temporal attention.
pub const HISTORY_LEN: usize = 8;
/// Query shapes whose execution history is kept (the smallest fingerprint goes first).
pub const HISTORY_SHAPES: usize = 1024;
/// Passes over the drained trajectories (and the replay samples) in one background cycle.
pub const CYCLE_EPOCHS: usize = 5;
/// Earlier samples the background cycle rehearses along with the fresh ones.
pub const REPLAY: usize = 2000;
/// Plans in the reference population whose mean embedding is subtracted from every embedding.
pub const REFERENCE_PLANS: u64 = 64;
/// Fraction of the reference mean subtracted.
pub const CENTERING: f32 = 0.8;

/// Every plan embedding shares a large common component (features are non-negative, and most
/// plans have scans, joins and a few levels), so raw cosines between unrelated plans are high:
/// 0.92 median and up to 0.99 on random plans, 0.82 median on the 22 TPC-H queries. Subtracting
/// 0.8 x the mean embedding of a fixed population of seeded synthetic plans (per attention kind)
/// and renormalising brings unrelated plans down (TPC-H median 0.49, random plans 0.35) while
/// parameter changes of one query stay above 0.97. Deterministic: the population is code.
fn reference_center(mech: &(dyn DagAttention + Send + Sync)) -> Vec<f32> {
    reference_center_of(mech).0
}

/// [`reference_center`] and how many of the synthetic plans the mechanism attended to.
fn reference_center_of(mech: &(dyn DagAttention + Send + Sync)) -> (Vec<f32>, usize) {
    let mut center = alloc::vec![0.0f32; EMBED_DIM];
    let mut count = 0.0f32;
    for i in 0..REFERENCE_PLANS {
        let plan = random_plan(
            0x00CE_47E5 + i,
            4 + (i as usize * 7) % 60,
            SynthOptions::default(),
        );
        let Ok(map) = mech.attend(&plan, &AttentionContext::default()) else {
            continue;
        };
        if let Ok(e) = embed(&plan, &map) {
            center.iter_mut().zip(e.iter()).for_each(|(c, x)| *c += x);
            count += 1.0;
        }
    }
    if count > 0.0 {
        center.iter_mut().for_each(|c| *c *= CENTERING / count);
    }
    (center, count as usize)
}

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

/// One arm the host planned the statement under, for [`Optimizer::choose`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// The arm.
    pub arm: ArmId,
    /// [`PlanDag::shape_hash`] of the plan it produced.
    pub plan: u64,
    /// The planner's total cost of that plan, without PostgreSQL's `disable_cost` penalties.
    pub cost: f64,
}

/// What [`Optimizer::decide`] chose, and why.
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
    /// `blocked`, and pass the plans to [`Optimizer::choose`] (learn mode, exploration due).
    pub wants_candidates: bool,
    /// The default plan's total cost (the planner's), the reference for candidates' costs.
    pub default_cost: f64,
    /// HDC fingerprint of the plan.
    pub hdc: Hypervector,
    /// Embedding under the default attention kind (the pattern and BTSP key).
    pub key: Vec<f32>,
    /// Embedding under `attention` (the estimator's input).
    pub input: Vec<f32>,
}

/// What one [`Optimizer::observe`] did.
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

/// What [`Optimizer::forget`] removed.
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

/// What one [`Optimizer::learn_cycle`] did.
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
    /// Statements whose candidate plans were passed to [`Optimizer::choose`].
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

/// Everything learned: what a snapshot holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct LearnedState {
    cfg: NeuralDagConfig,
    arms: Vec<String>,
    estimator: CostEstimator,
    bank: ReasoningBank,
    selector: AttentionSelector,
    btsp: BtspMemory,
    buffer: TrajectoryBuffer,
    /// Measured evidence per query shape and the exploration budget.
    evidence: EvidenceBook,
    /// Recent per-operator time shares per query shape, oldest first.
    history: BTreeMap<u64, Vec<Vec<f32>>>,
    stats: OptimizerStats,
    /// The last [`REPLAY`] training samples `(input, arm, ms)`, rehearsed every cycle. A training
    /// aid, not learned state: not in snapshots.
    #[serde(skip)]
    replay: VecDeque<(Vec<f32>, ArmId, f32)>,
}

/// An attention mechanism the host attached (see [`Optimizer::set_plugin`]).
struct HostPlugin {
    id: PluginId,
    mechanism: alloc::boxed::Box<dyn DagAttention + Send + Sync>,
    /// Its centering vector, computed on first use; Err when it attended to no reference plan.
    center: OnceCell<core::result::Result<Vec<f32>, String>>,
}

/// The optimizer. See the module documentation.
pub struct Optimizer {
    state: LearnedState,
    encoder: HdcEncoder,
    mechanisms: Vec<alloc::boxed::Box<dyn DagAttention + Send + Sync>>,
    /// Per attention kind, the centering vector (computed on first use).
    centers: [OnceCell<Vec<f32>>; AttentionKind::ALL.len()],
    /// The plugin the selector may pick as one more kind (the host's; never persisted).
    plugin: Option<HostPlugin>,
    /// The selector's statistics of plugins (persisted from format version 4).
    plugin_arms: PluginArms,
    /// Embeddings and HDC fingerprints of recently seen plans (not learned state).
    cache: RefCell<EmbedCache>,
}

/// Entries each part of [`EmbedCache`] holds.
pub const EMBED_CACHE_ENTRIES: usize = 512;

/// A bounded cache of what `decide` and `trajectory` compute from a plan alone: embeddings
/// under the kinds that use no context (all but temporal BTSP, which reads the shape's
/// history, and the ensemble, which reads the selector's weights), keyed by
/// [`PlanDag::content_hash`], and HDC fingerprints, keyed by [`PlanDag::shape_hash`] (they
/// depend on operators and depths only). The oldest entry goes first at capacity.
#[derive(Default)]
struct EmbedCache {
    embeddings: hashbrown::HashMap<(u64, u8), Vec<f32>>,
    embedding_order: VecDeque<(u64, u8)>,
    fingerprints: hashbrown::HashMap<u64, Hypervector>,
    fingerprint_order: VecDeque<u64>,
    hits: u64,
    misses: u64,
}

impl EmbedCache {
    fn put_embedding(&mut self, key: (u64, u8), e: Vec<f32>) {
        if self.embeddings.len() >= EMBED_CACHE_ENTRIES {
            if let Some(old) = self.embedding_order.pop_front() {
                self.embeddings.remove(&old);
            }
        }
        if self.embeddings.insert(key, e).is_none() {
            self.embedding_order.push_back(key);
        }
    }
    fn put_fingerprint(&mut self, key: u64, h: Hypervector) {
        if self.fingerprints.len() >= EMBED_CACHE_ENTRIES {
            if let Some(old) = self.fingerprint_order.pop_front() {
                self.fingerprints.remove(&old);
            }
        }
        if self.fingerprints.insert(key, h).is_none() {
            self.fingerprint_order.push_back(key);
        }
    }
}

impl core::fmt::Debug for Optimizer {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Optimizer")
            .field("arms", &self.state.arms)
            .field("patterns", &self.state.bank.patterns().len())
            .field("stats", &self.state.stats)
            .finish()
    }
}

impl Optimizer {
    /// A fresh optimizer over `arms` (names shown in reasons; the first is the default arm).
    pub fn new(cfg: NeuralDagConfig, arms: Vec<String>) -> Result<Self> {
        let estimator = CostEstimator::new(&cfg, arms.len());
        let state = LearnedState {
            bank: ReasoningBank::new(cfg.pattern_capacity),
            selector: AttentionSelector::new(cfg.ucb_exploration_c),
            btsp: BtspMemory::new(
                cfg.btsp_capacity,
                cfg.btsp_surprise_factor,
                cfg.btsp_recall_similarity,
            ),
            buffer: TrajectoryBuffer::new(cfg.max_trajectories),
            evidence: EvidenceBook::new(cfg.max_trajectories),
            history: BTreeMap::new(),
            stats: OptimizerStats::default(),
            replay: VecDeque::new(),
            estimator,
            arms,
            cfg,
        };
        Self::from_state(state)
    }

    fn from_state(state: LearnedState) -> Result<Self> {
        state.cfg.validate()?;
        let n = state.arms.len();
        if n == 0 || n > MAX_ARMS {
            return Err(NeuralDagError::InvalidConfig(format!(
                "arms: {n} arms, want 1 to {MAX_ARMS} (the first is the default)"
            )));
        }
        if let Some(i) = (0..n).find(|&i| state.arms[..i].contains(&state.arms[i])) {
            return Err(NeuralDagError::InvalidConfig(format!(
                "arms: '{}' is listed twice",
                state.arms[i]
            )));
        }
        if state.estimator.arms() != n {
            return Err(NeuralDagError::CorruptState(format!(
                "the cost model has {} arm heads for {n} arms",
                state.estimator.arms()
            )));
        }
        state.estimator.check()?;
        state.bank.check()?;
        state
            .evidence
            .check()
            .map_err(|e| NeuralDagError::CorruptState(format!("evidence: {e}")))?;
        let cfg = &state.cfg;
        if state.buffer.capacity() != cfg.max_trajectories
            || state.evidence.capacity() != cfg.max_trajectories
            || state.btsp.capacity() != cfg.btsp_capacity
            || state.btsp.len() > cfg.btsp_capacity
        {
            return Err(NeuralDagError::CorruptState(format!(
                "trajectory ring of {} and BTSP memory of {} ({} engrams) do not match the \
                 configuration ({} and {})",
                state.buffer.capacity(),
                state.btsp.capacity(),
                state.btsp.len(),
                cfg.max_trajectories,
                cfg.btsp_capacity
            )));
        }
        let mechanisms = AttentionKind::ALL
            .iter()
            .map(|&k| mechanism(k, &state.cfg.attention))
            .collect::<Result<Vec<_>>>()?;
        let opt = Optimizer {
            encoder: HdcEncoder::default(),
            mechanisms,
            centers: Default::default(),
            plugin: None,
            plugin_arms: PluginArms::default(),
            cache: RefCell::new(EmbedCache::default()),
            state,
        };
        if let Some(e) = opt.state.buffer.iter().find_map(|t| opt.check(t).err()) {
            return Err(NeuralDagError::CorruptState(format!(
                "a pending trajectory: {e}"
            )));
        }
        Ok(opt)
    }

    /// Adopt the run-time tunables of `cfg` (learning on/off, exploration, min gain, clusters,
    /// quality threshold, learning rates, EWC++ strength) and keep the learned state. Settings
    /// the learned state is built on (capacities, ranks, attention parameters, the default
    /// attention kind, the seed, ...) stay as they were learned: their names are returned when
    /// `cfg` asks for something else, so a host can say they take effect only after a reset.
    pub fn retune(&mut self, cfg: &NeuralDagConfig) -> Result<Vec<&'static str>> {
        cfg.validate()?;
        let old = &self.state.cfg;
        let mut next = cfg.clone();
        let mut kept = Vec::new();
        // Settings the learned state is built on stay as learned (named when `cfg` differs);
        // every other field is a tunable and comes from `cfg`.
        macro_rules! structural {
            ($($field:ident),* $(,)?) => {
                $(if cfg.$field != old.$field {
                    kept.push(stringify!($field));
                    next.$field = old.$field.clone();
                })*
            };
        }
        structural!(
            max_trajectories,
            default_attention,
            ucb_exploration_c,
            micro_lora_rank,
            base_lora_rank,
            ewc_max_lambda,
            ewc_fisher_decay,
            hdc_dimensions,
            btsp_surprise_factor,
            btsp_recall_similarity,
            btsp_capacity,
            pattern_capacity,
            attention,
            seed,
        );
        if next.micro_lora_lr != old.micro_lora_lr
            || next.base_lora_lr != old.base_lora_lr
            || next.ewc_lambda != old.ewc_lambda
        {
            self.state
                .estimator
                .retune(next.micro_lora_lr, next.base_lora_lr, next.ewc_lambda);
        }
        self.state.cfg = next;
        Ok(kept)
    }

    /// Forget what was learned about some query shapes, given their fingerprints and keys
    /// (`Trajectory::fingerprint`, `Trajectory::key`): their baselines, execution history and
    /// pending trajectories, the BTSP engrams their keys recall, and their patterns (centroid
    /// cosine at least [`MERGE_COSINE`], the similarity at which the bank itself treats two
    /// clusters as one). The cost model is shared by every shape and stays.
    pub fn forget(&mut self, fingerprints: &[u64], keys: &[Vec<f32>]) -> Forgotten {
        let st = &mut self.state;
        let mut shapes = 0;
        let known = st.evidence.forget(fingerprints);
        for f in fingerprints {
            shapes += usize::from(st.history.remove(f).is_some());
        }
        let shapes = shapes.max(known);
        let pending = st.buffer.forget_shapes(fingerprints);
        let keys: Vec<&[f32]> = keys.iter().map(Vec::as_slice).collect();
        let recall = st.btsp.recall_similarity();
        Forgotten {
            shapes,
            pending,
            engrams: st.btsp.forget_near(&keys, recall),
            patterns: st.bank.forget_near(&keys, MERGE_COSINE),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &NeuralDagConfig {
        &self.state.cfg
    }

    /// Arm names, the default first.
    pub fn arms(&self) -> &[String] {
        &self.state.arms
    }

    /// The pattern store.
    pub fn bank(&self) -> &ReasoningBank {
        &self.state.bank
    }

    /// The cost estimator.
    pub fn estimator(&self) -> &CostEstimator {
        &self.state.estimator
    }

    /// The attention selector.
    pub fn selector(&self) -> &AttentionSelector {
        &self.state.selector
    }

    /// The BTSP memory.
    pub fn btsp(&self) -> &BtspMemory {
        &self.state.btsp
    }

    /// Trajectories waiting for the next cycle.
    pub fn pending(&self) -> usize {
        self.state.buffer.len()
    }

    /// Trajectories dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.state.buffer.dropped()
    }

    /// The measured evidence per query shape and the exploration budget.
    pub fn evidence(&self) -> &EvidenceBook {
        &self.state.evidence
    }

    /// Counters.
    pub fn stats(&self) -> OptimizerStats {
        self.state.stats
    }

    fn arm_name(&self, arm: ArmId) -> &str {
        self.state
            .arms
            .get(usize::from(arm))
            .map_or("?", String::as_str)
    }

    /// Embed `dag` under `kind`, with this shape's execution history as temporal context,
    /// centred (see [`CENTERING`]) and unit length.
    fn embed_as(&self, dag: &PlanDag, kind: AttentionKind, fp: u64) -> Result<Vec<f32>> {
        let cacheable = !matches!(kind, AttentionKind::TemporalBtsp | AttentionKind::Ensemble);
        if !cacheable {
            return self.embed_uncached(dag, kind, fp);
        }
        // A plugin's entries are keyed by its id too (a plugin replaced by another is a miss).
        let key = match kind {
            AttentionKind::Plugin(id) => (dag.content_hash() ^ id.0, u8::MAX),
            k => (dag.content_hash(), k.index() as u8),
        };
        let mut cache = self.cache.borrow_mut();
        if let Some(e) = cache.embeddings.get(&key) {
            let e = e.clone();
            cache.hits += 1;
            return Ok(e);
        }
        cache.misses += 1;
        drop(cache);
        let e = self.embed_uncached(dag, kind, fp)?;
        self.cache.borrow_mut().put_embedding(key, e.clone());
        Ok(e)
    }

    /// The HDC fingerprint of `dag` (shape hash `fp`), cached.
    fn fingerprint_of(&self, dag: &PlanDag, fp: u64) -> Hypervector {
        if let Some(h) = self.cache.borrow().fingerprints.get(&fp) {
            return h.clone();
        }
        let h = self.encoder.fingerprint(dag);
        self.cache.borrow_mut().put_fingerprint(fp, h.clone());
        h
    }

    /// (hits, misses) of the embedding cache.
    pub fn cache_stats(&self) -> (u64, u64) {
        let c = self.cache.borrow();
        (c.hits, c.misses)
    }

    fn embed_uncached(&self, dag: &PlanDag, kind: AttentionKind, fp: u64) -> Result<Vec<f32>> {
        let history = self.state.history.get(&fp).map_or(&[][..], Vec::as_slice);
        let means = self.state.selector.mechanism_means();
        let ctx = AttentionContext {
            history,
            ensemble_weights: (means.iter().sum::<f32>() > 0.0).then_some(means),
            want_pairwise: false,
        };
        let (map, center) = match kind {
            AttentionKind::Plugin(id) => {
                let p = self.plugin.as_ref().filter(|p| p.id == id).ok_or_else(|| {
                    NeuralDagError::InvalidConfig(format!(
                        "attention plugin {id} is not attached to this optimizer"
                    ))
                })?;
                let map = p.mechanism.attend(dag, &ctx)?;
                let center = p
                    .center
                    .get_or_init(|| match reference_center_of(p.mechanism.as_ref()) {
                        (_, 0) => Err(format!(
                            "attention plugin {id} attended to none of the {REFERENCE_PLANS} reference plans"
                        )),
                        (c, _) => Ok(c),
                    })
                    .as_ref()
                    .map_err(|e| NeuralDagError::AttentionComputationFailed(e.clone()))?;
                (map, center)
            }
            k => (
                self.mechanisms[k.index()].attend(dag, &ctx)?,
                self.center(k),
            ),
        };
        let raw = embed(dag, &map)?;
        let mut e: Vec<f32> = raw.iter().zip(center).map(|(x, c)| x - c).collect();
        let norm = libm::sqrtf(e.iter().map(|x| x * x).sum());
        if norm > 1e-6 {
            e.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(e)
    }

    /// The reference centre of `kind` (computed once; restored from a snapshot when it has one).
    fn center(&self, kind: AttentionKind) -> &Vec<f32> {
        self.centers[kind.index()]
            .get_or_init(|| reference_center(self.mechanisms[kind.index()].as_ref()))
    }

    /// Attach `mechanism`, attention plugin `id`, as one more kind the selector may pick for
    /// the estimator's input (None detaches it). The host runs it, so it never reaches a
    /// snapshot; what the selector learns about it does, by id. Attaching the plugin already
    /// attached keeps its reference centre. Its centre is computed from the
    /// [`REFERENCE_PLANS`] synthetic plans the first time the selector picks it.
    ///
    /// A plugin that fails on a plan costs that decision nothing but the key's built-in kind
    /// ([`Decision::plugin_error`] says why).
    pub fn set_plugin(
        &mut self,
        plugin: Option<(PluginId, alloc::boxed::Box<dyn DagAttention + Send + Sync>)>,
    ) {
        match plugin {
            Some((id, _)) if self.plugin.as_ref().is_some_and(|p| p.id == id) => {}
            Some((id, mechanism)) => {
                self.plugin = Some(HostPlugin {
                    id,
                    mechanism,
                    center: OnceCell::new(),
                })
            }
            None => self.plugin = None,
        }
    }

    /// Take over the plugin attached to `old` (with its reference centre), when this one has
    /// none: a host that replaces its optimizer with a newer learned state keeps the plugin
    /// without running it on the reference plans again.
    pub fn adopt_plugin(&mut self, old: &mut Optimizer) {
        if self.plugin.is_none() {
            self.plugin = old.plugin.take();
        }
    }

    /// The attached plugin's id.
    pub fn plugin(&self) -> Option<PluginId> {
        self.plugin.as_ref().map(|p| p.id)
    }

    /// What the selector learned of plugins.
    pub fn plugin_arms(&self) -> &PluginArms {
        &self.plugin_arms
    }

    /// How many attention kinds have their reference centre ready (computed or restored).
    pub fn centers_ready(&self) -> usize {
        self.centers.iter().filter(|c| c.get().is_some()).count()
    }

    /// Choose a plan for a query, given its default plan (what the planner made with no arm
    /// applied). When the decision `wants_candidates`, the host plans the statement under the
    /// other arms and calls [`Optimizer::choose`].
    pub fn decide(&mut self, dag: &PlanDag) -> Result<Decision> {
        let fp = dag.shape_hash();
        let hdc = self.fingerprint_of(dag, fp);
        let key_kind = self.state.cfg.default_attention;
        let key = self.embed_as(dag, key_kind, fp)?;
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
        let mut plugin_error = None;
        let input = if attention == key_kind {
            key.clone()
        } else {
            match self.embed_as(dag, attention, fp) {
                Ok(e) => e,
                // A failing plugin costs the decision nothing but the key's built-in kind.
                Err(e) if !attention.is_builtin() => {
                    plugin_error = Some(alloc::string::ToString::to_string(&e));
                    attention = key_kind;
                    key.clone()
                }
                Err(e) => return Err(e),
            }
        };
        let n = self.state.arms.len();
        let preds = self.state.estimator.predict_all_ms(&input);
        // One recall per arm serves both the blocked list and choose's endorsements.
        let mut blocked = Vec::new();
        let mut promising = Vec::new();
        for a in 1..n as ArmId {
            match self.state.btsp.recall(&key, a) {
                Some(BtspVerdict::Blocked { .. }) => blocked.push(a),
                Some(BtspVerdict::Promising { ratio, similarity }) => {
                    promising.push((a, ratio, similarity))
                }
                None => {}
            }
        }
        let matched = self
            .state
            .bank
            .search(&key, Some(&hdc), 1)
            .first()
            .map(|&(s, p)| (s, p.id, p.confidence()));
        let (pattern, similarity, confidence) =
            matched.map_or((None, 0.0, 0.0), |(s, id, c)| (Some(id), s, c));
        let default_cost = dag
            .roots()
            .iter()
            .map(|&r| dag.node(r as usize).total_cost)
            .sum();
        let cfg = &self.state.cfg;
        let margin = f64::from(cfg.min_gain);
        let learning = cfg.learning_enabled && cfg.attention_exploration > 0.0;
        let usable = |p: &PlanEvidence| p.arm_list().find(|&a| a != 0 && !blocked.contains(&a));
        let mut reason = String::new();
        let mut choice: Option<(ArmId, Rule, u64)> = None;
        let mut wants_candidates = false;
        let ev = self.state.evidence.get(fp);
        let default_ms = ev.and_then(|e| e.default_ms());

        // Planning the candidates costs the statement one planning per arm: only when the
        // budget affords the cheapest stake an untried plan could need (the least planner cost
        // ratio seen for one, 1 when unknown or when similar shapes may endorse one).
        let share = f64::from(cfg.attention_exploration);
        // Err: why not (the reason's tail).
        let fundable = |e: &ShapeEvidence, d: f64| -> core::result::Result<(), String> {
            // An arm a similar shape endorses (see `endorsement`) is staked at ratio 1.
            let endorsed_arm = |a: ArmId| {
                promising.iter().any(|x| x.0 == a)
                    || matched.is_some_and(|(s, id, c)| {
                        s * c > PATTERN_RULE
                            && self.state.bank.get(id).and_then(|p| p.best_arm()) == Some(a)
                    })
            };
            let reference = e.reference_ms(margin).unwrap_or(d);
            let ratio = if !e.candidates_known {
                1.0
            } else {
                e.untried()
                    .filter(|p| usable(p).is_some())
                    .map(|p| {
                        if p.arm_list().any(endorsed_arm) || p.cost_ratio <= 0.0 {
                            1.0
                        } else {
                            f64::from(p.cost_ratio)
                        }
                    })
                    .fold(f64::INFINITY, f64::min)
                    .min(MAX_COST_RATIO)
            };
            if !EvidenceBook::worth_the_risk(d, reference, ratio) {
                return Err(format!(
                    "every untried plan could cost more above the verified plan's {reference:.3} ms than it could save over {RISK_HORIZON} runs (candidates not planned)"
                ));
            }
            let stake = EvidenceBook::stake(d, reference, share, ratio);
            if self.state.evidence.affords(fp, stake, share) {
                Ok(())
            } else {
                Err(format!(
                    "the exploration budget holds {:.1} ms, less than the {:.1} ms the cheapest untried plan needs (candidates not planned until the runs repay it)",
                    self.state.evidence.pool_ms,
                    stake.min(self.state.evidence.pool_cap(share))
                ))
            }
        };

        // 2. A plan under trial, alternating with the default plan.
        // It comes first when no plan is verified or it looks faster than the verified one.
        if learning {
            let trial = ev
                .and_then(|e| e.in_trial(margin).map(|p| (e, p)))
                .filter(|(e, p)| {
                    e.verified(margin)
                        .is_none_or(|v| p.stats.mean < v.stats.mean)
                });
            // After its first run, a trial waits while an untried plan the planner costs no
            // more (within TRIAL_TIE) can be explored: one run each screens the equally
            // promising plans before several runs go to one of them.
            // The rival must be one `choose` would explore (not screened by the planner's cost
            // or the risk horizon), or the trial would wait for ever.
            let trial = trial.filter(|(e, p)| {
                let Some(d) = default_ms else { return true };
                let reference = e.reference_ms(margin).unwrap_or(d);
                let rival = p.stats.count == 1
                    && p.cost_ratio > 0.0
                    && e.candidates_known
                    && e.untried().any(|q| {
                        let r = f64::from(q.cost_ratio);
                        usable(q).is_some()
                            && q.cost_ratio > 0.0
                            && r <= f64::from(p.cost_ratio) * (1.0 + TRIAL_TIE)
                            && r <= MAX_COST_RATIO
                            && EvidenceBook::worth_the_risk(d, reference, r)
                    });
                !(rival && fundable(e, d).is_ok())
            });
            if let Some((e, p)) = trial {
                if let Some(a) = usable(p) {
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
                        choice = Some((a, Rule::Trial, p.plan));
                    } else {
                        let _ = write!(
                            reason,
                            "measuring the default plan again for the trial of '{}' ({} runs vs {})",
                            self.arm_name(a),
                            p.stats.count,
                            e.default.count
                        );
                        choice = Some((0, Rule::Trial, fp));
                    }
                }
            }
        }

        // 1. A plan this shape's own runs verified.
        if choice.is_none() {
            if let Some((e, p)) = ev.and_then(|e| e.verified(margin).map(|p| (e, p))) {
                if let Some(a) = usable(p) {
                    if learning && e.since_default >= RECHECK_EVERY {
                        let _ = write!(
                        reason,
                        "measuring the default plan again after {} runs of the verified plan of '{}'",
                        e.since_default,
                        self.arm_name(a)
                    );
                        choice = Some((0, Rule::Default, fp));
                    } else {
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
                        choice = Some((a, Rule::Verified, p.plan));
                    }
                }
            }
        }

        // A verified plan need not be the best: untried candidates are still explored, within
        // the budget (it stays the choice when nothing is tried).
        if learning {
            if let (Some((_, Rule::Verified, _)), Some(e), Some(d)) = (choice, ev, default_ms) {
                let untried = !e.candidates_known || e.untried().any(|p| usable(p).is_some());
                if untried && d >= f64::from(cfg.explore_min_ms) {
                    match fundable(e, d) {
                        Ok(()) => wants_candidates = true,
                        Err(why) => {
                            let _ = write!(reason, "; {why}");
                        }
                    }
                }
            }
        }

        // 3. Exploration: ask the host for the candidate plans.
        if choice.is_none() {
            match (ev, default_ms) {
                _ if !learning => reason.push_str(if cfg.learning_enabled {
                    "no plan verified faster for this query shape; not exploring (exploration budget 0): default plan"
                } else {
                    "no plan verified faster for this query shape: default plan"
                }),
                (_, None) => reason.push_str(
                    "measuring the default plan first (no plan is explored before its time is known)",
                ),
                (_, Some(d)) if d < f64::from(cfg.explore_min_ms) => {
                    let _ = write!(
                        reason,
                        "the default plan takes {d:.3} ms, below explore_min_ms {:.1}: not worth exploring",
                        cfg.explore_min_ms
                    );
                }
                (Some(e), Some(_))
                    if e.candidates_known && !e.untried().any(|p| usable(p).is_some()) =>
                {
                    reason.push_str(
                        "every candidate plan was tried and none verified faster: default plan",
                    );
                }
                (_, Some(_)) if blocked.len() + 1 >= n => {
                    reason.push_str("every other arm is blocked by BTSP memory: default plan");
                }
                (Some(e), Some(d)) => match fundable(e, d) {
                    Ok(()) => {
                        wants_candidates = true;
                        reason.push_str("candidate plans wanted");
                    }
                    Err(why) => {
                        let _ = write!(reason, "{why}: default plan");
                    }
                },
                (None, Some(_)) => {
                    wants_candidates = true;
                    reason.push_str("candidate plans wanted");
                }
            }
        }
        let (arm, rule, plan) = choice.unwrap_or((0, Rule::Default, fp));
        if !blocked.is_empty() {
            let names: Vec<&str> = blocked.iter().map(|&a| self.arm_name(a)).collect();
            let _ = write!(reason, "; blocked by BTSP memory: {}", names.join(", "));
        }
        if let Some(e) = &plugin_error {
            let _ = write!(
                reason,
                "; the attention plugin failed ({e}), {} attention used instead",
                key_kind.name()
            );
        }
        self.state.stats.decisions[rule as usize] += 1;
        let at = |a: ArmId| preds.get(usize::from(a)).copied().unwrap_or(f32::NAN);
        Ok(Decision {
            arm,
            rule,
            pattern,
            similarity,
            confidence,
            attention,
            plugin_error,
            predicted_ms: at(arm),
            default_predicted_ms: at(0),
            blocked,
            promising,
            reason,
            fingerprint: fp,
            plan,
            wants_candidates,
            default_cost,
            hdc,
            key,
            input,
        })
    }

    /// What similar shapes say for `arm`: a close pattern verified it, or BTSP memory recalls
    /// it much faster than the default on a similar plan.
    fn endorsement(&self, d: &Decision, arm: ArmId) -> Option<String> {
        if let Some(p) = d.pattern.and_then(|id| self.state.bank.get(id)) {
            let score = d.similarity * p.confidence();
            if p.best_arm() == Some(arm) && score > PATTERN_RULE {
                return Some(format!(
                    "pattern {} (similarity {:.3} x confidence {:.3} = {score:.3} > {PATTERN_RULE}) found it faster on similar queries",
                    p.id,
                    d.similarity,
                    p.confidence()
                ));
            }
        }
        d.promising
            .iter()
            .find(|(a, _, _)| *a == arm)
            .map(|(_, ratio, similarity)| {
                format!(
                    "BTSP memory: it ran {:.1}x faster than the default on a similar plan (similarity {similarity:.3})",
                    1.0 / ratio
                )
            })
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
        decision.wants_candidates = false;
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
        let fp = decision.fingerprint;
        let base = decision.default_cost.max(1e-9);
        let planned: Vec<(u64, ArmId, f64)> = candidates
            .iter()
            .map(|c| (c.plan, c.arm, c.cost / base))
            .collect();
        self.state.evidence.candidates(fp, &planned);
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
            let Some(arm) = p.arm_list().find(|&a| a != 0 && !blocked.contains(&a)) else {
                continue;
            };
            distinct += 1;
            let ratio = if p.cost_ratio > 0.0 {
                f64::from(p.cost_ratio)
            } else {
                1.0
            };
            let endorsed = p.arm_list().find_map(|a| self.endorsement(decision, a));
            if ratio > MAX_COST_RATIO && endorsed.is_none() {
                costly += 1;
                continue;
            }
            if endorsed.is_none() && !EvidenceBook::worth_the_risk(default_ms, reference, ratio) {
                risky += 1;
                continue;
            }
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

    fn with_blocked(&self, mut reason: String, d: &Decision) -> String {
        if !d.blocked.is_empty() {
            let names: Vec<&str> = d.blocked.iter().map(|&a| self.arm_name(a)).collect();
            let _ = write!(reason, "; blocked by BTSP memory: {}", names.join(", "));
        }
        reason
    }

    /// The estimator's latency prediction (ms) for running `dag` under `arm`, seen through the
    /// attention kind with the best prediction record so far.
    pub fn predict_ms(&self, dag: &PlanDag, arm: ArmId) -> Result<f32> {
        let kind = self
            .state
            .selector
            .best()
            .unwrap_or(self.state.cfg.default_attention);
        let input = self.embed_as(dag, kind, dag.shape_hash())?;
        self.state
            .estimator
            .predict_ms(&input, usize::from(arm))
            .ok_or_else(|| {
                NeuralDagError::InvalidConfig(format!(
                    "arm {arm} does not exist ({} arms)",
                    self.state.arms.len()
                ))
            })
    }

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
        let (exec_embedding, op_shares) = match executed {
            Some(dag) => (
                match self.embed_as(dag, decision.attention, decision.fingerprint) {
                    Ok(e) => e,
                    // A plugin that fails on the executed plan leaves its embedding unknown.
                    Err(_) if !decision.attention.is_builtin() => Vec::new(),
                    Err(e) => return Err(e),
                },
                dag.measured_shares().unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let plan = match executed {
            Some(dag) => dag.shape_hash(),
            None if arm == decision.arm => decision.plan,
            None if arm == 0 => decision.fingerprint,
            // Another arm ran and its plan is unknown: a plan of its own, per arm.
            None => decision.fingerprint ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(arm))),
        };
        let predicted_ms = if arm == decision.arm {
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

    fn check(&self, t: &Trajectory) -> Result<()> {
        let bad = |m: String| Err(NeuralDagError::InvalidTrajectory(m));
        if t.key.len() != EMBED_DIM || t.input.len() != EMBED_DIM {
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
        self.observe_inner(t, true)
    }

    /// [`observe`](Self::observe) for a copy of the learned state that never runs a cycle (a
    /// PostgreSQL backend, whose learner observes the same execution and queues it there):
    /// everything `observe` learns at once, so that this copy's next decisions use it, but the
    /// trajectory is not queued, so the copy does not grow with what it executes.
    pub fn observe_unqueued(&mut self, t: Trajectory) -> Result<Observed> {
        self.observe_inner(t, false)
    }

    fn observe_inner(&mut self, t: Trajectory, queue: bool) -> Result<Observed> {
        if let Err(e) = self.check(&t) {
            self.state.stats.rejected += 1;
            return Err(e);
        }
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
        if st.estimator.trained_batches() > 0 {
            let reward = AttentionSelector::reward(t.predicted_ms, t.actual_ms);
            match t.attention {
                AttentionKind::Plugin(id) => self.plugin_arms.update(id, reward),
                kind => st.selector.update(kind, reward),
            }
        }
        st.estimator
            .observe(&t.input, usize::from(t.arm), t.actual_ms);
        let baseline_ms = st
            .evidence
            .get(t.fingerprint)
            .and_then(|e| e.default_ms())
            .map(|b| b as f32);
        let recorded = st.evidence.record(
            t.fingerprint,
            t.plan,
            t.arm,
            f64::from(t.actual_ms),
            f64::from(st.cfg.attention_exploration),
            f64::from(st.cfg.min_gain),
        );
        let mut surprising = false;
        if t.plan != t.fingerprint {
            if let Some(b) = baseline_ms {
                surprising = st.btsp.observe(&t.key, t.arm, t.actual_ms, b);
                st.stats.btsp_writes += u64::from(surprising);
            }
        }
        if let Some(id) = t.pattern {
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
        let replay: Vec<(&[f32], usize, f32)> = st
            .replay
            .iter()
            .map(|(e, a, ms)| (e.as_slice(), usize::from(*a), *ms))
            .collect();
        let loss_before = st.estimator.train(&samples, &replay, CYCLE_EPOCHS, true);
        for t in ts.iter().rev().take(REPLAY).rev() {
            if st.replay.len() == REPLAY {
                st.replay.pop_front();
            }
            st.replay.push_back((t.input.clone(), t.arm, t.actual_ms));
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

    /// Everything learned (including trajectories not yet learned from) as one versioned,
    /// checksummed snapshot.
    ///
    /// The payload also carries every attention kind's reference centre (computed here if need
    /// be: about 64 synthetic plans each), so that a backend restoring it embeds its first
    /// statements without computing them.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        let centers: Vec<&Vec<f32>> = AttentionKind::ALL.iter().map(|&k| self.center(k)).collect();
        snapshot::encode(&(&self.state, centers, &self.plugin_arms))
    }

    /// An optimizer from a [`Optimizer::snapshot`]. Corrupt, truncated or foreign bytes, or a
    /// snapshot whose parts disagree, are a [`NeuralDagError::CorruptState`] (or
    /// `InvalidConfig` for a stored configuration this build refuses).
    pub fn restore(bytes: &[u8]) -> Result<Self> {
        let bad = |e: postcard::Error| {
            NeuralDagError::CorruptState(format!("payload does not decode: {e}"))
        };
        let (version, payload) = snapshot::open(bytes)?;
        let (state, centers, plugin_arms): (LearnedState, Vec<Vec<f32>>, PluginArms) = match version
        {
            2 => (
                postcard::from_bytes(payload).map_err(bad)?,
                Vec::new(),
                PluginArms::default(),
            ),
            3 => {
                let (state, centers) = postcard::from_bytes(payload).map_err(bad)?;
                (state, centers, PluginArms::default())
            }
            _ => postcard::from_bytes(payload).map_err(bad)?,
        };
        plugin_arms.check()?;
        let mut opt = Self::from_state(state)?;
        opt.plugin_arms = plugin_arms;
        if !centers.is_empty() && centers.len() != AttentionKind::ALL.len() {
            return Err(NeuralDagError::CorruptState(format!(
                "{} attention centres for {} kinds",
                centers.len(),
                AttentionKind::ALL.len()
            )));
        }
        for (kind, c) in AttentionKind::ALL.iter().zip(centers) {
            if c.len() != EMBED_DIM || c.iter().any(|x| !x.is_finite()) {
                return Err(NeuralDagError::CorruptState(format!(
                    "the {} attention centre has {} values (want {EMBED_DIM} finite ones)",
                    kind.name(),
                    c.len()
                )));
            }
            let _ = opt.centers[kind.index()].set(c);
        }
        Ok(opt)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::evidence::RECHECK_EVERY;
    use crate::learning::snapshot::{FORMAT_VERSION, MAGIC};
    use crate::rng::{fnv1a64, SplitMix64};
    use alloc::string::ToString;
    use alloc::vec;

    fn arms() -> Vec<String> {
        ["default", "nestloop=off", "hashjoin=off", "seqscan=off"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    }

    fn plan(seed: u64) -> PlanDag {
        random_plan(seed, 20, SynthOptions::default())
    }

    fn optimizer() -> Optimizer {
        Optimizer::new(
            NeuralDagConfig {
                attention_exploration: 0.0,
                ..Default::default()
            },
            arms(),
        )
        .unwrap()
    }

    fn run(opt: &mut Optimizer, dag: &PlanDag, arm: ArmId, ms: f32) -> Observed {
        let d = opt.decide(dag).unwrap();
        let t = opt.trajectory(&d, arm, None, ms).unwrap();
        opt.observe(t).unwrap()
    }

    #[test]
    fn forget_removes_what_a_shape_taught_and_keeps_the_rest() {
        let mut opt = optimizer();
        let (p, q) = (plan(21), plan(22));
        for i in 0..24 {
            let (dag, arm, ms) = if i % 2 == 0 {
                (&p, (i % 4) as ArmId, if i % 4 == 2 { 10.0 } else { 90.0 })
            } else {
                (&q, 0, 50.0)
            };
            run(&mut opt, dag, arm, ms);
        }
        // A catastrophe for p: an engram that blocks arm 1 for p.
        run(&mut opt, &p, 1, 5_000.0);
        opt.learn_cycle().unwrap();
        let before = opt.bank().patterns().len();
        assert!(before >= 2, "{before}");
        let dp = opt.decide(&p).unwrap();
        assert_eq!(dp.blocked, vec![1]);
        let dq = opt.decide(&q).unwrap();
        let gone = opt.forget(&[dp.fingerprint], core::slice::from_ref(&dp.key));
        // p's two surprises: arm 2's 9x win and arm 1's catastrophe.
        assert_eq!((gone.shapes, gone.engrams), (1, 2));
        assert!(gone.patterns >= 1 && gone.patterns < before, "{gone:?}");
        assert_eq!(opt.bank().patterns().len(), before - gone.patterns);
        // p starts over; q keeps its pattern.
        let dp = opt.decide(&p).unwrap();
        assert!(
            dp.blocked.is_empty() && dp.similarity < PATTERN_RULE,
            "{}",
            dp.reason
        );
        let dq2 = opt.decide(&q).unwrap();
        assert_eq!(dq2.pattern, dq.pattern);
        assert!(dq2.pattern.is_some());
    }

    #[test]
    fn the_embedding_cache_changes_nothing_but_the_work() {
        let mut cached = optimizer();
        let p = plan(31);
        let first = cached.decide(&p).unwrap();
        let (h0, m0) = cached.cache_stats();
        assert!(m0 >= 1, "{m0}");
        let again = cached.decide(&p).unwrap();
        let (h1, m1) = cached.cache_stats();
        assert!(h1 > h0 && m1 == m0, "hits {h0}->{h1}, misses {m0}->{m1}");
        assert_eq!((&first.key, &first.hdc), (&again.key, &again.hdc));
        // One changed estimate is another plan: a miss, and a different embedding.
        let mut nodes: Vec<crate::PlanNode> = (0..p.len()).map(|v| p.node(v).clone()).collect();
        nodes[0].est_rows *= 10.0;
        let q = PlanDag::new(nodes, p.edges().to_vec()).unwrap();
        assert_eq!(q.shape_hash(), p.shape_hash());
        assert_ne!(q.content_hash(), p.content_hash());
        let dq = cached.decide(&q).unwrap();
        assert!(cached.cache_stats().1 > m1);
        assert_ne!(dq.key, first.key);
        // A fresh optimizer computes the same embeddings from scratch.
        let mut fresh = optimizer();
        assert_eq!(fresh.decide(&q).unwrap().key, dq.key);
    }

    #[test]
    fn retune_adopts_tunables_and_names_what_stays_as_learned() {
        let mut opt = optimizer();
        let p = plan(9);
        for _ in 0..3 {
            run(&mut opt, &p, 0, 100.0);
        }
        opt.learn_cycle().unwrap();
        let patterns = opt.bank().patterns().len();
        // Exploration off: the default plan, and no candidates asked for.
        let d = opt.decide(&p).unwrap();
        assert!(!d.wants_candidates, "{}", d.reason);
        let cfg = NeuralDagConfig {
            attention_exploration: 0.5,
            default_attention: AttentionKind::CriticalPath,
            btsp_capacity: 17,
            ..Default::default()
        };
        let kept = opt.retune(&cfg).unwrap();
        assert_eq!(kept, vec!["default_attention", "btsp_capacity"]);
        assert_eq!(opt.config().attention_exploration, 0.5);
        assert_eq!(opt.config().default_attention, AttentionKind::Topological);
        assert_eq!(opt.bank().patterns().len(), patterns);
        // The budget earned nothing while exploration was off: the candidates are not even
        // planned (each would cost the statement a planning) until runs earn a stake.
        let d = opt.decide(&p).unwrap();
        assert!(!d.wants_candidates, "{}", d.reason);
        assert!(d.reason.contains("candidates not planned"), "{}", d.reason);
        run(&mut opt, &p, 0, 100.0);
        let d = opt.decide(&p).unwrap();
        assert!(d.wants_candidates, "{}", d.reason);
        // A bad value is refused and changes nothing.
        let bad = NeuralDagConfig {
            attention_exploration: 2.0,
            ..Default::default()
        };
        assert!(opt.retune(&bad).is_err());
        assert_eq!(opt.config().attention_exploration, 0.5);
    }

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

    /// What the host would see for one query: per arm, the plan it makes, its planner cost
    /// and what it takes to run.
    struct World {
        plans: Vec<u64>,
        cost: Vec<f64>,
        ms: Vec<f32>,
    }

    impl World {
        /// Arms 1 and 3 make the same plan (planner cost 1.3x, `fast` ms); arm 2 a plan
        /// costed 1.1x that takes `slow` ms; the default takes 100 ms.
        fn new(dag: &PlanDag, fast: f32, slow: f32) -> World {
            let fp = dag.shape_hash();
            World {
                plans: vec![fp, 11, 22, 11],
                cost: vec![1000.0, 1300.0, 1100.0, 1300.0],
                ms: vec![100.0, fast, slow, fast],
            }
        }
    }

    /// One execution as the host runs it: decide, plan the candidates when asked, run.
    fn step(opt: &mut Optimizer, dag: &PlanDag, w: &World) -> (Decision, Observed) {
        let mut d = opt.decide(dag).unwrap();
        if d.wants_candidates {
            let cands: Vec<Candidate> = (1..w.plans.len())
                .filter(|a| !d.blocked.contains(&(*a as ArmId)))
                .map(|a| Candidate {
                    arm: a as ArmId,
                    plan: w.plans[a],
                    cost: w.cost[a] * d.default_cost / 1000.0,
                })
                .collect();
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

    fn learner() -> Optimizer {
        Optimizer::new(NeuralDagConfig::default(), arms()).unwrap()
    }

    /// Give the exploration budget some room (other shapes' default runs).
    fn fund(opt: &mut Optimizer, runs: usize) {
        for i in 0..runs {
            run(opt, &plan(77 + (i % 5) as u64), 0, 100.0);
        }
    }

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
    fn snapshot_restores_everything_and_damage_is_an_error() {
        let mut opt = optimizer();
        let p = plan(6);
        for i in 0..30 {
            run(&mut opt, &p, (i % 4) as ArmId, 10.0 + i as f32);
        }
        opt.learn_cycle().unwrap();
        run(&mut opt, &p, 1, 12.0);
        let bytes = opt.snapshot().unwrap();
        let mut back = Optimizer::restore(&bytes).unwrap();
        assert_eq!(back.snapshot().unwrap(), bytes);
        assert_eq!((back.pending(), back.bank().patterns().len()), (1, 1));
        let (a, b) = (opt.decide(&p).unwrap(), back.decide(&p).unwrap());
        assert_eq!((a.arm, &a.reason), (b.arm, &b.reason));

        // Any damage is an error, never a panic: truncation, a flipped byte, and payload
        // bytes changed behind a recomputed checksum (what a hostile import could craft).
        assert!(matches!(
            Optimizer::restore(&bytes[..bytes.len() - 1]),
            Err(NeuralDagError::CorruptState(_))
        ));
        let mut rng = SplitMix64::new(8);
        let header = 20;
        for round in 0..300 {
            let mut payload = bytes[header..].to_vec();
            for _ in 0..1 + round % 4 {
                let i = rng.below(payload.len());
                payload[i] = rng.next_u64() as u8;
            }
            if round % 7 == 0 {
                payload.truncate(rng.below(payload.len()));
            }
            let mut forged = Vec::new();
            forged.extend_from_slice(MAGIC);
            forged.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            forged.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            forged.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
            forged.extend_from_slice(&payload);
            if let Ok(mut o) = Optimizer::restore(&forged) {
                // Whatever decoded is whole enough to use.
                let _ = o.decide(&p);
                let _ = o.learn_cycle();
            }
        }
    }

    #[test]
    fn snapshots_carry_the_attention_centres_and_version_2_is_still_read() {
        let mut opt = optimizer();
        let p = plan(5);
        for i in 0..12 {
            run(&mut opt, &p, (i % 4) as ArmId, 20.0 + i as f32);
        }
        opt.learn_cycle().unwrap();
        let before = opt.decide(&p).unwrap();
        let bytes = opt.snapshot().unwrap();
        let restored = Optimizer::restore(&bytes).unwrap();
        assert_eq!(restored.centers_ready(), AttentionKind::ALL.len());
        let mut restored = restored;
        let after = restored.decide(&p).unwrap();
        assert_eq!(
            (before.arm, before.key.clone()),
            (after.arm, after.key.clone())
        );
        // A version-2 snapshot (the state alone) restores too; its centres come back computed.
        let v2 = snapshot::encode_as(&opt.state, 2).unwrap();
        let mut old = Optimizer::restore(&v2).unwrap();
        assert_eq!(old.centers_ready(), 0);
        let again = old.decide(&p).unwrap();
        assert_eq!(again.key, before.key);
        assert!(old.centers_ready() >= 1);
        // A centre that is not 256 finite numbers is refused by name.
        let mut centers: Vec<Vec<f32>> = AttentionKind::ALL
            .iter()
            .map(|&k| opt.center(k).clone())
            .collect();
        centers[2][7] = f32::NAN;
        let forged = snapshot::encode_as(&(&opt.state, centers), 3).unwrap();
        match Optimizer::restore(&forged) {
            Err(NeuralDagError::CorruptState(m)) => assert!(m.contains("critical_path"), "{m}"),
            other => panic!("expected CorruptState, got {:?}", other.map(|_| ())),
        }
    }

    /// A host-supplied mechanism: weight by estimated rows (or fail on every plan).
    struct RowsPlugin {
        id: PluginId,
        fail: bool,
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

    fn rows_plugin(
        id: u64,
        fail: bool,
    ) -> Option<(PluginId, alloc::boxed::Box<dyn DagAttention + Send + Sync>)> {
        let id = PluginId(id);
        Some((id, alloc::boxed::Box::new(RowsPlugin { id, fail })))
    }

    #[test]
    fn the_selector_picks_an_attached_plugin_and_what_it_learns_persists() {
        let mut opt = optimizer();
        // The learner's optimizer never runs plugins: it learns from trajectories alone.
        let mut learner = optimizer();
        opt.set_plugin(rows_plugin(7, false));
        assert_eq!(opt.plugin(), Some(PluginId(7)));
        let plans: Vec<PlanDag> = (40..44).map(plan).collect();
        let mut picked = 0;
        for i in 0..120 {
            let p = &plans[i % plans.len()];
            let d = opt.decide(p).unwrap();
            assert_eq!(d.plugin_error, None);
            let t = opt
                .trajectory(&d, 0, Some(p), 10.0 + (i % 4) as f32)
                .unwrap();
            if d.attention == AttentionKind::Plugin(PluginId(7)) {
                picked += 1;
                // The estimator's input is the plugin's embedding, not a built-in kind's.
                assert!(AttentionKind::ALL
                    .iter()
                    .all(|&k| opt.embed_as(p, k, d.fingerprint).unwrap() != d.input));
                assert_eq!(t.executed, d.input);
            }
            learner.observe(t.clone()).unwrap();
            opt.observe(t).unwrap();
            if i % 10 == 9 {
                opt.learn_cycle().unwrap();
                learner.learn_cycle().unwrap();
            }
        }
        assert!(picked > 0, "the selector never picked the plugin");
        let (pulls, _) = learner.plugin_arms().get(PluginId(7));
        assert!(pulls > 0, "the learner credited no plugin pull");
        assert_eq!(learner.plugin_arms(), opt.plugin_arms());
        // What the selector learned of the plugin survives a snapshot; the plugin does not,
        // until the host hands it over (with its centre, so nothing is computed again).
        let mut restored = Optimizer::restore(&learner.snapshot().unwrap()).unwrap();
        assert_eq!(restored.plugin_arms(), learner.plugin_arms());
        assert_eq!(restored.plugin(), None);
        restored.adopt_plugin(&mut opt);
        assert_eq!((restored.plugin(), opt.plugin()), (Some(PluginId(7)), None));
        assert!(restored.plugin.as_ref().unwrap().center.get().is_some());
        // A version-3 snapshot restores with no plugin statistics.
        let centers: Vec<&Vec<f32>> = AttentionKind::ALL
            .iter()
            .map(|&k| learner.center(k))
            .collect();
        let v3 = snapshot::encode_as(&(&learner.state, centers), 3).unwrap();
        assert_eq!(
            Optimizer::restore(&v3).unwrap().plugin_arms(),
            &PluginArms::default()
        );
        // Damaged plugin statistics are refused by name.
        let mut forged = learner.plugin_arms().clone();
        forged.update(PluginId(9), 0.5);
        let mut bytes = postcard::to_allocvec(&forged).unwrap();
        // The last reward sum (f64, little-endian, at the end) becomes NaN.
        let n = bytes.len();
        bytes[n - 8..].copy_from_slice(&f64::NAN.to_le_bytes());
        let forged: PluginArms = postcard::from_bytes(&bytes).unwrap();
        let centers: Vec<&Vec<f32>> = AttentionKind::ALL
            .iter()
            .map(|&k| learner.center(k))
            .collect();
        let bad = snapshot::encode(&(&learner.state, centers, &forged)).unwrap();
        match Optimizer::restore(&bad) {
            Err(NeuralDagError::CorruptState(m)) => assert!(m.contains("plugin arm"), "{m}"),
            other => panic!("expected CorruptState, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn a_failing_plugin_costs_the_decision_only_the_built_in_kind() {
        let mut with = optimizer();
        let mut without = optimizer();
        let plans: Vec<PlanDag> = (50..53).map(plan).collect();
        // Train both alike until every built-in kind was tried, then attach a failing plugin.
        for i in 0..60 {
            let p = &plans[i % plans.len()];
            for o in [&mut with, &mut without] {
                run(o, p, (i % 4) as ArmId, 10.0 + (i % 7) as f32);
                if i % 10 == 9 {
                    o.learn_cycle().unwrap();
                }
            }
        }
        with.set_plugin(rows_plugin(3, true));
        let d = with.decide(&plans[0]).unwrap();
        let e = d
            .plugin_error
            .clone()
            .expect("the plugin was picked and failed");
        assert!(e.contains("ran out of fuel"), "{e}");
        assert_eq!(d.attention, with.config().default_attention);
        assert!(d.reason.contains("attention plugin failed"), "{}", d.reason);
        let base = without.decide(&plans[0]).unwrap();
        assert_eq!((d.arm, d.rule, &d.key), (base.arm, base.rule, &base.key));
        // Its trajectory teaches under the built-in kind; nothing is credited to the plugin.
        let t = with.trajectory(&d, 0, Some(&plans[0]), 12.0).unwrap();
        assert_eq!(t.attention, with.config().default_attention);
        with.observe(t).unwrap();
        assert_eq!(with.plugin_arms().get(PluginId(3)), (0, 0.0));
        // Detached, the selector is back to the built-in kinds.
        with.set_plugin(None);
        assert!(with.decide(&plans[0]).unwrap().attention.is_builtin());
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
