//! Criterion benches of the learning layer against DESIGN.md's targets: pattern match (top 5 of
//! 1,000 patterns, < 50 us), MicroLoRA forward (< 5 us) and update, trajectory record
//! (< 5 us), a background cycle on 1,000 trajectories (< 250 ms), `decide` end to end on a
//! 100-node plan, and the snapshot at 1,000 patterns (size printed, encode/decode timed).
//!
//! `cargo bench -p ruvector-dag-core --bench learning`

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use ruvector_dag_core::learning::{
    CostEstimator, Exploration, NeuralDagConfig, Optimizer, TrajectoryBuffer,
};
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::PlanDag;

fn arms() -> Vec<String> {
    (0..8).map(|i| format!("arm{i}")).collect()
}

fn plans(seed: u64, count: usize) -> Vec<PlanDag> {
    (0..count as u64)
        .map(|i| {
            random_plan(
                seed * 1_000_003 + i,
                10 + (i as usize * 13) % 50,
                SynthOptions::default(),
            )
        })
        .collect()
}

/// Decide and observe every plan once (arm and latency from the plan's index).
fn feed(opt: &mut Optimizer, plans: &[PlanDag]) {
    for (i, p) in plans.iter().enumerate() {
        let d = opt.decide(p).expect("decide");
        let arm = (i % 8) as u8;
        let t = opt
            .trajectory(&d, arm, None, 1.0 + (i % 97) as f32)
            .expect("trajectory");
        opt.observe(t).expect("observe");
    }
}

/// An optimizer whose bank holds about `patterns` patterns, learned from distinct plans.
fn trained(patterns: usize) -> Optimizer {
    let mut opt = Optimizer::new(NeuralDagConfig::default(), arms()).expect("optimizer");
    let mut round = 1;
    while opt.bank().patterns().len() < patterns && round < 40 {
        feed(&mut opt, &plans(round, 1000));
        opt.learn_cycle().expect("cycle");
        round += 1;
    }
    opt
}

