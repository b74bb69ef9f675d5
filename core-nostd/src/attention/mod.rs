//! DAG attention: per-node weights that say where in a plan the work, the risk or the signal is.
//!
//! Every mechanism implements [`DagAttention`] and returns an [`AttentionMap`] whose weights are
//! finite, non-negative and sum to 1. Mechanisms that attend pairwise (node `i` looks at the
//! nodes in its mask) can also return the sparse pairwise matrix; its rows sum to 1 and pairs
//! outside the mask are exactly 0 (absent). Node weights are then the attention each node
//! *receives*, averaged over the queries: `alpha_j = (1/n) sum_i a_ij`.
//!
//! No mechanism depends on how nodes are numbered: renumbering the nodes permutes the output
//! the same way. Input order (outer before inner) is part of the plan and is kept by
//! [`PlanDag::permuted`](crate::dag::PlanDag::permuted). All randomness is seeded from
//! [`AttentionConfig::seed`].

use alloc::boxed::Box;
use alloc::format;
use alloc::vec;
use alloc::vec::Vec;

use crate::dag::PlanDag;
use crate::error::{NeuralDagError, Result};
use crate::features::{FeatureVector, FEATURE_DIM};
use crate::rng::SplitMix64;

mod causal_cone;
mod critical_path;
mod ensemble;
mod hierarchical;
mod mincut_gated;
mod parallel_branch;
mod temporal_btsp;
mod topological;

pub use causal_cone::CausalCone;
pub use critical_path::{critical_path, CriticalPath, CriticalPathInfo};
pub use ensemble::Ensemble;
pub use hierarchical::{lorentz_inner, lorentz_positions, HierarchicalLorentz};
pub(crate) use mincut_gated::gate as mincut_gate;
pub use mincut_gated::MinCutGated;
pub use parallel_branch::ParallelBranch;
pub use temporal_btsp::TemporalBtsp;
pub use topological::Topological;

/// The attention mechanisms, plus their ensemble.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub enum AttentionKind {
    /// Scaled dot product over each node's upstream set within a window of levels.
    Topological,
    /// Upstream set within a hop radius, logits discounted by distance.
    CausalCone,
    /// Biased by slack against the longest cost-weighted leaf-to-root path.
    CriticalPath,
    /// Topological attention gated by the plan's s-t min cut.
    MinCutGated,
    /// Distance on the hyperboloid to the cost-weighted Lorentz centroid.
    HierarchicalLorentz,
    /// Mass split across sibling branches by their (flattened) cost share.
    ParallelBranch,
    /// Eligibility trace of measured time shares with plateau gating.
    TemporalBtsp,
    /// Weighted mixture of the seven above.
    Ensemble,
    /// An attention plugin the host supplies (a sandboxed wasm module), identified by its
    /// module's content. Not in [`AttentionKind::ALL`]: it is the attention selector's extra
    /// kind (see [`crate::learning::Optimizer::set_plugin`]) and has no built-in mechanism.
    Plugin(PluginId),
}

/// The identity of an attention plugin: the first 8 bytes of its module's sha256, so that what
/// is learned about a plugin follows its code, not the name it was registered under.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
pub struct PluginId(pub u64);

impl PluginId {
    /// The id of the module whose sha256 is `hex` (64 hex digits); None when it is not one.
    pub fn from_sha256_hex(hex: &str) -> Option<PluginId> {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u64::from_str_radix(&hex[..16], 16).ok().map(PluginId)
    }
}

impl core::fmt::Display for PluginId {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl AttentionKind {
    /// All eight kinds, ensemble last.
    pub const ALL: [AttentionKind; 8] = [
        AttentionKind::Topological,
        AttentionKind::CausalCone,
        AttentionKind::CriticalPath,
        AttentionKind::MinCutGated,
        AttentionKind::HierarchicalLorentz,
        AttentionKind::ParallelBranch,
        AttentionKind::TemporalBtsp,
        AttentionKind::Ensemble,
    ];

    /// The seven base mechanisms.
    pub const MECHANISMS: [AttentionKind; 7] = [
        AttentionKind::Topological,
        AttentionKind::CausalCone,
        AttentionKind::CriticalPath,
        AttentionKind::MinCutGated,
        AttentionKind::HierarchicalLorentz,
        AttentionKind::ParallelBranch,
        AttentionKind::TemporalBtsp,
    ];

