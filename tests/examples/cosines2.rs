use ruvector_dag_core::attention::{mechanism, AttentionConfig, AttentionContext, AttentionKind};
use ruvector_dag_core::embed::embed;
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_tests::sim::*;

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}
fn stats(name: &str, mut v: Vec<f32>) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "{name}: min {:.4} p01 {:.4} median {:.4} p90 {:.4} p99 {:.4} max {:.4}",
        v[0],
        q(0.01),
        q(0.5),
        q(0.9),
        q(0.99),
        v[v.len() - 1]
    );
}

fn main() {
    for beta in [0.6f32, 0.8, 0.9, 1.0] {
        println!("beta {beta}");
        let m = mechanism(AttentionKind::Topological, &AttentionConfig::default()).unwrap();
        let emb = |p: &ruvector_dag_core::PlanDag| {
            embed(p, &m.attend(p, &AttentionContext::default()).unwrap()).unwrap()
        };
        let mut center = vec![0.0f32; 256];
        let n = 64;
        for i in 0..n {
            let p = random_plan(
                0xC0FFEE + i,
                4 + (i as usize * 7) % 60,
                SynthOptions::default(),
            );
            let e = emb(&p);
            for k in 0..256 {
                center[k] += e[k] / n as f32;
            }
        }
        let ts = templates(7, 30);
        let mut rng = SplitMix64::new(3);
        let e: Vec<Vec<[f32; 256]>> = ts
            .iter()
            .map(|t| (0..10).map(|_| emb(&query(t, &mut rng).plan)).collect())
            .collect();
        let c = |a: &[f32]| {
            a.iter()
                .zip(&center)
                .map(|(x, y)| x - beta * y)
                .collect::<Vec<f32>>()
        };
        let mut inter = vec![];
        let mut intra = vec![];
        let mut inter_c = vec![];
        let mut intra_c = vec![];
        for i in 0..30 {
            for s in 1..10 {
                intra.push(cos(&e[i][0], &e[i][s]));
                intra_c.push(cos(&c(&e[i][0]), &c(&e[i][s])));
            }
            for j in i + 1..30 {
                inter.push(cos(&e[i][0], &e[j][0]));
                inter_c.push(cos(&c(&e[i][0]), &c(&e[j][0])));
            }
        }
        stats("sim intra raw", intra);
        stats("sim intra centered", intra_c);
        stats("sim inter raw", inter);
        stats("sim inter centered", inter_c);
        let plans = ruvector_dag_tests::tpch_plans();
        let plans: Vec<_> = plans
            .iter()
            .filter(|(n, _)| n.ends_with(".plain.json") && !n.contains("noparallel"))
            .collect();
        let te: Vec<_> = plans.iter().map(|(_, p)| emb(p)).collect();
        let mut a = vec![];
        let mut b = vec![];
        for i in 0..te.len() {
            for j in i + 1..te.len() {
                a.push(cos(&te[i], &te[j]));
                b.push(cos(&c(&te[i]), &c(&te[j])));
            }
        }
        stats("tpch inter raw", a);
        stats("tpch inter centered", b);
    }
}
