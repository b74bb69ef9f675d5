//! Snapshot decode (what `ruvector_dag_import(bytea)` and the learned-state table feed in): any
//! bytes restore to an optimizer that works, or to a CorruptState / InvalidConfig error.
//!
//! Raw inputs rarely get past the envelope's checksum, so half the inputs are edits to a real
//! snapshot (an optimizer that learned a little) behind a recomputed checksum: what a hostile
//! `ruvector_dag_import` could craft.
#![no_main]
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ruvector_dag_core::learning::snapshot::{checksum, FORMAT_VERSION, MAGIC};
use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_core::synth::{random_plan, SynthOptions};

const HEADER: usize = 20;

fn base() -> &'static [u8] {
    static BASE: OnceLock<Vec<u8>> = OnceLock::new();
    BASE.get_or_init(|| {
        let arms = ["default", "enable_nestloop=off", "enable_hashjoin=off"]
            .map(String::from)
            .to_vec();
        let mut opt = Optimizer::new(NeuralDagConfig::default(), arms).expect("optimizer");
        for i in 0..24u64 {
            let dag = random_plan(i % 3, 10 + (i % 5) as usize, SynthOptions::default());
            if let Ok(d) = opt.decide(&dag) {
                if let Ok(t) = opt.trajectory(&d, (i % 3) as u8, None, 10.0 + i as f32) {
                    let _ = opt.observe(t);
                }
            }
        }
        let _ = opt.learn_cycle();
        opt.snapshot().expect("snapshot")
    })
}

fn exercise(bytes: &[u8]) {
    if let Ok(mut opt) = Optimizer::restore(bytes) {
        let dag = random_plan(7, 12, SynthOptions::default());
        if let Ok(d) = opt.decide(&dag) {
            if let Ok(t) = opt.trajectory(&d, 0, None, 12.5) {
                let _ = opt.observe(t);
            }
        }
        let _ = opt.learn_cycle();
        let _ = opt.snapshot();
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, edits)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        exercise(edits);
        return;
    }
    let mut payload = base()[HEADER..].to_vec();
    for e in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) * 7 % payload.len();
        payload[at] = e[2];
    }
    if mode & 2 == 2 && !payload.is_empty() {
        let keep = usize::from(mode) * payload.len() / 256;
        payload.truncate(keep);
    }
    let mut forged = Vec::with_capacity(HEADER + payload.len());
    forged.extend_from_slice(MAGIC);
    forged.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    forged.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    forged.extend_from_slice(&checksum(FORMAT_VERSION, &payload).to_le_bytes());
    forged.extend_from_slice(&payload);
    exercise(&forged);
});