    /// Whether the kind reads the shape's recorded history of operator time shares (temporal
    /// attention, alone or in the ensemble; a plugin is handed it too): its map of a plan
    /// depends on what ran before, not on the plan alone.
    pub fn reads_history(self) -> bool {
        matches!(
            self,
            AttentionKind::TemporalBtsp | AttentionKind::Ensemble | AttentionKind::Plugin(_)
        )
    }

    /// Snake-case name, as SQL functions and GUCs spell it.
    pub fn name(self) -> &'static str {
        match self {
            AttentionKind::Topological => "topological",
            AttentionKind::CausalCone => "causal_cone",
            AttentionKind::CriticalPath => "critical_path",
            AttentionKind::MinCutGated => "mincut_gated",
            AttentionKind::HierarchicalLorentz => "hierarchical_lorentz",
            AttentionKind::ParallelBranch => "parallel_branch",
            AttentionKind::TemporalBtsp => "temporal_btsp",
            AttentionKind::Ensemble => "ensemble",
            AttentionKind::Plugin(_) => "plugin",
        }
    }

    /// Parse a name (case-insensitive; `-` and `_` alike). The error lists the valid names.
    pub fn from_name(name: &str) -> Result<AttentionKind> {
        let norm: alloc::string::String = name
            .trim()
            .chars()
            .map(|c| {
                if c == '-' {
                    '_'
                } else {
                    c.to_ascii_lowercase()
                }
            })
            .collect();
        AttentionKind::ALL
            .iter()
            .copied()
            .find(|k| k.name() == norm)
            .ok_or_else(|| {
                let names: Vec<&str> = AttentionKind::ALL.iter().map(|k| k.name()).collect();
                NeuralDagError::InvalidConfig(format!(
                    "unknown attention kind {name:?}; expected one of {}",
                    names.join(", ")
                ))
            })
    }

    /// Position in [`AttentionKind::ALL`]; `ALL.len()` (past its end) for a plugin.
    pub fn index(self) -> usize {
        match self {
            AttentionKind::Topological => 0,
            AttentionKind::CausalCone => 1,
            AttentionKind::CriticalPath => 2,
            AttentionKind::MinCutGated => 3,
            AttentionKind::HierarchicalLorentz => 4,
            AttentionKind::ParallelBranch => 5,
            AttentionKind::TemporalBtsp => 6,
            AttentionKind::Ensemble => 7,
            AttentionKind::Plugin(_) => AttentionKind::ALL.len(),
        }
    }

    /// Whether this is one of the built-in kinds (in [`AttentionKind::ALL`]).
    pub fn is_builtin(self) -> bool {
        !matches!(self, AttentionKind::Plugin(_))
    }
}

/// Parameters of every mechanism. Defaults follow DESIGN.md.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AttentionConfig {
    /// Seed of the fixed query/key projections.
    pub seed: u64,
    /// Width of the query/key projections.
    pub proj_dim: usize,
    /// Topological: a node attends to upstream nodes at most this many levels below it.
    pub topo_window: u32,
    /// Topological and causal cone: weight of the work salience term
    /// `ln((work_j + eps) / (mean work + eps))` added to every logit, so queries look at the
    /// inputs that do the work (0 = pure dot product).
    pub work_salience: f32,
    /// Causal cone: hop radius.
    pub cone_depth: u32,
    /// Causal cone: logit discount per hop (ln 2 halves the weight per hop).
    pub cone_gamma: f32,
    /// Critical path: weight falls as `exp(-sharpness * slack / path length)`.
    pub critical_sharpness: f32,
    /// Min-cut gate: factor applied to nodes off the cut.
    pub mincut_threshold: f32,
    /// Hierarchical Lorentz: hyperbolic distance between consecutive depths.
    pub lorentz_step: f32,
    /// Hierarchical Lorentz: temperature of `-distance / tau`.
    pub lorentz_tau: f32,
    /// Parallel branch: branch mass is proportional to `cost ^ balance` (1 = pure cost share,
    /// 0 = equal split).
    pub branch_balance: f32,
    /// Parallel branch: least share of its incoming mass a node keeps.
    pub branch_keep_min: f32,
    /// Temporal BTSP: number of recent runs in the trace.
    pub btsp_window: usize,
    /// Temporal BTSP: per-run decay of the eligibility trace.
    pub btsp_decay: f32,
    /// Temporal BTSP: a node whose latest share exceeds this multiple of its trace fires a plateau.
    pub btsp_plateau: f32,
    /// Temporal BTSP: extra gain of a node during a plateau.
    pub btsp_gain: f32,
}

