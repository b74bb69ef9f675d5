//! The versioned envelope of persisted learned state: magic, format version, payload length and
//! a checksum ([`checksum`]) around a postcard payload. Corrupt, truncated or foreign bytes are a
//! [`NeuralDagError::CorruptState`] naming what is wrong, never a panic or a silent reset.

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
pub fn checksum(version: u16, payload: &[u8]) -> u64 {
    if version < 5 {
        return fnv1a64(payload);
    }
    const PRIME: u64 = 0x0000_0100_0000_01B3;
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

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 6] = b"RVDAG\0";
/// Current format version. 5: the checksum reads the payload eight bytes at a time
/// ([`checksum`]; a backend checks every snapshot it loads, and the byte-wise FNV-1a of 2 to 4
/// took a quarter of restoring one); 4: the optimizer's payload also carries the attention selector's
/// statistics of plugins; 3: it carries the attention kinds' reference centres beside the state
/// (a backend that restores it does not recompute them); 2: the state alone. 2 to 4 are still
/// read.
pub const FORMAT_VERSION: u16 = 5;
/// Versions [`open`] accepts.
pub const READABLE_VERSIONS: [u16; 4] = [2, 3, 4, 5];
const HEADER: usize = 6 + 2 + 4 + 8;

/// Serialise `state` into a snapshot.
pub fn encode<T: Serialize>(state: &T) -> Result<Vec<u8>> {
    encode_as(state, FORMAT_VERSION)
}

/// Serialise `state` into a snapshot that says `version` (tests write older versions with it).
pub(crate) fn encode_as<T: Serialize>(state: &T, version: u16) -> Result<Vec<u8>> {
    let payload = postcard::to_allocvec(state)
        .map_err(|e| NeuralDagError::CorruptState(format!("cannot encode: {e}")))?;
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

/// Read a snapshot written by [`encode`] (the current version only).
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (version, payload) = open(bytes)?;
    if version != FORMAT_VERSION {
        return Err(NeuralDagError::CorruptState(format!(
            "format version {version} is not supported here (this reads {FORMAT_VERSION})"
        )));
    }
    postcard::from_bytes(payload)
        .map_err(|e| NeuralDagError::CorruptState(format!("payload does not decode: {e}")))
}

/// Check a snapshot's envelope (magic, a readable version, length, checksum) and return its
/// version and payload.
pub fn open(bytes: &[u8]) -> Result<(u16, &[u8])> {
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
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[12..20]);
    if u64::from_le_bytes(sum) != checksum(version, payload) {
        return bad("checksum mismatch: the snapshot is corrupt".into());
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
