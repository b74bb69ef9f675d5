//! The cost estimator: predicts ln(latency ms) of running a plan under an arm from the plan's
//! embedding.
//!
//! One hidden layer of width H = 64 over the D = 256 embedding with weights
//! `W0 + B_base A_base + B_micro A_micro` (LoRA, Hu et al. 2021): `W0` is a fixed seeded base,
//! BaseLoRA (rank 8) is trained in batches by [`CostEstimator::train_batch`] under EWC++, and
//! MicroLoRA (rank 1-2) takes one SGD step per observation in [`CostEstimator::observe`].
//! Each arm has its own linear head. The heads are shared with BaseLoRA training (and protected
//! by EWC++), so an observation does not move them at once: their gradients are accumulated and
//! flushed as one step every [`FLUSH_EVERY`] observations (and at each background cycle), which
//! keeps one noisy query from swinging every prediction. Both matrices of each adapter are trained: `B` starts at
//! zero (so an untrained adapter changes nothing) and `A` at small random values, so the first
//! step moves `B` and the next ones move both.
//!
//! EWC++ (Kirkpatrick et al. 2017; online form of Chaudhry et al. 2018) keeps a diagonal Fisher
//! estimate `F <- decay F + (1 - decay) g^2` over the BaseLoRA and head parameters and adds
//! `lambda/2 sum F (theta - theta*)^2` to the batch loss. A task boundary, a batch whose mean
//! loss before training is more than three times the loss the model reached on the previous batch, anchors `theta*` at
//! the current parameters and raises lambda by half, up to `ewc_max_lambda`.

use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{dot, NeuralDagConfig};
use crate::embed::EMBED_DIM;
use crate::rng::SplitMix64;

/// Hidden width.
pub const HIDDEN: usize = 64;
/// Observations between flushes of the accumulated head gradients.
pub const FLUSH_EVERY: u32 = 100;
const D: usize = EMBED_DIM;

/// A low-rank adapter `B A` with `A: r x D`, `B: H x r`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraAdapter {
    rank: usize,
    a: Vec<f32>,
    b: Vec<f32>,
}

impl LoraAdapter {
    fn new(rank: usize, rng: &mut SplitMix64) -> Self {
        let scale = 1.0 / libm::sqrt(D as f64);
        LoraAdapter {
            rank,
            a: (0..rank * D)
                .map(|_| (rng.normal() * scale) as f32)
                .collect(),
            b: vec![0.0; HIDDEN * rank],
        }
    }

    /// `A e` (length r).
    fn project(&self, e: &[f32]) -> Vec<f32> {
        (0..self.rank)
            .map(|r| dot(&self.a[r * D..(r + 1) * D], e))
            .collect()
    }

    /// Adds `B (A e)` to `z`.
    fn add_into(&self, ae: &[f32], z: &mut [f32]) {
        for (h, zh) in z.iter_mut().enumerate() {
            *zh += (0..self.rank)
                .map(|r| self.b[h * self.rank + r] * ae[r])
                .sum::<f32>();
        }
    }

    /// Gradients of `B` and `A` given `dz` (dL/dz), the input and `A e`.
    fn grads(&self, dz: &[f32], e: &[f32], ae: &[f32], gb: &mut [f32], ga: &mut [f32]) {
        for h in 0..HIDDEN {
            for r in 0..self.rank {
                gb[h * self.rank + r] += dz[h] * ae[r];
            }
        }
        for r in 0..self.rank {
            let bt_dz: f32 = (0..HIDDEN).map(|h| self.b[h * self.rank + r] * dz[h]).sum();
            for (g, x) in ga[r * D..(r + 1) * D].iter_mut().zip(e) {
                *g += bt_dz * x;
            }
        }
    }

    /// Frobenius norm of `B`, to check that the adapter moved.
    pub fn b_norm(&self) -> f32 {
        libm::sqrtf(self.b.iter().map(|x| x * x).sum())
    }

    /// Frobenius norm of `A`.
    pub fn a_norm(&self) -> f32 {
        libm::sqrtf(self.a.iter().map(|x| x * x).sum())
    }
}

/// Forward pass values reused by the backward pass.
struct Forward {
    z: Vec<f32>,
    h: Vec<f32>,
    ae_base: Vec<f32>,
    ae_micro: Vec<f32>,
}

