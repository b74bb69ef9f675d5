//! `NeuralDagConfig`: the seed's configuration with its defaults, validated field by field.

use alloc::format;
use serde::{Deserialize, Serialize};

use crate::attention::{AttentionConfig, AttentionKind};
use crate::error::{NeuralDagError, Result};

/// Everything the learning layer can be told. Defaults are the seed's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeuralDagConfig {
    /// Learn from observed queries at all.
    pub learning_enabled: bool,
    /// Capacity of the trajectory ring buffer.
    pub max_trajectories: usize,
    /// Most clusters K-means++ extracts per cycle (k = min(this, n), at most 100).
    pub pattern_clusters: usize,
    /// Least quality a trajectory needs to seed a new pattern.
    pub quality_threshold: f32,
    /// Background learning period.
    pub background_interval_ms: u64,
    /// Attention kind used before the selector has evidence.
    pub default_attention: AttentionKind,
    /// Exploration budget: the share of the default plans' time that trying untried candidate
    /// plans may cost on top (0.1: learning costs at most about 10% over stock PostgreSQL;
    /// 0: never explore, apply only what is verified). The seed's "exploration rate".
    pub attention_exploration: f32,
    /// UCB1 exploration constant.
    pub ucb_exploration_c: f32,
    /// MicroLoRA rank (1 or 2).
    pub micro_lora_rank: usize,
    /// MicroLoRA learning rate.
    pub micro_lora_lr: f32,
    /// BaseLoRA rank.
    pub base_lora_rank: usize,
    /// BaseLoRA learning rate.
    pub base_lora_lr: f32,
    /// EWC++ penalty strength.
    pub ewc_lambda: f32,
    /// Cap of the EWC++ penalty strength after task boundaries.
    pub ewc_max_lambda: f32,
    /// Decay of the online diagonal Fisher estimate.
    pub ewc_fisher_decay: f32,
    /// Whether the attention selector may pick the min-cut gated mechanism (the costliest to
    /// compute); off keeps it out of the estimator's inputs.
    pub mincut_enabled: bool,
    /// Hypervector width (only 10,000 is supported).
    pub hdc_dimensions: usize,
    /// A BTSP write needs an arm to run this many times slower (or faster) than the default
    /// arm's latency for the same query shape.
    pub btsp_surprise_factor: f32,
    /// Least cosine similarity of a plan's key to a BTSP engram for the engram to apply.
    pub btsp_recall_similarity: f32,
    /// Most BTSP engrams kept (the oldest is forgotten first).
    pub btsp_capacity: usize,
    /// Most patterns kept (the least confident is evicted first).
    pub pattern_capacity: usize,
    /// The margin a plan must be verified faster than the default plan by before it is applied
    /// (0.1 = 10% faster, tested one-sided on log latency).
    pub min_gain: f32,
    /// Only query shapes whose default plan takes at least this long (measured, ms) are
    /// explored: below it, planning the candidates costs more than any plan could save.
    pub explore_min_ms: f32,
    /// Parameters of the attention mechanisms (the min-cut gate's threshold lives here).
    pub attention: AttentionConfig,
    /// Seed of every random choice in learning (exploration, initial weights).
    pub seed: u64,
}

impl Default for NeuralDagConfig {
    fn default() -> Self {
        NeuralDagConfig {
            learning_enabled: true,
            max_trajectories: 10_000,
            pattern_clusters: 100,
            quality_threshold: 0.3,
            background_interval_ms: 3_600_000,
            default_attention: AttentionKind::Topological,
            attention_exploration: 0.1,
            ucb_exploration_c: 1.414,
            micro_lora_rank: 2,
            micro_lora_lr: 0.002,
            base_lora_rank: 8,
            base_lora_lr: 0.001,
            ewc_lambda: 2000.0,
            ewc_max_lambda: 15_000.0,
            ewc_fisher_decay: 0.999,
            mincut_enabled: true,
            hdc_dimensions: crate::hdc::HDC_BITS,
            btsp_surprise_factor: 3.0,
            btsp_recall_similarity: 0.95,
            btsp_capacity: 4096,
            pattern_capacity: 10_000,
            min_gain: 0.1,
            explore_min_ms: 10.0,
            attention: AttentionConfig::default(),
            seed: 0x50_4A,
        }
    }
}

fn bad(field: &str, why: alloc::string::String) -> NeuralDagError {
    NeuralDagError::InvalidConfig(format!("{field}: {why}"))
}

