//! The optimizer: what ties SONA together. [`Optimizer::decide`] picks an arm for a plan,
//! [`Optimizer::observe`] learns at once from one execution (MicroLoRA step, selector reward,
//! BTSP write, pattern statistics), [`Optimizer::learn_cycle`] is the background cycle (BaseLoRA
//! under EWC++, MicroLoRA merge, K-means++ patterns).
//!
//! Decision rule, in order (DESIGN, "Optimizer"):
//! 1. the best matching pattern has similarity x confidence > [`PATTERN_RULE`] and BTSP memory
//!    does not block its best arm: use that arm;
//! 2. BTSP memory recalls an arm that ran at least `btsp_surprise_factor` times faster than the
//!    default on a similar plan: use it (one surprisingly good run is enough, before any cycle);
//! 3. the estimator, once trained, predicts an unblocked arm at least `min_gain` faster than
//!    the default: use it;
//! 4. otherwise the default arm.
//!
//! Then, with probability `attention_exploration`, another unblocked arm is tried instead, and
//! only when the default arm's latency for this query shape is known (so that a catastrophe is
//! recognised, and blocked, after one run). With a matching pattern only arms it has not yet
//! seen [`EXPLORE_SAMPLES`] times are tried, and not those already seen twice as slow as its
//! best: exploration stops by itself once a pattern is known.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{OnceCell, RefCell};
use core::fmt::Write;
use serde::{Deserialize, Serialize};

use super::btsp::BtspVerdict;
use super::reasoning_bank::{ArmStats, MAX_ARMS, MERGE_COSINE};
use super::ArmId;
use super::{
    snapshot, AttentionSelector, BtspMemory, CostEstimator, NeuralDagConfig, ReasoningBank,
    Trajectory, TrajectoryBuffer,
};
use crate::attention::{mechanism, AttentionContext, AttentionKind, DagAttention};
use crate::dag::PlanDag;
use crate::embed::{embed, EMBED_DIM};
use crate::error::{NeuralDagError, Result};
use crate::hdc::{HdcEncoder, Hypervector};
use crate::rng::SplitMix64;
use crate::synth::{random_plan, SynthOptions};

/// A pattern's best arm is used when similarity x confidence exceeds this.
pub const PATTERN_RULE: f32 = 0.8;
/// Runs of an arm a pattern wants before exploration leaves that arm alone.
pub const EXPLORE_SAMPLES: u32 = 2;
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
    center
}

/// Which rule made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// A confident pattern's best arm.
    Pattern,
    /// An arm BTSP memory recalls as much faster than the default.
    Promising,
    /// The estimator's prediction.
    Estimator,
    /// Nothing better known: the default arm.
    Default,
    /// Exploration of another arm.
    Explore,
}

impl Rule {
    /// Lower-case name, as EXPLAIN shows it.
    pub fn name(self) -> &'static str {
        match self {
            Rule::Pattern => "pattern",
            Rule::Promising => "btsp",
            Rule::Estimator => "estimator",
            Rule::Default => "default",
            Rule::Explore => "explore",
        }
    }
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
    /// The attention kind the selector chose for the estimator's input.
    pub attention: AttentionKind,
    /// The estimator's prediction for the chosen arm, ms.
    pub predicted_ms: f32,
    /// The estimator's prediction for the default arm, ms.
    pub default_predicted_ms: f32,
    /// Arms BTSP memory blocks for this plan.
    pub blocked: Vec<ArmId>,
    /// Human-readable explanation (EXPLAIN prints it).
    pub reason: String,
    /// [`PlanDag::shape_hash`] of the plan.
    pub fingerprint: u64,
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
    /// Decisions made, by rule in [`Rule`] order.
    pub decisions: [u64; 5],
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
    /// Default-arm latency per query shape (bounded like the trajectory ring).
    baselines: BTreeMap<u64, ArmStats>,
    /// Recent per-operator time shares per query shape, oldest first.
    history: BTreeMap<u64, Vec<Vec<f32>>>,
    rng: SplitMix64,
    stats: OptimizerStats,
    /// The last [`REPLAY`] training samples `(input, arm, ms)`, rehearsed every cycle. A training
    /// aid, not learned state: not in snapshots.
    #[serde(skip)]
    replay: VecDeque<(Vec<f32>, ArmId, f32)>,
}

