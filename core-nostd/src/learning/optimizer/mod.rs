//! The optimizer: what ties SONA together. [`Optimizer::decide`] picks a plan for a query,
//! [`Optimizer::choose`] picks among the candidate plans the host planned when `decide` asks
//! for them, [`Optimizer::observe`] learns at once from one execution (per-shape evidence,
//! exploration budget, MicroLoRA step, selector reward, BTSP write, pattern statistics), and
//! [`Optimizer::learn_cycle`] is the background cycle (BaseLoRA under EWC++, MicroLoRA merge,
//! K-means++ patterns).
//!
//! Rooms: [`types`] (what the calls return), [`decide`] (the rules), [`choose`] (whether a
//! plan may be explored: endorsements, screens, the stake; ranking candidates), [`observe`]
//! (trajectories, observing, the background cycle), [`embedding`] (centred embeddings, the
//! cache, plugins); this file holds the struct, its construction and its snapshot.
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
//! With [`Exploration::Explorer`] (a host that runs a background explorer) rules 1 and 3 move
//! out of the user's statement: the decision asks for the explorer ([`Decision::background`]),
//! which runs the candidates [`Optimizer::explore_step`] names, off the users' path, its runs
//! observed with [`RunKind::background`] (no budget is charged), until they are settled.
//!
//! A plan slower than the default on its first run is never tried again; BTSP memory blocks an
//! arm after one catastrophic run on similar shapes; a verified plan that regresses is reverted.
//! There are no random draws: the same evidence gives the same decision in every backend.

use alloc::boxed::Box;
use alloc::collections::{BTreeMap, VecDeque};
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::cell::{OnceCell, RefCell};
use serde::{Deserialize, Serialize};

use super::evidence::EvidenceBook;
use super::reasoning_bank::{MAX_ARMS, MERGE_COSINE};
use super::ArmId;
use super::{
    snapshot, AttentionSelector, BtspMemory, CostEstimator, NeuralDagConfig, PluginArms,
    ReasoningBank, Trajectory, TrajectoryBuffer,
};
use crate::attention::{mechanism, AttentionConfig, AttentionKind, DagAttention};
use crate::embed::EMBED_DIM;
use crate::error::{NeuralDagError, Result};
use crate::hdc::HdcEncoder;

mod background;
mod choose;
mod decide;
mod embedding;
mod observe;
#[cfg(test)]
mod testing;
mod types;

pub use background::{
    explore_timeout_ms, EXPLORE_MAX_RUNS, EXPLORE_TIMEOUT_RATIO, EXPLORE_TIMEOUT_SLACK_MS,
};
pub use choose::PATTERN_RULE;
use embedding::{EmbedCache, HostPlugin};
pub use embedding::{CENTERING, EMBED_CACHE_ENTRIES, REFERENCE_PLANS};
pub use types::{
    Candidate, CycleReport, Decision, Exploration, Forgotten, Observed, OptimizerStats, Recalled,
    Rule, RunKind, Step,
};

/// The head checksum of an optimizer that holds the rules alone ([`Optimizer::rules_only`]):
/// never a snapshot's (a checksum of 0 is refused when a snapshot is opened).
const RULES_ONLY: u64 = 0;

/// Executions of one query shape remembered for temporal attention.
pub const HISTORY_LEN: usize = 8;
/// Query shapes whose execution history is kept (the smallest fingerprint goes first).
pub const HISTORY_SHAPES: usize = 1024;
/// Passes over the drained trajectories (and the rehearsal samples) in one background cycle.
pub const CYCLE_EPOCHS: usize = 5;
/// Earlier samples the background cycle rehearses along with the fresh ones.
pub const REHEARSAL: usize = 2000;
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
    /// The last [`REHEARSAL`] training samples `(input, arm, ms)`, rehearsed every cycle. A
    /// training aid, not learned state: not in snapshots.
    #[serde(skip)]
    rehearsal: VecDeque<(Vec<f32>, ArmId, f32)>,
}

impl LearnedState {
    /// Nothing learned yet: configured as `cfg`, over `arms`, with `estimator` as its cost model.
    fn empty(cfg: NeuralDagConfig, arms: Vec<String>, estimator: CostEstimator) -> Self {
        LearnedState {
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
            rehearsal: VecDeque::new(),
            estimator,
            arms,
            cfg,
        }
    }
}

/// What an optimizer derives from its attention parameters alone and never learns: the
/// attention mechanisms (their random projections, drawn from the seed) and the HDC item
/// memory. Building it is most of the cost of restoring a small snapshot, so optimizers of the
/// same parameters may share one ([`Optimizer::restore_sharing`]): a host builds it once per
/// process (the extension in the postmaster, which every backend inherits).
pub struct Machinery {
    attention: AttentionConfig,
    encoder: HdcEncoder,
    mechanisms: Vec<Box<dyn DagAttention + Send + Sync>>,
}

impl Machinery {
    /// The machinery of `attention` (an error names a parameter it refuses).
    pub fn new(attention: &AttentionConfig) -> Result<Arc<Machinery>> {
        let mechanisms = AttentionKind::ALL
            .iter()
            .map(|&k| mechanism(k, attention))
            .collect::<Result<Vec<_>>>()?;
        Ok(Arc::new(Machinery {
            attention: attention.clone(),
            encoder: HdcEncoder::default(),
            mechanisms,
        }))
    }

