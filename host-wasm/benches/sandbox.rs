//! The sandbox's costs (DESIGN goals: a sandboxed call within 2x of the same algorithm native on a
//! 100-node plan, the fixed per-call overhead under 20 us):
//! - `call/100 nodes`: the built-in ensemble native (on a built DAG, and along the guest's own
//!   path: decode the request, build the DAG, attend, encode) vs the same code as a plugin;
//! - `call/1 node`: a call that does almost nothing (the fixed overhead: a fresh instance, the
//!   request copied in, the response validated);
//! - `load`: validating and compiling a module (cold), and loading it again (cache hit).
//!
//! The modules come from crate `ruvector-dag-plugin-modules` (its build script compiles them).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use ruvector_dag_core::attention::{mechanism, AttentionKind, Ensemble};
use ruvector_dag_core::plugin_abi::{guest_respond, AttendRequest, GuestCache};
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::{AttentionConfig, AttentionContext, OpKind, PlanDag, PlanNode};
use ruvector_dag_wasm::{Limits, Sandbox};

fn module(name: &str) -> Vec<u8> {
    ruvector_dag_plugin_modules::expect(name).to_vec()
}

fn bench(c: &mut Criterion) {
    let cfg = AttentionConfig::default();
    let ctx = AttentionContext::default();
    let plan = random_plan(42, 100, SynthOptions::default());
    let native = mechanism(AttentionKind::Ensemble, &cfg).unwrap();
    let mut sandbox = Sandbox::new(Limits::default()).unwrap();
    let ensemble_wasm = module("ensemble");
    let ensemble = sandbox.load("ensemble", &ensemble_wasm).unwrap();
    let misestimate = sandbox.load("misestimate", &module("misestimate")).unwrap();

    let mut g = c.benchmark_group("call");
    g.bench_function("100 nodes/ensemble native", |b| {
        b.iter(|| native.attend(black_box(&plan), &ctx).unwrap())
    });
    let request = AttendRequest::new(&plan, &ctx, &cfg).encode().unwrap();
    let mut cache = GuestCache::new();
    g.bench_function("100 nodes/ensemble native, the guest's path", |b| {
        b.iter(|| guest_respond(black_box(&request), &mut cache, Ensemble::new))
    });
    g.bench_function("100 nodes/ensemble sandboxed", |b| {
        b.iter(|| {
            sandbox
                .attend(&ensemble, black_box(&plan), &ctx, &cfg)
                .unwrap()
        })
    });
    let one = PlanDag::new(vec![PlanNode::new(OpKind::SeqScan, 10.0, 1.0)], vec![]).unwrap();
    g.bench_function("1 node/misestimate sandboxed (fixed overhead)", |b| {
        b.iter(|| {
            sandbox
                .attend(&misestimate, black_box(&one), &ctx, &cfg)
                .unwrap()
        })
    });
    g.finish();

    let mut g = c.benchmark_group("load");
    g.sample_size(10);
    g.bench_function("ensemble cold (validate + compile)", |b| {
        b.iter(|| {
            let mut fresh = Sandbox::new(Limits::default()).unwrap();
            fresh.load("ensemble", black_box(&ensemble_wasm)).unwrap()
        })
    });
    g.bench_function("ensemble cache hit", |b| {
        b.iter(|| sandbox.load("ensemble", black_box(&ensemble_wasm)).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