/// The estimator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CostEstimator {
    w0: Vec<f32>,
    b0: Vec<f32>,
    base: LoraAdapter,
    micro: LoraAdapter,
    heads: Vec<f32>,
    head_bias: Vec<f32>,
    arms: usize,
    micro_lr: f32,
    base_lr: f32,
    // EWC++ over [base.a, base.b, heads, head_bias].
    fisher: Vec<f32>,
    /// Parameters at the last task boundary; empty before the first.
    anchor: Vec<f32>,
    lambda: f32,
    max_lambda: f32,
    fisher_decay: f32,
    /// Mean loss of the last training pass.
    loss_mean: f32,
    batches: u64,
    /// Head gradients accumulated by observations since the last flush.
    acc_heads: Vec<f32>,
    acc_bias: Vec<f32>,
    acc_count: u32,
    /// Heads and biases as the last background training left them (empty before it).
    consolidated: Vec<f32>,
    /// Task boundaries detected.
    pub boundaries: u64,
}

impl CostEstimator {
    /// No estimator: the place of the cost model in an optimizer restored without it
    /// ([`Optimizer::restore_lean`](crate::learning::Optimizer::restore_lean)), which refuses
    /// every call that would read it. No weights, no arms.
    pub(crate) fn unloaded() -> Self {
        let none = || LoraAdapter {
            rank: 0,
            a: Vec::new(),
            b: Vec::new(),
        };
        CostEstimator {
            w0: Vec::new(),
            b0: Vec::new(),
            base: none(),
            micro: none(),
            heads: Vec::new(),
            head_bias: Vec::new(),
            arms: 0,
            micro_lr: 0.0,
            base_lr: 0.0,
            fisher: Vec::new(),
            anchor: Vec::new(),
            lambda: 0.0,
            max_lambda: 0.0,
            fisher_decay: 0.0,
            loss_mean: 0.0,
            batches: 0,
            acc_heads: Vec::new(),
            acc_bias: Vec::new(),
            acc_count: 0,
            consolidated: Vec::new(),
            boundaries: 0,
        }
    }

    /// Set the learning rates and the EWC++ penalty strength (run-time tunables; the learned
    /// weights are kept). The caller validates the values.
    pub fn retune(&mut self, micro_lr: f32, base_lr: f32, lambda: f32) {
        self.micro_lr = micro_lr;
        self.base_lr = base_lr;
        self.lambda = lambda.min(self.max_lambda);
    }

    /// A fresh estimator for `arms` arms.
    pub fn new(cfg: &NeuralDagConfig, arms: usize) -> Self {
        let mut rng = SplitMix64::new(cfg.seed ^ 0xE57);
        let scale = libm::sqrt(2.0 / D as f64);
        let w0 = (0..HIDDEN * D)
            .map(|_| (rng.normal() * scale) as f32)
            .collect();
        let base = LoraAdapter::new(cfg.base_lora_rank, &mut rng);
        let micro = LoraAdapter::new(cfg.micro_lora_rank, &mut rng);
        let heads = (0..arms * HIDDEN)
            .map(|_| (rng.normal() * 0.05) as f32)
            .collect();
        let mut est = CostEstimator {
            w0,
            b0: vec![0.1; HIDDEN],
            base,
            micro,
            heads,
            head_bias: vec![0.0; arms],
            arms,
            micro_lr: cfg.micro_lora_lr,
            base_lr: cfg.base_lora_lr,
            fisher: Vec::new(),
            anchor: Vec::new(),
            lambda: cfg.ewc_lambda,
            max_lambda: cfg.ewc_max_lambda,
            fisher_decay: cfg.ewc_fisher_decay,
            loss_mean: 0.0,
            batches: 0,
            acc_heads: vec![0.0; arms * HIDDEN],
            acc_bias: vec![0.0; arms],
            acc_count: 0,
            consolidated: Vec::new(),
            boundaries: 0,
        };
        est.fisher = vec![0.0; est.ewc_params().len()];
        est
    }

    fn forward(&self, e: &[f32]) -> Forward {
        let mut z = self.b0.clone();
        for (h, zh) in z.iter_mut().enumerate() {
            *zh += dot(&self.w0[h * D..(h + 1) * D], e);
        }
        let ae_base = self.base.project(e);
        self.base.add_into(&ae_base, &mut z);
        let ae_micro = self.micro.project(e);
        self.micro.add_into(&ae_micro, &mut z);
        let h = z.iter().map(|&v| v.max(0.0)).collect();
        Forward {
            z,
            h,
            ae_base,
            ae_micro,
        }
    }

