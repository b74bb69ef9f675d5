//! UCB1 over attention kinds (Auer, Cesa-Bianchi, Fischer 2002). The reward of a kind is how
//! well its embedding let the estimator predict latency: `exp(-|ln predicted - ln actual|)`,
//! the ratio of the smaller to the larger, in (0, 1] as UCB1's bound assumes (a monotone
//! transform of the negative absolute log error).

use serde::{Deserialize, Serialize};

use crate::attention::AttentionKind;

const KINDS: usize = AttentionKind::ALL.len();

/// Per-kind pull counts and reward sums.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttentionSelector {
    c: f32,
    pulls: [u64; KINDS],
    reward_sum: [f64; KINDS],
}

impl AttentionSelector {
    /// A selector with exploration constant `c`.
    pub fn new(c: f32) -> Self {
        AttentionSelector {
            c,
            pulls: [0; KINDS],
            reward_sum: [0.0; KINDS],
        }
    }

    /// Reward for a prediction: `min(p, a) / max(p, a)`; 0 for non-finite or non-positive input.
    pub fn reward(predicted_ms: f32, actual_ms: f32) -> f64 {
        if !(predicted_ms.is_finite()
            && actual_ms.is_finite()
            && predicted_ms > 0.0
            && actual_ms > 0.0)
        {
            return 0.0;
        }
        f64::from(predicted_ms.min(actual_ms)) / f64::from(predicted_ms.max(actual_ms))
    }

    /// The kind to use next: an untried kind first (in [`AttentionKind::ALL`] order), then the
    /// highest upper confidence bound `mean + c * sqrt(ln N / n)`.
    pub fn select(&self) -> AttentionKind {
        self.select_among(|_| true)
    }

    /// [`AttentionSelector::select`] among the kinds `allowed` accepts (all of them when it
    /// accepts none).
    pub fn select_among(&self, allowed: impl Fn(AttentionKind) -> bool) -> AttentionKind {
        let ok: [bool; KINDS] = core::array::from_fn(|k| allowed(AttentionKind::ALL[k]));
        let ok = if ok.iter().any(|&b| b) {
            ok
        } else {
            [true; KINDS]
        };
        if let Some(k) = (0..KINDS).find(|&k| ok[k] && self.pulls[k] == 0) {
            return AttentionKind::ALL[k];
        }
        let total: u64 = (0..KINDS).filter(|&k| ok[k]).map(|k| self.pulls[k]).sum();
        let ln_n = libm::log(total as f64);
        let mut best = (f64::NEG_INFINITY, 0);
        for k in (0..KINDS).filter(|&k| ok[k]) {
            let n = self.pulls[k] as f64;
            let ucb = self.reward_sum[k] / n + f64::from(self.c) * libm::sqrt(ln_n / n);
            if ucb > best.0 {
                best = (ucb, k);
            }
        }
        AttentionKind::ALL[best.1]
    }

    /// Feed the reward of one use of `kind`.
    pub fn update(&mut self, kind: AttentionKind, reward: f64) {
        let r = if reward.is_finite() {
            reward.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.pulls[kind.index()] += 1;
        self.reward_sum[kind.index()] += r;
    }

    /// Mean reward of each base mechanism (the ensemble's mixing weights); 0 for untried kinds.
    pub fn mechanism_means(&self) -> [f32; 7] {
        let mut out = [0.0f32; 7];
        for (k, o) in out.iter_mut().enumerate() {
            if self.pulls[k] > 0 {
                *o = (self.reward_sum[k] / self.pulls[k] as f64) as f32;
            }
        }
        out
    }

    /// The kind with the best mean reward so far (ties: first in order), None before any pull.
    pub fn best(&self) -> Option<AttentionKind> {
        (0..KINDS)
            .filter(|&k| self.pulls[k] > 0)
            .max_by(|&a, &b| {
                let (ma, mb) = (
                    self.reward_sum[a] / self.pulls[a] as f64,
                    self.reward_sum[b] / self.pulls[b] as f64,
                );
                ma.total_cmp(&mb).then(b.cmp(&a))
            })
            .map(|k| AttentionKind::ALL[k])
    }

    /// Times `kind` was used.
    pub fn pulls(&self, kind: AttentionKind) -> u64 {
        self.pulls[kind.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    #[test]
    fn converges_to_the_kind_with_the_best_reward() {
        let mut s = AttentionSelector::new(1.414);
        let mut rng = SplitMix64::new(1);
        // Critical path predicts best (mean reward 0.9); others 0.5-0.7.
        let mean = |k: AttentionKind| {
            if k == AttentionKind::CriticalPath {
                0.9
            } else {
                0.5 + 0.025 * k.index() as f64
            }
        };
        for _ in 0..5000 {
            let k = s.select();
            let noise = (rng.next_f64() - 0.5) * 0.2;
            s.update(k, mean(k) + noise);
        }
        assert_eq!(s.best(), Some(AttentionKind::CriticalPath));
        assert!(
            s.pulls(AttentionKind::CriticalPath) > 3000,
            "{}",
            s.pulls(AttentionKind::CriticalPath)
        );
        assert!(AttentionKind::ALL.iter().all(|&k| s.pulls(k) > 0));
    }

    #[test]
    fn reward_is_the_ratio_and_bad_input_scores_zero() {
        assert_eq!(AttentionSelector::reward(10.0, 20.0), 0.5);
        assert_eq!(AttentionSelector::reward(20.0, 10.0), 0.5);
        assert_eq!(AttentionSelector::reward(f32::NAN, 1.0), 0.0);
        assert_eq!(AttentionSelector::reward(0.0, 1.0), 0.0);
    }
}