    /// Whether an optimizer configured with `cfg` can use it.
    pub fn fits(&self, cfg: &NeuralDagConfig) -> bool {
        self.attention == cfg.attention
    }
}

impl core::fmt::Debug for Machinery {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Machinery")
            .field("attention", &self.attention)
            .finish_non_exhaustive()
    }
}

/// The optimizer. See the module documentation.
pub struct Optimizer {
    state: LearnedState,
    machinery: Arc<Machinery>,
    /// Per attention kind, the centering vector (computed on first use).
    centers: [OnceCell<Vec<f32>>; AttentionKind::ALL.len()],
    /// The plugin the selector may pick as one more kind (the host's; never persisted).
    plugin: Option<HostPlugin>,
    /// The selector's statistics of plugins (persisted from format version 4).
    plugin_arms: PluginArms,
    /// Embeddings and HDC fingerprints of recently seen plans (not learned state).
    cache: RefCell<EmbedCache>,
    /// Restored without its model ([`Optimizer::restore_lean`]): the checksum of the head of
    /// the snapshot it came from, which [`Optimizer::load_model`] loads the model from. None:
    /// the model is here.
    lean: Option<u64>,
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
        Self::from_state(LearnedState::empty(cfg, arms, estimator), None)
    }

    /// An optimizer that holds the rules and nothing learned: configured as `cfg` (a learned
    /// state's configuration, as tuned), over `arms`, with no model, no BTSP memory, no
    /// patterns and no evidence of its own. What it decides comes from another decision's
    /// [`Recalled`] and the evidence the host brings in
    /// ([`decide_recalled`](Self::decide_recalled)); what it observes it learns as a copy
    /// restored lean does (the evidence, for a host that writes it back where it is shared).
    /// It never loads a model. A few allocations: no snapshot is read.
    pub fn rules_only(
        cfg: NeuralDagConfig,
        arms: Vec<String>,
        machinery: &Arc<Machinery>,
    ) -> Result<Self> {
        let state = LearnedState::empty(cfg, arms, CostEstimator::unloaded());
        // No snapshot's head: a checksum no snapshot has (the model never loads).
        Self::assemble(state, Some(machinery), Some(RULES_ONLY))
    }

    /// A digest of what a lean decision reads of this optimizer besides a shape's evidence
    /// and the session's settings: the configuration, the arms and BTSP memory. Two copies of
    /// the learned state with equal digests make the same lean decision on the same plan and
    /// evidence (training the cost model or the patterns does not change it), so a host may
    /// keep what one copy's decision recalled ([`Recalled`]) for as long as the stored state's
    /// digest stays the same.
    pub fn recall_digest(&self) -> Result<u64> {
        let mut h = crate::learning::Fnv::new();
        let cfg = postcard::to_allocvec(&self.state.cfg)
            .map_err(|e| NeuralDagError::CorruptState(format!("cannot encode: {e}")))?;
        h.u64(cfg.len() as u64);
        h.bytes(&cfg);
        h.u64(self.state.arms.len() as u64);
        for a in &self.state.arms {
            h.u64(a.len() as u64);
            h.bytes(a.as_bytes());
        }
        h.u64(self.state.btsp.digest());
        // 0 stands for "unknown" where hosts keep it.
        Ok(h.finish().max(1))
    }

    /// Whether this optimizer holds the rules alone ([`rules_only`](Self::rules_only)).
    pub fn is_rules_only(&self) -> bool {
        self.lean == Some(RULES_ONLY)
    }

    /// `state` checked, with `shared` machinery when it fits the state's configuration.
    fn from_state(state: LearnedState, shared: Option<&Arc<Machinery>>) -> Result<Self> {
        Self::assemble(state, shared, None)
    }

    /// [`from_state`](Self::from_state); with `lean` (a lean restore's head checksum) the
    /// state holds no model (an empty cost model and bank stand in for it, never read: see
    /// [`model_loaded`](Self::model_loaded)), so there is none to check.
    fn assemble(
        state: LearnedState,
        shared: Option<&Arc<Machinery>>,
        lean: Option<u64>,
    ) -> Result<Self> {
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
        if lean.is_none() {
            check_model(&state.estimator, &state.bank, n)?;
        }
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
        let machinery = match shared {
            Some(m) if m.fits(&state.cfg) => Arc::clone(m),
            _ => Machinery::new(&state.cfg.attention)?,
        };
        let opt = Optimizer {
            machinery,
            centers: Default::default(),
            plugin: None,
            plugin_arms: PluginArms::default(),
            cache: RefCell::new(EmbedCache::default()),
            state,
            lean,
        };
        if let Some(e) = opt
            .state
            .buffer
            .iter()
            .find_map(|t| opt.check_queued(t).err())
        {
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

    /// Append arms `extra` to the arm list (a DBA added arms at the end of
    /// `ruvector.dag_arms`, or a release did): everything learned stays, since an arm is known
    /// by its place and the old places do not move. A new arm has no evidence yet and its cost
    /// model head starts as the default arm's ([`CostEstimator::append_arms`]). Refused, with
    /// nothing changed, for a state restored without its model, over [`MAX_ARMS`] arms, or an
    /// arm listed twice.
    pub fn append_arms(&mut self, extra: &[String]) -> Result<()> {
        self.model_loaded("appending arms")?;
        let n = self.state.arms.len() + extra.len();
        if n > MAX_ARMS {
            return Err(NeuralDagError::InvalidConfig(format!(
                "arms: {n} arms, want 1 to {MAX_ARMS} (the first is the default)"
            )));
        }
        if let Some(i) = (0..extra.len())
            .find(|&i| self.state.arms.contains(&extra[i]) || extra[..i].contains(&extra[i]))
        {
            return Err(NeuralDagError::InvalidConfig(format!(
                "arms: '{}' is listed twice",
                extra[i]
            )));
        }
        self.state.estimator.append_arms(extra.len());
        self.state.arms.extend(extra.iter().cloned());
        Ok(())
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

    /// The evidence book, for a host that keeps the shapes' evidence in a store of its own
    /// (shared memory) and brings one shape in before a decision or an observation
    /// ([`EvidenceBook::put`], [`EvidenceBook::set_budget`]).
    pub fn evidence_mut(&mut self) -> &mut EvidenceBook {
        &mut self.state.evidence
    }

    /// The recent per-operator time shares of query shape `fingerprint` (its default plan's
    /// [`crate::PlanDag::shape_hash`]), oldest first: the history temporal BTSP attention
    /// reads. Empty when none was measured.
    pub fn history(&self, fingerprint: u64) -> &[Vec<f32>] {
        self.state
            .history
            .get(&fingerprint)
            .map_or(&[], Vec::as_slice)
    }

    /// Counters.
    pub fn stats(&self) -> OptimizerStats {
        self.state.stats
    }

    pub(super) fn arm_name(&self, arm: ArmId) -> &str {
        self.state
            .arms
            .get(usize::from(arm))
            .map_or("?", String::as_str)
    }

    /// Everything learned (including trajectories not yet learned from) as one versioned,
    /// checksummed snapshot.
    ///
    /// The payload also carries every attention kind's reference centre (computed here if need
    /// be: about 64 synthetic plans each), so that a backend restoring it embeds its first
    /// statements without computing them.
    pub fn snapshot(&self) -> Result<Vec<u8>> {
        self.encode_with(&self.state.buffer)
    }

    /// [`Optimizer::snapshot`] without the trajectories waiting for the next
    /// [`Optimizer::learn_cycle`] (each a few KiB: hundreds of them are most of a snapshot
    /// between cycles, and a backend that only decides never reads them). They are kept apart
    /// with [`Optimizer::snapshot_pending`]; the snapshot restores with none waiting.
    pub fn snapshot_model(&self) -> Result<Vec<u8>> {
        self.encode_with(self.state.buffer.without_ring())
    }

    /// The state with `buffer` for its trajectory ring, the attention centres and the plugins'
    /// statistics as one snapshot: its head (what a lean decision reads) under a checksum of
    /// its own, then its model, whose weights and centroids go into the bulk (see
    /// [`snapshot`]). Refused for an optimizer restored without its model: its snapshot would
    /// lose it.
    fn encode_with<B: Serialize>(&self, buffer: B) -> Result<Vec<u8>> {
        self.encode_with_version(buffer, snapshot::FORMAT_VERSION)
    }

    /// [`encode_with`](Self::encode_with) as format `version` (7: the shapes' history in the
    /// head; 8, the current one: in the model).
    fn encode_with_version<B: Serialize>(&self, buffer: B, version: u16) -> Result<Vec<u8>> {
        self.model_loaded("a snapshot")?;
        let st = &self.state;
        let start = HeadStartRef {
            cfg: &st.cfg,
            arms: &st.arms,
            selector: &st.selector,
            btsp: &st.btsp,
            buffer,
            evidence: &st.evidence,
        };
        let end = HeadEndRef {
            stats: &st.stats,
            centers: AttentionKind::ALL.iter().map(|&k| self.center(k)).collect(),
            plugin_arms: &self.plugin_arms,
        };
        // postcard writes a struct as its fields one after another, a tuple the same way: a
        // format-7 head is (start, history, end), a format-8 one (start, end).
        let head = if version == 7 {
            snapshot::to_vec(&(&start, &st.history, &end))?
        } else {
            snapshot::to_vec(&(&start, &end))?
        };
        let mut bulk = snapshot::Bulk::new();
        let (mut estimator, mut bank) = (st.estimator.clone(), st.bank.clone());
        estimator.for_each_vector(&mut |_, v| bulk.put(&core::mem::take(v)));
        bank.for_each_vector(&mut |_, v| bulk.put(&core::mem::take(v)));
        let model = ModelRef {
            estimator: &estimator,
            bank: &bank,
        };
        let model = if version == 7 {
            snapshot::to_vec(&model)?
        } else {
            snapshot::to_vec(&(&model, &st.history))?
        };
        let head_len = u32::try_from(head.len()).map_err(|_| {
            NeuralDagError::CorruptState(format!("a head of {} bytes is too large", head.len()))
        })?;
        let mut value = Vec::with_capacity(HEAD_PREFIX + head.len());
        value.extend_from_slice(&snapshot::checksum(version, &head).to_le_bytes());
        value.extend_from_slice(&head_len.to_le_bytes());
        value.extend_from_slice(&head);
        value.extend_from_slice(&model);
        snapshot::encode_value_as(&value, &bulk, version)
    }

    /// Err when this optimizer was restored without its model ([`Optimizer::restore_lean`]):
    /// `what` needs it.
    pub(super) fn model_loaded(&self, what: &'static str) -> Result<()> {
        match self.lean {
            Some(_) => Err(NeuralDagError::ModelNotLoaded(what)),
            None => Ok(()),
        }
    }

    /// Whether the model is loaded (false after [`Optimizer::restore_lean`], until
    /// [`Optimizer::load_model`]).
    pub fn has_model(&self) -> bool {
        self.lean.is_none()
    }

    /// The trajectories waiting for the next [`Optimizer::learn_cycle`], as a snapshot of their
    /// own (None when none wait), for [`Optimizer::restore_pending`].
    pub fn snapshot_pending(&self) -> Result<Option<Vec<u8>>> {
        if self.state.buffer.is_empty() {
            return Ok(None);
        }
        let ts: Vec<&Trajectory> = self.state.buffer.iter().collect();
        snapshot::encode(&ts).map(Some)
    }

    /// Queue again the trajectories of a [`Optimizer::snapshot_pending`] (after those waiting
    /// now). Corrupt bytes, or a trajectory this optimizer cannot learn from (another
    /// embedding width, an arm it does not have), are a [`NeuralDagError::CorruptState`] and
    /// queue nothing. Returns how many were queued.
    pub fn restore_pending(&mut self, bytes: &[u8]) -> Result<usize> {
        let ts: Vec<Trajectory> = snapshot::decode(bytes)?;
        if let Some(e) = ts.iter().find_map(|t| self.check_queued(t).err()) {
            return Err(NeuralDagError::CorruptState(format!(
                "a pending trajectory: {e}"
            )));
        }
        let n = ts.len();
        self.state.buffer.requeue(ts);
        Ok(n)
    }

    /// An optimizer from a [`Optimizer::snapshot`]. Corrupt, truncated or foreign bytes, or a
    /// snapshot whose parts disagree, are a [`NeuralDagError::CorruptState`] (or
    /// `InvalidConfig` for a stored configuration this build refuses).
    pub fn restore(bytes: &[u8]) -> Result<Self> {
        Self::restore_inner(bytes, None)
    }

    /// [`Optimizer::restore`], sharing `machinery` when the snapshot's attention parameters
    /// are the ones it was built for (otherwise the restored optimizer builds its own).
    pub fn restore_sharing(bytes: &[u8], machinery: &Arc<Machinery>) -> Result<Self> {
        Self::restore_inner(bytes, Some(machinery))
    }

    /// The machinery this optimizer uses (to share with the next one restored).
    pub fn machinery(&self) -> &Arc<Machinery> {
        &self.machinery
    }

    fn restore_inner(bytes: &[u8], shared: Option<&Arc<Machinery>>) -> Result<Self> {
        let bad = |e: postcard::Error| {
            NeuralDagError::CorruptState(format!("payload does not decode: {e}"))
        };
        let (version, payload) = snapshot::open(bytes)?;
        let (payload, mut bulk) = snapshot::parts(version, payload)?;
        let (mut state, centers, plugin_arms): (LearnedState, Vec<Vec<f32>>, PluginArms) =
            match version {
                7.. => {
                    let (_, head, rest) = split_head(version, payload)?;
                    head.with_model(Model::decode(version, rest)?)
                }
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
        // The vectors stored apart (format 6; a snapshot without a bulk holds them in place).
        if !bulk.is_empty() {
            fill_model(&mut state.estimator, &mut state.bank, &mut bulk)?;
        }
        bulk.finish()?;
        Self::finish_restore(state, centers, plugin_arms, shared, None)
    }

    /// The attention centres a snapshot carried (none before format 3: computed on first use).
    fn set_centers(&mut self, centers: Vec<Vec<f32>>) -> Result<()> {
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
            let _ = self.centers[kind.index()].set(c);
        }
        Ok(())
    }

    /// An optimizer from a [`Optimizer::snapshot`] (as [`restore_sharing`](Self::restore_sharing))
    /// without its model: the snapshot's head alone (configuration, arms, selector, BTSP
    /// memory, evidence, history, counters, attention centres), checked against the head's
    /// own checksum, a few kilobytes of a snapshot of hundreds. That is all
    /// [`decide_lean`](Self::decide_lean) reads (where the statement itself explores nothing)
    /// and all an incomplete trajectory teaches ([`observe_unqueued`](Self::observe_unqueued)).
    /// Every call that needs the model (the cost model, the patterns: a full decision, its
    /// view, choosing among candidates, completing or queueing a trajectory, a cycle, a
    /// snapshot, forgetting) is refused with [`NeuralDagError::ModelNotLoaded`] until
    /// [`load_model`](Self::load_model) loads it from the same snapshot. A snapshot of a format
    /// before 7 has no head of its own: it is restored in full.
    pub fn restore_lean(bytes: &[u8], machinery: &Arc<Machinery>) -> Result<Self> {
        let (version, payload) = snapshot::open_unchecked(bytes)?;
        if version < 7 {
            return Self::restore_inner(bytes, Some(machinery));
        }
        let (value, _) = snapshot::parts(version, payload)?;
        let (sum, head, _) = split_head(version, value)?;
        // No model: an empty cost model and bank stand in for it, never read (nor the shapes'
        // history, in the model from format 8 on: empty until the model is loaded).
        let absent = Model {
            estimator: CostEstimator::unloaded(),
            bank: ReasoningBank::new(head.start.cfg.pattern_capacity),
            history: None,
        };
        let (state, centers, plugin_arms) = head.with_model(absent);
        Self::finish_restore(state, centers, plugin_arms, Some(machinery), Some(sum))
    }

    /// The restored parts checked and put together (`lean`: see [`assemble`](Self::assemble)).
    fn finish_restore(
        state: LearnedState,
        centers: Vec<Vec<f32>>,
        plugin_arms: PluginArms,
        shared: Option<&Arc<Machinery>>,
        lean: Option<u64>,
    ) -> Result<Self> {
        plugin_arms.check()?;
        let mut opt = Self::assemble(state, shared, lean)?;
        opt.plugin_arms = plugin_arms;
        opt.set_centers(centers)?;
        Ok(opt)
    }

    /// Load the model of an optimizer restored lean ([`restore_lean`](Self::restore_lean))
    /// from `bytes`, the snapshot it was restored from (the whole snapshot is checked now).
    /// What this copy learned since (evidence, BTSP memory, history, counters, settings
    /// retuned) is kept; the model is the snapshot's. Another snapshot (its head differs) is a
    /// [`NeuralDagError::CorruptState`] and leaves the copy as it was; an optimizer with its
    /// model is left as it is.
    pub fn load_model(&mut self, bytes: &[u8]) -> Result<()> {
        let Some(want) = self.lean else {
            return Ok(());
        };
        if want == RULES_ONLY {
            return Err(NeuralDagError::ModelNotLoaded(
                "an optimizer that holds the rules alone, which loads no model",
            ));
        }
        let (version, payload) = snapshot::open(bytes)?;
        if version < 7 {
            return Err(NeuralDagError::CorruptState(format!(
                "a snapshot of format {version} has no model apart from its head"
            )));
        }
        let (value, mut bulk) = snapshot::parts(version, payload)?;
        let (sum, stored, rest) = split_head(version, value)?;
        if sum != want {
            return Err(NeuralDagError::CorruptState(
                "the model asked for is not of the snapshot this copy was restored from".into(),
            ));
        }
        let mut model = Model::decode(version, rest)?;
        fill_model(&mut model.estimator, &mut model.bank, &mut bulk)?;
        bulk.finish()?;
        check_model(&model.estimator, &model.bank, self.state.arms.len())?;
        // Learning rates and the EWC++ strength retuned here since the restore.
        let (now, then) = (&self.state.cfg, &stored.start.cfg);
        if now.micro_lora_lr != then.micro_lora_lr
            || now.base_lora_lr != then.base_lora_lr
            || now.ewc_lambda != then.ewc_lambda
        {
            model
                .estimator
                .retune(now.micro_lora_lr, now.base_lora_lr, now.ewc_lambda);
        }
        self.state.estimator = model.estimator;
        self.state.bank = model.bank;
        // Format 8: the snapshot's history, with the runs this copy observed since on top.
        if let Some(mut history) = model.history {
            for (fp, runs) in core::mem::take(&mut self.state.history) {
                let h = history.entry(fp).or_default();
                h.extend(runs);
                let over = h.len().saturating_sub(HISTORY_LEN);
                h.drain(..over);
            }
            while history.len() > HISTORY_SHAPES {
                history.pop_first();
            }
            self.state.history = history;
        }
        self.lean = None;
        Ok(())
    }
}

/// Bytes before a format-7 or -8 value's head: its checksum (u64 LE) and its length (u32 LE).
const HEAD_PREFIX: usize = 8 + 4;

/// What a head opens with, as written: with [`HeadEndRef`], what a lean decision reads (format
/// 7 has the shapes' history between the two, format 8 has it in the model).
#[derive(Serialize)]
struct HeadStartRef<'a, B: Serialize> {
    cfg: &'a NeuralDagConfig,
    arms: &'a Vec<String>,
    selector: &'a AttentionSelector,
    btsp: &'a BtspMemory,
    buffer: B,
    evidence: &'a EvidenceBook,
}

/// What a head ends with, as written.
#[derive(Serialize)]
struct HeadEndRef<'a> {
    stats: &'a OptimizerStats,
    centers: Vec<&'a Vec<f32>>,
    plugin_arms: &'a PluginArms,
}

