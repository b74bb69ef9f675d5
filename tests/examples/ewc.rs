//! EWC++ on the simulator: learn templates A, then B; error on A and B with and without EWC.
use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_tests::sim::*;

fn main() {
    let ts = templates(7, 30);
    let (a, b) = ts.split_at(15);
    let held_a = held_out(a, 200, 11);
    let held_b = held_out(b, 200, 12);
    let lambdas: Vec<f32> = std::env::args()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    for lambda in lambdas {
        let cfg = NeuralDagConfig {
            ewc_lambda: lambda,
            ewc_max_lambda: (lambda * 7.5).max(lambda),
            ..Default::default()
        };
        let opt = Optimizer::new(cfg, arm_names()).unwrap();
        let r1 = run_with(opt, a, 3000, 500, 1, &held_a);
        let (a1, b1) = (
            held_out_error(&r1.optimizer, &held_a),
            held_out_error(&r1.optimizer, &held_b),
        );
        let r2 = run_with(r1.optimizer, b, 3000, 500, 2, &held_a);
        let (a2, b2) = (
            held_out_error(&r2.optimizer, &held_a),
            held_out_error(&r2.optimizer, &held_b),
        );
        println!(
            "lambda {lambda}: A {a1:.3} -> {a2:.3} ({:.2}x), B {b1:.3} -> {b2:.3}",
            a2 / a1
        );
    }
}