impl Default for AttentionConfig {
    fn default() -> Self {
        AttentionConfig {
            seed: 0x05EE_DDA6,
            proj_dim: 16,
            topo_window: 8,
            work_salience: 1.0,
            cone_depth: 4,
            cone_gamma: core::f32::consts::LN_2,
            critical_sharpness: 10.0,
            mincut_threshold: 0.5,
            lorentz_step: 1.0,
            lorentz_tau: 1.0,
            branch_balance: 0.5,
            branch_keep_min: 0.05,
            btsp_window: 16,
            btsp_decay: 0.8,
            btsp_plateau: 2.0,
            btsp_gain: 1.0,
        }
    }
}

impl AttentionConfig {
    /// Check every field; the error names the first bad one.
    pub fn validate(&self) -> Result<()> {
        fn range(field: &str, v: f32, lo: f32, hi: f32) -> Result<()> {
            if v.is_finite() && v >= lo && v <= hi {
                Ok(())
            } else {
                Err(NeuralDagError::InvalidConfig(format!(
                    "{field} = {v} is outside [{lo}, {hi}]"
                )))
            }
        }
        if !(1..=256).contains(&self.proj_dim) {
            return Err(NeuralDagError::InvalidConfig(format!(
                "proj_dim = {} is outside [1, 256]",
                self.proj_dim
            )));
        }
        if self.topo_window == 0 {
            return Err(NeuralDagError::InvalidConfig(
                "topo_window must be at least 1".into(),
            ));
        }
        if self.cone_depth == 0 {
            return Err(NeuralDagError::InvalidConfig(
                "cone_depth must be at least 1".into(),
            ));
        }
        if !(1..=1024).contains(&self.btsp_window) {
            return Err(NeuralDagError::InvalidConfig(format!(
                "btsp_window = {} is outside [1, 1024]",
                self.btsp_window
            )));
        }
        range("work_salience", self.work_salience, 0.0, 4.0)?;
        range("cone_gamma", self.cone_gamma, 0.0, 20.0)?;
        range("critical_sharpness", self.critical_sharpness, 0.0, 1000.0)?;
        range("mincut_threshold", self.mincut_threshold, 0.0, 1.0)?;
        range("lorentz_step", self.lorentz_step, 1e-3, 10.0)?;
        range("lorentz_tau", self.lorentz_tau, 1e-3, 1000.0)?;
        range("branch_balance", self.branch_balance, 0.0, 2.0)?;
        range("branch_keep_min", self.branch_keep_min, 0.0, 1.0)?;
        range("btsp_decay", self.btsp_decay, 0.0, 1.0)?;
        range("btsp_plateau", self.btsp_plateau, 1.0, 1000.0)?;
        range("btsp_gain", self.btsp_gain, 0.0, 100.0)
    }
}

/// What a mechanism may know besides the plan.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionContext<'a> {
    /// Recent executions of this plan shape, oldest first: per node, its share of the measured
    /// time. Entries whose length differs from the plan's node count are ignored.
    pub history: &'a [Vec<f32>],
    /// Ensemble mixing weights in [`AttentionKind::MECHANISMS`] order (the selector's reward
    /// means); uniform when absent.
    pub ensemble_weights: Option<[f32; 7]>,
    /// Whether to return the pairwise matrix (for display; costs time and memory).
    pub want_pairwise: bool,
}

/// The output of a mechanism.
#[derive(Debug, Clone, PartialEq)]
pub struct AttentionMap {
    /// Which mechanism made it.
    pub kind: AttentionKind,
    /// Per-node weights: finite, >= 0, summing to 1.
    pub alpha: Vec<f32>,
    /// Sparse pairwise attention `(query i, key j, a_ij)` with rows summing to 1, when the
    /// mechanism attends pairwise and the context asked for it.
    pub pairwise: Option<Pairwise>,
}