/// [`HeadStartRef`] as read.
#[derive(Deserialize)]
struct HeadStart {
    cfg: NeuralDagConfig,
    arms: Vec<String>,
    selector: AttentionSelector,
    btsp: BtspMemory,
    buffer: TrajectoryBuffer,
    evidence: EvidenceBook,
}

/// [`HeadEndRef`] as read.
#[derive(Deserialize)]
struct HeadEnd {
    stats: OptimizerStats,
    centers: Vec<Vec<f32>>,
    plugin_arms: PluginArms,
}

/// A format-7 or -8 snapshot's head as read (`history`: format 7's).
struct Head {
    start: HeadStart,
    history: Option<BTreeMap<u64, Vec<Vec<f32>>>>,
    end: HeadEnd,
}

impl Head {
    /// The whole state, with `model`; the centres and the plugins' statistics beside it.
    fn with_model(self, model: Model) -> (LearnedState, Vec<Vec<f32>>, PluginArms) {
        let (start, end) = (self.start, self.end);
        let state = LearnedState {
            cfg: start.cfg,
            arms: start.arms,
            estimator: model.estimator,
            bank: model.bank,
            selector: start.selector,
            btsp: start.btsp,
            buffer: start.buffer,
            evidence: start.evidence,
            history: self.history.or(model.history).unwrap_or_default(),
            stats: end.stats,
            rehearsal: VecDeque::new(),
        };
        (state, end.centers, end.plugin_arms)
    }
}

