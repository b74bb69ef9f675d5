//! The versioned envelope of persisted learned state: magic, format version, payload length and
//! an FNV-1a checksum around a postcard payload. Corrupt, truncated or foreign bytes are a
//! [`NeuralDagError::CorruptState`] naming what is wrong, never a panic or a silent reset.

use alloc::format;
use alloc::vec::Vec;
use serde::{de::DeserializeOwned, Serialize};

use crate::error::{NeuralDagError, Result};
use crate::rng::fnv1a64;

/// First bytes of every snapshot.
pub const MAGIC: &[u8; 6] = b"RVDAG\0";
/// Current format version. 4: the optimizer's payload also carries the attention selector's
/// statistics of plugins; 3: it carries the attention kinds' reference centres beside the state
/// (a backend that restores it does not recompute them); 2: the state alone. 2 and 3 are still
/// read.
pub const FORMAT_VERSION: u16 = 4;
/// Versions [`open`] accepts.
pub const READABLE_VERSIONS: [u16; 3] = [2, 3, 4];
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
    out.extend_from_slice(&fnv1a64(&payload).to_le_bytes());
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
    if u64::from_le_bytes(sum) != fnv1a64(payload) {
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
                b[12..20].copy_from_slice(&fnv1a64(&payload).to_le_bytes());
            }
            let _ = decode::<BtspMemory>(&b);
            let _ = decode::<CostEstimator>(&b);
        }
        assert!(decode::<BtspMemory>(&good).is_ok());
    }
}
