//! Exact minimum cuts on plan graphs.
//!
//! - s-t min cut by Dinic's max flow (Dinic 1970): a virtual source feeds every leaf, every
//!   root feeds a virtual sink, and the edge `child -> parent` carries the rows the child emits
//!   (measured when known). The cut is the narrowest set of edges that separates the scans
//!   from the result: where the plan's data flow is thinnest.
//! - Global min cut by Stoer-Wagner (1997) on the undirected plan graph with the same weights.
//!
//! Both are exact; the tests compare them with brute force on every small random graph they
//! generate. (The seed's "O(n^0.12)" is not a claim we make: the benches report measured time.)

use alloc::collections::BinaryHeap;
use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Ordering;

use crate::dag::{OpKind, PlanDag};
use crate::error::{NeuralDagError, Result};

/// A flow network for Dinic's algorithm, with `f64` capacities.
#[derive(Debug, Clone)]
pub struct FlowNetwork {
    adj: Vec<Vec<usize>>,
    to: Vec<usize>,
    cap: Vec<f64>,
}

impl FlowNetwork {
    /// A network with `n` vertices and no arcs.
    pub fn new(n: usize) -> Self {
        FlowNetwork {
            adj: vec![Vec::new(); n],
            to: Vec::new(),
            cap: Vec::new(),
        }
    }

    /// Number of vertices.
    pub fn len(&self) -> usize {
        self.adj.len()
    }

    /// Whether the network has no vertices.
    pub fn is_empty(&self) -> bool {
        self.adj.is_empty()
    }

    /// Add arc `u -> v` with capacity `c` (may be `f64::INFINITY`); returns the arc index.
    /// The reverse residual arc is `index ^ 1`.
    pub fn add_arc(&mut self, u: usize, v: usize, c: f64) -> usize {
        let e = self.to.len();
        self.to.push(v);
        self.cap.push(c);
        self.adj[u].push(e);
        self.to.push(u);
        self.cap.push(0.0);
        self.adj[v].push(e + 1);
        e
    }

    fn levels(&self, s: usize, eps: f64) -> Vec<u32> {
        let mut level = vec![u32::MAX; self.len()];
        level[s] = 0;
        let mut queue = vec![s];
        let mut head = 0;
        while head < queue.len() {
            let u = queue[head];
            head += 1;
            for &e in &self.adj[u] {
                let v = self.to[e];
                if self.cap[e] > eps && level[v] == u32::MAX {
                    level[v] = level[u] + 1;
                    queue.push(v);
                }
            }
        }
        level
    }

    /// Maximum flow from `s` to `t`. Residual capacities are left in the network, so
    /// [`FlowNetwork::source_side`] can read the minimum cut afterwards. Infinite if an
    /// all-infinite path exists.
    pub fn max_flow(&mut self, s: usize, t: usize) -> f64 {
        if s == t {
            return 0.0;
        }
        let finite_total: f64 = self.cap.iter().filter(|c| c.is_finite()).sum();
        let eps = 1e-12 * finite_total.max(1.0);
        let mut flow = 0.0;
        loop {
            let level = self.levels(s, eps);
            if level[t] == u32::MAX {
                return flow;
            }
            let mut next = vec![0usize; self.len()];
            // Iterative DFS over the level graph (plans can be 65k nodes deep).
            loop {
                let mut path: Vec<usize> = Vec::new();
                let mut u = s;
                let pushed = loop {
                    if u == t {
                        let f = path
                            .iter()
                            .map(|&e| self.cap[e])
                            .fold(f64::INFINITY, f64::min);
                        break Some(f);
                    }
                    let mut advanced = false;
                    while next[u] < self.adj[u].len() {
                        let e = self.adj[u][next[u]];
                        let v = self.to[e];
                        if self.cap[e] > eps && level[v] == level[u] + 1 {
                            path.push(e);
                            u = v;
                            advanced = true;
                            break;
                        }
                        next[u] += 1;
                    }
                    if !advanced {
                        // Dead end: retreat one arc and never try this vertex again this phase.
                        match path.pop() {
                            None => break None,
                            Some(e) => {
                                u = self.to[e ^ 1];
                                next[u] += 1;
                            }
                        }
                    }
                };
                match pushed {
                    None => break,
                    Some(f) if f.is_infinite() => return f64::INFINITY,
                    Some(f) => {
                        for &e in &path {
                            self.cap[e] -= f;
                            self.cap[e ^ 1] += f;
                        }
                        flow += f;
                    }
                }
            }
        }
    }