    fn head(&self, arm: usize, h: &[f32]) -> f32 {
        dot(&self.heads[arm * HIDDEN..(arm + 1) * HIDDEN], h) + self.head_bias[arm]
    }

    /// Predicted latency (ms) of `arm` for a plan with embedding `e`; None for an unknown arm
    /// or an embedding of the wrong width.
    pub fn predict_ms(&self, e: &[f32], arm: usize) -> Option<f32> {
        if arm >= self.arms || e.len() != D {
            return None;
        }
        let f = self.forward(e);
        Some(libm::expf(self.head(arm, &f.h).clamp(-20.0, 20.0)))
    }

    /// Predicted latency of every arm.
    pub fn predict_all_ms(&self, e: &[f32]) -> Vec<f32> {
        if e.len() != D {
            return Vec::new();
        }
        let f = self.forward(e);
        (0..self.arms)
            .map(|a| libm::expf(self.head(a, &f.h).clamp(-20.0, 20.0)))
            .collect()
    }

    /// Squared-error gradient of one sample on heads and either adapter.
    /// With `target = None` it is the gradient of the output itself (dy = 1), whose square is
    /// the Fisher information of a Gaussian likelihood.
    fn sample_grad(
        &self,
        e: &[f32],
        arm: usize,
        target: Option<f32>,
        micro: bool,
        g: &mut Grads,
    ) -> f32 {
        let f = self.forward(e);
        let y = self.head(arm, &f.h);
        let dy = target.map_or(1.0, |t| (y - t).clamp(-5.0, 5.0));
        for (k, hk) in f.h.iter().enumerate() {
            g.heads[arm * HIDDEN + k] += dy * hk;
        }
        g.head_bias[arm] += dy;
        let dz: Vec<f32> = (0..HIDDEN)
            .map(|k| {
                if f.z[k] > 0.0 {
                    dy * self.heads[arm * HIDDEN + k]
                } else {
                    0.0
                }
            })
            .collect();
        if micro {
            self.micro.grads(&dz, e, &f.ae_micro, &mut g.b, &mut g.a);
        } else {
            self.base.grads(&dz, e, &f.ae_base, &mut g.b, &mut g.a);
        }
        target.map_or(0.0, |t| 0.5 * (y - t) * (y - t))
    }

    /// One MicroLoRA SGD step on one observation; the head gradient is accumulated and flushed
    /// every [`FLUSH_EVERY`] observations. Returns the loss before the step.
    pub fn observe(&mut self, e: &[f32], arm: usize, actual_ms: f32) -> Option<f32> {
        if arm >= self.arms || e.len() != D || !(actual_ms.is_finite() && actual_ms > 0.0) {
            return None;
        }
        let mut g = Grads::new(self.micro.rank, self.arms);
        let loss = self.sample_grad(e, arm, Some(libm::logf(actual_ms)), true, &mut g);
        let lr = self.micro_lr;
        apply(&mut self.micro.a, &g.a, lr);
        apply(&mut self.micro.b, &g.b, lr);
        for (acc, x) in self.acc_heads.iter_mut().zip(&g.heads) {
            *acc += x.clamp(-10.0, 10.0);
        }
        for (acc, x) in self.acc_bias.iter_mut().zip(&g.head_bias) {
            *acc += x.clamp(-10.0, 10.0);
        }
        self.acc_count += 1;
        if self.acc_count >= FLUSH_EVERY {
            self.flush();
        }
        Some(loss)
    }

    /// Apply the accumulated head gradients as one step (their sum at the MicroLoRA rate, as
    /// if each observation had stepped with a gradient frozen at the last flush) and clear them.
    /// The heads are consolidated parameters, so the step pays the EWC++ penalty (as a proximal
    /// step for the same number of observations) against the heads the last background
    /// training left: heads important to earlier queries barely move, the others follow the
    /// new queries. Without it a few hundred queries of a new workload undo the old one's heads
    /// before any background cycle (measured: held-out error of the old workload 0.47 -> 0.75).
    pub fn flush(&mut self) {
        if self.acc_count == 0 {
            return;
        }
        let lr = self.micro_lr;
        for (x, acc) in self.heads.iter_mut().zip(self.acc_heads.iter_mut()) {
            *x -= lr * *acc;
            *acc = 0.0;
        }
        for (x, acc) in self.head_bias.iter_mut().zip(self.acc_bias.iter_mut()) {
            *x -= lr * *acc;
            *acc = 0.0;
        }
        let steps = self.acc_count as f32;
        self.acc_count = 0;
        if self.consolidated.len() == self.heads.len() + self.head_bias.len() {
            let offset = self.base.a.len() + self.base.b.len();
            let rate = lr * steps * self.lambda;
            for (i, x) in self
                .heads
                .iter_mut()
                .chain(self.head_bias.iter_mut())
                .enumerate()
            {
                let k = rate * self.fisher[offset + i];
                *x = (*x + k * self.consolidated[i]) / (1.0 + k);
            }
        }
    }

