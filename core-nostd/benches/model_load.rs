//! What a backend pays to load the learned model on a session's first in-scope statement: a
//! model snapshot (`Optimizer::snapshot_model`) restored with the process's shared attention
//! machinery (`Optimizer::restore_sharing`, what the extension does from its shared-memory
//! cache), split into the envelope check (magic, length, checksum) and the whole restore; and
//! the lean restore a backend that decides without the model's view does (`restore_lean`).
//!
//! `cargo bench -p ruvector-dag-core --bench model_load`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ruvector_dag_core::learning::{snapshot, NeuralDagConfig, Optimizer};
use ruvector_dag_core::synth::{random_plan, SynthOptions};

/// A model that has trained (the EWC anchor and the consolidated heads are filled) on 22 query
/// shapes run 10 times each, as a learner's on TPC-H after its first cycles; `measured`: each
/// run with its executed plan measured per node, as a node-timed run is, so each shape's
/// history of operator time shares (what temporal attention reads) is full.
fn trained(measured: bool) -> Optimizer {
    let arms: Vec<String> = (0..8).map(|i| format!("arm{i}")).collect();
    let mut opt = Optimizer::new(NeuralDagConfig::default(), arms).expect("optimizer");
    for _cycle in 0..2 {
        for i in 0..110u64 {
            let size = 10 + (i % 22) as usize;
            let p = random_plan(i % 22, size, SynthOptions::default());
            let executed = measured.then(|| {
                random_plan(
                    i % 22,
                    size,
                    SynthOptions {
                        with_actuals: true,
                        ..SynthOptions::default()
                    },
                )
            });
            let d = opt.decide(&p).expect("decide");
            let arm = (i % 8) as u8;
            let t = opt
                .trajectory(&d, arm, executed.as_ref(), 5.0 + (i % 31) as f32)
                .expect("trajectory");
            opt.observe(t).expect("observe");
        }
        opt.learn_cycle().expect("cycle");
    }
    opt
}

/// The postcard size of `v`.
fn size<T: serde::Serialize>(v: &T) -> usize {
    postcard::to_allocvec(v).map_or(0, |b| b.len())
}

fn model_load(c: &mut Criterion) {
    let opt = trained(false);
    let bytes = opt.snapshot_model().expect("snapshot");
    println!(
        "model snapshot: {} bytes ({:.1} KiB)",
        bytes.len(),
        bytes.len() as f64 / 1024.0
    );
    let machinery = opt.machinery().clone();
    let mut g = c.benchmark_group("model_load");
    g.bench_function("envelope check (magic, length, checksum)", |b| {
        b.iter(|| black_box(snapshot::open(black_box(&bytes)).map(|(v, p)| (v, p.len()))))
    });
    g.bench_function("restore_sharing (decode + check)", |b| {
        b.iter(|| {
            black_box(
                Optimizer::restore_sharing(black_box(&bytes), &machinery).map(|o| o.pending()),
            )
        })
    });
    g.bench_function(
        "restore_lean (the head alone: no cost model, no patterns)",
        |b| {
            b.iter(|| {
                black_box(
                    Optimizer::restore_lean(black_box(&bytes), &machinery).map(|o| o.pending()),
                )
            })
        },
    );
    // The same with every shape's history full (node-timed runs): what of the head is what.
    let measured = trained(true);
    let shapes: Vec<u64> = (0..22u64)
        .map(|i| random_plan(i, 10 + i as usize, SynthOptions::default()).shape_hash())
        .collect();
    let history: usize = shapes.iter().map(|&f| size(&measured.history(f))).sum();
    let with_history = measured.snapshot_model().expect("snapshot");
    println!(
        "with history: model snapshot {} bytes; of its head: BTSP memory {} bytes, evidence {}, \
         history {} ({} runs), selector {}",
        with_history.len(),
        size(measured.btsp()),
        size(measured.evidence()),
        history,
        shapes
            .iter()
            .map(|&f| measured.history(f).len())
            .sum::<usize>(),
        size(measured.selector()),
    );
    let machinery = measured.machinery().clone();
    g.bench_function("restore_lean, every shape's history full", |b| {
        b.iter(|| {
            black_box(
                Optimizer::restore_lean(black_box(&with_history), &machinery).map(|o| o.pending()),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, model_load);
criterion_main!(benches);