    /// After [`FlowNetwork::max_flow`]: vertices still reachable from `s` in the residual
    /// network. This is the minimum cut's source side closest to `s`, which does not depend on
    /// the order in which augmenting paths were found.
    pub fn source_side(&self, s: usize) -> Vec<bool> {
        let finite_total: f64 = self.cap.iter().filter(|c| c.is_finite()).sum();
        let level = self.levels(s, 1e-12 * finite_total.max(1.0));
        level.iter().map(|&l| l != u32::MAX).collect()
    }
}

/// The s-t minimum cut of a plan between its leaves and its root(s).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanCut {
    /// Rows crossing the cut: the max flow.
    pub value: f64,
    /// Edges `(child, parent)` on the cut.
    pub edges: Vec<(u32, u32)>,
    /// Whether each node is on the scans' side of the cut.
    pub source_side: Vec<bool>,
}

impl PlanCut {
    /// Nodes whose output crosses the cut: the bottleneck producers.
    pub fn producers(&self, n: usize) -> Vec<bool> {
        let mut on = vec![false; n];
        for &(c, _) in &self.edges {
            on[c as usize] = true;
        }
        on
    }
}

/// Rows flowing along `child -> parent`: what the child emits.
pub fn edge_capacity(dag: &PlanDag, child: usize) -> f64 {
    dag.node(child).output_rows()
}

/// Exact s-t minimum cut of the plan: virtual source -> every leaf, every root -> virtual sink
/// (both infinite), `child -> parent` with capacity [`edge_capacity`].
pub fn plan_min_cut(dag: &PlanDag) -> PlanCut {
    let n = dag.len();
    if n == 1 {
        return PlanCut {
            value: 0.0,
            edges: Vec::new(),
            source_side: vec![true],
        };
    }
    let (s, t) = (n, n + 1);
    let mut net = FlowNetwork::new(n + 2);
    for &(c, p) in dag.edges() {
        net.add_arc(c as usize, p as usize, edge_capacity(dag, c as usize));
    }
    for v in 0..n {
        if dag.is_leaf(v) {
            net.add_arc(s, v, f64::INFINITY);
        }
    }
    for &r in dag.roots() {
        net.add_arc(r as usize, t, f64::INFINITY);
    }
    // A valid DAG with more than one node has a finite edge on every leaf-to-root path.
    let value = net.max_flow(s, t);
    let side = net.source_side(s);
    let edges = dag
        .edges()
        .iter()
        .copied()
        .filter(|&(c, p)| side[c as usize] && !side[p as usize])
        .collect();
    PlanCut {
        value,
        edges,
        source_side: side[..n].to_vec(),
    }
}

/// A global minimum cut of an undirected weighted graph.
#[derive(Debug, Clone, PartialEq)]
pub struct GlobalCut {
    /// Total weight of the edges across the cut.
    pub value: f64,
    /// One side of the cut (non-empty, not everything).
    pub side: Vec<bool>,
}

#[derive(PartialEq)]
struct Key(f64, u32);
impl Eq for Key {}
impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0
            .total_cmp(&other.0)
            .then_with(|| other.1.cmp(&self.1))
    }
}

