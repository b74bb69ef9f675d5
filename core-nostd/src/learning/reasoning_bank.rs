//! ReasoningBank: the patterns learned from drained trajectories.
//!
//! Each background cycle clusters the trajectories' key embeddings (the default plan's
//! embedding, which identifies a query's shape whatever arm ran) with seeded K-means++
//! (Arthur & Vassilvitskii 2007; k = min(clusters, n), at most 100 Lloyd iterations, empty
//! clusters reseeded with the point farthest from its centroid). A cluster becomes a pattern,
//! or is merged into an existing one with cosine > 0.95. A pattern keeps per-arm statistics of
//! log latency over every trajectory assigned to it (a slow arm is evidence too); only clusters
//! holding a trajectory of quality >= `quality_threshold` may found a new pattern.

use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{cosine, dist2, dot, ArmId, Trajectory};
use crate::hdc::{Bundler, Hypervector};
use crate::rng::SplitMix64;

/// Most arms a pattern tracks.
pub const MAX_ARMS: usize = 16;

/// Count, mean and variance (Welford) of log latency of one arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    /// Observations.
    pub count: u32,
    /// Mean of ln(ms).
    pub mean: f64,
    /// Sum of squared deviations from the mean.
    pub m2: f64,
}

impl ArmStats {
    /// Add one latency.
    pub fn push(&mut self, ms: f64) {
        let x = libm::log(ms.max(1e-6));
        self.count += 1;
        let d = x - self.mean;
        self.mean += d / f64::from(self.count);
        self.m2 += d * (x - self.mean);
    }

    /// Merge another set of observations (Chan et al.'s parallel formula).
    pub fn merge(&mut self, o: &ArmStats) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = *o;
            return;
        }
        let (na, nb) = (f64::from(self.count), f64::from(o.count));
        let d = o.mean - self.mean;
        let n = na + nb;
        self.mean += d * nb / n;
        self.m2 += o.m2 + d * d * na * nb / n;
        self.count += o.count;
    }

    /// Sample variance of ln(ms); a prior of 0.25 (about x1.65 spread) below two observations.
    pub fn variance(&self) -> f64 {
        if self.count < 2 {
            0.25
        } else {
            self.m2 / f64::from(self.count - 1)
        }
    }

    /// Geometric mean latency, ms.
    pub fn typical_ms(&self) -> f64 {
        libm::exp(self.mean)
    }
}

/// A learned query pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pattern {
    /// Stable id (never reused).
    pub id: u64,
    /// Unit-length centroid of the member keys.
    pub centroid: Vec<f32>,
    /// Majority bundle of the members' HDC plan fingerprints when the pattern was founded.
    pub hdc: Hypervector,
    /// Per-arm latency statistics, indexed by arm.
    pub arms: Vec<ArmStats>,
    /// Trajectories merged into this pattern.
    pub members: u64,
}

impl Pattern {
    /// The arm with the lowest mean log latency among arms observed at least once.
    pub fn best_arm(&self) -> Option<ArmId> {
        (0..self.arms.len())
            .filter(|&a| self.arms[a].count > 0)
            .min_by(|&a, &b| {
                self.arms[a]
                    .mean
                    .total_cmp(&self.arms[b].mean)
                    .then(a.cmp(&b))
            })
            .map(|a| a as ArmId)
    }

    /// Confidence in [0, 1] that the best arm beats the default arm (arm 0) by 10%: the
    /// normal CDF of [`super::evidence`]'s one-sided test on log latency, scaled by support (fewer runs of either, less confidence). When
    /// the default is best, the same against the runner-up. 0 with nothing to compare.
    pub fn confidence(&self) -> f32 {
        let Some(best) = self.best_arm() else {
            return 0.0;
        };
        let b = &self.arms[usize::from(best)];
        let (other, margin) = if best == 0 {
            let runner_up = (1..self.arms.len())
                .filter(|&a| self.arms[a].count > 0)
                .min_by(|&x, &y| self.arms[x].mean.total_cmp(&self.arms[y].mean));
            (runner_up, 0.0)
        } else {
            ((self.arms[0].count > 0).then_some(0), 0.1)
        };
        let Some(o) = other.map(|o| &self.arms[o]) else {
            return 0.0;
        };
        // The same test as a shape's own evidence, with the default (or runner-up) as `o`.
        let z = super::evidence::z_faster(o, b, margin);
        let support = 1.0 - libm::exp(-f64::from(b.count.min(o.count)) / 3.0);
        (support * super::evidence::normal_cdf(z)).clamp(0.0, 1.0) as f32
    }

