//! Run the simulated workload (the one `tests/simulator.rs` asserts on) and show what the
//! optimizer did: totals, per-template arms in the last 20%, and a few decisions with reasons.
//!
//! `cargo run --release -p ruvector-dag-tests --example simulate`

use ruvector_dag_core::learning::NeuralDagConfig;
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_tests::sim::*;

fn main() {
    let ts = templates(7, 30);
    let held = held_out(&ts, 300, 99);
    let t0 = std::time::Instant::now();
    let r = run(NeuralDagConfig::default(), &ts, 10_000, 500, 1, &held);
    let elapsed = t0.elapsed();
    let (c, d, o) = totals(&r.records[5000..]);
    println!(
        "10,000 queries in {:.1} s: last half {:.3}x oracle, {:.3}x always-default",
        elapsed.as_secs_f64(),
        c / o,
        c / d
    );
    let errors: Vec<String> = r.held_out.iter().map(|x| format!("{x:.2}")).collect();
    println!("held-out log error after each cycle: {}", errors.join(" "));
    println!(
        "\ntemplate  family        last-20% vs default  arms run in the last 20%   hidden factors"
    );
    let tail = &r.records[8000..];
    for t in &ts {
        let rs: Vec<Record> = tail
            .iter()
            .filter(|x| x.template == t.id)
            .copied()
            .collect();
        let (c, d, _) = totals(&rs);
        let mut arms = [0; 8];
        rs.iter().for_each(|x| arms[x.arm as usize] += 1);
        let f: Vec<String> = t.factors.iter().map(|f| format!("{f:.2}")).collect();
        println!(
            "t{:02}       {:<13} {:>6.3}x              {:<26} {}",
            t.id,
            format!("{:?}", t.family),
            c / d,
            format!("{arms:?}"),
            f.join(" ")
        );
    }
    let mut opt = r.optimizer;
    let mut rng = SplitMix64::new(5);
    println!();
    for tid in [3usize, 14, 24] {
        let q = query(&ts[tid], &mut rng);
        let d = opt.decide(&q.plan).expect("decide");
        println!(
            "t{tid:02}: arm {} ({}): {}",
            d.arm, ARMS[d.arm as usize], d.reason
        );
    }
    println!("\n{:?}", opt.stats());
}