/// Stoer-Wagner global min cut of an undirected graph with `n` vertices and weighted edges
/// `(u, v, w)` (parallel edges add up). Maximum-adjacency orderings use a lazy binary heap:
/// O(n (n + m) log n) overall.
pub fn stoer_wagner(n: usize, edges: &[(u32, u32, f64)]) -> Result<GlobalCut> {
    if n < 2 {
        return Err(NeuralDagError::MinCutComputationFailed(format!(
            "a global cut needs at least 2 vertices, the graph has {n}"
        )));
    }
    let mut adj: Vec<hashbrown::HashMap<u32, f64>> = vec![hashbrown::HashMap::new(); n];
    for (k, &(u, v, w)) in edges.iter().enumerate() {
        if u as usize >= n || v as usize >= n || !w.is_finite() || w < 0.0 {
            return Err(NeuralDagError::MinCutComputationFailed(format!(
                "edge {k} ({u}, {v}, {w}) is out of range or has a bad weight"
            )));
        }
        if u != v {
            *adj[u as usize].entry(v).or_insert(0.0) += w;
            *adj[v as usize].entry(u).or_insert(0.0) += w;
        }
    }
    // members[v]: original vertices merged into v.
    let mut members: Vec<Vec<u32>> = (0..n as u32).map(|v| vec![v]).collect();
    let mut alive: Vec<u32> = (0..n as u32).collect();
    let mut best = GlobalCut {
        value: f64::INFINITY,
        side: Vec::new(),
    };
    let mut weight = vec![0.0f64; n];
    let mut added = vec![false; n];
    while alive.len() > 1 {
        for &v in &alive {
            weight[v as usize] = 0.0;
            added[v as usize] = false;
        }
        let mut heap = BinaryHeap::new();
        heap.push(Key(0.0, alive[0]));
        let (mut prev, mut last) = (u32::MAX, u32::MAX);
        let mut count = 0;
        while count < alive.len() {
            let u = match heap.pop() {
                Some(Key(w, u)) if !added[u as usize] && w == weight[u as usize] => u,
                Some(_) => continue,
                // Disconnected rest: continue the ordering from any vertex not yet added.
                None => match alive.iter().copied().find(|&v| !added[v as usize]) {
                    Some(v) => v,
                    None => break,
                },
            };
            added[u as usize] = true;
            count += 1;
            prev = last;
            last = u;
            for (&v, &w) in &adj[u as usize] {
                if !added[v as usize] {
                    weight[v as usize] += w;
                    heap.push(Key(weight[v as usize], v));
                }
            }
        }
        let cut_of_phase = weight[last as usize];
        if cut_of_phase < best.value {
            let mut side = vec![false; n];
            for &m in &members[last as usize] {
                side[m as usize] = true;
            }
            best = GlobalCut {
                value: cut_of_phase,
                side,
            };
        }
        // Merge `last` into `prev`.
        let moved = core::mem::take(&mut members[last as usize]);
        members[prev as usize].extend(moved);
        let last_adj = core::mem::take(&mut adj[last as usize]);
        for (v, w) in last_adj {
            adj[v as usize].remove(&last);
            if v != prev {
                *adj[prev as usize].entry(v).or_insert(0.0) += w;
                *adj[v as usize].entry(prev).or_insert(0.0) += w;
            }
        }
        alive.retain(|&v| v != last);
    }
    Ok(best)
}

/// Global min cut of the plan graph, undirected, edge weights = rows flowing.
pub fn plan_global_min_cut(dag: &PlanDag) -> Result<GlobalCut> {
    let edges: Vec<(u32, u32, f64)> = dag
        .edges()
        .iter()
        .map(|&(c, p)| (c, p, edge_capacity(dag, c as usize)))
        .collect();
    stoer_wagner(dag.len(), &edges)
}

/// One operator whose output crosses the plan's minimum cut.
#[derive(Debug, Clone, PartialEq)]
pub struct Bottleneck {
    /// The producing node.
    pub node: u32,
    /// Its operator.
    pub op: OpKind,
    /// Its label (relation, index or CTE name).
    pub label: String,
    /// The consuming node.
    pub consumer: u32,
    /// Rows along the edge.
    pub rows: f64,
}

/// The bottleneck operators of a plan: the edges of its s-t min cut, narrowest first.
#[derive(Debug, Clone, PartialEq)]
pub struct BottleneckReport {
    /// Rows crossing the s-t min cut.
    pub cut_rows: f64,
    /// The operators on the cut.
    pub bottlenecks: Vec<Bottleneck>,
    /// Weight of the global min cut (undirected), when the plan has at least two nodes.
    pub global_cut_rows: Option<f64>,
}

