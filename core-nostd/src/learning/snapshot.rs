//! The versioned envelope of persisted learned state: magic, format version, payload length and
//! a checksum ([`checksum`]) around the payload. Corrupt, truncated or foreign bytes are a
//! [`NeuralDagError::CorruptState`] naming what is wrong, never a panic or a silent reset.
//!
//! Up to format 5 the payload is one postcard value. From format 6 it is a postcard value
//! followed by its bulk: vectors of `f32` (the cost model's weights, the patterns' centroids)
//! stored apart as raw little-endian numbers, each after its count, in the order the writer
//! visited them; the postcard value holds those vectors empty. A backend restores the model on
//! its first statement of every session, and decoding tens of thousands of numbers one serde
//! call at a time was most of that ([`Bulk`]).
//!
//! From format 7 the optimizer's postcard value opens with its head: what deciding without the
//! model reads (configuration, arms, selector, BTSP memory, evidence, counters, attention
//! centres; format 7 also the shapes' history), behind a checksum of its own, then the model
//! (cost model and patterns, whose vectors are the bulk; from format 8 also the shapes'
//! history, which temporal attention reads and a lean decision does not). A backend that
//! decides lean restores the head alone
//! ([`Optimizer::restore_lean`](crate::learning::Optimizer::restore_lean)): it reads a few
//! kilobytes of the snapshot, not all of it.

use alloc::format;
use alloc::vec::Vec;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{NeuralDagError, Result};
use crate::rng::fnv1a64;

/// The checksum a snapshot of format `version` carries for `payload`: up to version 4 FNV-1a
/// byte by byte; from 5 the same multiply-xor over little-endian 64-bit words (the tail padded
/// with zeros, the length mixed in, the result folded), eight times fewer dependent steps.
/// It detects damage, not forgery: a crafted payload behind a recomputed checksum is caught by
/// the decoder's own checks.
///
/// From 6 four such chains run side by side over 32-byte blocks (each with its own seed; the
/// rest of the payload goes through the first), then fold into one: a backend checks the model
/// on every session's first statement, and one chain of dependent multiplies was a sixth of
/// restoring it.
pub fn checksum(version: u16, payload: &[u8]) -> u64 {
    if version < 5 {
        return fnv1a64(payload);
    }
    if version >= 6 {
        return checksum_lanes(payload);
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ (payload.len() as u64);
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        let mut b = [0u8; 8];
        b[..tail.len()].copy_from_slice(tail);
        h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
    }
    h ^ (h >> 32)
}

const PRIME: u64 = 0x0000_0100_0000_01B3;

/// One step of the word checksum: `h` absorbs the little-endian word `w` (up to 8 bytes, the
/// rest zero).
fn mix(h: u64, w: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b[..w.len()].copy_from_slice(w);
    let h = (h ^ u64::from_le_bytes(b)).wrapping_mul(PRIME);
    h ^ (h >> 29)
}

/// Format 6's checksum (see [`checksum`]).
fn checksum_lanes(payload: &[u8]) -> u64 {
    let mut lanes: [u64; 4] = [
        0xcbf2_9ce4_8422_2325 ^ (payload.len() as u64),
        0x9e37_79b9_7f4a_7c15,
        0xc2b2_ae3d_27d4_eb4f,
        0x1656_67b1_9e37_79f9,
    ];
    let mut blocks = payload.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            *lane = mix(*lane, w);
        }
    }
    for w in blocks.remainder().chunks(8) {
        lanes[0] = mix(lanes[0], w);
    }
    let mut h = lanes[0];
    for (i, lane) in lanes.iter().enumerate().skip(1) {
        h = (h ^ lane.rotate_left(16 * i as u32)).wrapping_mul(PRIME);
        h ^= h >> 29;
    }
    h ^ (h >> 32)
}

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 6] = b"RVDAG\0";
/// Current format version. 6: the payload is a postcard value and its bulk (the vectors of
/// `f32` stored apart as raw numbers, see the module's notes), the checksum four chains side by
/// side; 5: the checksum reads the payload eight bytes at a time
/// ([`checksum`]; a backend checks every snapshot it loads, and the byte-wise FNV-1a of 2 to 4
/// took a quarter of restoring one); 4: the optimizer's payload also carries the attention selector's
/// statistics of plugins; 3: it carries the attention kinds' reference centres beside the state
/// (a backend that restores it does not recompute them); 2: the state alone. 2 to 5 are still
/// read. 7: the payload as 6; the optimizer's value is its head under a checksum of its own,
/// then its model (see the module's notes). 8: as 7, with the shapes' history of operator
/// time shares (what temporal attention reads, most of a head) moved from the head to the
/// model, so a lean restore decodes a few KiB whatever the number of shapes. 2 to 7 are still
/// read.
pub const FORMAT_VERSION: u16 = 8;
/// Versions [`open`] accepts.
pub const READABLE_VERSIONS: [u16; 7] = [2, 3, 4, 5, 6, 7, 8];
const HEADER: usize = 6 + 2 + 4 + 8;

