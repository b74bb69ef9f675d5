//! Criterion benches of the core's hot paths, against DESIGN.md's targets:
//! every attention kind on 100- and 1,000-node plans (< 100 us / < 2 ms), the plan embedding,
//! the s-t min cut at 1,000 nodes (< 2 ms), Stoer-Wagner, HDC encoding (< 20 us).
//!
//! `cargo bench -p ruvector-dag-core --bench attention`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ruvector_dag_core::attention::mechanism;
use ruvector_dag_core::hdc::HdcEncoder;
use ruvector_dag_core::mincut::{plan_global_min_cut, plan_min_cut};
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::{embed, AttentionConfig, AttentionContext, AttentionKind, OpKind, PlanDag};

fn plan(n: usize) -> PlanDag {
    random_plan(
        42,
        n,
        SynthOptions {
            share_probability: 0.05,
            with_actuals: true,
        },
    )
}

fn history(n: usize) -> Vec<Vec<f32>> {
    let mut rng = SplitMix64::new(7);
    (0..8)
        .map(|_| {
            let raw: Vec<f32> = (0..n).map(|_| rng.next_f32()).collect();
            let s: f32 = raw.iter().sum();
            raw.iter().map(|x| x / s).collect()
        })
        .collect()
}

fn attention(c: &mut Criterion) {
    let cfg = AttentionConfig::default();
    let mut g = c.benchmark_group("attention");
    for n in [100usize, 1000] {
        let dag = plan(n);
        let hist = history(n);
        for kind in AttentionKind::ALL {
            let m = mechanism(kind, &cfg).expect("default config is valid");
            let ctx = AttentionContext {
                history: &hist,
                ..Default::default()
            };
            g.bench_with_input(BenchmarkId::new(kind.name(), n), &dag, |b, dag| {
                b.iter(|| m.attend(black_box(dag), &ctx).expect("attend"))
            });
        }
    }
    g.finish();
}

fn embedding(c: &mut Criterion) {
    let dag = plan(100);
    let m = mechanism(AttentionKind::Topological, &AttentionConfig::default()).expect("valid");
    let a = m
        .attend(&dag, &AttentionContext::default())
        .expect("attend");
    c.bench_function("embed/100", |b| {
        b.iter(|| embed(black_box(&dag), &a).expect("embed"))
    });
}

fn mincut(c: &mut Criterion) {
    let dag = plan(1000);
    c.bench_function("mincut/st_dinic/1000", |b| {
        b.iter(|| plan_min_cut(black_box(&dag)))
    });
    c.bench_function("mincut/global_stoer_wagner/1000", |b| {
        b.iter(|| plan_global_min_cut(black_box(&dag)).expect("cut"))
    });
    let small = plan(100);
    c.bench_function("mincut/st_dinic/100", |b| {
        b.iter(|| plan_min_cut(black_box(&small)))
    });
}

fn hdc(c: &mut Criterion) {
    let enc = HdcEncoder::default();
    c.bench_function("hdc/encode_node", |b| {
        b.iter(|| enc.encode_node(black_box(OpKind::HashJoin), black_box(5)))
    });
    let dag = plan(100);
    c.bench_function("hdc/fingerprint/100", |b| {
        b.iter(|| enc.fingerprint(black_box(&dag)))
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().warm_up_time(Duration::from_millis(500)).measurement_time(Duration::from_secs(2)).sample_size(30);
    targets = attention, embedding, mincut, hdc
}
criterion_main!(benches);
