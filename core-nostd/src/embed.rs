//! Plan embedding: a fixed-length (D = 256), L2-normalised vector of a plan seen through one
//! attention map. Layout:
//!
//! | range    | content |
//! |----------|---------|
//! | 0..32    | attention-weighted mean of node features |
//! | 32..64   | attention-weighted standard deviation of node features |
//! | 64..96   | maximum of each node feature over the plan |
//! | 96..224  | tanh of a fixed seeded random-sign projection (Achlioptas 2003) of [mean; std] |
//! | 224..240 | operator-bucket histogram (share of nodes) |
//! | 240..256 | structure: size, edges, depth, fan-in, sharing, leaves, joins, attention entropy and peak, critical-path share, measured, root cost and rows, parallel share |
//!
//! Same plan and attention, same embedding, on every platform: nothing random at run time.

use alloc::format;
use alloc::vec::Vec;

use crate::attention::{critical_path, AttentionMap};
use crate::dag::PlanDag;
use crate::error::{NeuralDagError, Result};
use crate::features::{node_features, FeatureVector, FEATURE_DIM, OP_BUCKETS};
use crate::rng::SplitMix64;

/// Width of a plan embedding.
pub const EMBED_DIM: usize = 256;

/// A plan embedding.
pub type PlanEmbedding = [f32; EMBED_DIM];

const PROJ_OUT: usize = 128;
const PROJ_SEED: u64 = 0x000E_3BED;

/// What an embedding of a plan takes from the plan alone, whatever the attention: its node
/// features, their maxima, the operator histogram and the structural statistics. Computed once
/// for a plan embedded under several attention maps ([`embed_with`]).
#[derive(Debug, Clone)]
pub struct PlanStatics {
    feats: Vec<FeatureVector>,
    max: [f32; FEATURE_DIM],
    hist: [f32; OP_BUCKETS],
    /// The statistics block, its two attention-dependent entries (7, 8) left at zero.
    stats: [f32; STATS],
    /// ln(n), the entropy's normaliser (0 for a single node).
    ln_n: f32,
}

const STATS: usize = EMBED_DIM - 3 * FEATURE_DIM - PROJ_OUT - OP_BUCKETS;

impl PlanStatics {
    /// Everything of `dag` an embedding needs besides the attention map.
    pub fn of(dag: &PlanDag) -> Self {
        let n = dag.len();
        let feats = node_features(dag);
        let mut max = [f32::NEG_INFINITY; FEATURE_DIM];
        for x in &feats {
            for k in 0..FEATURE_DIM {
                max[k] = max[k].max(x[k]);
            }
        }
        let nf = n as f32;
        let mut hist = [0.0f32; OP_BUCKETS];
        for v in 0..n {
            hist[dag.node(v).op.bucket()] += 1.0 / nf;
        }
        let work_total: f64 = (0..n).map(|v| dag.self_work(v)).sum();
        let cp = critical_path(dag);
        let root_cost: f64 = dag
            .roots()
            .iter()
            .map(|&r| dag.node(r as usize).total_cost)
            .sum();
        let root_rows: f64 = dag
            .roots()
            .iter()
            .map(|&r| dag.node(r as usize).est_rows)
            .sum();
        let ln1p = |x: f64| libm::log1p(x.max(0.0)) as f32;
        let mut stats = [0.0f32; STATS];
        stats[0] = ln1p(n as f64) / 10.0;
        stats[1] = ln1p(dag.edges().len() as f64) / 10.0;
        stats[2] = (0..n).map(|v| dag.depth(v)).max().unwrap_or(0) as f32 / 16.0;
        stats[3] = dag.edges().len() as f32 / nf / 2.0;
        stats[4] = (0..n).filter(|&v| dag.parents(v).len() > 1).count() as f32 / nf;
        stats[5] = (0..n).filter(|&v| dag.is_leaf(v)).count() as f32 / nf;
        stats[6] = (0..n).filter(|&v| dag.node(v).op.is_join()).count() as f32 / nf;
        stats[9] = if work_total > 0.0 {
            (cp.length / work_total).min(1.0) as f32
        } else {
            0.0
        };
        stats[10] = f32::from(u8::from(dag.has_actuals()));
        stats[11] = ln1p(root_cost) / 20.0;
        stats[12] = ln1p(root_rows) / 20.0;
        stats[13] = (0..n).filter(|&v| dag.node(v).parallel_aware).count() as f32 / nf;
        PlanStatics {
            feats,
            max,
            hist,
            stats,
            ln_n: if n > 1 { libm::logf(nf) } else { 0.0 },
        }
    }
}

/// Embed `dag` pooled by `attention` (which must have one weight per node).
pub fn embed(dag: &PlanDag, attention: &AttentionMap) -> Result<PlanEmbedding> {
    embed_with(&PlanStatics::of(dag), attention)
}