/// Serialise `state` into a snapshot (with no bulk).
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>> {
    encode_with_bulk(state, &Bulk::new())
}

/// Serialise `state` and the vectors `bulk` took from it into a snapshot.
pub(crate) fn encode_with_bulk<T: Serialize>(state: &T, bulk: &Bulk) -> Result<Vec<u8>> {
    encode_value(&to_vec(state)?, bulk)
}

/// `value`'s postcard encoding.
pub(crate) fn to_vec<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    postcard::to_allocvec(value)
        .map_err(|e| NeuralDagError::CorruptState(format!("cannot encode: {e}")))
}

/// A snapshot of an encoded postcard value and its bulk.
pub(crate) fn encode_value(value: &[u8], bulk: &Bulk) -> Result<Vec<u8>> {
    encode_value_as(value, bulk, FORMAT_VERSION)
}

/// [`encode_value`] as format `version` (6 or later: a value and its bulk).
pub(crate) fn encode_value_as(value: &[u8], bulk: &Bulk, version: u16) -> Result<Vec<u8>> {
    let n = u32::try_from(value.len()).map_err(|_| {
        NeuralDagError::CorruptState(format!("state of {} bytes is too large", value.len()))
    })?;
    let mut payload = Vec::with_capacity(4 + value.len() + bulk.bytes.len());
    payload.extend_from_slice(&n.to_le_bytes());
    payload.extend_from_slice(value);
    payload.extend_from_slice(&bulk.bytes);
    seal(payload, version)
}

/// Serialise `state` into a snapshot of format `version`: up to 5 one postcard value, from 6
/// the value and an empty bulk (tests write older versions with it; an optimizer's own layout
/// of format 7 is `Optimizer::snapshot`'s).
#[cfg(test)]
pub(crate) fn encode_as<T: Serialize>(state: &T, version: u16) -> Result<Vec<u8>> {
    if version >= 6 {
        return encode_value_as(&to_vec(state)?, &Bulk::new(), version);
    }
    let payload = postcard::to_allocvec(state)
        .map_err(|e| NeuralDagError::CorruptState(format!("cannot encode: {e}")))?;
    seal(payload, version)
}

/// The envelope around `payload`.
fn seal(payload: Vec<u8>, version: u16) -> Result<Vec<u8>> {
    let len = u32::try_from(payload.len()).map_err(|_| {
        NeuralDagError::CorruptState(format!("state of {} bytes is too large", payload.len()))
    })?;
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&checksum(version, &payload).to_le_bytes());
    out.extend_from_slice(&payload);
    Ok(out)
}

/// Read a snapshot written by [`encode`] (format 5, whose payload is the same value, or 6 and
/// later, a value and its bulk; a bulk is refused: this value has no vectors stored apart).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (version, payload) = open(bytes)?;
    if version < 5 {
        return Err(NeuralDagError::CorruptState(format!(
            "format version {version} is not supported here (this reads 5 to {FORMAT_VERSION})"
        )));
    }
    let (value, bulk) = parts(version, payload)?;
    let out = postcard::from_bytes(value)
        .map_err(|e| NeuralDagError::CorruptState(format!("payload does not decode: {e}")))?;
    bulk.finish()?;
    Ok(out)
}