/// A DAG attention mechanism.
pub trait DagAttention {
    /// Which kind this is.
    fn kind(&self) -> AttentionKind;
    /// Weights for every node of `dag`.
    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap>;
}

impl<T: DagAttention + ?Sized> DagAttention for Box<T> {
    fn kind(&self) -> AttentionKind {
        (**self).kind()
    }
    fn attend(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        (**self).attend(dag, ctx)
    }
}

/// Build the mechanism of `kind` from a validated configuration.
pub fn mechanism(
    kind: AttentionKind,
    cfg: &AttentionConfig,
) -> Result<Box<dyn DagAttention + Send + Sync>> {
    cfg.validate()?;
    Ok(match kind {
        AttentionKind::Topological => Box::new(Topological::new(cfg)),
        AttentionKind::CausalCone => Box::new(CausalCone::new(cfg)),
        AttentionKind::CriticalPath => Box::new(CriticalPath::new(cfg)),
        AttentionKind::MinCutGated => Box::new(MinCutGated::new(cfg)),
        AttentionKind::HierarchicalLorentz => Box::new(HierarchicalLorentz::new(cfg)),
        AttentionKind::ParallelBranch => Box::new(ParallelBranch::new(cfg)),
        AttentionKind::TemporalBtsp => Box::new(TemporalBtsp::new(cfg)),
        AttentionKind::Ensemble => Box::new(Ensemble::new(cfg)),
        AttentionKind::Plugin(id) => {
            return Err(NeuralDagError::InvalidConfig(format!(
                "attention plugin {id} has no built-in mechanism (its host runs it)"
            )))
        }
    })
}

impl AttentionMap {
    /// The map of weights computed elsewhere (a plugin's, after the sandbox checked them):
    /// refuses a non-finite or negative weight and all-zero weights, renormalises the rest.
    pub fn from_weights(kind: AttentionKind, weights: Vec<f32>) -> Result<AttentionMap> {
        normalised(kind, weights, None)
    }
}

/// Normalise raw non-negative weights into an [`AttentionMap`]; refuses non-finite or all-zero
/// input. The check is the one plugins' weights get ([`crate::plugin_abi::validate_weights`]).
pub(crate) fn normalised(
    kind: AttentionKind,
    alpha: Vec<f32>,
    pairwise: Option<Vec<(u32, u32, f32)>>,
) -> Result<AttentionMap> {
    let n = alpha.len();
    let alpha = crate::plugin_abi::validate_weights(alpha, n).map_err(|e| {
        use crate::plugin_abi::WeightError;
        NeuralDagError::AttentionComputationFailed(match e {
            WeightError::BadWeight { node, value } => {
                format!("{}: weight of node {node} is {value}", kind.name())
            }
            WeightError::NoMass => format!("{}: weights sum to zero or overflow", kind.name()),
            other => format!("{}: {other}", kind.name()),
        })
    })?;
    Ok(AttentionMap {
        kind,
        alpha,
        pairwise,
    })
}

/// In-place softmax of `logits` (max-subtracted, so never overflows).
pub(crate) fn softmax(logits: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for l in logits.iter_mut() {
        *l = libm::expf(*l - max);
        sum += *l;
    }
    for l in logits.iter_mut() {
        *l /= sum;
    }
}

/// Fixed seeded query/key projections, `dim x FEATURE_DIM` each, entries N(0, 1/FEATURE_DIM).
/// Stored column-major so that projecting is a sequence of `axpy`s over the output, which the
/// compiler vectorises (a row-wise dot product is a float reduction, which it may not reorder).
#[derive(Debug, Clone)]
pub(crate) struct Projection {
    dim: usize,
    wq: Vec<f32>,
    wk: Vec<f32>,
}

impl Projection {
    pub(crate) fn new(seed: u64, dim: usize) -> Self {
        let mut rng = SplitMix64::new(seed);
        let scale = 1.0 / libm::sqrt(FEATURE_DIM as f64);
        let mut draw = || {
            (0..dim * FEATURE_DIM)
                .map(|_| (rng.normal() * scale) as f32)
                .collect::<Vec<f32>>()
        };
        let wq = draw();
        let wk = draw();
        Projection { dim, wq, wk }
    }

