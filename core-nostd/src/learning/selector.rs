//! UCB1 over attention kinds (Auer, Cesa-Bianchi, Fischer 2002). The reward of a kind is how
//! well its embedding let the estimator predict latency: `exp(-|ln predicted - ln actual|)`,
//! the ratio of the smaller to the larger, in (0, 1] as UCB1's bound assumes (a monotone
//! transform of the negative absolute log error).
//!
//! Besides the built-in kinds the selector may pick one attention plugin (the host's, see
//! [`crate::learning::Optimizer::set_plugin`]); plugins' pulls and rewards are kept apart, by
//! plugin, in [`PluginArms`].

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::attention::{AttentionKind, PluginId};
use crate::error::{NeuralDagError, Result};

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
        self.select_with_extra(allowed, None)
            .unwrap_or(AttentionKind::Topological)
    }

    /// [`AttentionSelector::select_among`] with one more arm whose `(pulls, reward sum)` are
    /// `extra` (a plugin's, from [`PluginArms::get`]); None when that arm is the choice. The
    /// extra arm is tried after every allowed built-in kind has been, then competes by UCB1.
    pub fn select_with_extra(
        &self,
        allowed: impl Fn(AttentionKind) -> bool,
        extra: Option<(u64, f64)>,
    ) -> Option<AttentionKind> {
        let ok: [bool; KINDS] = core::array::from_fn(|k| allowed(AttentionKind::ALL[k]));
        let ok = if ok.iter().any(|&b| b) {
            ok
        } else {
            [true; KINDS]
        };
        if let Some(k) = (0..KINDS).find(|&k| ok[k] && self.pulls[k] == 0) {
            return Some(AttentionKind::ALL[k]);
        }
        if extra.is_some_and(|(pulls, _)| pulls == 0) {
            return None;
        }
        let total: u64 = (0..KINDS)
            .filter(|&k| ok[k])
            .map(|k| self.pulls[k])
            .sum::<u64>()
            + extra.map_or(0, |(pulls, _)| pulls);
        let ln_n = libm::log(total as f64);
        let ucb = |pulls: u64, sum: f64| {
            let n = pulls as f64;
            sum / n + f64::from(self.c) * libm::sqrt(ln_n / n)
        };
        let mut best = (f64::NEG_INFINITY, Some(AttentionKind::Topological));
        for k in (0..KINDS).filter(|&k| ok[k]) {
            let u = ucb(self.pulls[k], self.reward_sum[k]);
            if u > best.0 {
                best = (u, Some(AttentionKind::ALL[k]));
            }
        }
        if let Some((pulls, sum)) = extra {
            if ucb(pulls, sum) > best.0 {
                return None;
            }
        }
        best.1
    }

    /// Feed the reward of one use of built-in `kind` (a plugin's goes to [`PluginArms`]; this
    /// ignores it).
    pub fn update(&mut self, kind: AttentionKind, reward: f64) {
        if !kind.is_builtin() {
            return;
        }
        self.pulls[kind.index()] += 1;
        self.reward_sum[kind.index()] += clamp_reward(reward);
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

    /// Times built-in `kind` was used (0 for a plugin: see [`PluginArms`]).
    pub fn pulls(&self, kind: AttentionKind) -> u64 {
        self.pulls.get(kind.index()).copied().unwrap_or(0)
    }
}