/// A payload of format `version` (as [`open`] returned it) split into its postcard value and
/// its bulk (empty before format 6).
pub(crate) fn parts(version: u16, payload: &[u8]) -> Result<(&[u8], BulkReader<'_>)> {
    if version < 6 {
        return Ok((payload, BulkReader { rest: &[] }));
    }
    let bad = |m: alloc::string::String| Err(NeuralDagError::CorruptState(m));
    if payload.len() < 4 {
        return bad(format!(
            "a payload of {} bytes has no room for its value's length",
            payload.len()
        ));
    }
    let n = u32::from_le_bytes([payload[0], payload[1], payload[2], payload[3]]) as usize;
    let rest = &payload[4..];
    if n > rest.len() {
        return bad(format!(
            "the value is said to take {n} bytes, the payload has {} after its length",
            rest.len()
        ));
    }
    Ok((&rest[..n], BulkReader { rest: &rest[n..] }))
}

/// The vectors a writer stores apart from the postcard value (format 6): each as its count (u32
/// LE) and its numbers (f32 LE), in the order they were put.
#[derive(Default)]
pub(crate) struct Bulk {
    bytes: Vec<u8>,
}

impl Bulk {
    pub(crate) fn new() -> Self {
        Bulk::default()
    }

    /// Store `v` (the caller leaves it empty in the value it encodes).
    pub(crate) fn put(&mut self, v: &[f32]) {
        self.bytes.reserve(4 + 4 * v.len());
        self.bytes
            .extend_from_slice(&(v.len() as u32).to_le_bytes());
        for x in v {
            self.bytes.extend_from_slice(&x.to_le_bytes());
        }
    }
}

/// Reads a [`Bulk`] back, vector by vector, in the order it was written.
pub(crate) struct BulkReader<'a> {
    rest: &'a [u8],
}

impl BulkReader<'_> {
    /// Whether nothing (more) was stored apart.
    pub(crate) fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }

    /// The next vector; `what` names it in the error when the bulk ends early.
    pub(crate) fn next(&mut self, what: &str) -> Result<Vec<f32>> {
        let bad = |m: alloc::string::String| Err(NeuralDagError::CorruptState(m));
        if self.rest.len() < 4 {
            return bad(format!("the bulk ends before {what}"));
        }
        let n =
            u32::from_le_bytes([self.rest[0], self.rest[1], self.rest[2], self.rest[3]]) as usize;
        let body = &self.rest[4..];
        if body.len() / 4 < n {
            return bad(format!(
                "{what}: {n} numbers said, {} bytes left in the bulk",
                body.len()
            ));
        }
        let (numbers, rest) = body.split_at(4 * n);
        self.rest = rest;
        // Into a zeroed vector, four bytes at a time (measured faster than a collect over the
        // chunks: 71 against 82 us for a whole model in benches/model_load.rs).
        let mut out = alloc::vec![0f32; n];
        for (x, b) in out.iter_mut().zip(numbers.chunks_exact(4)) {
            *x = f32::from_bits(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        }
        Ok(out)
    }

    /// Fill `v` from the next vector: it must have come out of the value empty.
    pub(crate) fn fill(&mut self, what: &str, v: &mut Vec<f32>) -> Result<()> {
        if !v.is_empty() {
            return Err(NeuralDagError::CorruptState(format!(
                "{what} is in the value and in the bulk"
            )));
        }
        *v = self.next(what)?;
        Ok(())
    }

    /// Nothing may be left over.
    pub(crate) fn finish(self) -> Result<()> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(NeuralDagError::CorruptState(format!(
                "{} bytes of bulk nothing reads",
                self.rest.len()
            )))
        }
    }
}

/// Check a snapshot's envelope (magic, a readable version, length, checksum) and return its
/// version and payload.
pub fn open(bytes: &[u8]) -> Result<(u16, &[u8])> {
    let (version, payload) = open_unchecked(bytes)?;
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[12..20]);
    if u64::from_le_bytes(sum) != checksum(version, payload) {
        return Err(NeuralDagError::CorruptState(
            "checksum mismatch: the snapshot is corrupt".into(),
        ));
    }
    Ok((version, payload))
}

