//! One query of the recorded TPC-H traces through the replay (`tests/src/replay.rs`): its arms'
//! recorded times, planner cost ratios and plan hashes, the rule and arm of each of its 30
//! executions (time over the default's), and the decision that would come next.
//! `cargo run --release -p ruvector-dag-tests --example replay_trace -- q17 [--reasons]`

use ruvector_dag_core::learning::NeuralDagConfig;
use ruvector_dag_tests::replay::{load, replay};

fn main() {
    let Some(want) = std::env::args().nth(1) else {
        eprintln!("usage: replay_trace <query, e.g. q17>");
        std::process::exit(2);
    };
    let (names, queries) = load();
    let Some(qi) = queries.iter().position(|q| q.name == want) else {
        eprintln!("replay_trace: no query '{want}' in the traces");
        std::process::exit(2);
    };
    let (runs, mut opt) = replay(NeuralDagConfig::default(), &names, &queries, 30, 7);
    let q = &queries[qi];
    println!("{want}: arm: mean ms (* censored), planner cost over the default's, plan hash");
    for (a, t) in q.arms.iter().enumerate() {
        println!(
            "  {a} {:<45} {:>8.1}{} {:>6.2}x {:016x}",
            names[a],
            t.mean_ms(),
            if t.censored { "*" } else { " " },
            t.cost / q.arms[0].cost,
            t.plan.shape_hash()
        );
    }
    let line: Vec<String> = runs
        .iter()
        .filter(|r| r.query == qi)
        .map(|r| format!("{}/{} {:.2}", r.rule.name(), r.arm, r.ms / r.default_ms))
        .collect();
    println!("executions: {}", line.join(" | "));
    if std::env::args().nth(2).as_deref() == Some("--reasons") {
        for (i, r) in runs.iter().filter(|r| r.query == qi).enumerate() {
            println!("  {:>2} {}/{}: {}", i + 1, r.rule.name(), r.arm, r.reason);
        }
    }
    let d = opt.decide(&q.arms[0].plan).expect("decide");
    println!("next decision: {}", d.reason);
}