fn clamp_reward(reward: f64) -> f64 {
    if reward.is_finite() {
        reward.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

/// Most plugins whose selector statistics are kept; past it the least used is forgotten.
pub const MAX_PLUGIN_ARMS: usize = 16;

/// The attention selector's statistics of plugins, by plugin: `(id, pulls, reward sum)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PluginArms {
    arms: Vec<(PluginId, u64, f64)>,
}

impl PluginArms {
    /// `(pulls, reward sum)` of plugin `id`; `(0, 0)` when it was never used.
    pub fn get(&self, id: PluginId) -> (u64, f64) {
        self.arms
            .iter()
            .find(|a| a.0 == id)
            .map_or((0, 0.0), |a| (a.1, a.2))
    }

    /// Feed the reward of one use of plugin `id`.
    pub fn update(&mut self, id: PluginId, reward: f64) {
        let r = clamp_reward(reward);
        if let Some(a) = self.arms.iter_mut().find(|a| a.0 == id) {
            a.1 += 1;
            a.2 += r;
            return;
        }
        if self.arms.len() >= MAX_PLUGIN_ARMS {
            if let Some(i) = (0..self.arms.len()).min_by_key(|&i| self.arms[i].1) {
                self.arms.remove(i);
            }
        }
        self.arms.push((id, 1, r));
    }

    /// Every plugin with statistics: `(id, pulls, mean reward)`.
    pub fn iter(&self) -> impl Iterator<Item = (PluginId, u64, f64)> + '_ {
        self.arms
            .iter()
            .map(|&(id, n, sum)| (id, n, if n > 0 { sum / n as f64 } else { 0.0 }))
    }

    /// Refuse statistics no selector could have written (from a damaged snapshot).
    pub fn check(&self) -> Result<()> {
        if self.arms.len() > MAX_PLUGIN_ARMS {
            return Err(NeuralDagError::CorruptState(alloc::format!(
                "{} plugin arms, at most {MAX_PLUGIN_ARMS}",
                self.arms.len()
            )));
        }
        for (i, &(id, n, sum)) in self.arms.iter().enumerate() {
            if n == 0 || !(sum.is_finite() && (0.0..=n as f64).contains(&sum)) {
                return Err(NeuralDagError::CorruptState(alloc::format!(
                    "plugin arm {id}: reward sum {sum} over {n} pulls"
                )));
            }
            if self.arms[..i].iter().any(|a| a.0 == id) {
                return Err(NeuralDagError::CorruptState(alloc::format!(
                    "plugin arm {id} is listed twice"
                )));
            }
        }
        Ok(())
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
    fn a_plugin_arm_is_tried_after_the_built_ins_then_competes() {
        let mut s = AttentionSelector::new(1.414);
        let mut arms = PluginArms::default();
        let id = PluginId(0xABCD);
        let all = |_| true;
        // Untried built-in kinds come first.
        for k in AttentionKind::ALL {
            assert_eq!(s.select_with_extra(all, Some(arms.get(id))), Some(k));
            s.update(k, 0.5);
        }
        // Then the untried plugin.
        assert_eq!(s.select_with_extra(all, Some(arms.get(id))), None);
        // A plugin that predicts far better wins most pulls; its rewards stay apart.
        let mut rng = SplitMix64::new(3);
        for _ in 0..3000 {
            let noise = (rng.next_f64() - 0.5) * 0.1;
            match s.select_with_extra(all, Some(arms.get(id))) {
                None => arms.update(id, 0.9 + noise),
                Some(k) => s.update(k, 0.5 + noise),
            }
        }
        let (pulls, sum) = arms.get(id);
        assert!(pulls > 2000, "{pulls}");
        assert!((sum / pulls as f64 - 0.9).abs() < 0.02);
        // Without the plugin attached, only built-in kinds are chosen.
        assert!(s.select_with_extra(all, None).is_some());
        // Plugin reward does not leak into built-in statistics.
        s.update(AttentionKind::Plugin(id), 1.0);
        assert_eq!(s.pulls(AttentionKind::Plugin(id)), 0);
        arms.check().unwrap();
    }

    #[test]
    fn plugin_arms_stay_bounded_and_forget_the_least_used() {
        let mut arms = PluginArms::default();
        for i in 0..MAX_PLUGIN_ARMS as u64 {
            for _ in 0..=i {
                arms.update(PluginId(i), 1.0);
            }
        }
        arms.update(PluginId(999), 0.25);
        assert_eq!(arms.iter().count(), MAX_PLUGIN_ARMS);
        assert_eq!(arms.get(PluginId(0)), (0, 0.0));
        assert_eq!(arms.get(PluginId(999)), (1, 0.25));
        assert_eq!(arms.get(PluginId(5)), (6, 6.0));
        arms.check().unwrap();
    }

    #[test]
    fn reward_is_the_ratio_and_bad_input_scores_zero() {
        assert_eq!(AttentionSelector::reward(10.0, 20.0), 0.5);
        assert_eq!(AttentionSelector::reward(20.0, 10.0), 0.5);
        assert_eq!(AttentionSelector::reward(f32::NAN, 1.0), 0.0);
        assert_eq!(AttentionSelector::reward(0.0, 1.0), 0.0);
    }
}