/// [`open`] without the payload's checksum (its caller checks what it reads of the payload
/// with a checksum of that part: a lean restore reads the head alone).
pub(crate) fn open_unchecked(bytes: &[u8]) -> Result<(u16, &[u8])> {
    let bad = |m: alloc::string::String| Err(NeuralDagError::CorruptState(m));
    if bytes.len() < HEADER {
        return bad(format!(
            "{} bytes is shorter than the {HEADER}-byte header",
            bytes.len()
        ));
    }
    if &bytes[..6] != MAGIC {
        return bad("not a ruvector_dag snapshot (wrong magic bytes)".into());
    }
    let version = u16::from_le_bytes([bytes[6], bytes[7]]);
    if !READABLE_VERSIONS.contains(&version) {
        return bad(format!(
            "format version {version} is not supported (this build reads {READABLE_VERSIONS:?})"
        ));
    }
    let len = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize;
    let payload = &bytes[HEADER..];
    if payload.len() != len {
        return bad(format!(
            "payload is {} bytes, the header says {len} (truncated?)",
            payload.len()
        ));
    }
    Ok((version, payload))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learning::{BtspMemory, CostEstimator, NeuralDagConfig};
    use crate::rng::SplitMix64;

    #[test]
    fn round_trip_and_every_kind_of_damage_is_named() {
        let cfg = NeuralDagConfig::default();
        let mut est = CostEstimator::new(&cfg, 3);
        est.observe(&[0.0625; 256], 1, 12.0);
        let bytes = encode(&est).unwrap();
        assert_eq!(decode::<CostEstimator>(&bytes).unwrap(), est);
        let msg = |r: Result<CostEstimator>| match r {
            Err(NeuralDagError::CorruptState(m)) => m,
            other => panic!("expected CorruptState, got {other:?}"),
        };
        assert!(msg(decode(&bytes[..10])).contains("header"));
        assert!(msg(decode(&bytes[..bytes.len() - 1])).contains("truncated"));
        let mut flipped = bytes.clone();
        let last = flipped.len() - 1;
        flipped[last] ^= 0x40;
        assert!(msg(decode(&flipped)).contains("checksum"));
        let mut foreign = bytes.clone();
        foreign[0] = b'X';
        assert!(msg(decode(&foreign)).contains("magic"));
        let mut future = bytes;
        future[6] = 9;
        assert!(msg(decode(&future)).contains("version 9"));
    }

    #[test]
    fn the_word_checksum_sees_every_byte_and_older_versions_keep_fnv() {
        let payload: Vec<u8> = (0..1003u32).map(|i| (i * 7 + 3) as u8).collect();
        let sum = checksum(5, &payload);
        for i in [0, 1, 7, 8, 500, 999, 1000, 1002] {
            let mut p = payload.clone();
            p[i] ^= 1;
            assert_ne!(checksum(5, &p), sum, "byte {i}");
        }
        // A zero tail padded out is not the same payload as a shorter one.
        assert_ne!(
            checksum(5, &payload[..1000]),
            checksum(5, &[&payload[..1000], &[0u8][..]].concat())
        );
        assert_eq!(checksum(4, &payload), fnv1a64(&payload));
        assert_ne!(checksum(4, &payload), sum);
        // A version 4 snapshot (FNV-1a) still opens; damage to it is still seen.
        let cfg = NeuralDagConfig::default();
        let est = CostEstimator::new(&cfg, 2);
        let old = encode_as(&est, 4).unwrap();
        assert_eq!(open(&old).unwrap().0, 4);
        let mut bad = old.clone();
        let last = bad.len() - 1;
        bad[last] ^= 2;
        assert!(open(&bad).is_err());
    }

    #[test]
    fn the_four_lane_checksum_sees_every_byte_and_is_not_format_5s() {
        let payload: Vec<u8> = (0..1003u32).map(|i| (i * 13 + 5) as u8).collect();
        let sum = checksum(6, &payload);
        // Each lane, the 32-byte blocks' last word, the tail past the last block.
        for i in [0, 8, 16, 24, 31, 32, 500, 991, 992, 999, 1002] {
            let mut p = payload.clone();
            p[i] ^= 1;
            assert_ne!(checksum(6, &p), sum, "byte {i}");
        }
        // Words swapped between lanes are another payload.
        let mut swapped = payload.clone();
        swapped[..8].copy_from_slice(&payload[8..16]);
        swapped[8..16].copy_from_slice(&payload[..8]);
        assert_ne!(checksum(6, &swapped), sum);
        assert_ne!(
            checksum(6, &payload[..1000]),
            checksum(6, &[&payload[..1000], &[0u8][..]].concat())
        );
        assert_ne!(checksum(5, &payload), sum);
        assert_ne!(checksum(6, &[]), checksum(6, &[0]));
    }

    #[test]
    fn a_bulk_reads_back_what_was_put_and_names_what_is_wrong() {
        let mut bulk = Bulk::new();
        bulk.put(&[1.5, -2.0, 0.0]);
        bulk.put(&[]);
        bulk.put(&[f32::MAX]);
        let bytes = encode_with_bulk(&7u32, &bulk).unwrap();
        let (version, payload) = open(&bytes).unwrap();
        assert_eq!(version, FORMAT_VERSION);
        let (value, mut r) = parts(version, payload).unwrap();
        assert_eq!(postcard::from_bytes::<u32>(value).unwrap(), 7);
        assert_eq!(r.next("a").unwrap(), [1.5, -2.0, 0.0]);
        let mut b = Vec::new();
        r.fill("b", &mut b).unwrap();
        assert!(b.is_empty());
        let mut c = alloc::vec![1.0];
        let msg = |e: NeuralDagError| match e {
            NeuralDagError::CorruptState(m) => m,
            other => panic!("expected CorruptState, got {other:?}"),
        };
        assert!(msg(r.fill("c", &mut c).unwrap_err()).contains("c is in the value and in the bulk"));
        let mut c = Vec::new();
        r.fill("c", &mut c).unwrap();
        assert_eq!(c, [f32::MAX]);
        assert!(r.is_empty());
        assert!(msg(r.next("d").unwrap_err()).contains("the bulk ends before d"));
        r.finish().unwrap();
        // A count past the end, bytes nothing reads, a value longer than the payload.
        let (_, payload) = open(&bytes).unwrap();
        let mut longer = payload.to_vec();
        let at = 4 + value.len();
        longer[at] = 9;
        let (_, mut r) = parts(6, &longer).unwrap();
        assert!(msg(r.next("W0").unwrap_err()).contains("W0: 9 numbers said"));
        let mut extra = payload.to_vec();
        extra.push(0);
        let (_, mut r) = parts(6, &extra).unwrap();
        for _ in 0..3 {
            r.next("x").unwrap();
        }
        assert!(msg(r.finish().unwrap_err()).contains("1 bytes of bulk nothing reads"));
        let mut short = payload.to_vec();
        short[0] = 200;
        assert!(msg(parts(6, &short).err().unwrap()).contains("said to take 200 bytes"));
        assert!(msg(parts(6, &[1, 0]).err().unwrap()).contains("no room"));
        // A value with a bulk is refused by the plain decoder (it expects none).
        assert!(msg(decode::<u32>(&bytes).unwrap_err()).contains("bulk nothing reads"));
        // Format 5 (one postcard value) is still decoded.
        assert_eq!(decode::<u32>(&encode_as(&7u32, 5).unwrap()).unwrap(), 7);
        assert_eq!(decode::<u32>(&encode(&7u32).unwrap()).unwrap(), 7);
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = SplitMix64::new(77);
        let good = encode(&BtspMemory::new(4, 3.0, 0.9)).unwrap();
        for i in 0..5000 {
            let len = rng.below(200);
            let mut b: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
            if i % 2 == 0 && len >= HEADER {
                // Valid header, random payload: exercises the postcard decoder too.
                let payload = b[HEADER..].to_vec();
                b[..6].copy_from_slice(MAGIC);
                b[6..8].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
                b[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
                b[12..20].copy_from_slice(&checksum(FORMAT_VERSION, &payload).to_le_bytes());
            }
            let _ = decode::<BtspMemory>(&b);
            let _ = decode::<CostEstimator>(&b);
        }
        assert!(decode::<BtspMemory>(&good).is_ok());
    }
}