/// The optimizer. See the module documentation.
pub struct Optimizer {
    state: LearnedState,
    encoder: HdcEncoder,
    mechanisms: Vec<alloc::boxed::Box<dyn DagAttention + Send + Sync>>,
    /// Per attention kind, the centering vector (computed on first use).
    centers: [OnceCell<Vec<f32>>; AttentionKind::ALL.len()],
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

fn ln2() -> f64 {
    core::f64::consts::LN_2
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
            baselines: BTreeMap::new(),
            history: BTreeMap::new(),
            rng: SplitMix64::new(cfg.seed ^ 0x0D7),
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
        let cfg = &state.cfg;
        if state.buffer.capacity() != cfg.max_trajectories
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
        for f in fingerprints {
            let known = st.baselines.remove(f).is_some() | st.history.remove(f).is_some();
            shapes += usize::from(known);
        }
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
        let key = (dag.content_hash(), kind.index() as u8);
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
        let mech = &self.mechanisms[kind.index()];
        let map = mech.attend(dag, &ctx)?;
        let raw = embed(dag, &map)?;
        let center = self.centers[kind.index()].get_or_init(|| reference_center(mech.as_ref()));
        let mut e: Vec<f32> = raw.iter().zip(center).map(|(x, c)| x - c).collect();
        let norm = libm::sqrtf(e.iter().map(|x| x * x).sum());
        if norm > 1e-6 {
            e.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(e)
    }

    /// The default arm's typical latency for this query shape: from the matched pattern's
    /// statistics, else from the default runs of this exact shape.
    fn baseline_ms(&self, pattern: Option<u64>, fp: u64) -> Option<f32> {
        let from_pattern = pattern
            .and_then(|id| self.state.bank.get(id))
            .and_then(|p| p.arms.first().copied())
            .filter(|s| s.count > 0);
        from_pattern
            .or_else(|| self.state.baselines.get(&fp).copied())
            .map(|s| s.typical_ms() as f32)
    }

    /// Choose an arm for a plan (the default plan: what the planner made with no arm applied).
    pub fn decide(&mut self, dag: &PlanDag) -> Result<Decision> {
        let fp = dag.shape_hash();
        let hdc = self.fingerprint_of(dag, fp);
        let key_kind = self.state.cfg.default_attention;
        let key = self.embed_as(dag, key_kind, fp)?;
        let attention = self.state.selector.select();
        let input = if attention == key_kind {
            key.clone()
        } else {
            self.embed_as(dag, attention, fp)?
        };
        let n = self.state.arms.len();
        let preds = self.state.estimator.predict_all_ms(&input);
        let blocked: Vec<ArmId> = (1..n as ArmId)
            .filter(|&a| self.state.btsp.is_blocked(&key, a))
            .collect();
        let is_blocked = |a: ArmId| blocked.contains(&a);
        let matched = self
            .state
            .bank
            .search(&key, Some(&hdc), 1)
            .first()
            .map(|&(s, p)| (s, p.clone()));
        let (similarity, confidence) = matched
            .as_ref()
            .map_or((0.0, 0.0), |(s, p)| (*s, p.confidence()));

        // The pattern this query belongs to (close enough to count its runs there).
        let close = matched
            .as_ref()
            .filter(|(s, _)| *s >= MERGE_COSINE)
            .map(|(_, p)| p);
        let mut reason = String::new();
        let mut choice: Option<(ArmId, Rule)> = None;

        // 1. A confident pattern.
        if let Some((sim, p)) = &matched {
            let score = sim * confidence;
            match p.best_arm() {
                Some(best) if score > PATTERN_RULE && !is_blocked(best) => {
                    let b = p.arms[usize::from(best)];
                    let _ = write!(
                        reason,
                        "pattern {} (similarity {sim:.3} x confidence {confidence:.3} = {score:.3} > {PATTERN_RULE}): \
                         best arm '{}' typically {:.3} ms over {} runs",
                        p.id,
                        self.arm_name(best),
                        b.typical_ms(),
                        b.count
                    );
                    if best != 0 && p.arms[0].count > 0 {
                        let _ = write!(
                            reason,
                            " vs {:.3} ms for '{}' over {}",
                            p.arms[0].typical_ms(),
                            self.arm_name(0),
                            p.arms[0].count
                        );
                    }
                    choice = Some((best, Rule::Pattern));
                }
                Some(best) if score > PATTERN_RULE => {
                    let _ = write!(
                        reason,
                        "pattern {}'s best arm '{}' is blocked by BTSP memory; ",
                        p.id,
                        self.arm_name(best)
                    );
                }
                _ => {
                    let _ = write!(
                        reason,
                        "nearest pattern {} is not decisive (similarity {sim:.3} x confidence {confidence:.3} = {score:.3} <= {PATTERN_RULE}); ",
                        p.id
                    );
                }
            }
        } else {
            reason.push_str("no pattern learned yet; ");
        }

        // 2. A surprisingly good arm remembered by BTSP.
        if choice.is_none() {
            let mut best: Option<(ArmId, f32, f32)> = None;
            for a in 1..n as ArmId {
                if let Some(BtspVerdict::Promising { ratio, similarity }) =
                    self.state.btsp.recall(&key, a)
                {
                    if best.is_none_or(|(_, r, _)| ratio < r) {
                        best = Some((a, ratio, similarity));
                    }
                }
            }
            if let Some((a, ratio, sim)) = best {
                let _ = write!(
                    reason,
                    "BTSP memory: '{}' ran {:.1}x faster than '{}' on a similar plan (similarity {sim:.3})",
                    self.arm_name(a),
                    1.0 / ratio,
                    self.arm_name(0)
                );
                choice = Some((a, Rule::Promising));
            }
        }

        // 3. The estimator, once it has been trained.
        if choice.is_none() && preds.len() == n {
            if self.state.estimator.trained_batches() == 0 {
                reason.push_str("cost model not trained yet: default arm");
            } else {
                // A close pattern's own runs outrank the model: an arm it has seen enough
                // times and that is not its best is not the model's to pick.
                let refuted = |a: ArmId| {
                    close.is_some_and(|p| {
                        p.arms[usize::from(a)].count >= EXPLORE_SAMPLES && p.best_arm() != Some(a)
                    })
                };
                let best = (1..n as ArmId)
                    .filter(|&a| !is_blocked(a) && !refuted(a))
                    .min_by(|&a, &b| preds[usize::from(a)].total_cmp(&preds[usize::from(b)]));
                let gain = |a: ArmId| 1.0 - preds[usize::from(a)] / preds[0].max(1e-9);
                match best {
                    Some(a) if gain(a) >= self.state.cfg.min_gain => {
                        let _ = write!(
                            reason,
                            "cost model predicts '{}' {:.3} ms vs {:.3} ms for '{}' ({:.0}% faster, min_gain {:.0}%)",
                            self.arm_name(a),
                            preds[usize::from(a)],
                            preds[0],
                            self.arm_name(0),
                            100.0 * gain(a),
                            100.0 * self.state.cfg.min_gain
                        );
                        choice = Some((a, Rule::Estimator));
                    }
                    Some(a) => {
                        let _ = write!(
                            reason,
                            "cost model's best alternative '{}' is {:.0}% faster, below min_gain {:.0}%: default arm",
                            self.arm_name(a),
                            100.0 * gain(a),
                            100.0 * self.state.cfg.min_gain
                        );
                    }
                    None => reason.push_str(
                        "every alternative arm is blocked or slower in the pattern's runs: default arm",
                    ),
                }
            }
        }
        let (mut arm, mut rule) = choice.unwrap_or((0, Rule::Default));

        // Exploration, only where a catastrophe would be recognised at once.
        let pattern_id = matched.as_ref().map(|(_, p)| p.id);
        let baseline = self.baseline_ms(pattern_id, fp);
        if self.state.cfg.learning_enabled
            && baseline.is_some()
            && self.state.rng.next_f32() < self.state.cfg.attention_exploration
        {
            let candidates: Vec<ArmId> = (0..n as ArmId)
                .filter(|&a| a != arm && (a == 0 || !is_blocked(a)))
                .filter(|&a| match close {
                    None => true,
                    Some(p) => {
                        let s = p.arms[usize::from(a)];
                        let best_mean = p
                            .best_arm()
                            .map_or(f64::INFINITY, |b| p.arms[usize::from(b)].mean);
                        s.count == 0 || (s.count < EXPLORE_SAMPLES && s.mean <= best_mean + ln2())
                    }
                })
                .collect();
            if !candidates.is_empty() {
                let pick = candidates[self.state.rng.below(candidates.len())];
                let _ = write!(
                    reason,
                    "; exploring '{}' instead of '{}' (probability {:.2})",
                    self.arm_name(pick),
                    self.arm_name(arm),
                    self.state.cfg.attention_exploration
                );
                arm = pick;
                rule = Rule::Explore;
            }
        }
        if !blocked.is_empty() {
            let names: Vec<&str> = blocked.iter().map(|&a| self.arm_name(a)).collect();
            let _ = write!(reason, "; blocked by BTSP memory: {}", names.join(", "));
        }
        let _ = write!(reason, "; attention {}", attention.name());
        self.state.stats.decisions[rule as usize] += 1;
        let at = |a: ArmId| preds.get(usize::from(a)).copied().unwrap_or(f32::NAN);
        Ok(Decision {
            arm,
            rule,
            pattern: pattern_id,
            similarity,
            confidence,
            attention,
            predicted_ms: at(arm),
            default_predicted_ms: at(0),
            blocked,
            reason,
            fingerprint: fp,
            hdc,
            key,
            input,
        })
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
                self.embed_as(dag, decision.attention, decision.fingerprint)?,
                dag.measured_shares().unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
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
            });
        }
        let st = &mut self.state;
        // An untrained model's errors say nothing about the attention kind: the selector
        // learns from predictions made after the first background cycle.
        if st.estimator.trained_batches() > 0 {
            st.selector.update(
                t.attention,
                AttentionSelector::reward(t.predicted_ms, t.actual_ms),
            );
        }
        st.estimator
            .observe(&t.input, usize::from(t.arm), t.actual_ms);
        let baseline_ms = self.baseline_ms(t.pattern, t.fingerprint);
        let st = &mut self.state;
        let mut surprising = false;
        if t.arm == 0 {
            if st.baselines.len() >= st.cfg.max_trajectories
                && !st.baselines.contains_key(&t.fingerprint)
            {
                st.baselines.pop_first();
            }
            st.baselines
                .entry(t.fingerprint)
                .or_default()
                .push(f64::from(t.actual_ms));
        } else if let Some(b) = baseline_ms {
            surprising = st.btsp.observe(&t.key, t.arm, t.actual_ms, b);
            st.stats.btsp_writes += u64::from(surprising);
        }
        if let Some(id) = t.pattern {
            st.bank.observe(id, t.arm, f64::from(t.actual_ms));
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
        let quality = st.buffer.record(t);
        Ok(Observed {
            learned: true,
            quality,
            baseline_ms,
            surprising,
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
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        snapshot::encode(&self.state)
    }

    /// An optimizer from a [`Optimizer::snapshot`]. Corrupt, truncated or foreign bytes, or a
    /// snapshot whose parts disagree, are a [`NeuralDagError::CorruptState`] (or
    /// `InvalidConfig` for a stored configuration this build refuses).
    pub fn restore(bytes: &[u8]) -> Result<Self> {
        let state: LearnedState = snapshot::decode(bytes)?;
        Self::from_state(state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::snapshot::{FORMAT_VERSION, MAGIC};
    use crate::rng::fnv1a64;
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
        let cfg = NeuralDagConfig {
            attention_exploration: 1.0,
            default_attention: AttentionKind::CriticalPath,
            btsp_capacity: 17,
            ..Default::default()
        };
        let kept = opt.retune(&cfg).unwrap();
        assert_eq!(kept, vec!["default_attention", "btsp_capacity"]);
        assert_eq!(opt.config().attention_exploration, 1.0);
        assert_eq!(opt.config().default_attention, AttentionKind::Topological);
        assert_eq!(opt.bank().patterns().len(), patterns);
        // Exploration at probability 1 now tries another arm once the baseline is known.
        let d = opt.decide(&p).unwrap();
        assert_ne!(d.arm, 0, "{}", d.reason);
        assert_eq!(d.rule, Rule::Explore);
        // A bad value is refused and changes nothing.
        let bad = NeuralDagConfig {
            attention_exploration: 2.0,
            ..Default::default()
        };
        assert!(opt.retune(&bad).is_err());
        assert_eq!(opt.config().attention_exploration, 1.0);
    }

    #[test]
    fn a_fresh_optimizer_keeps_the_default_and_says_why() {
        let mut opt = optimizer();
        let d = opt.decide(&plan(1)).unwrap();
        assert_eq!((d.arm, d.rule, d.pattern), (0, Rule::Default, None));
        assert!(d.reason.contains("no pattern learned yet"), "{}", d.reason);
        assert!(
            d.reason.contains("cost model not trained yet"),
            "{}",
            d.reason
        );
        assert_eq!((d.key.len(), d.input.len()), (EMBED_DIM, EMBED_DIM));
        assert!(d.predicted_ms.is_finite() && d.predicted_ms > 0.0);
        assert_eq!(opt.stats().decisions[Rule::Default as usize], 1);
    }

    #[test]
    fn one_catastrophe_blocks_and_one_surprising_win_is_recalled() {
        let mut opt = optimizer();
        let (p, q) = (plan(2), plan(3));
        for _ in 0..3 {
            run(&mut opt, &p, 0, 100.0);
            run(&mut opt, &q, 0, 100.0);
        }
        // Arm 1 is a catastrophe for p: blocked at once, before any cycle, only for p.
        let o = run(&mut opt, &p, 1, 10_000.0);
        assert!(o.surprising && o.baseline_ms.is_some_and(|b| (b - 100.0).abs() < 1.0));
        let d = opt.decide(&p).unwrap();
        assert_eq!(d.blocked, vec![1]);
        assert!(
            d.reason.contains("blocked by BTSP memory: nestloop=off"),
            "{}",
            d.reason
        );
        assert!(opt.decide(&q).unwrap().blocked.is_empty());
        // Arm 3 ran 20x faster on q: the next q uses it.
        run(&mut opt, &q, 3, 5.0);
        let d = opt.decide(&q).unwrap();
        assert_eq!((d.arm, d.rule), (3, Rule::Promising));
        assert!(d.reason.contains("20.0x faster"), "{}", d.reason);
    }

    #[test]
    fn learn_cycle_makes_confident_patterns_that_decide() {
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
        let d = opt.decide(&p).unwrap();
        assert_eq!((d.arm, d.rule), (2, Rule::Pattern), "{}", d.reason);
        assert!(d.similarity > 0.99 && d.confidence > 0.8);
        assert!(d.reason.starts_with("pattern "), "{}", d.reason);
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
