use ruvector_dag_core::attention::{mechanism, AttentionConfig, AttentionContext, AttentionKind};
use ruvector_dag_core::embed::embed;
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_tests::sim::*;

fn cos(a: &[f32], b: &[f32]) -> f32 {
    let d: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    d / (na * nb)
}

fn main() {
    let ts = templates(7, 30);
    let m = mechanism(AttentionKind::Topological, &AttentionConfig::default()).unwrap();
    let mut rng = SplitMix64::new(3);
    let e: Vec<Vec<[f32; 256]>> = ts
        .iter()
        .map(|t| {
            (0..3)
                .map(|_| {
                    let q = query(t, &mut rng);
                    let a = m.attend(&q.plan, &AttentionContext::default()).unwrap();
                    embed(&q.plan, &a).unwrap()
                })
                .collect()
        })
        .collect();
    let mut inter = vec![];
    let mut intra = vec![];
    for i in 0..30 {
        intra.push(cos(&e[i][0], &e[i][1]));
        intra.push(cos(&e[i][0], &e[i][2]));
        for j in i + 1..30 {
            inter.push(cos(&e[i][0], &e[j][0]));
        }
    }
    inter.sort_by(|a, b| a.total_cmp(b));
    intra.sort_by(|a, b| a.total_cmp(b));
    println!(
        "intra min {:.4} median {:.4}",
        intra[0],
        intra[intra.len() / 2]
    );
    let q = |v: &Vec<f32>, p: f64| v[((v.len() - 1) as f64 * p) as usize];
    println!(
        "inter median {:.4} p90 {:.4} p99 {:.4} max {:.4}",
        q(&inter, 0.5),
        q(&inter, 0.9),
        q(&inter, 0.99),
        inter[inter.len() - 1]
    );
    let blocks = [
        (0, 32, "mean"),
        (32, 64, "std"),
        (64, 96, "max"),
        (96, 224, "proj"),
        (224, 240, "hist"),
        (240, 256, "stats"),
    ];
    for (a, b, n) in blocks {
        let s: f32 = e
            .iter()
            .map(|v| v[0][a..b].iter().map(|x| x * x).sum::<f32>())
            .sum::<f32>()
            / 30.0;
        let c: Vec<f32> = (0..30)
            .flat_map(|i| (i + 1..30).map(move |j| (i, j)))
            .map(|(i, j)| cos(&e[i][0][a..b], &e[j][0][a..b]))
            .collect();
        let mut c = c;
        c.sort_by(|a, b| a.total_cmp(b));
        println!("{n}: energy {s:.3}, inter-cos median {:.3}", c[c.len() / 2]);
    }
}