/// Bottleneck report of a plan.
pub fn bottleneck_report(dag: &PlanDag) -> BottleneckReport {
    let cut = plan_min_cut(dag);
    let mut bottlenecks: Vec<Bottleneck> = cut
        .edges
        .iter()
        .map(|&(c, p)| {
            let node = dag.node(c as usize);
            Bottleneck {
                node: c,
                op: node.op,
                label: node.label.clone(),
                consumer: p,
                rows: edge_capacity(dag, c as usize),
            }
        })
        .collect();
    bottlenecks.sort_by(|a, b| a.rows.total_cmp(&b.rows).then(a.node.cmp(&b.node)));
    let global_cut_rows = plan_global_min_cut(dag).ok().map(|g| g.value);
    BottleneckReport {
        cut_rows: cut.value,
        bottlenecks,
        global_cut_rows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::SplitMix64;

    /// Min over all vertex subsets containing s and not t of the capacity leaving the subset.
    fn brute_st(n: usize, arcs: &[(usize, usize, f64)], s: usize, t: usize) -> f64 {
        let mut best = f64::INFINITY;
        for mask in 0u32..(1 << n) {
            if mask & (1 << s) == 0 || mask & (1 << t) != 0 {
                continue;
            }
            let c: f64 = arcs
                .iter()
                .filter(|&&(u, v, _)| mask & (1 << u) != 0 && mask & (1 << v) == 0)
                .map(|a| a.2)
                .sum();
            best = best.min(c);
        }
        best
    }

    fn brute_global(n: usize, edges: &[(u32, u32, f64)]) -> f64 {
        let mut best = f64::INFINITY;
        for mask in 1u32..(1 << n) - 1 {
            let c: f64 = edges
                .iter()
                .filter(|&&(u, v, _)| (mask >> u & 1) != (mask >> v & 1))
                .map(|e| e.2)
                .sum();
            best = best.min(c);
        }
        best
    }

    #[test]
    fn dinic_matches_brute_force_on_random_graphs() {
        let mut rng = SplitMix64::new(11);
        for _ in 0..300 {
            let n = 2 + rng.below(8);
            let m = rng.below(3 * n);
            let arcs: Vec<(usize, usize, f64)> = (0..m)
                .map(|_| {
                    (
                        rng.below(n),
                        rng.below(n),
                        (rng.below(20)) as f64 + rng.next_f64(),
                    )
                })
                .filter(|a| a.0 != a.1)
                .collect();
            let mut net = FlowNetwork::new(n);
            for &(u, v, c) in &arcs {
                net.add_arc(u, v, c);
            }
            let flow = net.max_flow(0, n - 1);
            let brute = brute_st(n, &arcs, 0, n - 1);
            assert!(
                (flow - brute).abs() < 1e-9 * (1.0 + brute),
                "flow {flow} brute {brute} arcs {arcs:?}"
            );
            // The residual source side is a cut of exactly that capacity.
            let side = net.source_side(0);
            assert!(side[0] && !side[n - 1]);
            let c: f64 = arcs
                .iter()
                .filter(|a| side[a.0] && !side[a.1])
                .map(|a| a.2)
                .sum();
            assert!((c - flow).abs() < 1e-9 * (1.0 + flow));
        }
    }

    #[test]
    fn stoer_wagner_matches_brute_force_on_random_graphs() {
        let mut rng = SplitMix64::new(12);
        for _ in 0..300 {
            let n = 2 + rng.below(8);
            let m = rng.below(3 * n);
            let edges: Vec<(u32, u32, f64)> = (0..m)
                .map(|_| {
                    (
                        rng.below(n) as u32,
                        rng.below(n) as u32,
                        rng.below(10) as f64 + rng.next_f64(),
                    )
                })
                .collect();
            let cut = stoer_wagner(n, &edges).unwrap();
            let brute = brute_global(n, &edges);
            assert!(
                (cut.value - brute).abs() < 1e-9 * (1.0 + brute),
                "sw {} brute {brute}",
                cut.value
            );
            let k = cut.side.iter().filter(|&&b| b).count();
            assert!(k > 0 && k < n);
            let c: f64 = edges
                .iter()
                .filter(|e| cut.side[e.0 as usize] != cut.side[e.1 as usize])
                .map(|e| e.2)
                .sum();
            assert!((c - cut.value).abs() < 1e-9 * (1.0 + c));
        }
        assert!(stoer_wagner(1, &[]).is_err());
        assert!(stoer_wagner(2, &[(0, 5, 1.0)]).is_err());
    }
}