/// [`embed`] of the plan whose [`PlanStatics`] these are: the same embedding to the bit.
pub fn embed_with(plan: &PlanStatics, attention: &AttentionMap) -> Result<PlanEmbedding> {
    let n = plan.feats.len();
    if attention.alpha.len() != n {
        return Err(NeuralDagError::AttentionComputationFailed(format!(
            "embedding: attention has {} weights for a plan of {n} nodes",
            attention.alpha.len()
        )));
    }
    let feats = &plan.feats;
    let alpha = &attention.alpha;
    let mut out = [0.0f32; EMBED_DIM];
    let (mean, rest) = out.split_at_mut(FEATURE_DIM);
    let (std, rest) = rest.split_at_mut(FEATURE_DIM);
    let (max, rest) = rest.split_at_mut(FEATURE_DIM);
    let (proj, rest) = rest.split_at_mut(PROJ_OUT);
    let (hist, stats) = rest.split_at_mut(OP_BUCKETS);

    for (x, &a) in feats.iter().zip(alpha) {
        for k in 0..FEATURE_DIM {
            mean[k] += a * x[k];
        }
    }
    max.copy_from_slice(&plan.max);
    for (x, &a) in feats.iter().zip(alpha) {
        for k in 0..FEATURE_DIM {
            let d = x[k] - mean[k];
            std[k] += a * d * d;
        }
    }
    for s in std.iter_mut() {
        *s = libm::sqrtf(s.max(0.0));
    }
    let mut inputs = [0.0f32; 2 * FEATURE_DIM];
    inputs[..FEATURE_DIM].copy_from_slice(mean);
    inputs[FEATURE_DIM..].copy_from_slice(std);
    let proj: &mut [f32; PROJ_OUT] = proj.try_into().expect("PROJ_OUT wide");
    sign_projection(&inputs, proj);

    hist.copy_from_slice(&plan.hist);
    let entropy: f32 = alpha
        .iter()
        .filter(|&&a| a > 0.0)
        .map(|&a| -a * libm::logf(a))
        .sum();
    stats.copy_from_slice(&plan.stats);
    stats[7] = if n > 1 { entropy / plan.ln_n } else { 0.0 };
    stats[8] = alpha.iter().copied().fold(0.0, f32::max);

    let norm = libm::sqrtf(out.iter().map(|x| x * x).sum());
    if !(norm.is_finite() && norm > 0.0) {
        return Err(NeuralDagError::AttentionComputationFailed(
            "embedding: the vector is not finite".into(),
        ));
    }
    for x in &mut out {
        *x /= norm;
    }
    Ok(out)
}

/// tanh of a fixed seeded random-sign projection of `inputs` ([mean; std]) into `out`: one u64
/// of signs per output, bit k set = +x_k. Each output's sum runs over k in order from 0.0, as
/// `z += if bit { x } else { -x }` would, so the result is that formula's to the bit; but the
/// sign is applied by flipping x_k's sign bit instead of a branch on a random bit (which a
/// fresh backend mispredicts half the time), and the outputs are summed side by side (k
/// outside, outputs inside: no chain of 64 dependent additions per output). This loop was the
/// largest item of a session's first decision.
fn sign_projection(inputs: &[f32; 2 * FEATURE_DIM], out: &mut [f32; PROJ_OUT]) {
    let mut rng = SplitMix64::new(PROJ_SEED);
    let flips: [u64; PROJ_OUT] = core::array::from_fn(|_| !rng.next_u64());
    let mut z = [0.0f32; PROJ_OUT];
    for (k, x) in inputs.iter().map(|x| x.to_bits()).enumerate() {
        for (zp, &f) in z.iter_mut().zip(&flips) {
            *zp += f32::from_bits(x ^ (((f >> k) as u32 & 1) << 31));
        }
    }
    let scale = 1.0 / libm::sqrtf((2 * FEATURE_DIM) as f32);
    for (p, zp) in out.iter_mut().zip(z) {
        *p = libm::tanhf(2.0 * zp * scale);
    }
}

/// Cosine similarity of two embeddings (both L2-normalised: the dot product).
pub fn cosine(a: &PlanEmbedding, b: &PlanEmbedding) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{mechanism, AttentionConfig, AttentionContext, AttentionKind};
    use crate::synth::{random_permutation, random_plan, SynthOptions};

    #[test]
    fn unit_length_deterministic_renumbering_invariant_and_discriminating() {
        let cfg = AttentionConfig::default();
        let ctx = AttentionContext::default();
        let d1 = random_plan(4, 80, SynthOptions::default());
        let d2 = random_plan(5, 80, SynthOptions::default());
        for kind in AttentionKind::ALL {
            let m = mechanism(kind, &cfg).unwrap();
            let e1 = embed(&d1, &m.attend(&d1, &ctx).unwrap()).unwrap();
            assert!((cosine(&e1, &e1) - 1.0).abs() < 1e-5);
            assert_eq!(e1, embed(&d1, &m.attend(&d1, &ctx).unwrap()).unwrap());
            let p = d1.permuted(&random_permutation(9, 80)).unwrap();
            let ep = embed(&p, &m.attend(&p, &ctx).unwrap()).unwrap();
            assert!(cosine(&e1, &ep) > 0.99999, "{kind:?}");
            let e2 = embed(&d2, &m.attend(&d2, &ctx).unwrap()).unwrap();
            assert!(cosine(&e1, &e2) < 0.999, "{kind:?}: {}", cosine(&e1, &e2));
        }
        let wrong = AttentionMap {
            kind: AttentionKind::Topological,
            alpha: alloc::vec![1.0],
            pairwise: None,
        };
        assert!(embed(&d1, &wrong).is_err());
    }

    #[test]
    fn the_sign_projection_is_the_branching_formula_to_the_bit() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..50 {
            let mut inputs = [0.0f32; 2 * FEATURE_DIM];
            for x in &mut inputs {
                *x = (rng.next_f64() * 8.0 - 4.0) as f32;
            }
            inputs[3] = 0.0;
            inputs[7] = -0.0;
            let mut got = [0.0f32; PROJ_OUT];
            sign_projection(&inputs, &mut got);
            let mut signs = SplitMix64::new(PROJ_SEED);
            let scale = 1.0 / libm::sqrtf((2 * FEATURE_DIM) as f32);
            for g in got {
                let s = signs.next_u64();
                let mut z = 0.0f32;
                for (k, &x) in inputs.iter().enumerate() {
                    z += if s >> k & 1 == 1 { x } else { -x };
                }
                assert_eq!(g.to_bits(), libm::tanhf(2.0 * z * scale).to_bits());
            }
        }
    }
}