fn learning(c: &mut Criterion) {
    let mut opt = trained(1000);
    let n_patterns = opt.bank().patterns().len();
    let probe = random_plan(424_242, 100, SynthOptions::default());
    let d = opt.decide(&probe).expect("decide");

    let mut g = c.benchmark_group("learning");
    g.bench_function(
        format!("pattern match top-5 of {n_patterns} (HDC pre-filter)"),
        |b| b.iter(|| black_box(opt.bank().search(black_box(&d.key), Some(&d.hdc), 5).len())),
    );
    g.bench_function(
        format!("pattern match top-5 of {n_patterns} (exhaustive cosine)"),
        |b| b.iter(|| black_box(opt.bank().search(black_box(&d.key), None, 5).len())),
    );

    let cfg = NeuralDagConfig::default();
    let mut est = CostEstimator::new(&cfg, 8);
    g.bench_function("MicroLoRA forward (one arm)", |b| {
        b.iter(|| black_box(est.predict_ms(black_box(&d.input), 3)))
    });
    g.bench_function("MicroLoRA forward (all 8 arms)", |b| {
        b.iter(|| black_box(est.predict_all_ms(black_box(&d.input))))
    });
    g.bench_function("MicroLoRA update (one observation)", |b| {
        b.iter(|| black_box(est.observe(black_box(&d.input), 3, 12.5)))
    });

    let traj = opt.trajectory(&d, 2, None, 8.0).expect("trajectory");
    let mut ring = TrajectoryBuffer::new(10_000);
    g.bench_function("trajectory record (ring push, incl. clone)", |b| {
        b.iter(|| black_box(ring.record(traj.clone())))
    });
    g.bench_function("decide, 100-node plan (embedding cached)", |b| {
        b.iter(|| black_box(opt.decide(black_box(&probe)).map(|d| d.arm)))
    });
    // 1,024 distinct plans cycled through a 512-entry cache: every decide misses.
    let distinct: Vec<PlanDag> = (0..1024)
        .map(|i| random_plan(900_000 + i, 100, SynthOptions::default()))
        .collect();
    let mut next = 0;
    g.bench_function("decide, 100-node plan (not cached)", |b| {
        b.iter(|| {
            next = (next + 1) % distinct.len();
            black_box(opt.decide(black_box(&distinct[next])).map(|d| d.arm))
        })
    });
    // What the extension does for every statement it considers, on a small plan (the common
    // case: a 5-node join with measured actuals).
    let small = random_plan(4_242, 5, SynthOptions::default());
    g.bench_function("decide, 5-node plan (embedding cached)", |b| {
        b.iter(|| black_box(opt.decide(black_box(&small)).map(|d| d.arm)))
    });
    let small_distinct: Vec<PlanDag> = (0..1024)
        .map(|i| random_plan(700_000 + i, 5, SynthOptions::default()))
        .collect();
    let mut next = 0;
    g.bench_function("decide, 5-node plan (not cached)", |b| {
        b.iter(|| {
            next = (next + 1) % small_distinct.len();
            black_box(opt.decide(black_box(&small_distinct[next])).map(|d| d.arm))
        })
    });
    // What a later statement of a session costs in the extension's planner hook (learn and
    // frozen decide lean: the key embedding, BTSP recall per arm, the evidence rules; no cost
    // model, no pattern search), on plans of the TPC-H templates' size (10-30 nodes) and on the
    // 5-node join, each distinct (no embedding cached).
    let mid_distinct: Vec<PlanDag> = (0..1024)
        .map(|i| {
            random_plan(
                800_000 + i,
                10 + (i as usize * 7) % 21,
                SynthOptions::default(),
            )
        })
        .collect();
    for (name, distinct) in [
        ("decide_lean, 10-30-node plan (not cached)", &mid_distinct),
        ("decide_lean, 5-node plan (not cached)", &small_distinct),
    ] {
        let mut next = 0;
        g.bench_function(name, |b| {
            b.iter(|| {
                next = (next + 1) % distinct.len();
                black_box(
                    opt.decide_lean(black_box(&distinct[next]), Exploration::Explorer)
                        .map(|d| d.arm),
                )
            })
        });
    }
    let ds = opt.decide(&small).expect("decide");
    // The executed plan as the extension reads it after a node-timed run: the same plan with
    // measured rows and times per node (embedded, and its time shares computed).
    let executed = random_plan(
        4_242,
        5,
        SynthOptions {
            with_actuals: true,
            ..SynthOptions::default()
        },
    );
    assert_eq!(executed.shape_hash(), small.shape_hash());
    assert!(
        executed.measured_shares().is_some(),
        "the executed plan carries actuals"
    );
    g.bench_function("trajectory with the executed 5-node plan (measured)", |b| {
        b.iter(|| {
            black_box(
                opt.trajectory(&ds, 0, Some(&executed), 3.0)
                    .map(|t| t.op_shares.len()),
            )
        })
    });
    let ts = opt
        .trajectory(&ds, 0, Some(&executed), 3.0)
        .expect("trajectory");
    g.bench_function("trajectory encode (postcard, the ring record)", |b| {
        b.iter(|| black_box(postcard::to_allocvec(black_box(&ts)).map(|v| v.len())))
    });
    // The live case: the trained optimizer (a copy), a statement whose shape it knows (its
    // evidence, a matching pattern, the selector's record, BTSP memory), a trajectory of a
    // non-default arm with the executed plan measured.
    let mut observer = Optimizer::restore(&opt.snapshot().expect("snapshot")).expect("restore");
    // The first training plan close enough to its pattern for observe to update it.
    let live = (0..1000u64)
        .find_map(|i| {
            let size = 10 + (i as usize * 13) % 50;
            let known = random_plan(1_000_003 + i, size, SynthOptions::default());
            let executed = random_plan(
                1_000_003 + i,
                size,
                SynthOptions {
                    with_actuals: true,
                    ..SynthOptions::default()
                },
            );
            let dk = observer.decide(&known).ok()?;
            let t = observer.trajectory(&dk, 3, Some(&executed), 9.0).ok()?;
            t.pattern.is_some().then_some(t)
        })
        .expect("a training plan that matches its pattern");
    assert!(
        live.pattern.is_some(),
        "the statement matches a learned pattern"
    );
    assert!(!live.op_shares.is_empty());
    g.bench_function(
        "observe (evidence, selector, MicroLoRA, BTSP, pattern, history, ring)",
        |b| {
            b.iter_batched(
                || live.clone(),
                |t| black_box(observer.observe(t).map(|o| o.quality)),
                BatchSize::SmallInput,
            )
        },
    );
    g.finish();

    // A background cycle on 1,000 fresh trajectories, without and with 2,000 replayed ones.
    let base = Optimizer::new(NeuralDagConfig::default(), arms()).expect("optimizer");
    let fresh = base.snapshot().expect("snapshot");
    let batch = plans(77, 1000);
    let mut g = c.benchmark_group("learn_cycle");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("1,000 trajectories", |b| {
        b.iter_batched(
            || {
                let mut o = Optimizer::restore(&fresh).expect("restore");
                feed(&mut o, &batch);
                o
            },
            |mut o| black_box(o.learn_cycle().map(|r| r.patterns)),
            BatchSize::LargeInput,
        )
    });
    g.bench_function("1,000 trajectories + 2,000 replayed", |b| {
        b.iter_batched(
            || {
                let mut o = Optimizer::restore(&fresh).expect("restore");
                feed(&mut o, &plans(78, 2000));
                o.learn_cycle().expect("cycle");
                feed(&mut o, &batch);
                o
            },
            |mut o| black_box(o.learn_cycle().map(|r| r.patterns)),
            BatchSize::LargeInput,
        )
    });
    g.finish();

    let bytes = opt.snapshot().expect("snapshot");
    println!(
        "snapshot at {n_patterns} patterns: {} bytes ({:.1} KiB)",
        bytes.len(),
        bytes.len() as f64 / 1024.0
    );
    let mut g = c.benchmark_group("snapshot");
    g.bench_function(format!("encode, {n_patterns} patterns"), |b| {
        b.iter(|| black_box(opt.snapshot().map(|b| b.len())))
    });
    g.bench_function(format!("decode + check, {n_patterns} patterns"), |b| {
        b.iter(|| black_box(Optimizer::restore(black_box(&bytes)).map(|o| o.pending())))
    });
    g.finish();
}

criterion_group!(benches, learning);
criterion_main!(benches);
