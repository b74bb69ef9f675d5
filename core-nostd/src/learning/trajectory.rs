//! Trajectories, what one executed query teaches, and the fixed-capacity ring that holds them
//! until the background cycle drains it.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::ArmId;
use crate::attention::AttentionKind;
use crate::hdc::Hypervector;

/// One observed execution. Holds fingerprints and numbers, never query text or constants.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trajectory {
    /// Fingerprint of the query's shape (same for every arm): [`crate::PlanDag::shape_hash`]
    /// of the default plan.
    pub fingerprint: u64,
    /// HDC fingerprint of the default plan (the pattern store's Hamming pre-filter).
    pub hdc: Hypervector,
    /// Embedding of the default plan under the configured default attention kind: the key that
    /// identifies the query's shape for patterns and BTSP memory, whatever arm or kind ran.
    pub key: Vec<f32>,
    /// Embedding of the default plan under `attention`: what the estimator predicted from.
    pub input: Vec<f32>,
    /// Embedding of the plan that actually ran (under `attention`); empty when unknown.
    pub executed: Vec<f32>,
    /// Attention kind the selector chose for `input`.
    pub attention: AttentionKind,
    /// The pattern the decision matched closely enough to count this run in it at once.
    pub pattern: Option<u64>,
    /// The arm that ran.
    pub arm: ArmId,
    /// [`crate::PlanDag::shape_hash`] of the plan that ran: equal to `fingerprint` when it was
    /// the default plan, whatever arm produced it.
    pub plan: u64,
    /// What the estimator predicted, milliseconds.
    pub predicted_ms: f32,
    /// What it took, milliseconds.
    pub actual_ms: f32,
    /// Per-operator share of the measured time (empty when not instrumented).
    pub op_shares: Vec<f32>,
    /// How close to the best latency seen for this fingerprint, in [0, 1]; set on record.
    pub quality: f32,
}

impl Trajectory {
    /// The arm as far as the plan goes: the default (0) when the plan that ran was the
    /// default plan, whatever arm produced it; else the arm.
    pub fn plan_arm(&self) -> ArmId {
        if self.plan == self.fingerprint {
            0
        } else {
            self.arm
        }
    }
}

/// Ring buffer of trajectories: fixed capacity, drops the oldest when full and counts drops.
/// It also remembers the best latency of up to `capacity` fingerprints, which defines quality
/// (at that bound the smallest fingerprint is forgotten: arbitrary but deterministic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrajectoryBuffer {
    ring: VecDeque<Trajectory>,
    capacity: usize,
    dropped: u64,
    recorded: u64,
    best_ms: BTreeMap<u64, f32>,
}