    fn apply(w: &[f32], dim: usize, x: &FeatureVector, out: &mut [f32], scale: f32) {
        out.fill(0.0);
        for (c, &xc) in x.iter().enumerate() {
            if xc == 0.0 {
                continue;
            }
            let col = &w[c * dim..(c + 1) * dim];
            for (o, &wv) in out.iter_mut().zip(col) {
                *o += wv * xc;
            }
        }
        if scale != 1.0 {
            for o in out.iter_mut() {
                *o *= scale;
            }
        }
    }

    /// Queries and keys of every node, row-major `n x dim`; keys pre-scaled by 1/sqrt(dim).
    pub(crate) fn queries_keys(&self, feats: &[FeatureVector]) -> (Vec<f32>, Vec<f32>) {
        let d = self.dim;
        let mut q = vec![0.0f32; feats.len() * d];
        let mut k = vec![0.0f32; feats.len() * d];
        let inv = 1.0 / libm::sqrtf(d as f32);
        for (v, x) in feats.iter().enumerate() {
            Self::apply(&self.wq, d, x, &mut q[v * d..(v + 1) * d], 1.0);
            Self::apply(&self.wk, d, x, &mut k[v * d..(v + 1) * d], inv);
        }
        (q, k)
    }

    pub(crate) fn dim(&self) -> usize {
        self.dim
    }
}

/// Dot product with four independent accumulators, so it vectorises.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 4];
    let chunks = a.len() / 4 * 4;
    for (ca, cb) in a[..chunks].chunks_exact(4).zip(b[..chunks].chunks_exact(4)) {
        for l in 0..4 {
            acc[l] += ca[l] * cb[l];
        }
    }
    let tail: f32 = a[chunks..]
        .iter()
        .zip(&b[chunks..])
        .map(|(x, y)| x * y)
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// Breadth-first walk down the inputs of a node, with a generation-stamped visited set so one
/// allocation serves every query node.
pub(crate) struct UpstreamWalk {
    stamp: Vec<u32>,
    generation: u32,
    /// `(node, hops)` of the last walk, the start node first with 0 hops.
    pub(crate) found: Vec<(u32, u32)>,
}

impl UpstreamWalk {
    pub(crate) fn new(n: usize) -> Self {
        UpstreamWalk {
            stamp: vec![0; n],
            generation: 0,
            found: Vec::new(),
        }
    }

    /// Nodes upstream of `start` (itself included) within `max_hops` hops and at height at
    /// least `min_height`; each with its shortest hop count.
    pub(crate) fn walk(&mut self, dag: &PlanDag, start: usize, max_hops: u32, min_height: u32) {
        self.generation += 1;
        let g = self.generation;
        self.found.clear();
        self.found.push((start as u32, 0));
        self.stamp[start] = g;
        let mut head = 0;
        while head < self.found.len() {
            let (v, h) = self.found[head];
            head += 1;
            if h >= max_hops {
                continue;
            }
            for &c in dag.children(v as usize) {
                if self.stamp[c as usize] != g && dag.height(c as usize) >= min_height {
                    self.stamp[c as usize] = g;
                    self.found.push((c, h + 1));
                }
            }
        }
    }
}

/// Each node's work (measured self time or estimated self cost) plus a tiny floor, so that
/// zero-cost plans still have a well-defined path and split (in hops / equal parts).
pub(crate) fn floored_work(dag: &PlanDag) -> Vec<f64> {
    let n = dag.len();
    let total: f64 = (0..n).map(|v| dag.self_work(v).max(0.0)).sum();
    let floor = 1e-6 * total.max(1e-6) / n as f64 + 1e-12;
    (0..n).map(|v| dag.self_work(v).max(0.0) + floor).collect()
}

/// Sparse pairwise attention `(query i, key j, a_ij)`.
pub type Pairwise = Vec<(u32, u32, f32)>;

