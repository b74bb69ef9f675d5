//! Hyperdimensional computing with 10,000-bit binary hypervectors (Kanerva 2009).
//!
//! 10,000 bits are stored in 157 `u64` words; the 48 bits past 10,000 are padding and kept zero
//! by every operation. bind = XOR (self-inverse, result dissimilar to both inputs),
//! bundle = bitwise majority (result similar to every input), permute = rotation of the
//! 10,000-bit ring (used to encode position). Similarity is `1 - 2 * hamming / 10,000`: 1 for
//! equal vectors, about 0 (sd 0.01) for unrelated ones.
//!
//! A plan fingerprint is `bundle_v bind(op(v), permute^depth(v)(pos))`: similar plans (same
//! operators at the same depths) have similar fingerprints, which makes a 1.2 KB state
//! snapshot and a cheap Hamming pre-filter before exact cosine matching of embeddings.

use alloc::vec::Vec;

use crate::dag::{OpKind, PlanDag};
use crate::rng::SplitMix64;

/// Dimensions of a hypervector.
pub const HDC_BITS: usize = 10_000;
/// `u64` words per hypervector.
pub const HDC_WORDS: usize = HDC_BITS.div_ceil(64);
const LAST_MASK: u64 = (1u64 << (HDC_BITS % 64)) - 1;

/// A 10,000-bit hypervector. Serialises as its 1,256 little-endian bytes; bytes of the wrong
/// length or with padding bits set are refused.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Hypervector {
    words: [u64; HDC_WORDS],
}

impl core::fmt::Debug for Hypervector {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Hypervector({} of {HDC_BITS} bits set)",
            self.count_ones()
        )
    }
}

impl From<Hypervector> for Vec<u8> {
    fn from(hv: Hypervector) -> Vec<u8> {
        hv.to_bytes()
    }
}

impl TryFrom<Vec<u8>> for Hypervector {
    type Error = alloc::string::String;
    fn try_from(bytes: Vec<u8>) -> core::result::Result<Self, Self::Error> {
        Hypervector::from_bytes(&bytes).ok_or_else(|| {
            alloc::format!(
                "hypervector of {} bytes (want {}) or with padding bits set",
                bytes.len(),
                HDC_WORDS * 8
            )
        })
    }
}

/// A byte string: in postcard the same bytes as the sequence of `u8` it was up to snapshot
/// format 5 (a length, then the bytes), read in one piece instead of one serde call per byte.
/// Formats that tell the two apart (JSON) get a sequence of numbers, and either is read back.
impl serde::Serialize for Hypervector {
    fn serialize<S: serde::Serializer>(&self, s: S) -> core::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.to_bytes())
    }
}

impl<'de> serde::Deserialize<'de> for Hypervector {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> core::result::Result<Self, D::Error> {
        struct Bytes;
        impl<'de> serde::de::Visitor<'de> for Bytes {
            type Value = Hypervector;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                write!(f, "a hypervector of {} bytes", HDC_WORDS * 8)
            }
            fn visit_bytes<E: serde::de::Error>(
                self,
                v: &[u8],
            ) -> core::result::Result<Hypervector, E> {
                Hypervector::try_from(v.to_vec()).map_err(E::custom)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> core::result::Result<Hypervector, A::Error> {
                let mut bytes = Vec::with_capacity(HDC_WORDS * 8);
                while let Some(b) = seq.next_element::<u8>()? {
                    if bytes.len() > HDC_WORDS * 8 {
                        break;
                    }
                    bytes.push(b);
                }
                Hypervector::try_from(bytes).map_err(serde::de::Error::custom)
            }
        }
        d.deserialize_bytes(Bytes)
    }
}

impl Hypervector {
    /// All zeros.
    pub fn zero() -> Self {
        Hypervector {
            words: [0; HDC_WORDS],
        }
    }

    /// Dense random vector (each bit 1 with probability 1/2), deterministic in `seed`.
    pub fn random(seed: u64) -> Self {
        let mut rng = SplitMix64::new(seed);
        let mut words = [0u64; HDC_WORDS];
        for w in &mut words {
            *w = rng.next_u64();
        }
        words[HDC_WORDS - 1] &= LAST_MASK;
        Hypervector { words }
    }

    /// From raw words; padding bits are cleared.
    pub fn from_words(mut words: [u64; HDC_WORDS]) -> Self {
        words[HDC_WORDS - 1] &= LAST_MASK;
        Hypervector { words }
    }

    /// The raw words (padding bits are zero).
    pub fn words(&self) -> &[u64; HDC_WORDS] {
        &self.words
    }

