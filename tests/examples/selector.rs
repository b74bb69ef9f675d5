use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_core::AttentionKind;
use ruvector_dag_tests::sim::*;

fn main() {
    for seed in [4u64, 5, 6, 7, 8] {
        let ts = temporal_family(seed, 10);
        let opt = Optimizer::new(NeuralDagConfig::default(), arm_names()).unwrap();
        let r = run_queries(opt, &ts, temporal_query, 8000, 500, seed, &[]);
        let s = r.optimizer.selector();
        print!("seed {seed}: best {:?} | ", s.best());
        let m = s.mechanism_means();
        for k in AttentionKind::ALL {
            print!(
                "{}={}({:.3}) ",
                k.name(),
                s.pulls(k),
                if k.index() < 7 { m[k.index()] } else { 0.0 }
            );
        }
        println!();
    }
}
