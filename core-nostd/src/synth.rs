//! Seeded generator of random valid plan DAGs: tests use it for property checks, benches for
//! plans of a given size. Shapes resemble PostgreSQL plans: scans at the leaves, joins with two
//! inputs, unary operators (sort, hash, aggregate) in between, and now and then a shared input
//! (as a CTE read by two scans) that makes the tree a DAG.

use alloc::vec::Vec;

use crate::dag::{Actuals, OpKind, PlanDag, PlanNode};
use crate::rng::SplitMix64;

/// Knobs of [`random_plan`].
#[derive(Debug, Clone, Copy)]
pub struct SynthOptions {
    /// Probability that a node also feeds a second consumer.
    pub share_probability: f64,
    /// Whether nodes carry measured actuals.
    pub with_actuals: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            share_probability: 0.05,
            with_actuals: false,
        }
    }
}

const SCANS: [OpKind; 4] = [
    OpKind::SeqScan,
    OpKind::IndexScan,
    OpKind::BitmapHeapScan,
    OpKind::IndexOnlyScan,
];
const JOINS: [OpKind; 3] = [OpKind::HashJoin, OpKind::NestedLoop, OpKind::MergeJoin];
const UNARY: [OpKind; 6] = [
    OpKind::Sort,
    OpKind::Hash,
    OpKind::Aggregate,
    OpKind::Material,
    OpKind::Limit,
    OpKind::Gather,
];

/// A random valid plan DAG with `n >= 1` nodes; node 0 is the root. Same seed, same plan.
pub fn random_plan(seed: u64, n: usize, opts: SynthOptions) -> PlanDag {
    let n = n.max(1);
    let mut rng = SplitMix64::new(seed);
    // Attach node i under an earlier node with fewer than two inputs; edges run from higher to
    // lower index, so the graph is acyclic by construction.
    let mut fan_in = alloc::vec![0u8; n];
    let mut open: Vec<u32> = alloc::vec![0];
    let mut edges: Vec<(u32, u32)> = Vec::with_capacity(n + n / 10);
    for i in 1..n as u32 {
        let k = rng.below(open.len());
        let p = open[k];
        edges.push((i, p));
        fan_in[p as usize] += 1;
        if fan_in[p as usize] >= 2 {
            open.swap_remove(k);
        }
        open.push(i);
    }
    for i in 2..n as u32 {
        if rng.next_f64() < opts.share_probability {
            let p = rng.below(i as usize) as u32;
            if !edges.contains(&(i, p)) {
                edges.push((i, p));
                fan_in[p as usize] += 1;
            }
        }
    }
    // Operators by fan-in, rows log-uniform, costs built bottom-up so totals include inputs.
    let mut nodes: Vec<PlanNode> = (0..n)
        .map(|v| {
            let op = match fan_in[v] {
                0 => SCANS[rng.below(SCANS.len())],
                1 => UNARY[rng.below(UNARY.len())],
                _ => JOINS[rng.below(JOINS.len())],
            };
            let rows = libm::floor(libm::exp(rng.next_f64() * 14.0));
            let mut node = PlanNode::new(op, rows, 0.0);
            node.startup_cost = 0.0;
            node.width = (4 + rng.below(200)) as f64;
            if op.is_scan() {
                node.relation_hash = rng.next_u64() | 1;
            }
            node.total_cost = rows * (0.01 + rng.next_f64());
            node
        })
        .collect();
    // Children have higher indices than their owner (first parent), so one reverse pass works.
    let mut owner = alloc::vec![u32::MAX; n];
    for &(c, p) in &edges {
        if owner[c as usize] == u32::MAX {
            owner[c as usize] = p;
        }
    }
    for v in (1..n).rev() {
        let p = owner[v] as usize;
        let c = nodes[v].total_cost;
        nodes[p].total_cost += c;
    }
    if opts.with_actuals {
        let ms: Vec<f64> = (0..n).map(|_| rng.next_f64() * 10.0).collect();
        let mut total = ms.clone();
        for v in (1..n).rev() {
            let p = owner[v] as usize;
            total[p] += total[v];
        }
        for v in 0..n {
            let rows = libm::floor(nodes[v].est_rows * libm::exp(rng.normal()));
            nodes[v].actual = Some(Actuals {
                rows,
                self_ms: ms[v],
                total_ms: total[v],
            });
        }
    }
    match PlanDag::new(nodes, edges) {
        Ok(d) => d,
        // The construction above is valid by design; a failure here is a bug in this file.
        Err(e) => panic!("synth produced an invalid DAG: {e}"),
    }
}

/// A uniformly random permutation of `0..n`.
pub fn random_permutation(seed: u64, n: usize) -> Vec<usize> {
    let mut rng = SplitMix64::new(seed);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        p.swap(i, rng.below(i + 1));
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_are_valid_deterministic_and_sometimes_shared() {
        let mut shared = 0;
        for seed in 0..50 {
            let d = random_plan(
                seed,
                1 + (seed as usize * 7) % 200,
                SynthOptions {
                    share_probability: 0.1,
                    with_actuals: true,
                },
            );
            assert_eq!(d.roots(), &[0]);
            assert_eq!(
                d,
                random_plan(
                    seed,
                    1 + (seed as usize * 7) % 200,
                    SynthOptions {
                        share_probability: 0.1,
                        with_actuals: true
                    }
                )
            );
            shared += (0..d.len()).filter(|&v| d.parents(v).len() > 1).count();
        }
        assert!(shared > 0);
    }
}
