//! BTSP one-shot memory. Behavioural-timescale synaptic plasticity (Bittner et al., Science
//! 2017) writes a memory from a single plateau event; here the plateau is a surprising outcome:
//! an arm that ran at least `surprise_factor` times slower (or faster) than its baseline. It is
//! written at once, before any background cycle, and recalled for the next plan whose key
//! embedding is similar enough, so one catastrophic run is enough to block that arm there.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::{cosine, ArmId};

/// What the memory says about an arm for a plan.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub enum BtspVerdict {
    /// It ran this many times slower than its baseline on a similar plan: do not use it.
    Blocked {
        /// actual / baseline.
        ratio: f32,
        /// Similarity of the remembered plan.
        similarity: f32,
    },
    /// It ran this many times faster than its baseline on a similar plan.
    Promising {
        /// actual / baseline (< 1).
        ratio: f32,
        /// Similarity of the remembered plan.
        similarity: f32,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Engram {
    key: Vec<f32>,
    arm: ArmId,
    ratio: f32,
    written_at: u64,
}

/// The memory: a bounded set of engrams, the oldest forgotten first at capacity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BtspMemory {
    engrams: Vec<Engram>,
    capacity: usize,
    surprise_factor: f32,
    recall_similarity: f32,
    clock: u64,
}

impl BtspMemory {
    /// A memory of at most `capacity` engrams that writes outcomes at least `surprise_factor`
    /// off and recalls them for keys with cosine similarity at least `recall_similarity`.
    pub fn new(capacity: usize, surprise_factor: f32, recall_similarity: f32) -> Self {
        BtspMemory {
            engrams: Vec::new(),
            capacity: capacity.max(1),
            surprise_factor,
            recall_similarity,
            clock: 0,
        }
    }

    /// Forget every engram whose key is at least `min_cosine` similar to one of `keys`.
    /// Returns how many were forgotten.
    pub fn forget_near(&mut self, keys: &[&[f32]], min_cosine: f32) -> usize {
        let before = self.engrams.len();
        self.engrams
            .retain(|e| !keys.iter().any(|k| cosine(&e.key, k) >= min_cosine));
        before - self.engrams.len()
    }

    /// Least key similarity for an engram to apply.
    pub fn recall_similarity(&self) -> f32 {
        self.recall_similarity
    }

    /// Offer one outcome; written only when surprising (a plateau). Returns whether it was.
    /// A new outcome for the same arm on a near-identical key replaces the old engram, so a
    /// block can also be lifted by a later good run.
    pub fn observe(&mut self, key: &[f32], arm: ArmId, actual_ms: f32, baseline_ms: f32) -> bool {
        if !(actual_ms.is_finite()
            && baseline_ms.is_finite()
            && actual_ms > 0.0
            && baseline_ms > 0.0)
        {
            return false;
        }
        let ratio = actual_ms / baseline_ms;
        self.clock += 1;
        let same = self
            .engrams
            .iter()
            .position(|e| e.arm == arm && cosine(&e.key, key) > 0.99);
        let surprising = ratio >= self.surprise_factor || ratio <= 1.0 / self.surprise_factor;
        match (same, surprising) {
            (Some(i), _) => {
                if surprising {
                    self.engrams[i].ratio = ratio;
                    self.engrams[i].written_at = self.clock;
                } else {
                    // An unsurprising run overrides what the engram claimed.
                    self.engrams.swap_remove(i);
                }
                surprising
            }
            (None, false) => false,
            (None, true) => {
                if self.engrams.len() == self.capacity {
                    if let Some(oldest) =
                        (0..self.engrams.len()).min_by_key(|&i| self.engrams[i].written_at)
                    {
                        self.engrams.swap_remove(oldest);
                    }
                }
                self.engrams.push(Engram {
                    key: key.to_vec(),
                    arm,
                    ratio,
                    written_at: self.clock,
                });
                true
            }
        }
    }

    /// What is remembered about `arm` for a plan with this key: the most similar engram above
    /// the recall threshold.
    pub fn recall(&self, key: &[f32], arm: ArmId) -> Option<BtspVerdict> {
        let mut best: Option<(f32, &Engram)> = None;
        for e in self.engrams.iter().filter(|e| e.arm == arm) {
            let s = cosine(&e.key, key);
            if s >= self.recall_similarity && best.is_none_or(|(b, _)| s > b) {
                best = Some((s, e));
            }
        }
        best.map(|(similarity, e)| {
            if e.ratio > 1.0 {
                BtspVerdict::Blocked {
                    ratio: e.ratio,
                    similarity,
                }
            } else {
                BtspVerdict::Promising {
                    ratio: e.ratio,
                    similarity,
                }
            }
        })
    }

    /// Whether `arm` is blocked for this key.
    pub fn is_blocked(&self, key: &[f32], arm: ArmId) -> bool {
        matches!(self.recall(key, arm), Some(BtspVerdict::Blocked { .. }))
    }

    /// A digest of what the memory recalls: it changes whenever an engram is written,
    /// rewritten or forgotten (each write has its own `written_at`), and when its parameters
    /// do. Equal digests recall alike (the keys of engrams are never rewritten).
    pub fn digest(&self) -> u64 {
        let mut h = crate::learning::Fnv::new();
        h.u64(self.capacity as u64);
        h.u64(u64::from(self.surprise_factor.to_bits()));
        h.u64(u64::from(self.recall_similarity.to_bits()));
        h.u64(self.engrams.len() as u64);
        for e in &self.engrams {
            h.u64(u64::from(e.arm));
            h.u64(u64::from(e.ratio.to_bits()));
            h.u64(e.written_at);
            h.u64(e.key.len() as u64);
        }
        h.finish()
    }

    /// Most engrams held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Engrams held.
    pub fn len(&self) -> usize {
        self.engrams.len()
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.engrams.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    #[test]
    fn one_catastrophe_blocks_at_once_for_similar_plans_only() {
        let mut m = BtspMemory::new(16, 3.0, 0.9);
        let key = vec![1.0, 0.0, 0.2];
        let similar = vec![0.98, 0.05, 0.21];
        let other = vec![0.0, 1.0, 0.0];
        assert!(!m.observe(&key, 2, 12.0, 10.0), "1.2x is not surprising");
        assert!(m.recall(&key, 2).is_none());
        assert!(m.observe(&key, 2, 1000.0, 10.0));
        assert!(m.is_blocked(&similar, 2));
        assert!(!m.is_blocked(&similar, 3), "another arm is not blocked");
        assert!(!m.is_blocked(&other, 2), "a different plan is not blocked");
        // A surprisingly good run is remembered as promising; a normal one erases it.
        assert!(m.observe(&other, 4, 1.0, 10.0));
        assert!(matches!(
            m.recall(&other, 4),
            Some(BtspVerdict::Promising { .. })
        ));
        m.observe(&other, 4, 9.0, 10.0);
        assert!(m.recall(&other, 4).is_none());
    }

    #[test]
    fn capacity_forgets_the_oldest() {
        let mut m = BtspMemory::new(2, 3.0, 0.99);
        let keys = [vec![1.0, 0.0], vec![0.0, 1.0], vec![1.0, 1.0]];
        for k in &keys {
            m.observe(k, 1, 100.0, 1.0);
        }
        assert_eq!(m.len(), 2);
        assert!(!m.is_blocked(&keys[0], 1));
        assert!(m.is_blocked(&keys[2], 1));
        assert!(!m.observe(&keys[2], 1, f32::NAN, 1.0));
    }
}