fn in_range(field: &str, v: f32, lo: f32, hi: f32) -> Result<()> {
    if v.is_finite() && v >= lo && v <= hi {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is outside [{lo}, {hi}]")))
    }
}

fn count_in(field: &str, v: usize, lo: usize, hi: usize) -> Result<()> {
    if (lo..=hi).contains(&v) {
        Ok(())
    } else {
        Err(bad(field, format!("{v} is outside [{lo}, {hi}]")))
    }
}

impl NeuralDagConfig {
    /// Check every field; the error names the first bad one and its valid range.
    pub fn validate(&self) -> Result<()> {
        count_in("max_trajectories", self.max_trajectories, 1, 10_000_000)?;
        count_in("pattern_clusters", self.pattern_clusters, 1, 100)?;
        in_range("quality_threshold", self.quality_threshold, 0.0, 1.0)?;
        if self.background_interval_ms < 100 {
            return Err(bad(
                "background_interval_ms",
                format!("{} is below 100", self.background_interval_ms),
            ));
        }
        in_range(
            "attention_exploration",
            self.attention_exploration,
            0.0,
            1.0,
        )?;
        in_range("ucb_exploration_c", self.ucb_exploration_c, 0.0, 100.0)?;
        count_in("micro_lora_rank", self.micro_lora_rank, 1, 2)?;
        in_range("micro_lora_lr", self.micro_lora_lr, 0.0, 1.0)?;
        count_in("base_lora_rank", self.base_lora_rank, 1, 64)?;
        in_range("base_lora_lr", self.base_lora_lr, 0.0, 1.0)?;
        in_range("ewc_lambda", self.ewc_lambda, 0.0, 1e9)?;
        in_range("ewc_max_lambda", self.ewc_max_lambda, self.ewc_lambda, 1e9)?;
        in_range("ewc_fisher_decay", self.ewc_fisher_decay, 0.0, 1.0)?;
        if self.hdc_dimensions != crate::hdc::HDC_BITS {
            return Err(bad(
                "hdc_dimensions",
                format!(
                    "{} is not supported; only {}",
                    self.hdc_dimensions,
                    crate::hdc::HDC_BITS
                ),
            ));
        }
        in_range("btsp_surprise_factor", self.btsp_surprise_factor, 1.0, 1e6)?;
        in_range(
            "btsp_recall_similarity",
            self.btsp_recall_similarity,
            0.0,
            1.0,
        )?;
        count_in("btsp_capacity", self.btsp_capacity, 1, 1_000_000)?;
        count_in("pattern_capacity", self.pattern_capacity, 1, 1_000_000)?;
        in_range("min_gain", self.min_gain, 0.0, 0.99)?;
        in_range("explore_min_ms", self.explore_min_ms, 0.0, 3.6e6)?;
        self.attention.validate().map_err(|e| match e {
            NeuralDagError::InvalidConfig(m) => {
                NeuralDagError::InvalidConfig(format!("attention.{m}"))
            }
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_are_valid_and_build_an_optimizer() {
        let c = NeuralDagConfig::default();
        c.validate().unwrap();
        let arms = ["default", "enable_nestloop=off"]
            .map(alloc::string::String::from)
            .to_vec();
        crate::learning::Optimizer::new(c, arms).unwrap();
    }

    #[test]
    fn each_bad_field_is_named() {
        let cases: [(&str, NeuralDagConfig); 6] = [
            (
                "quality_threshold",
                NeuralDagConfig {
                    quality_threshold: 1.5,
                    ..Default::default()
                },
            ),
            (
                "micro_lora_rank",
                NeuralDagConfig {
                    micro_lora_rank: 3,
                    ..Default::default()
                },
            ),
            (
                "ewc_max_lambda",
                NeuralDagConfig {
                    ewc_max_lambda: 10.0,
                    ..Default::default()
                },
            ),
            (
                "attention_exploration",
                NeuralDagConfig {
                    attention_exploration: f32::NAN,
                    ..Default::default()
                },
            ),
            (
                "hdc_dimensions",
                NeuralDagConfig {
                    hdc_dimensions: 4096,
                    ..Default::default()
                },
            ),
            (
                "attention.cone_depth",
                NeuralDagConfig {
                    attention: AttentionConfig {
                        cone_depth: 0,
                        ..Default::default()
                    },
                    ..Default::default()
                },
            ),
        ];
        for (field, cfg) in cases {
            match cfg.validate() {
                Err(NeuralDagError::InvalidConfig(m)) => assert!(m.contains(field), "{field}: {m}"),
                other => panic!("{field}: {other:?}"),
            }
        }
    }
}