/// Per-node salience `ln((work_j + eps) / (mean work + eps))`, eps = 1e-3 x mean work.
/// Random projections alone give near-uniform weights on real plans (the TPC-H fixture test
/// measured 1.5x uniform at the peak for the cone); this term makes a query prefer the inputs
/// that actually do the work.
pub(crate) fn work_salience(dag: &PlanDag) -> Vec<f32> {
    let n = dag.len();
    let work: Vec<f64> = (0..n).map(|v| dag.self_work(v).max(0.0)).collect();
    let mean = work.iter().sum::<f64>() / n as f64;
    let eps = 1e-3 * mean + 1e-12;
    work.iter()
        .map(|w| libm::log((w + eps) / (mean + eps)) as f32)
        .collect()
}

/// Masked scaled dot-product attention: node `i` attends to `walk(i)` with logit
/// `q_i . k_j / sqrt(d) + salience_weight * salience_j - hop_penalty * hops`. Returns
/// received-attention node weights and, on request, the pairwise rows.
#[allow(clippy::too_many_arguments)]
pub(crate) fn masked_dot_product(
    dag: &PlanDag,
    proj: &Projection,
    feats: &[FeatureVector],
    want_pairwise: bool,
    salience_weight: f32,
    hop_penalty: f32,
    mut mask: impl FnMut(&mut UpstreamWalk, usize),
) -> (Vec<f32>, Option<Pairwise>) {
    let n = dag.len();
    let d = proj.dim();
    let (q, k) = proj.queries_keys(feats);
    let salience: Vec<f32> = if salience_weight > 0.0 {
        work_salience(dag)
            .into_iter()
            .map(|s| s * salience_weight)
            .collect()
    } else {
        vec![0.0; n]
    };
    let mut walk = UpstreamWalk::new(n);
    let mut alpha = vec![0.0f32; n];
    let mut pairs = if want_pairwise {
        Some(Vec::new())
    } else {
        None
    };
    let mut logits: Vec<f32> = Vec::new();
    let inv_n = 1.0 / n as f32;
    for i in 0..n {
        mask(&mut walk, i);
        let qi = &q[i * d..(i + 1) * d];
        logits.clear();
        for &(j, hops) in &walk.found {
            let kj = &k[j as usize * d..(j as usize + 1) * d];
            logits.push(dot(qi, kj) + salience[j as usize] - hop_penalty * hops as f32);
        }
        softmax(&mut logits);
        for (&(j, _), &a) in walk.found.iter().zip(&logits) {
            alpha[j as usize] += a * inv_n;
            if let Some(p) = pairs.as_mut() {
                p.push((i as u32, j, a));
            }
        }
    }
    (alpha, pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_errors_list_the_choices() {
        for k in AttentionKind::ALL {
            assert_eq!(AttentionKind::from_name(k.name()).unwrap(), k);
            assert_eq!(AttentionKind::ALL[k.index()], k);
        }
        assert_eq!(
            AttentionKind::from_name(" Critical-Path ").unwrap(),
            AttentionKind::CriticalPath
        );
        let e = AttentionKind::from_name("psychic").unwrap_err();
        assert!(
            matches!(e, NeuralDagError::InvalidConfig(m) if m.contains("psychic") && m.contains("mincut_gated"))
        );
    }

    #[test]
    fn config_validation_names_the_field() {
        assert!(AttentionConfig::default().validate().is_ok());
        let c = AttentionConfig {
            mincut_threshold: 1.5,
            ..Default::default()
        };
        assert!(
            matches!(c.validate(), Err(NeuralDagError::InvalidConfig(m)) if m.contains("mincut_threshold"))
        );
        let c = AttentionConfig {
            lorentz_tau: f32::NAN,
            ..Default::default()
        };
        assert!(
            matches!(c.validate(), Err(NeuralDagError::InvalidConfig(m)) if m.contains("lorentz_tau"))
        );
        let c = AttentionConfig {
            proj_dim: 0,
            ..Default::default()
        };
        assert!(mechanism(AttentionKind::Topological, &c).is_err());
    }

    #[test]
    fn softmax_is_stable() {
        let mut l = [1000.0f32, 1000.0, -1000.0];
        softmax(&mut l);
        assert!((l[0] - 0.5).abs() < 1e-6 && l[2] == 0.0);
    }
}
