use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_tests::sim::*;
fn main() {
    let ts = templates(7, 30);
    let (a, b) = ts.split_at(15);
    let held_a = held_out(a, 200, 11);
    let opt = Optimizer::new(NeuralDagConfig::default(), arm_names()).unwrap();
    let r1 = run_with(opt, a, 3000, 500, 1, &held_a);
    println!("after A {:.3}", held_out_error(&r1.optimizer, &held_a));
    let r2 = run_with(r1.optimizer, b, 499, 500, 2, &[]);
    println!(
        "after 499 B observes (no cycle) {:.3}",
        held_out_error(&r2.optimizer, &held_a)
    );
    let mut o = r2.optimizer;
    o.learn_cycle().unwrap();
    println!("after first B cycle {:.3}", held_out_error(&o, &held_a));
}