    /// Check that a restored estimator is whole: every matrix has the size its ranks and arm
    /// count imply, every weight is finite.
    pub fn check(&self) -> crate::error::Result<()> {
        let bad = |what: &str, got: usize, want: usize| {
            Err(crate::error::NeuralDagError::CorruptState(alloc::format!(
                "cost model: {what} has {got} values, want {want}"
            )))
        };
        let n_ewc = self.base.a.len() + self.base.b.len() + self.heads.len() + self.head_bias.len();
        let sizes = [
            ("W0", self.w0.len(), HIDDEN * D),
            ("hidden bias", self.b0.len(), HIDDEN),
            ("BaseLoRA A", self.base.a.len(), self.base.rank * D),
            ("BaseLoRA B", self.base.b.len(), HIDDEN * self.base.rank),
            ("MicroLoRA A", self.micro.a.len(), self.micro.rank * D),
            ("MicroLoRA B", self.micro.b.len(), HIDDEN * self.micro.rank),
            ("heads", self.heads.len(), self.arms * HIDDEN),
            ("head biases", self.head_bias.len(), self.arms),
            (
                "accumulated heads",
                self.acc_heads.len(),
                self.arms * HIDDEN,
            ),
            ("accumulated biases", self.acc_bias.len(), self.arms),
            ("Fisher", self.fisher.len(), n_ewc),
        ];
        if !(self.consolidated.is_empty()
            || self.consolidated.len() == self.heads.len() + self.head_bias.len())
        {
            return bad(
                "consolidated heads",
                self.consolidated.len(),
                self.heads.len() + self.head_bias.len(),
            );
        }
        for (what, got, want) in sizes {
            if got != want {
                return bad(what, got, want);
            }
        }
        if !(self.anchor.is_empty() || self.anchor.len() == n_ewc) {
            return bad("EWC anchor", self.anchor.len(), n_ewc);
        }

        let finite = [
            &self.w0,
            &self.b0,
            &self.base.a,
            &self.base.b,
            &self.micro.a,
            &self.micro.b,
            &self.heads,
            &self.head_bias,
            &self.fisher,
            &self.anchor,
        ]
        .iter()
        .all(|v| all_finite(v));
        if !finite || !self.lambda.is_finite() {
            return Err(crate::error::NeuralDagError::CorruptState(
                "cost model holds a non-finite weight".into(),
            ));
        }
        Ok(())
    }