impl TrajectoryBuffer {
    /// An empty buffer holding at most `capacity` (>= 1) trajectories.
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        TrajectoryBuffer {
            // Grown as it fills: most copies never queue one (a backend's, an optimizer that
            // holds the rules alone), and a full ring of 10,000 is megabytes.
            ring: VecDeque::new(),
            capacity,
            dropped: 0,
            recorded: 0,
            best_ms: BTreeMap::new(),
        }
    }

    /// Record one trajectory, setting its quality `best / actual` against the best latency
    /// seen for its fingerprint (this one included). Returns the quality.
    pub fn record(&mut self, mut t: Trajectory) -> f32 {
        t.quality = self.note(t.fingerprint, t.actual_ms);
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
            self.dropped += 1;
        }
        self.recorded += 1;
        let q = t.quality;
        self.ring.push_back(t);
        q
    }

    /// What [`record`](Self::record) does but queue: note `actual_ms` as a latency of
    /// `fingerprint` and return its quality, `best / actual` (0 for a latency that is not a
    /// positive finite number, which teaches nothing about the best one).
    pub fn note(&mut self, fingerprint: u64, actual_ms: f32) -> f32 {
        if !(actual_ms.is_finite() && actual_ms > 0.0) {
            return 0.0;
        }
        if self.best_ms.len() >= self.capacity && !self.best_ms.contains_key(&fingerprint) {
            self.best_ms.pop_first();
        }
        let best = self.best_ms.entry(fingerprint).or_insert(actual_ms);
        *best = best.min(actual_ms);
        (*best / actual_ms).clamp(0.0, 1.0)
    }

    /// This buffer without its waiting trajectories, for a snapshot that leaves them out: it
    /// encodes as the buffer would with none waiting.
    pub(crate) fn without_ring(&self) -> impl Serialize + '_ {
        #[derive(Serialize)]
        struct Rest<'a> {
            ring: &'a [Trajectory],
            capacity: usize,
            dropped: u64,
            recorded: u64,
            best_ms: &'a BTreeMap<u64, f32>,
        }
        Rest {
            ring: &[],
            capacity: self.capacity,
            dropped: self.dropped,
            recorded: self.recorded,
            best_ms: &self.best_ms,
        }
    }

    /// Queue `ts` again (trajectories a snapshot left out, already recorded once: they count
    /// neither as recorded nor towards the best latencies again), oldest first, dropping the
    /// oldest beyond the capacity.
    pub(crate) fn requeue(&mut self, ts: Vec<Trajectory>) {
        for t in ts {
            if self.ring.len() == self.capacity {
                self.ring.pop_front();
                self.dropped += 1;
            }
            self.ring.push_back(t);
        }
    }

    /// Take everything out, oldest first.
    pub fn drain(&mut self) -> Vec<Trajectory> {
        self.ring.drain(..).collect()
    }

    /// The waiting trajectories, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Trajectory> {
        self.ring.iter()
    }

    /// Drop pending trajectories of the given query shapes. Returns how many were dropped.
    pub fn forget_shapes(&mut self, fingerprints: &[u64]) -> usize {
        let before = self.ring.len();
        self.ring.retain(|t| !fingerprints.contains(&t.fingerprint));
        fingerprints.iter().for_each(|f| {
            self.best_ms.remove(f);
        });
        before - self.ring.len()
    }

    /// Most trajectories held.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Trajectories waiting.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Trajectories dropped because the ring was full.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// Trajectories recorded since creation.
    pub fn recorded(&self) -> u64 {
        self.recorded
    }

    /// Best latency seen for a fingerprint.
    pub fn best_ms(&self, fingerprint: u64) -> Option<f32> {
        self.best_ms.get(&fingerprint).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn t(fp: u64, ms: f32) -> Trajectory {
        Trajectory {
            fingerprint: fp,
            hdc: Hypervector::zero(),
            key: vec![1.0; 4],
            input: vec![1.0; 4],
            executed: vec![1.0; 4],
            attention: AttentionKind::Topological,
            pattern: None,
            arm: 0,
            plan: fp,
            predicted_ms: 1.0,
            actual_ms: ms,
            op_shares: Vec::new(),
            quality: 0.0,
        }
    }

    #[test]
    fn ring_drops_oldest_and_counts() {
        let mut b = TrajectoryBuffer::new(3);
        for i in 0..5 {
            b.record(t(i, 1.0));
        }
        assert_eq!((b.len(), b.dropped(), b.recorded()), (3, 2, 5));
        let fps: Vec<u64> = b.drain().iter().map(|t| t.fingerprint).collect();
        assert_eq!(fps, vec![2, 3, 4]);
        assert!(b.is_empty());
    }

    #[test]
    fn quality_is_best_over_actual_per_fingerprint() {
        let mut b = TrajectoryBuffer::new(10);
        assert_eq!(b.record(t(1, 10.0)), 1.0);
        assert_eq!(b.record(t(1, 40.0)), 0.25);
        assert_eq!(b.record(t(1, 5.0)), 1.0);
        assert_eq!(b.record(t(2, 80.0)), 1.0);
        assert_eq!(b.record(t(1, f32::NAN)), 0.0);
        assert_eq!(b.best_ms(1), Some(5.0));
    }
}
