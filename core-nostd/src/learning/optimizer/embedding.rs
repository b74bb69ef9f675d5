//! The embedding side of the optimizer: every plan embedding centred on a fixed reference
//! population per attention kind, the bounded cache of embeddings and HDC fingerprints, the
//! attention plugin a host attaches, and the cost model's prediction for one plan.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::OnceCell;

use super::Optimizer;
use crate::attention::{
    mincut_gate, AttentionContext, AttentionKind, AttentionMap, DagAttention, PluginId,
};
use crate::dag::PlanDag;
use crate::embed::{embed, embed_with, PlanStatics, EMBED_DIM};
use crate::error::{NeuralDagError, Result};
use crate::hdc::Hypervector;
use crate::learning::{ArmId, PluginArms};
use crate::synth::{random_plan, SynthOptions};

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
pub(super) fn reference_center(mech: &(dyn DagAttention + Send + Sync)) -> Vec<f32> {
    reference_center_of(mech).0
}

/// [`reference_center`] and how many of the synthetic plans the mechanism attended to.
pub(super) fn reference_center_of(mech: &(dyn DagAttention + Send + Sync)) -> (Vec<f32>, usize) {
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

/// An attention mechanism the host attached (see [`Optimizer::set_plugin`]).
pub(super) struct HostPlugin {
    pub(super) id: PluginId,
    pub(super) mechanism: alloc::boxed::Box<dyn DagAttention + Send + Sync>,
    /// Its centering vector, computed on first use; Err when it attended to no reference plan.
    pub(super) center: OnceCell<core::result::Result<Vec<f32>, String>>,
}

/// Entries each part of [`EmbedCache`] holds.
pub const EMBED_CACHE_ENTRIES: usize = 512;

/// A bounded cache of what `decide` and `trajectory` compute from a plan alone: embeddings
/// under the kinds that use no context (all but temporal BTSP, which reads the shape's
/// history, and the ensemble, which reads the selector's weights), keyed by
/// [`PlanDag::content_hash`], and HDC fingerprints, keyed by [`PlanDag::shape_hash`] (they
/// depend on operators and depths only). The oldest entry goes first at capacity.
#[derive(Default)]
pub(super) struct EmbedCache {
    pub(super) embeddings: hashbrown::HashMap<(u64, u8), Vec<f32>>,
    pub(super) embedding_order: VecDeque<(u64, u8)>,
    pub(super) fingerprints: hashbrown::HashMap<u64, Hypervector>,
    pub(super) fingerprint_order: VecDeque<u64>,
    pub(super) hits: u64,
    pub(super) misses: u64,
    /// The last plan embedded (by content hash): what its embeddings share under any
    /// attention, and its topological attention (min-cut gated attention gates it), so a
    /// decision that embeds one plan under two kinds computes them once.
    pub(super) last_statics: Option<(u64, PlanStatics)>,
    pub(super) last_topological: Option<(u64, AttentionMap)>,
}

impl EmbedCache {
    pub(super) fn put_embedding(&mut self, key: (u64, u8), e: Vec<f32>) {
        if self.embeddings.len() >= EMBED_CACHE_ENTRIES {
            if let Some(old) = self.embedding_order.pop_front() {
                self.embeddings.remove(&old);
            }
        }
        if self.embeddings.insert(key, e).is_none() {
            self.embedding_order.push_back(key);
        }
    }
    pub(super) fn put_fingerprint(&mut self, key: u64, h: Hypervector) {
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

impl Optimizer {
    /// Embed `dag` under `kind`, with this shape's execution history as temporal context,
    /// centred (see [`CENTERING`]) and unit length.
    pub(super) fn embed_as(&self, dag: &PlanDag, kind: AttentionKind, fp: u64) -> Result<Vec<f32>> {
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
    pub(super) fn fingerprint_of(&self, dag: &PlanDag, fp: u64) -> Hypervector {
        if let Some(h) = self.cache.borrow().fingerprints.get(&fp) {
            return h.clone();
        }
        let h = self.machinery.encoder.fingerprint(dag);
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
            AttentionKind::MinCutGated => {
                let content = dag.content_hash();
                let base = self
                    .cache
                    .borrow()
                    .last_topological
                    .as_ref()
                    .filter(|(c, _)| *c == content)
                    .map(|(_, m)| mincut_gate(dag, m, self.machinery.attention.mincut_threshold));
                let map = match base {
                    Some(gated) => gated?,
                    None => self.machinery.mechanisms[kind.index()].attend(dag, &ctx)?,
                };
                (map, self.center(kind))
            }
            k => {
                let map = self.machinery.mechanisms[k.index()].attend(dag, &ctx)?;
                if k == AttentionKind::Topological {
                    self.cache.borrow_mut().last_topological =
                        Some((dag.content_hash(), map.clone()));
                }
                (map, self.center(k))
            }
        };
        let raw = {
            let content = dag.content_hash();
            let mut cache = self.cache.borrow_mut();
            if cache
                .last_statics
                .as_ref()
                .is_none_or(|(c, _)| *c != content)
            {
                cache.last_statics = Some((content, PlanStatics::of(dag)));
            }
            let (_, statics) = cache.last_statics.as_ref().expect("just set");
            embed_with(statics, &map)?
        };
        let mut e: Vec<f32> = raw.iter().zip(center).map(|(x, c)| x - c).collect();
        let norm = libm::sqrtf(e.iter().map(|x| x * x).sum());
        if norm > 1e-6 {
            e.iter_mut().for_each(|x| *x /= norm);
        }
        Ok(e)
    }

    /// The reference centre of `kind` (computed once; restored from a snapshot when it has one).
    pub(super) fn center(&self, kind: AttentionKind) -> &Vec<f32> {
        self.centers[kind.index()]
            .get_or_init(|| reference_center(self.machinery.mechanisms[kind.index()].as_ref()))
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

    /// The estimator's latency prediction (ms) for running `dag` under `arm`, seen through the
    /// attention kind with the best prediction record so far.
    pub fn predict_ms(&self, dag: &PlanDag, arm: ArmId) -> Result<f32> {
        self.model_loaded("a prediction")?;
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
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::learning::snapshot;

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

    /// A plan embedded under the topological kind and then the min-cut gated kind (the key
    /// and the input of a decision) gates the topological attention already computed: the
    /// same embedding to the bit as the min-cut gated mechanism run alone, and never another
    /// plan's attention.
    #[test]
    fn two_kinds_of_one_plan_share_their_work_not_their_result() {
        let opt = optimizer();
        let (p, q) = (plan(33), plan(34));
        let (topo, gated) = (AttentionKind::Topological, AttentionKind::MinCutGated);
        let alone = |d: &PlanDag, k| optimizer().embed_as(d, k, d.shape_hash()).unwrap();
        assert_eq!(
            opt.embed_as(&p, topo, p.shape_hash()).unwrap(),
            alone(&p, topo)
        );
        let shared = opt.embed_as(&p, gated, p.shape_hash()).unwrap();
        assert_eq!(shared, alone(&p, gated));
        assert_ne!(shared, alone(&p, topo));
        // The last topological attention is p's: q's is computed, not p's gated.
        assert_eq!(
            opt.embed_as(&q, gated, q.shape_hash()).unwrap(),
            alone(&q, gated)
        );
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
        let bad = snapshot::encode_as(&(&learner.state, centers, &forged), 6).unwrap();
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
}