/// A format-7 or -8 snapshot's model as written (its vectors in the bulk; format 8 adds the
/// shapes' history after it).
#[derive(Serialize)]
struct ModelRef<'a> {
    estimator: &'a CostEstimator,
    bank: &'a ReasoningBank,
}

/// A format-7 or -8 snapshot's model as read (`history`: format 8's).
struct Model {
    estimator: CostEstimator,
    bank: ReasoningBank,
    history: Option<BTreeMap<u64, Vec<Vec<f32>>>>,
}

impl Model {
    /// The model of a format-`version` value: the bytes after its head.
    fn decode(version: u16, bytes: &[u8]) -> Result<Model> {
        let bad = |e: postcard::Error| {
            NeuralDagError::CorruptState(format!("the model does not decode: {e}"))
        };
        Ok(if version == 7 {
            let (estimator, bank) = postcard::from_bytes(bytes).map_err(bad)?;
            Model {
                estimator,
                bank,
                history: None,
            }
        } else {
            let ((estimator, bank), history) = postcard::from_bytes(bytes).map_err(bad)?;
            Model {
                estimator,
                bank,
                history: Some(history),
            }
        })
    }
}

/// A format-7 or -8 value split into its head's checksum, its head (checked against that checksum
/// before it is decoded) and the bytes after it (the model).
fn split_head(version: u16, value: &[u8]) -> Result<(u64, Head, &[u8])> {
    let bad = |m: String| Err(NeuralDagError::CorruptState(m));
    if value.len() < HEAD_PREFIX {
        return bad(format!(
            "a value of {} bytes has no room for its head's checksum and length",
            value.len()
        ));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&value[..8]);
    let sum = u64::from_le_bytes(sum);
    let len = u32::from_le_bytes([value[8], value[9], value[10], value[11]]) as usize;
    let rest = &value[HEAD_PREFIX..];
    if len > rest.len() {
        return bad(format!(
            "the head is said to take {len} bytes, the value has {} after its prefix",
            rest.len()
        ));
    }
    let (head, model) = rest.split_at(len);
    if snapshot::checksum(version, head) != sum {
        return bad("checksum mismatch in the head: the snapshot is corrupt".into());
    }
    let bad =
        |e: postcard::Error| NeuralDagError::CorruptState(format!("the head does not decode: {e}"));
    let head = if version == 7 {
        let (start, history, end) = postcard::from_bytes(head).map_err(bad)?;
        Head {
            start,
            history: Some(history),
            end,
        }
    } else {
        let (start, end) = postcard::from_bytes(head).map_err(bad)?;
        Head {
            start,
            history: None,
            end,
        }
    };
    Ok((sum, head, model))
}