    /// Little-endian bytes, 1,256 of them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.words.iter().flat_map(|w| w.to_le_bytes()).collect()
    }

    /// Inverse of [`Hypervector::to_bytes`]; `None` unless exactly 1,256 bytes with zero padding.
    pub fn from_bytes(bytes: &[u8]) -> Option<Self> {
        if bytes.len() != HDC_WORDS * 8 {
            return None;
        }
        let mut words = [0u64; HDC_WORDS];
        for (w, chunk) in words.iter_mut().zip(bytes.chunks_exact(8)) {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            *w = u64::from_le_bytes(b);
        }
        (words[HDC_WORDS - 1] & !LAST_MASK == 0).then_some(Hypervector { words })
    }

    /// Bit `i` (`i < 10,000`).
    pub fn bit(&self, i: usize) -> bool {
        self.words[i / 64] >> (i % 64) & 1 == 1
    }

    /// Number of set bits.
    pub fn count_ones(&self) -> u32 {
        self.words.iter().map(|w| w.count_ones()).sum()
    }

    /// XOR binding.
    pub fn bind(&self, other: &Hypervector) -> Hypervector {
        let mut words = [0u64; HDC_WORDS];
        for (o, (a, b)) in words.iter_mut().zip(self.words.iter().zip(&other.words)) {
            *o = a ^ b;
        }
        Hypervector { words }
    }

    /// `len <= 64` bits starting at `pos`, with `pos + len <= HDC_BITS`.
    fn bits_at(&self, pos: usize, len: usize) -> u64 {
        let (w, off) = (pos / 64, pos % 64);
        let mut v = self.words[w] >> off;
        if off + len > 64 {
            v |= self.words[w + 1] << (64 - off);
        }
        if len == 64 {
            v
        } else {
            v & ((1u64 << len) - 1)
        }
    }

    /// Rotation of the 10,000-bit ring by `k`: bit `i` moves to `(i + k) mod 10,000`.
    pub fn permute(&self, k: usize) -> Hypervector {
        let k = k % HDC_BITS;
        if k == 0 {
            return self.clone();
        }
        let mut words = [0u64; HDC_WORDS];
        for (w, out) in words.iter_mut().enumerate() {
            let len = (HDC_BITS - w * 64).min(64);
            // Output bits [64w, 64w + len) come from input bits starting at (64w - k) mod D.
            let start = (w * 64 + HDC_BITS - k) % HDC_BITS;
            let first = (HDC_BITS - start).min(len);
            let mut v = self.bits_at(start, first);
            if first < len {
                v |= self.bits_at(0, len - first) << first;
            }
            *out = v;
        }
        Hypervector { words }
    }

    /// Number of differing bits.
    pub fn hamming(&self, other: &Hypervector) -> u32 {
        self.words
            .iter()
            .zip(&other.words)
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// Differing bits among the first `words` 64-bit words: a sampled Hamming distance. Every
    /// bit of a hypervector carries the same information (holographic), so a prefix of 1,024
    /// bits estimates the whole distance within a few percent at a tenth of the cost.
    pub fn hamming_prefix(&self, other: &Hypervector, words: usize) -> u32 {
        let w = words.min(HDC_WORDS);
        self.words[..w]
            .iter()
            .zip(&other.words[..w])
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// `1 - 2 * hamming / 10,000`, in [-1, 1].
    pub fn similarity(&self, other: &Hypervector) -> f32 {
        1.0 - 2.0 * self.hamming(other) as f32 / HDC_BITS as f32
    }

    /// Whether the padding bits are zero (always true for vectors built by this module).
    pub fn padding_is_clear(&self) -> bool {
        self.words[HDC_WORDS - 1] & !LAST_MASK == 0
    }
}

/// Majority bundling with bit-sliced counters: plane `p` holds bit `p` of every bit position's
/// count, so adding a vector is a ripple-carry over the planes (O(words x log count)), and
/// counters grow a plane whenever they would overflow: no count is ever truncated.
#[derive(Debug, Clone, Default)]
pub struct Bundler {
    planes: Vec<[u64; HDC_WORDS]>,
    count: u64,
}

impl Bundler {
    /// An empty bundle.
    pub fn new() -> Self {
        Self::default()
    }

    /// Vectors added so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// Add one vector.
    pub fn add(&mut self, hv: &Hypervector) {
        self.count += 1;
        let mut carry = hv.words;
        for plane in &mut self.planes {
            let mut any = 0u64;
            for (p, c) in plane.iter_mut().zip(carry.iter_mut()) {
                let sum = *p ^ *c;
                *c &= *p;
                *p = sum;
                any |= *c;
            }
            if any == 0 {
                return;
            }
        }
        self.planes.push(carry);
    }

    /// Count of bit `i` over the vectors added (for tests and inspection).
    pub fn count_of(&self, i: usize) -> u64 {
        self.planes
            .iter()
            .enumerate()
            .map(|(p, plane)| (plane[i / 64] >> (i % 64) & 1) << p)
            .sum()
    }

    /// Bit `i` is set iff more than half the vectors have it; an exact tie (even count) takes
    /// `tie_break`'s bit, so the result stays unbiased.
    pub fn majority(&self, tie_break: &Hypervector) -> Hypervector {
        let half = self.count / 2;
        let planes = self.planes.len().max(64 - half.leading_zeros() as usize);
        let mut gt = [0u64; HDC_WORDS];
        let mut eq = [u64::MAX; HDC_WORDS];
        let zero = [0u64; HDC_WORDS];
        // Bit-sliced comparison of every counter with `half`, most significant plane first.
        for p in (0..planes).rev() {
            let plane = self.planes.get(p).unwrap_or(&zero);
            let t = half >> p & 1 == 1;
            for w in 0..HDC_WORDS {
                if t {
                    eq[w] &= plane[w];
                } else {
                    gt[w] |= eq[w] & plane[w];
                    eq[w] &= !plane[w];
                }
            }
        }
        let tie = self.count > 0 && self.count % 2 == 0;
        let mut words = [0u64; HDC_WORDS];
        for w in 0..HDC_WORDS {
            words[w] = gt[w] | if tie { eq[w] & tie_break.words[w] } else { 0 };
        }
        Hypervector::from_words(words)
    }
}

/// Deepest plan level with its own position vector; deeper levels reuse the last one.
const MAX_ENCODED_DEPTH: usize = 64;

/// Item memory and encoder of plan fingerprints, deterministic in its seed.
#[derive(Debug, Clone)]
pub struct HdcEncoder {
    ops: Vec<Hypervector>,
    positions: Vec<Hypervector>,
    tie_break: Hypervector,
}

impl HdcEncoder {
    /// Item vectors for every operator and position vectors for depths up to 64.
    pub fn new(seed: u64) -> Self {
        let ops = OpKind::ALL
            .iter()
            .map(|&op| Hypervector::random(seed ^ crate::rng::fnv1a64(op.name().as_bytes())))
            .collect();
        let pos = Hypervector::random(seed ^ 0x9051_7104);
        let positions = (0..=MAX_ENCODED_DEPTH).map(|d| pos.permute(d)).collect();
        HdcEncoder {
            ops,
            positions,
            tie_break: Hypervector::random(seed ^ 0x71E),
        }
    }

    fn op_index(op: OpKind) -> usize {
        OpKind::ALL
            .iter()
            .position(|&o| o == op)
            .unwrap_or(OpKind::ALL.len() - 1)
    }

    /// `bind(op, permute^depth(pos))`.
    pub fn encode_node(&self, op: OpKind, depth: u32) -> Hypervector {
        let d = (depth as usize).min(MAX_ENCODED_DEPTH);
        self.ops[Self::op_index(op)].bind(&self.positions[d])
    }

    /// The plan's fingerprint: majority bundle of every node's encoding.
    pub fn fingerprint(&self, dag: &PlanDag) -> Hypervector {
        let mut b = Bundler::new();
        for v in 0..dag.len() {
            b.add(&self.encode_node(dag.node(v).op, dag.depth(v)));
        }
        b.majority(&self.tie_break)
    }
}

impl Default for HdcEncoder {
    fn default() -> Self {
        HdcEncoder::new(0x4DC)
    }
}

/// Indices of the `k` candidates most similar to `query` by Hamming distance, closest first
/// (ties by index). The pre-filter before exact cosine matching.
pub fn nearest(query: &Hypervector, candidates: &[Hypervector], k: usize) -> Vec<usize> {
    let mut scored: Vec<(u32, usize)> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| (query.hamming(c), i))
        .collect();
    scored.sort_unstable();
    scored.truncate(k);
    scored.into_iter().map(|(_, i)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::{random_plan, SynthOptions};

    #[test]
    fn a_hypervector_is_the_same_bytes_in_postcard_as_the_u8_sequence_it_was() {
        let hv = Hypervector::random(99);
        let now = postcard::to_allocvec(&hv).unwrap();
        let before = postcard::to_allocvec(&hv.to_bytes()).unwrap();
        assert_eq!(now, before);
        let back: Hypervector = postcard::from_bytes(&before).unwrap();
        assert_eq!(back, hv);
        // A wrong length, or padding bits set, is refused by name.
        let short = postcard::to_allocvec(&alloc::vec![0u8; 10]).unwrap();
        let e = postcard::from_bytes::<Hypervector>(&short).unwrap_err();
        assert!(matches!(e, postcard::Error::SerdeDeCustom), "{e:?}");
        #[cfg(feature = "explain-json")]
        {
            let json = serde_json::to_string(&hv).unwrap();
            assert_eq!(serde_json::from_str::<Hypervector>(&json).unwrap(), hv);
            let long = serde_json::to_string(&alloc::vec![0u8; HDC_WORDS * 8 + 5]).unwrap();
            let e = serde_json::from_str::<Hypervector>(&long).unwrap_err();
            assert!(alloc::format!("{e}").contains("want"), "{e}");
        }
    }

    #[test]
    fn self_similarity_is_one_and_random_pairs_are_near_zero() {
        for s in 0..50u64 {
            let a = Hypervector::random(s);
            let b = Hypervector::random(s + 1000);
            assert_eq!(a.similarity(&a), 1.0);
            assert!(a.similarity(&b).abs() < 0.05, "{}", a.similarity(&b));
            assert!(a.padding_is_clear() && b.padding_is_clear());
        }
    }

    #[test]
    fn bind_is_self_inverse_and_dissimilar() {
        let (a, b) = (Hypervector::random(1), Hypervector::random(2));
        let ab = a.bind(&b);
        assert_eq!(ab.bind(&b), a);
        assert!(ab.similarity(&a).abs() < 0.05);
    }

    #[test]
    fn permute_is_a_rotation_of_the_ring() {
        let a = Hypervector::random(3);
        for k in [1usize, 63, 64, 65, 127, 5000, 9_936, 9_999, 10_000, 12_345] {
            let p = a.permute(k);
            assert!(p.padding_is_clear());
            assert_eq!(p.count_ones(), a.count_ones());
            for i in (0..HDC_BITS).step_by(7).chain([HDC_BITS - 1]) {
                assert_eq!(p.bit((i + k) % HDC_BITS), a.bit(i), "k {k} bit {i}");
            }
            assert_eq!(p.permute(HDC_BITS - k % HDC_BITS), a);
        }
        assert!(a.permute(1).similarity(&a).abs() < 0.05);
    }

    #[test]
    fn bundling_1000_vectors_matches_a_naive_count() {
        let vs: Vec<Hypervector> = (0..1000u64).map(Hypervector::random).collect();
        let mut b = Bundler::new();
        // A biased group so that many counts sit far from 500: ones in bits < 3000 for 700 of them.
        let biased: Vec<Hypervector> = vs
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let mut w = *v.words();
                if i < 700 {
                    for x in w.iter_mut().take(3000 / 64) {
                        *x = u64::MAX;
                    }
                }
                Hypervector::from_words(w)
            })
            .collect();
        for v in &biased {
            b.add(v);
        }
        assert_eq!(b.count(), 1000);
        let tie = Hypervector::random(99);
        let m = b.majority(&tie);
        assert!(m.padding_is_clear());
        for i in 0..HDC_BITS {
            let naive = biased.iter().filter(|v| v.bit(i)).count() as u64;
            assert_eq!(b.count_of(i), naive);
            let expect = naive > 500 || (naive == 500 && tie.bit(i));
            assert_eq!(m.bit(i), expect, "bit {i} count {naive}");
        }
        // Every bundled vector is closer to the bundle than a random one.
        let outsider = Hypervector::random(5_000);
        assert!(m.similarity(&biased[0]) > m.similarity(&outsider) + 0.02);
    }

    #[test]
    fn odd_bundle_of_three_is_bitwise_majority() {
        let (a, b, c) = (
            Hypervector::random(1),
            Hypervector::random(2),
            Hypervector::random(3),
        );
        let mut bun = Bundler::new();
        for v in [&a, &b, &c] {
            bun.add(v);
        }
        let m = bun.majority(&Hypervector::zero());
        for w in 0..HDC_WORDS {
            let (x, y, z) = (a.words()[w], b.words()[w], c.words()[w]);
            assert_eq!(m.words()[w], (x & y) | (x & z) | (y & z));
        }
    }

    #[test]
    fn fingerprints_separate_plans_and_survive_renumbering() {
        let enc = HdcEncoder::default();
        let d1 = random_plan(1, 60, SynthOptions::default());
        let d2 = random_plan(2, 60, SynthOptions::default());
        let f1 = enc.fingerprint(&d1);
        let renumbered = d1
            .permuted(&crate::synth::random_permutation(5, 60))
            .unwrap();
        assert_eq!(enc.fingerprint(&renumbered), f1);
        assert!(f1.similarity(&enc.fingerprint(&d2)) < 0.9);
        let fs = [f1.clone(), enc.fingerprint(&d2), Hypervector::random(8)];
        assert_eq!(nearest(&f1, &fs, 2)[0], 0);
        assert_eq!(Hypervector::from_bytes(&f1.to_bytes()), Some(f1));
        assert_eq!(HDC_WORDS * 8, 1256);
    }
}