    fn absorb(&mut self, centroid: &[f32], members: u64, arms: &[ArmStats]) {
        let (wa, wb) = (self.members as f32, members as f32);
        for (c, x) in self.centroid.iter_mut().zip(centroid) {
            *c = (*c * wa + x * wb) / (wa + wb).max(1.0);
        }
        normalise(&mut self.centroid);
        self.members += members;
        for (mine, theirs) in self.arms.iter_mut().zip(arms) {
            mine.merge(theirs);
        }
    }
}

fn normalise(v: &mut [f32]) {
    let n = libm::sqrtf(dot(v, v));
    if n > 0.0 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

/// Seeded K-means++ with Lloyd iterations. Returns centroids and each point's cluster.
pub fn kmeans(
    points: &[&[f32]],
    k: usize,
    max_iter: usize,
    seed: u64,
) -> (Vec<Vec<f32>>, Vec<usize>) {
    let n = points.len();
    if n == 0 || k == 0 {
        return (Vec::new(), Vec::new());
    }
    let k = k.min(n);
    let mut rng = SplitMix64::new(seed);
    let mut centroids: Vec<Vec<f32>> = vec![points[rng.below(n)].to_vec()];
    let mut d2: Vec<f32> = points.iter().map(|p| dist2(p, &centroids[0])).collect();
    while centroids.len() < k {
        let total: f64 = d2.iter().map(|&d| f64::from(d)).sum();
        let next = if total <= 0.0 {
            // Fewer distinct points than k: stop with what is distinct.
            break;
        } else {
            let mut r = rng.next_f64() * total;
            let mut pick = n - 1;
            for (i, &d) in d2.iter().enumerate() {
                r -= f64::from(d);
                if r <= 0.0 && d > 0.0 {
                    pick = i;
                    break;
                }
            }
            pick
        };
        centroids.push(points[next].to_vec());
        let c = centroids.last().map(Vec::as_slice).unwrap_or_default();
        for (i, p) in points.iter().enumerate() {
            d2[i] = d2[i].min(dist2(p, c));
        }
    }
    let k = centroids.len();
    let dim = points[0].len();
    let mut assign = vec![usize::MAX; n];
    for _ in 0..max_iter {
        let mut changed = false;
        for (i, p) in points.iter().enumerate() {
            let mut best = (f32::INFINITY, 0);
            for (c, cent) in centroids.iter().enumerate() {
                let d = dist2(p, cent);
                if d < best.0 {
                    best = (d, c);
                }
            }
            if assign[i] != best.1 {
                assign[i] = best.1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
        let mut sums = vec![vec![0.0f32; dim]; k];
        let mut counts = vec![0usize; k];
        for (i, p) in points.iter().enumerate() {
            counts[assign[i]] += 1;
            for (s, x) in sums[assign[i]].iter_mut().zip(p.iter()) {
                *s += x;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // Empty cluster: reseed with the point farthest from its own centroid.
                let far = (0..n)
                    .max_by(|&a, &b| {
                        dist2(points[a], &centroids[assign[a]])
                            .total_cmp(&dist2(points[b], &centroids[assign[b]]))
                    })
                    .unwrap_or(0);
                centroids[c] = points[far].to_vec();
                assign[far] = c;
            } else {
                for (x, s) in centroids[c].iter_mut().zip(&sums[c]) {
                    *x = s / counts[c] as f32;
                }
            }
        }
    }
    (centroids, assign)
}

/// The pattern store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReasoningBank {
    patterns: Vec<Pattern>,
    capacity: usize,
    next_id: u64,
    evicted: u64,
}

/// Cosine above which a new cluster is merged into an existing pattern.
pub const MERGE_COSINE: f32 = 0.95;

/// Patterns kept by the Hamming pre-filter (at least; see [`ReasoningBank::search`]).
pub const PREFILTER_KEEP: usize = 64;
/// 64-bit words of the hypervectors the pre-filter compares (1,024 of the 10,000 bits).
pub const PREFILTER_WORDS: usize = 16;

impl ReasoningBank {
    /// An empty bank holding at most `capacity` patterns.
    pub fn new(capacity: usize) -> Self {
        ReasoningBank {
            patterns: Vec::new(),
            capacity: capacity.max(1),
            next_id: 1,
            evicted: 0,
        }
    }

    /// All patterns.
    pub fn patterns(&self) -> &[Pattern] {
        &self.patterns
    }

    /// Patterns evicted at capacity so far.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Cluster `trajectories` into at most `clusters` groups and fold them into the bank.
    /// Returns how many patterns were created.
    pub fn learn(
        &mut self,
        trajectories: &[Trajectory],
        clusters: usize,
        quality_threshold: f32,
        seed: u64,
    ) -> usize {
        let keys: Vec<&[f32]> = trajectories.iter().map(|t| t.key.as_slice()).collect();
        let (centroids, assign) = kmeans(&keys, clusters.clamp(1, 100), 100, seed);
        let mut created = 0;
        for (c, centroid) in centroids.iter().enumerate() {
            let members: Vec<&Trajectory> = trajectories
                .iter()
                .zip(&assign)
                .filter(|(_, &a)| a == c)
                .map(|(t, _)| t)
                .collect();
            if members.is_empty() {
                continue;
            }
            let mut arms = vec![ArmStats::default(); MAX_ARMS];
            for t in &members {
                if let Some(s) = arms.get_mut(usize::from(t.plan_arm())) {
                    if t.actual_ms.is_finite() && t.actual_ms > 0.0 {
                        s.push(f64::from(t.actual_ms));
                    }
                }
            }
            let mut centroid = centroid.clone();
            normalise(&mut centroid);
            let mut bundle = Bundler::new();
            members.iter().for_each(|t| bundle.add(&t.hdc));
            let hdc = bundle.majority(&members[0].hdc);
            let nearest = self
                .patterns
                .iter_mut()
                .map(|p| (cosine(&p.centroid, &centroid), p))
                .max_by(|a, b| a.0.total_cmp(&b.0));
            match nearest {
                Some((s, p)) if s > MERGE_COSINE => {
                    p.absorb(&centroid, members.len() as u64, &arms)
                }
                _ => {
                    if !members.iter().any(|t| t.quality >= quality_threshold) {
                        continue;
                    }
                    if self.patterns.len() >= self.capacity {
                        self.evict_least_confident();
                    }
                    self.patterns.push(Pattern {
                        id: self.next_id,
                        centroid,
                        hdc,
                        arms,
                        members: members.len() as u64,
                    });
                    self.next_id += 1;
                    created += 1;
                }
            }
        }
        created
    }

    /// Forget every pattern whose centroid is at least `min_cosine` similar to one of `keys`.
    /// Returns how many were forgotten.
    pub fn forget_near(&mut self, keys: &[&[f32]], min_cosine: f32) -> usize {
        let before = self.patterns.len();
        self.patterns
            .retain(|p| !keys.iter().any(|k| cosine(&p.centroid, k) >= min_cosine));
        before - self.patterns.len()
    }

    fn evict_least_confident(&mut self) {
        if let Some(i) = (0..self.patterns.len()).min_by(|&a, &b| {
            self.patterns[a]
                .confidence()
                .total_cmp(&self.patterns[b].confidence())
                .then(a.cmp(&b))
        }) {
            self.patterns.swap_remove(i);
            self.evicted += 1;
        }
    }

    /// The `k` patterns most similar to `key` by cosine, most similar first. With an HDC
    /// fingerprint and more than [`PREFILTER_KEEP`] patterns, cosine is computed only for the
    /// patterns nearest in (sampled, [`PREFILTER_WORDS`] words) Hamming distance: the closest
    /// [`PREFILTER_KEEP`] (or `4 k` if more), plus every pattern tied with the last of them, so
    /// equal shapes are never cut arbitrarily.
    pub fn search(&self, key: &[f32], hdc: Option<&Hypervector>, k: usize) -> Vec<(f32, &Pattern)> {
        let keep = PREFILTER_KEEP.max(4 * k);
        let candidates: Vec<&Pattern> = match hdc {
            Some(q) if self.patterns.len() > keep => {
                let d: Vec<u32> = self
                    .patterns
                    .iter()
                    .map(|p| p.hdc.hamming_prefix(q, PREFILTER_WORDS))
                    .collect();
                let mut sorted = d.clone();
                let (_, &mut cutoff, _) = sorted.select_nth_unstable(keep - 1);
                self.patterns
                    .iter()
                    .zip(&d)
                    .filter(|(_, &dist)| dist <= cutoff)
                    .map(|(p, _)| p)
                    .collect()
            }
            _ => self.patterns.iter().collect(),
        };
        let key_norm = dot(key, key);
        let mut scored: Vec<(f32, &Pattern)> = candidates
            .into_iter()
            .map(|p| {
                // Centroids are stored at unit length.
                let s = if key_norm > 0.0 {
                    dot(&p.centroid, key) / libm::sqrtf(key_norm)
                } else {
                    0.0
                };
                (s, p)
            })
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
        scored.truncate(k);
        scored
    }

    /// The pattern with this id.
    pub fn get(&self, id: u64) -> Option<&Pattern> {
        self.patterns.iter().find(|p| p.id == id)
    }

    /// Every pattern's centroid, in order (a snapshot stores them apart from the rest, see
    /// [`crate::learning::snapshot`]).
    pub(crate) fn for_each_vector(&mut self, f: &mut dyn FnMut(&'static str, &mut Vec<f32>)) {
        for p in &mut self.patterns {
            f("a pattern's centroid", &mut p.centroid);
        }
    }

    /// Check a restored bank: every pattern has a finite unit-scale centroid of
    /// [`crate::EMBED_DIM`] values and [`MAX_ARMS`] arm statistics with sane counts.
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |m: alloc::string::String| Err(crate::error::NeuralDagError::CorruptState(m));
        for p in &self.patterns {
            let norm = dot(&p.centroid, &p.centroid);
            if p.centroid.len() != crate::EMBED_DIM
                || !crate::learning::estimator::all_finite(&p.centroid)
                || !(norm == 0.0 || (norm - 1.0).abs() < 1e-3)
            {
                return bad(alloc::format!(
                    "pattern {}: centroid of {} values, want {} finite ones of unit length",
                    p.id,
                    p.centroid.len(),
                    crate::EMBED_DIM
                ));
            }
            if p.arms.len() != MAX_ARMS
                || p.arms
                    .iter()
                    .any(|a| !(a.mean.is_finite() && a.m2.is_finite() && a.m2 >= 0.0))
            {
                return bad(alloc::format!(
                    "pattern {}: {} arm statistics, want {MAX_ARMS} finite ones",
                    p.id,
                    p.arms.len()
                ));
            }
        }
        if self.patterns.len() > self.capacity {
            return bad(alloc::format!(
                "{} patterns in a bank of capacity {}",
                self.patterns.len(),
                self.capacity
            ));
        }
        Ok(())
    }

    /// Record one more observation in the pattern with this id (the optimizer's fast path).
    pub fn observe(&mut self, id: u64, arm: ArmId, ms: f64) {
        if let Some(p) = self.patterns.iter_mut().find(|p| p.id == id) {
            if let Some(s) = p.arms.get_mut(usize::from(arm)) {
                s.push(ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::AttentionKind;

    fn traj(key: Vec<f32>, arm: ArmId, ms: f32, quality: f32) -> Trajectory {
        Trajectory {
            fingerprint: 0,
            hdc: Hypervector::zero(),
            executed: key.clone(),
            input: key.clone(),
            key,
            attention: AttentionKind::Topological,
            pattern: None,
            arm,
            plan: u64::from(arm),
            predicted_ms: 1.0,
            actual_ms: ms,
            op_shares: Vec::new(),
            quality,
        }
    }

    /// Three well separated groups in 8 dimensions with small noise.
    fn groups(seed: u64) -> Vec<Trajectory> {
        let mut rng = SplitMix64::new(seed);
        let mut out = Vec::new();
        for g in 0..3 {
            for i in 0..40 {
                let mut key = vec![0.0f32; 8];
                key[g * 2] = 1.0;
                for x in key.iter_mut() {
                    *x += (rng.next_f32() - 0.5) * 0.1;
                }
                // Group g: arm g+1 is 10x faster than arm 0.
                let arm = (i % 2) as ArmId * (g as ArmId + 1);
                let ms = if arm == 0 { 100.0 } else { 10.0 } * (1.0 + 0.1 * rng.next_f32());
                out.push(traj(key, arm, ms, 1.0));
            }
        }
        out
    }

    #[test]
    fn kmeans_is_deterministic_and_recovers_groups() {
        let t = groups(1);
        let keys: Vec<&[f32]> = t.iter().map(|t| t.key.as_slice()).collect();
        let (c1, a1) = kmeans(&keys, 3, 100, 7);
        let (c2, a2) = kmeans(&keys, 3, 100, 7);
        assert_eq!((c1.len(), &a1), (3, &a2));
        assert_eq!(c1, c2);
        for g in 0..3 {
            let first = a1[g * 40];
            assert!(
                a1[g * 40..(g + 1) * 40].iter().all(|&a| a == first),
                "group {g} split"
            );
        }
        assert_ne!(a1[0], a1[40]);
        // More clusters than distinct points does not loop or panic.
        let same = [[1.0f32, 0.0].as_slice(); 5];
        let (c, a) = kmeans(&same, 4, 100, 1);
        assert_eq!((c.len(), a.len()), (1, 5));
    }

    #[test]
    fn patterns_learn_best_arms_merge_and_evict() {
        let mut bank = ReasoningBank::new(10);
        assert_eq!(bank.learn(&groups(1), 3, 0.3, 7), 3);
        for g in 0..3 {
            let mut key = vec![0.0f32; 8];
            key[g * 2] = 1.0;
            let (sim, p) = bank.search(&key, None, 1)[0];
            assert!(sim > 0.95);
            assert_eq!(p.best_arm(), Some(g as ArmId + 1));
            assert!(p.confidence() > 0.8, "confidence {}", p.confidence());
        }
        // The same workload again merges instead of duplicating.
        assert_eq!(bank.learn(&groups(2), 3, 0.3, 7), 0);
        assert_eq!(bank.patterns().len(), 3);
        assert!(bank.patterns().iter().all(|p| p.members == 80));
        // Low-quality clusters found nothing new.
        let mut poor = groups(3);
        for t in &mut poor {
            t.key.iter_mut().for_each(|x| *x = -*x);
            t.quality = 0.1;
        }
        assert_eq!(bank.learn(&poor, 3, 0.3, 7), 0);
        // At capacity the least confident pattern goes.
        let mut small = ReasoningBank::new(2);
        small.learn(&groups(1), 3, 0.3, 7);
        assert_eq!((small.patterns().len(), small.evicted()), (2, 1));
    }

    #[test]
    fn hamming_prefilter_finds_what_exhaustive_search_finds() {
        // 400 patterns in 100 shapes (4 per shape); plus 100 more sharing one shape, so the
        // pre-filter's cut falls inside a tie.
        let mut rng = SplitMix64::new(3);
        let mut bank = ReasoningBank::new(1000);
        let unit = |rng: &mut SplitMix64| {
            let mut v: Vec<f32> = (0..crate::EMBED_DIM).map(|_| rng.normal() as f32).collect();
            normalise(&mut v);
            v
        };
        for i in 0..500u64 {
            let shape = if i < 400 { i / 4 } else { 1000 };
            bank.patterns.push(Pattern {
                id: i + 1,
                centroid: unit(&mut rng),
                hdc: Hypervector::random(shape),
                arms: vec![ArmStats::default(); MAX_ARMS],
                members: 1,
            });
        }
        for target in [0usize, 17, 399, 450, 499] {
            let p = &bank.patterns[target];
            let mut q = p.centroid.clone();
            q.iter_mut().for_each(|x| *x += 0.02 * rng.normal() as f32);
            let fast = bank.search(&q, Some(&p.hdc), 5);
            let slow = bank.search(&q, None, 5);
            assert_eq!(fast[0].1.id, p.id, "pattern {target}");
            assert_eq!(fast[0].1.id, slow[0].1.id);
        }
        bank.check().unwrap();
    }

    #[test]
    fn welford_merge_matches_one_pass() {
        let xs = [1.0, 5.0, 2.0, 8.0, 3.0, 13.0];
        let mut all = ArmStats::default();
        xs.iter().for_each(|&x| all.push(x));
        let (mut a, mut b) = (ArmStats::default(), ArmStats::default());
        xs[..2].iter().for_each(|&x| a.push(x));
        xs[2..].iter().for_each(|&x| b.push(x));
        a.merge(&b);
        assert_eq!(a.count, all.count);
        assert!((a.mean - all.mean).abs() < 1e-12 && (a.m2 - all.m2).abs() < 1e-9);
    }
}
