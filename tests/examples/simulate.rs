//! Run the optimizer simulator and print what it did (exploration aid; the asserted version is
//! `tests/simulator.rs`).
use ruvector_dag_core::learning::NeuralDagConfig;
use ruvector_dag_tests::sim::*;

fn main() {
    let ts = templates(7, 30);
    let held = held_out(&ts, 300, 99);
    let t0 = std::time::Instant::now();
    let r = run(NeuralDagConfig::default(), &ts, 10_000, 500, 1, &held);
    eprintln!("elapsed {:?}", t0.elapsed());
    let half = &r.records[5000..];
    let (c, d, o) = totals(half);
    println!("last half: {:.3}x oracle, {:.3}x default", c / o, c / d);
    let (c, d, o) = totals(&r.records);
    println!("all: {:.3}x oracle, {:.3}x default", c / o, c / d);
    println!(
        "held-out: {:?}",
        r.held_out
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect::<Vec<_>>()
    );
    let tail = &r.records[8000..];
    for t in &ts {
        let rs: Vec<_> = tail.iter().filter(|x| x.template == t.id).collect();
        let (c, d, o) = rs.iter().fold((0.0, 0.0, 0.0), |a, x| {
            (a.0 + x.ms, a.1 + x.default_ms, a.2 + x.oracle_ms)
        });
        let cat = r
            .records
            .iter()
            .filter(|x| x.template == t.id && x.catastrophic)
            .count();
        let mut arms = [0; 8];
        rs.iter().for_each(|x| arms[x.arm as usize] += 1);
        println!(
            "t{:02} {:?} n={} {:.2}x default {:.2}x oracle cat={} arms {:?} factors {:?}",
            t.id,
            t.family,
            rs.len(),
            c / d,
            c / o,
            cat,
            arms,
            t.factors
                .iter()
                .map(|f| format!("{f:.2}"))
                .collect::<Vec<_>>()
        );
    }
    let mut opt = r.optimizer;
    let mut rng = ruvector_dag_core::rng::SplitMix64::new(5);
    for tid in [14usize, 19, 21, 23] {
        for _ in 0..3 {
            let q = query(&ts[tid], &mut rng);
            let d = opt.decide(&q.plan).unwrap();
            println!(
                "t{tid}: arm {} {:?} pattern {:?} sim {:.3} conf {:.3} | {}",
                d.arm, d.rule, d.pattern, d.similarity, d.confidence, d.reason
            );
        }
        let d = opt.decide(&query(&ts[tid], &mut rng).plan).unwrap();
        if let Some(p) = d.pattern.and_then(|id| opt.bank().get(id)) {
            println!(
                "   pattern {} members {} arms {:?}",
                p.id,
                p.members,
                p.arms
                    .iter()
                    .map(|a| format!("{}:{:.2}", a.count, a.typical_ms()))
                    .collect::<Vec<_>>()
            );
        }
    }
    let r = ruvector_dag_tests::sim::Run {
        optimizer: opt,
        records: r.records,
        held_out: r.held_out,
    };
    let s = r.optimizer.stats();
    println!(
        "stats {:?} patterns {}",
        s,
        r.optimizer.bank().patterns().len()
    );
    println!("selector best {:?}", r.optimizer.selector().best());
    for k in ruvector_dag_core::AttentionKind::ALL {
        print!("{}={} ", k.name(), r.optimizer.selector().pulls(k));
    }
    println!();
}
