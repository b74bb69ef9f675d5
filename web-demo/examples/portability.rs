//! The native half of the portability figure: each workload of `ruvector_dag_web::WORKLOADS`
//! on 100- and 1,000-node plans, timed like criterion does it (warm-up, then batches until
//! about 0.3 s, the median of the batches' per-call time), printed as JSON for
//! `bench/portability.mjs`, which times the same code as wasm in node and prints the ratio.
//! `cargo run --release -p ruvector-dag-web --example portability > native.json`
use std::time::Instant;

use ruvector_dag_web::{run_workload_native, WORKLOADS};

fn per_call_us(workload: &str, nodes: usize) -> f64 {
    run_workload_native(workload, nodes, 3).expect("workload");
    // Batch size: about 10 ms per batch.
    let t = Instant::now();
    run_workload_native(workload, nodes, 1).expect("workload");
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let batch = ((0.01 / one) as u32).clamp(1, 100_000);
    let mut samples = Vec::new();
    let start = Instant::now();
    while samples.len() < 5 || (start.elapsed().as_secs_f64() < 0.3 && samples.len() < 200) {
        let t = Instant::now();
        std::hint::black_box(run_workload_native(workload, nodes, batch).expect("workload"));
        samples.push(t.elapsed().as_secs_f64() * 1e6 / f64::from(batch));
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn main() {
    let mut out = Vec::new();
    for nodes in [100, 1000] {
        for w in WORKLOADS {
            out.push(
                serde_json::json!({"workload": w, "nodes": nodes, "us": per_call_us(w, nodes)}),
            );
        }
    }
    println!("{}", serde_json::Value::Array(out));
}