/// The cost model's weights and the patterns' centroids from the snapshot's bulk, in the order
/// the writer put them (the two visitors are the format's definition).
fn fill_model(
    estimator: &mut CostEstimator,
    bank: &mut ReasoningBank,
    bulk: &mut snapshot::BulkReader<'_>,
) -> Result<()> {
    let mut failed = None;
    let mut fill = |what: &'static str, v: &mut Vec<f32>| {
        if failed.is_none() {
            failed = bulk.fill(what, v).err();
        }
    };
    estimator.for_each_vector(&mut fill);
    bank.for_each_vector(&mut fill);
    failed.map_or(Ok(()), Err)
}

/// The model's own checks, for `arms` arms.
fn check_model(estimator: &CostEstimator, bank: &ReasoningBank, arms: usize) -> Result<()> {
    if estimator.arms() != arms {
        return Err(NeuralDagError::CorruptState(format!(
            "the cost model has {} arm heads for {arms} arms",
            estimator.arms()
        )));
    }
    estimator.check()?;
    bank.check()
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::learning::snapshot::{FORMAT_VERSION, MAGIC};
    use crate::rng::SplitMix64;
    use crate::synth::{random_plan, SynthOptions};
    use alloc::vec;

    /// A snapshot of the current format around `payload`, its checksum recomputed (what a
    /// hostile import could craft).
    fn sealed(payload: &[u8]) -> Vec<u8> {
        let mut forged = Vec::new();
        forged.extend_from_slice(MAGIC);
        forged.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        forged.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        forged.extend_from_slice(&snapshot::checksum(FORMAT_VERSION, payload).to_le_bytes());
        forged.extend_from_slice(payload);
        forged
    }

    /// An optimizer that ran `p` `n` times (arms 0-3 in turn, latencies from `ms` up) and
    /// trained once; its decision for `p` afterwards.
    fn trained_on(p: &crate::dag::PlanDag, n: usize, ms: f32) -> (Optimizer, Decision) {
        let mut opt = optimizer();
        for i in 0..n {
            run(&mut opt, p, (i % 4) as ArmId, ms + i as f32);
        }
        opt.learn_cycle().unwrap();
        let d = opt.decide(p).unwrap();
        (opt, d)
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
            if let Ok(mut o) = Optimizer::restore(&sealed(&payload)) {
                // Whatever decoded is whole enough to use.
                let _ = o.decide(&p);
                let _ = o.learn_cycle();
            }
        }
    }

    #[test]
    fn the_model_snapshot_leaves_the_pending_trajectories_apart_and_loses_nothing() {
        let mut opt = optimizer();
        let p = plan(7);
        for i in 0..12 {
            run(&mut opt, &p, (i % 3) as ArmId, 20.0 + i as f32);
        }
        opt.learn_cycle().unwrap();
        for i in 0..9 {
            run(&mut opt, &p, (i % 2) as ArmId, 30.0 + i as f32);
        }
        assert_eq!(opt.pending(), 9);
        let whole = opt.snapshot().unwrap();
        let model = opt.snapshot_model().unwrap();
        let pending = opt.snapshot_pending().unwrap().expect("trajectories wait");
        assert!(model.len() < whole.len());
        let mut back = Optimizer::restore(&model).unwrap();
        assert_eq!(back.pending(), 0);
        assert_eq!(back.restore_pending(&pending).unwrap(), 9);
        assert!(
            back.snapshot().unwrap() == whole,
            "the two parts restore the whole"
        );
        // Everything but the waiting trajectories: the same decisions.
        let mut model_only = Optimizer::restore(&model).unwrap();
        let (a, b) = (opt.decide(&p).unwrap(), model_only.decide(&p).unwrap());
        assert_eq!((a.arm, &a.reason), (b.arm, &b.reason));
        // Damaged pending bytes are refused and queue nothing.
        let mut fresh = Optimizer::restore(&model).unwrap();
        let mut bad = pending.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x10;
        assert!(matches!(
            fresh.restore_pending(&bad),
            Err(NeuralDagError::CorruptState(_))
        ));
        assert_eq!(fresh.pending(), 0);
        assert!(
            fresh.restore_pending(&model).is_err(),
            "a model is not pending trajectories"
        );
        opt.learn_cycle().unwrap();
        assert_eq!(opt.snapshot_pending().unwrap(), None);
    }

    #[test]
    fn restoring_shares_fitting_machinery_and_decides_the_same() {
        let mut opt = optimizer();
        let p = plan(9);
        for i in 0..20 {
            run(&mut opt, &p, (i % 3) as ArmId, 15.0 + i as f32);
        }
        opt.learn_cycle().unwrap();
        let bytes = opt.snapshot().unwrap();
        let shared = Machinery::new(&opt.config().attention).unwrap();
        let mut sharing = Optimizer::restore_sharing(&bytes, &shared).unwrap();
        assert!(Arc::ptr_eq(sharing.machinery(), &shared));
        let mut own = Optimizer::restore(&bytes).unwrap();
        assert!(!Arc::ptr_eq(own.machinery(), &shared));
        let (a, b) = (sharing.decide(&p).unwrap(), own.decide(&p).unwrap());
        assert_eq!((a.arm, &a.reason, &a.key), (b.arm, &b.reason, &b.key));
        // Machinery of other attention parameters is not used: the state's own is built.
        let mut other = opt.config().attention.clone();
        other.seed ^= 1;
        let foreign = Machinery::new(&other).unwrap();
        assert!(!foreign.fits(opt.config()));
        let mut rebuilt = Optimizer::restore_sharing(&bytes, &foreign).unwrap();
        assert!(!Arc::ptr_eq(rebuilt.machinery(), &foreign));
        assert_eq!(rebuilt.decide(&p).unwrap().key, b.key);
    }

    #[test]
    fn the_weights_are_kept_apart_and_formats_5_and_6_are_still_read() {
        let p = plan(11);
        let (opt, before) = trained_on(&p, 24, 15.0);
        let bytes = opt.snapshot_model().unwrap();
        // The weights and centroids are the bulk; the postcard value is the small rest.
        let (version, payload) = snapshot::open(&bytes).unwrap();
        assert_eq!(version, FORMAT_VERSION);
        let (value, _) = snapshot::parts(version, payload).unwrap();
        assert!(
            value.len() * 3 < payload.len(),
            "value {} of payload {}",
            value.len(),
            payload.len()
        );
        let mut back = Optimizer::restore_sharing(&bytes, opt.machinery()).unwrap();
        assert_eq!(back.snapshot_model().unwrap(), bytes);
        let after = back.decide(&p).unwrap();
        assert_eq!((before.arm, &before.key), (after.arm, &after.key));
        // Format-5 and format-6 snapshots (the state as one value, its weights in it) restore
        // to the same model, written back in the current format; restored lean, they have no
        // head of their own and are restored in full.
        for version in [5, 6] {
            let centers: Vec<&Vec<f32>> =
                AttentionKind::ALL.iter().map(|&k| opt.center(k)).collect();
            let old_bytes =
                snapshot::encode_as(&(&opt.state, centers, &opt.plugin_arms), version).unwrap();
            assert_eq!(snapshot::open(&old_bytes).unwrap().0, version);
            let mut old = Optimizer::restore(&old_bytes).unwrap();
            assert_eq!(old.snapshot().unwrap(), opt.snapshot().unwrap());
            let again = old.decide(&p).unwrap();
            assert_eq!((before.arm, &before.key), (again.arm, &again.key));
            let lean = Optimizer::restore_lean(&old_bytes, opt.machinery()).unwrap();
            assert!(lean.has_model());
            assert_eq!(lean.snapshot().unwrap(), opt.snapshot().unwrap());
        }
        // A weight vector cut short in the bulk (behind a recomputed checksum) is named.
        let mut payload = payload.to_vec();
        let value_len = value.len();
        let w0 = 4 + value_len;
        payload[w0..w0 + 4].copy_from_slice(&7u32.to_le_bytes());
        match Optimizer::restore(&sealed(&payload)) {
            Err(NeuralDagError::CorruptState(m)) => assert!(m.contains("hidden bias"), "{m}"),
            other => panic!("expected CorruptState, got {:?}", other.map(|_| ())),
        }
    }

    #[test]
    fn the_shapes_history_is_in_the_model_from_format_8_and_format_7_is_still_read() {
        // Runs with their executed plans measured: each fills the shape's history.
        let p = plan(41);
        let executed = random_plan(
            41,
            20,
            SynthOptions {
                with_actuals: true,
                ..SynthOptions::default()
            },
        );
        let mut opt = optimizer();
        for i in 0..6 {
            let d = opt.decide(&p).unwrap();
            let t = opt
                .trajectory(&d, (i % 4) as ArmId, Some(&executed), 20.0 + i as f32)
                .unwrap();
            opt.observe(t).unwrap();
        }
        opt.learn_cycle().unwrap();
        let fp = p.shape_hash();
        let runs = opt.history(fp).len();
        assert!(runs > 0, "the runs recorded their operators' time shares");
        let bytes = opt.snapshot_model().unwrap();
        assert_eq!(snapshot::open(&bytes).unwrap().0, 8);
        let m = opt.machinery();
        // Restored in full, the history is there; restored lean, the head holds none of it.
        let full = Optimizer::restore_sharing(&bytes, m).unwrap();
        assert_eq!(full.history(fp), opt.history(fp));
        let mut lean = Optimizer::restore_lean(&bytes, m).unwrap();
        assert!(lean.history(fp).is_empty());
        // What the lean copy observes meanwhile is kept beside the snapshot's when the model
        // comes in, the latest last, HISTORY_LEN at most.
        let d = lean.decide_lean(&p, Exploration::Nowhere).unwrap();
        let t = lean.trajectory(&d, 0, Some(&executed), 33.0).unwrap();
        let own = t.op_shares.clone();
        assert!(!own.is_empty());
        lean.observe_unqueued(t).unwrap();
        assert_eq!(lean.history(fp).len(), 1);
        lean.load_model(&bytes).unwrap();
        assert_eq!(lean.history(fp).len(), (runs + 1).min(HISTORY_LEN));
        assert_eq!(lean.history(fp).last(), Some(&own));
        // A key that reads the history (temporal attention, the ensemble) is the model's to
        // compute: a lean copy refuses it by name.
        let mut temporal = Optimizer::new(
            NeuralDagConfig {
                attention_exploration: 0.0,
                default_attention: AttentionKind::TemporalBtsp,
                ..Default::default()
            },
            arms(),
        )
        .unwrap();
        run(&mut temporal, &p, 1, 12.0);
        let bytes = temporal.snapshot_model().unwrap();
        let mut temporal = Optimizer::restore_lean(&bytes, temporal.machinery()).unwrap();
        assert!(matches!(
            temporal.decide_lean(&p, Exploration::Nowhere),
            Err(NeuralDagError::ModelNotLoaded(_))
        ));
        temporal.load_model(&bytes).unwrap();
        assert!(temporal.decide_lean(&p, Exploration::Nowhere).is_ok());
        // A format-7 snapshot (the history in the head) still restores, in full and lean, to
        // the same state.
        let bytes = opt.snapshot_model().unwrap();
        let v7 = opt
            .encode_with_version(opt.state.buffer.without_ring(), 7)
            .unwrap();
        assert_eq!(snapshot::open(&v7).unwrap().0, 7);
        let old = Optimizer::restore_sharing(&v7, m).unwrap();
        assert_eq!(old.snapshot_model().unwrap(), bytes);
        let mut old_lean = Optimizer::restore_lean(&v7, m).unwrap();
        assert_eq!(old_lean.history(fp), opt.history(fp));
        old_lean.load_model(&v7).unwrap();
        assert_eq!(old_lean.snapshot_model().unwrap(), bytes);
        // The head of a format-8 snapshot is smaller than format 7's by the history.
        let head_len = |b: &[u8]| {
            let (v, payload) = snapshot::open(b).unwrap();
            let (value, _) = snapshot::parts(v, payload).unwrap();
            u32::from_le_bytes([value[8], value[9], value[10], value[11]]) as usize
        };
        assert!(
            head_len(&bytes) + 4 * 20 <= head_len(&v7),
            "{} vs {}",
            head_len(&bytes),
            head_len(&v7)
        );
    }

    #[test]
    fn snapshots_carry_the_attention_centres_and_version_2_is_still_read() {
        let p = plan(5);
        let (opt, before) = trained_on(&p, 12, 20.0);
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
}
