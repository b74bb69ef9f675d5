//! 100,000 distinct query shapes (each run twice: the default plan first, then what the
//! optimizer decides) through the optimizer with its shipped settings: patterns,
//! BTSP engrams, shapes with evidence, snapshot bytes, `decide` time and this process's
//! resident memory after each learning cycle (every 10,000 queries).
//!
//! `cargo run --release -p ruvector-dag-tests --example scale [queries]` (200,000 by default)

use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_tests::sim::{arm_names, distinct_shapes};

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200_000);
    let cfg = NeuralDagConfig::default();
    println!(
        "capacities: shapes {}, patterns {}, BTSP engrams {}; process RSS at start {} KiB",
        cfg.max_trajectories,
        cfg.pattern_capacity,
        cfg.btsp_capacity,
        rss_kib()
    );
    println!("queries  patterns  engrams  shapes  snapshot_bytes  decide_us  rss_kib");
    let t0 = std::time::Instant::now();
    let opt = Optimizer::new(cfg, arm_names()).expect("optimizer");
    distinct_shapes(opt, n, 2, 10_000, 3, |p, _| {
        println!(
            "{:>7}  {:>8}  {:>7}  {:>6}  {:>14}  {:>9.1}  {:>7}",
            p.queries,
            p.patterns,
            p.engrams,
            p.shapes,
            p.snapshot_bytes,
            p.decide_us,
            rss_kib()
        );
    });
    println!("{n} queries in {:.0} s", t0.elapsed().as_secs_f64());
}