    /// Every weight vector, named, in a fixed order (a snapshot stores them apart from the
    /// rest, see [`crate::learning::snapshot`]).
    pub(crate) fn for_each_vector(&mut self, f: &mut dyn FnMut(&'static str, &mut Vec<f32>)) {
        f("W0", &mut self.w0);
        f("hidden bias", &mut self.b0);
        f("BaseLoRA A", &mut self.base.a);
        f("BaseLoRA B", &mut self.base.b);
        f("MicroLoRA A", &mut self.micro.a);
        f("MicroLoRA B", &mut self.micro.b);
        f("heads", &mut self.heads);
        f("head biases", &mut self.head_bias);
        f("Fisher", &mut self.fisher);
        f("EWC anchor", &mut self.anchor);
        f("accumulated heads", &mut self.acc_heads);
        f("accumulated biases", &mut self.acc_bias);
        f("consolidated heads", &mut self.consolidated);
    }

    /// Observations whose head gradients wait for the next flush.
    pub fn pending(&self) -> u32 {
        self.acc_count
    }

    /// Background training passes so far (0: only MicroLoRA has learned).
    pub fn trained_batches(&self) -> u64 {
        self.batches
    }

    /// Arms with a head.
    pub fn arms(&self) -> usize {
        self.arms
    }

    /// Give `extra` more arms a head each, after the existing ones: a copy of the default arm's
    /// head and bias, so that a new arm is predicted as fast as the default plan until its own
    /// runs say otherwise. Nothing the existing heads learned changes; the new heads' EWC++
    /// importance starts at zero (nothing consolidated them yet) and their anchor at the copy.
    pub fn append_arms(&mut self, extra: usize) {
        if extra == 0 || self.arms == 0 {
            return;
        }
        let (old_heads, lora) = (self.heads.len(), self.base.a.len() + self.base.b.len());
        let heads = self.heads[..HIDDEN].repeat(extra);
        let biases = vec![self.head_bias[0]; extra];
        let zeros = |n: usize| vec![0.0f32; n];
        // The EWC++ vectors: [base.a, base.b, heads, head_bias]; `consolidated`: [heads,
        // head_bias]. The new heads go after the old heads, the new biases after the old biases.
        let grow = |v: &mut Vec<f32>, at: usize, h: &[f32], b: &[f32]| {
            if !v.is_empty() {
                v.splice(at..at, h.iter().copied());
                v.extend_from_slice(b);
            }
        };
        grow(
            &mut self.fisher,
            lora + old_heads,
            &zeros(extra * HIDDEN),
            &zeros(extra),
        );
        grow(&mut self.anchor, lora + old_heads, &heads, &biases);
        grow(&mut self.consolidated, old_heads, &heads, &biases);
        self.heads.extend_from_slice(&heads);
        self.head_bias.extend_from_slice(&biases);
        self.acc_heads.extend(zeros(extra * HIDDEN));
        self.acc_bias.extend(zeros(extra));
        self.arms += extra;
    }

    fn ewc_params(&self) -> Vec<f32> {
        let mut p = Vec::with_capacity(
            self.base.a.len() + self.base.b.len() + self.heads.len() + self.head_bias.len(),
        );
        p.extend_from_slice(&self.base.a);
        p.extend_from_slice(&self.base.b);
        p.extend_from_slice(&self.heads);
        p.extend_from_slice(&self.head_bias);
        p
    }

    /// Train BaseLoRA and the heads on `samples` `(embedding, arm, actual ms)` for `epochs`
    /// passes of mini-batches of 32, with the EWC++ penalty when `ewc` is set. Returns the
    /// mean loss of the first pass.
    pub fn train_batch(
        &mut self,
        samples: &[(&[f32], usize, f32)],
        epochs: usize,
        ewc: bool,
    ) -> f32 {
        self.train(samples, &[], epochs, ewc)
    }

    /// [`CostEstimator::train_batch`] on `fresh` samples mixed with `rehearsal` (earlier samples
    /// kept for rehearsal), shuffled (seeded) every epoch. The task-boundary test looks at the
    /// fresh samples only.
    pub fn train(
        &mut self,
        fresh: &[(&[f32], usize, f32)],
        rehearsal: &[(&[f32], usize, f32)],
        epochs: usize,
        ewc: bool,
    ) -> f32 {
        let ok = |s: &&(&[f32], usize, f32)| {
            s.0.len() == D && s.1 < self.arms && s.2.is_finite() && s.2 > 0.0
        };
        let new: Vec<&(&[f32], usize, f32)> = fresh.iter().filter(ok).collect();
        if new.is_empty() {
            return 0.0;
        }
        // Task-boundary test on the loss of the incoming data before training on it.
        let incoming: f32 = new
            .iter()
            .map(|s| {
                let f = self.forward(s.0);
                let d = self.head(s.1, &f.h) - libm::logf(s.2);
                0.5 * d * d
            })
            .sum::<f32>()
            / new.len() as f32;
        if ewc && self.batches >= 1 && incoming > 3.0 * self.loss_mean + 0.05 {
            self.anchor = self.ewc_params();
            self.lambda = (self.lambda * 1.5).min(self.max_lambda);
            self.boundaries += 1;
        }
        let mut valid = new;
        valid.extend(rehearsal.iter().filter(ok));
        let mut rng = SplitMix64::new(0x5EED ^ self.batches);
        let (mut first_pass, mut last_pass) = (0.0, 0.0);
        // Learning rate scaled for mini-batch means (the per-sample rate is base_lr).
        let lr = self.base_lr * 32.0;
        for epoch in 0..epochs {
            // Fisher-Yates, so mini-batches mix fresh and rehearsed samples.
            for i in (1..valid.len()).rev() {
                valid.swap(i, rng.below(i + 1));
            }
            let mut total = 0.0;
            for chunk in valid.chunks(32) {
                let mut g = Grads::new(self.base.rank, self.arms);
                for s in chunk {
                    total += self.sample_grad(s.0, s.1, Some(libm::logf(s.2)), false, &mut g);
                }
                let inv = 1.0 / chunk.len() as f32;
                let mut flat = Vec::with_capacity(self.fisher.len());
                flat.extend(g.a.iter().map(|x| x * inv));
                flat.extend(g.b.iter().map(|x| x * inv));
                flat.extend(g.heads.iter().map(|x| x * inv));
                flat.extend(g.head_bias.iter().map(|x| x * inv));
                // Fisher: mean squared output gradient per sample (not the loss gradient, which
                // vanishes once a task is learned and would leave it unprotected).
                if ewc {
                    let mut sq = vec![0.0f32; self.fisher.len()];
                    for s in chunk {
                        let mut og = Grads::new(self.base.rank, self.arms);
                        self.sample_grad(s.0, s.1, None, false, &mut og);
                        for (q, x) in sq.iter_mut().zip(
                            og.a.iter()
                                .chain(&og.b)
                                .chain(&og.heads)
                                .chain(&og.head_bias),
                        ) {
                            *q += x * x * inv;
                        }
                    }
                    for (f, q) in self.fisher.iter_mut().zip(&sq) {
                        *f = self.fisher_decay * *f + (1.0 - self.fisher_decay) * q;
                    }
                }
                let (la, rest) = flat.split_at(self.base.a.len());
                let (lb, rest) = rest.split_at(self.base.b.len());
                let (lh, lbias) = rest.split_at(self.heads.len());
                apply(&mut self.base.a, la, lr);
                apply(&mut self.base.b, lb, lr);
                apply(&mut self.heads, lh, lr);
                apply(&mut self.head_bias, lbias, lr);
                // No anchor before the first task boundary: nothing to protect yet.
                if ewc && !self.anchor.is_empty() {
                    self.ewc_proximal_step(lr);
                }
            }
            if epoch == 0 {
                first_pass = total / valid.len() as f32;
            }
            last_pass = total / valid.len() as f32;
        }
        // What the model achieves on the data it was trained on: the reference of the next
        // boundary test.
        self.loss_mean = last_pass;
        self.batches += 1;
        if ewc {
            self.consolidated = self.heads.iter().chain(&self.head_bias).copied().collect();
        }
        first_pass
    }

    /// The EWC++ penalty as a proximal (implicit) step: `theta <- (theta + lr lambda F theta*) /
    /// (1 + lr lambda F)`. With lambda in the thousands an explicit gradient step on the penalty
    /// overshoots and oscillates (lr x lambda x F > 2); the implicit step is stable for any
    /// lambda and has the same fixed points.
    fn ewc_proximal_step(&mut self, lr: f32) {
        let (lambda, fisher, anchor) = (self.lambda, &self.fisher, &self.anchor);
        let mut i = 0;
        for p in [
            &mut self.base.a,
            &mut self.base.b,
            &mut self.heads,
            &mut self.head_bias,
        ] {
            for x in p.iter_mut() {
                let k = lr * lambda * fisher[i];
                *x = (*x + k * anchor[i]) / (1.0 + k);
                i += 1;
            }
        }
    }

    /// Fold MicroLoRA into the frozen base (`W0 += B_micro A_micro`) and restart it at zero `B`.
    pub fn merge_micro(&mut self) {
        let r = self.micro.rank;
        for h in 0..HIDDEN {
            for (c, w) in self.w0[h * D..(h + 1) * D].iter_mut().enumerate() {
                *w += (0..r)
                    .map(|k| self.micro.b[h * r + k] * self.micro.a[k * D + c])
                    .sum::<f32>();
            }
        }
        self.micro.b.iter_mut().for_each(|b| *b = 0.0);
    }

    /// Mean absolute error of ln(ms) on `samples`: the "held-out error" of the tests.
    pub fn log_error(&self, samples: &[(&[f32], usize, f32)]) -> f32 {
        let errs: Vec<f32> = samples
            .iter()
            .filter_map(|s| {
                self.predict_ms(s.0, s.1)
                    .map(|p| (libm::logf(p) - libm::logf(s.2.max(1e-6))).abs())
            })
            .collect();
        if errs.is_empty() {
            0.0
        } else {
            errs.iter().sum::<f32>() / errs.len() as f32
        }
    }

    /// The MicroLoRA adapter (for inspection).
    pub fn micro(&self) -> &LoraAdapter {
        &self.micro
    }

    /// The BaseLoRA adapter (for inspection).
    pub fn base(&self) -> &LoraAdapter {
        &self.base
    }

    /// Current EWC++ strength.
    pub fn lambda(&self) -> f32 {
        self.lambda
    }
}

struct Grads {
    a: Vec<f32>,
    b: Vec<f32>,
    heads: Vec<f32>,
    head_bias: Vec<f32>,
}

impl Grads {
    fn new(rank: usize, arms: usize) -> Self {
        Grads {
            a: vec![0.0; rank * D],
            b: vec![0.0; HIDDEN * rank],
            heads: vec![0.0; arms * HIDDEN],
            head_bias: vec![0.0; arms],
        }
    }
}

fn apply(p: &mut [f32], g: &[f32], lr: f32) {
    for (x, d) in p.iter_mut().zip(g) {
        *x -= lr * d.clamp(-10.0, 10.0);
    }
}

/// Whether every number of `v` is finite: none has the all-ones exponent of an infinity or a
/// NaN. Without an early exit, so that it runs over whole vectors at once (a backend checks
/// the model's weights on every session's first statement).
pub(crate) fn all_finite(v: &[f32]) -> bool {
    const EXPONENT: u32 = 0x7f80_0000;
    v.iter().fold(0u32, |m, x| m.max(x.to_bits() & EXPONENT)) != EXPONENT
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Synthetic task: latency depends on the embedding through a hidden linear rule per arm.
    fn task(seed: u64, n: usize, shift: f32) -> Vec<(Vec<f32>, usize, f32)> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let mut e: Vec<f32> = (0..D).map(|_| rng.normal() as f32).collect();
                let norm = libm::sqrtf(e.iter().map(|x| x * x).sum());
                e.iter_mut().for_each(|x| *x /= norm);
                let arm = rng.below(3);
                let signal: f32 = e[..8].iter().sum::<f32>() * 8.0 + shift;
                let ms = libm::expf(2.0 + arm as f32 * 0.7 + signal);
                (e, arm, ms)
            })
            .collect()
    }

    fn view(t: &[(Vec<f32>, usize, f32)]) -> Vec<(&[f32], usize, f32)> {
        t.iter().map(|(e, a, m)| (e.as_slice(), *a, *m)).collect()
    }

    #[test]
    fn both_adapter_matrices_move_and_micro_steps_learn() {
        let cfg = NeuralDagConfig::default();
        let mut est = CostEstimator::new(&cfg, 3);
        let data = task(1, 1, 0.0);
        let a0 = est.micro().a_norm();
        assert_eq!(est.micro().b_norm(), 0.0);
        est.observe(&data[0].0, data[0].1, data[0].2).unwrap();
        assert!(est.micro().b_norm() > 0.0, "one observation must move B");
        est.observe(&data[0].0, data[0].1, data[0].2).unwrap();
        assert_ne!(
            est.micro().a_norm(),
            a0,
            "the second observation must move A"
        );
        assert!(est.observe(&data[0].0, 9, 1.0).is_none());
        // Heads move only when the accumulated gradient is flushed, every FLUSH_EVERY.
        let heads = est.heads.clone();
        assert_eq!(est.pending(), 2);
        for _ in 2..FLUSH_EVERY - 1 {
            est.observe(&data[0].0, 0, 5.0).unwrap();
        }
        assert_eq!(est.heads, heads, "no head step before the flush");
        est.observe(&data[0].0, 0, 5.0).unwrap();
        assert_eq!(est.pending(), 0, "flushed at {FLUSH_EVERY}");
        assert_ne!(est.heads, heads, "the flush steps the heads");
        assert!(est.observe(&data[0].0, 0, f32::NAN).is_none());
    }

    #[test]
    fn held_out_error_falls_as_trajectories_arrive() {
        let cfg = NeuralDagConfig::default();
        let mut est = CostEstimator::new(&cfg, 3);
        let train = task(2, 2000, 0.0);
        let held = task(3, 300, 0.0);
        let before = est.log_error(&view(&held));
        let mut errors = vec![before];
        for chunk in train.chunks(500) {
            est.train_batch(&view(chunk), 5, true);
            errors.push(est.log_error(&view(&held)));
        }
        assert!(errors[errors.len() - 1] < 0.5 * before, "{errors:?}");
        assert!(errors[2] < errors[0], "{errors:?}");
    }

    #[test]
    fn appended_arms_start_at_the_default_arms_prediction_and_leave_the_others_alone() {
        let cfg = NeuralDagConfig::default();
        let mut est = CostEstimator::new(&cfg, 3);
        for chunk in task(2, 1000, 0.0).chunks(500) {
            est.train_batch(&view(chunk), 3, true);
        }
        // A task boundary: the EWC++ anchor and the consolidated heads exist.
        est.train_batch(&view(&task_b(4, 300)), 3, true);
        assert!(est.boundaries > 0 && !est.anchor.is_empty());
        est.observe(&task(5, 1, 0.0)[0].0, 1, 20.0).unwrap();
        let probe = task(6, 20, 0.0);
        let before: Vec<Vec<f32>> = probe.iter().map(|s| est.predict_all_ms(&s.0)).collect();
        est.append_arms(2);
        est.check().unwrap();
        assert_eq!(est.arms(), 5);
        for (s, was) in probe.iter().zip(&before) {
            let now = est.predict_all_ms(&s.0);
            assert_eq!(
                &now[..3],
                &was[..],
                "the old arms' predictions are unchanged"
            );
            assert_eq!(now[3], was[0]);
            assert_eq!(now[4], was[0]);
        }
        // The new arms learn from their own runs.
        // Arm 4 runs what arm 0 runs, 8x faster.
        let on_arm_4 = |seed, n| -> Vec<(Vec<f32>, usize, f32)> {
            task(seed, n, 0.0)
                .into_iter()
                .filter(|s| s.1 == 0)
                .map(|(e, _, ms)| (e, 4, ms / 8.0))
                .collect()
        };
        let (fast, held) = (on_arm_4(7, 1200), on_arm_4(8, 300));
        let error = est.log_error(&view(&held));
        // (Without the EWC++ penalty: after the boundary these runs are a new task, whose
        // pull towards the anchor is EWC++'s business, not the new heads'.)
        for _ in 0..4 {
            est.train_batch(&view(&fast), 6, false);
        }
        let after = est.log_error(&view(&held));
        assert!(after < 0.6 * error, "{error} -> {after}");
        est.train_batch(&view(&fast), 1, true);
        est.check().unwrap();
        // Nothing to append to, or nothing appended: unchanged.
        let same = est.clone();
        est.append_arms(0);
        assert_eq!(est, same);
    }

    /// Task B: a different region of embedding space (dims 100..108 positive) with its own rule.
    fn task_b(seed: u64, n: usize) -> Vec<(Vec<f32>, usize, f32)> {
        let mut rng = SplitMix64::new(seed);
        (0..n)
            .map(|_| {
                let mut e: Vec<f32> = (0..D).map(|_| rng.normal() as f32 * 0.3).collect();
                for x in &mut e[100..108] {
                    *x = 1.0 + rng.next_f32();
                }
                let norm = libm::sqrtf(e.iter().map(|x| x * x).sum());
                e.iter_mut().for_each(|x| *x /= norm);
                let arm = rng.below(3);
                let ms = libm::expf(6.0 - arm as f32 * 0.9 + e[100] * 4.0);
                (e, arm, ms)
            })
            .collect()
    }

    fn a_error_after_b(ewc: bool) -> (f32, f32) {
        let cfg = NeuralDagConfig::default();
        let mut est = CostEstimator::new(&cfg, 3);
        let (a, held_a) = (task(4, 1500, 0.0), task(5, 300, 0.0));
        for chunk in a.chunks(500) {
            est.train_batch(&view(chunk), 5, ewc);
        }
        let before = est.log_error(&view(&held_a));
        let b = task_b(6, 1500);
        for chunk in b.chunks(500) {
            est.train_batch(&view(chunk), 5, ewc);
        }
        (before, est.log_error(&view(&held_a)))
    }

    #[test]
    fn ewc_keeps_task_a_while_learning_task_b() {
        let (before, with) = a_error_after_b(true);
        let (before_plain, without) = a_error_after_b(false);
        assert!(with <= 1.25 * before, "with EWC: {before} -> {with}");
        assert!(
            without > 1.25 * before_plain,
            "without EWC: {before_plain} -> {without}"
        );
    }
}
