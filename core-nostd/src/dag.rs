//! The plan graph.
//!
//! A PostgreSQL plan is a tree, but InitPlans, SubPlans and CTEs read by several CTE Scans make
//! it a DAG. Edges run `child -> parent`: data flows from the scans (leaves) to the root.
//! [`PlanDag::new`] validates everything once, so the algorithms downstream can index freely.

use alloc::format;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use crate::error::{NeuralDagError, Result};

/// Index of a node in its [`PlanDag`].
pub type NodeId = usize;

/// Largest number of nodes a plan may have (node ids fit in 16 bits in compact encodings).
pub const MAX_NODES: usize = 65_535;

/// Largest plausible row count or loop count; anything above is treated as corrupt input.
pub const MAX_ROWS: f64 = 1e15;
/// Largest plausible cost. PostgreSQL adds `disable_cost` (1e10) per disabled node, so plans
/// made under `enable_* = off` legitimately reach ~1e12.
pub const MAX_COST: f64 = 1e20;
/// Largest plausible time in milliseconds (about 115 days).
pub const MAX_MS: f64 = 1e10;

/// PostgreSQL's `disable_cost` (1.0e10): the planner adds it to the cost of every path of a
/// kind an `enable_*` setting disabled but that it could not avoid.
pub const DISABLE_COST: f64 = 1.0e10;

/// A plan's own total cost: `total` without the `disable_cost` penalties PostgreSQL added (what
/// the candidates' planner costs are compared by, in the host and in the replay).
pub fn without_disable_cost(total: f64) -> f64 {
    if total >= DISABLE_COST {
        total % DISABLE_COST
    } else {
        total
    }
}

macro_rules! op_kinds {
    ($( $variant:ident => $name:literal, $bucket:literal; )*) => {
        /// PostgreSQL plan node types (as `EXPLAIN` names them), plus [`OpKind::Other`].
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[allow(missing_docs)]
        pub enum OpKind { $( $variant, )* Other }

        impl OpKind {
            /// Every kind, `Other` last.
            pub const ALL: &'static [OpKind] = &[$( OpKind::$variant, )* OpKind::Other];

            /// The node type as `EXPLAIN` prints it.
            pub fn name(self) -> &'static str {
                match self { $( OpKind::$variant => $name, )* OpKind::Other => "Other" }
            }

            /// Parse `EXPLAIN`'s "Node Type"; unknown names are [`OpKind::Other`].
            pub fn from_explain_name(name: &str) -> OpKind {
                match name { $( $name => OpKind::$variant, )* _ => OpKind::Other }
            }

            /// One-hot bucket of the feature vector (see [`crate::features`]).
            pub fn bucket(self) -> usize {
                match self { $( OpKind::$variant => $bucket, )* OpKind::Other => 15 }
            }
        }
    };
}

op_kinds! {
    SeqScan => "Seq Scan", 0;
    SampleScan => "Sample Scan", 0;
    IndexScan => "Index Scan", 1;
    IndexOnlyScan => "Index Only Scan", 1;
    TidScan => "Tid Scan", 1;
    TidRangeScan => "Tid Range Scan", 1;
    BitmapIndexScan => "Bitmap Index Scan", 2;
    BitmapHeapScan => "Bitmap Heap Scan", 2;
    BitmapAnd => "BitmapAnd", 2;
    BitmapOr => "BitmapOr", 2;
    SubqueryScan => "Subquery Scan", 3;
    FunctionScan => "Function Scan", 3;
    TableFuncScan => "Table Function Scan", 3;
    ValuesScan => "Values Scan", 3;
    CteScan => "CTE Scan", 3;
    NamedTuplestoreScan => "Named Tuplestore Scan", 3;
    WorkTableScan => "WorkTable Scan", 3;
    ForeignScan => "Foreign Scan", 3;
    CustomScan => "Custom Scan", 3;
    NestedLoop => "Nested Loop", 4;
    HashJoin => "Hash Join", 5;
    MergeJoin => "Merge Join", 6;
    Hash => "Hash", 7;
    Sort => "Sort", 8;
    IncrementalSort => "Incremental Sort", 8;
    Aggregate => "Aggregate", 9;
    Group => "Group", 9;
    Unique => "Unique", 9;
    WindowAgg => "WindowAgg", 10;
    SetOp => "SetOp", 10;
    Material => "Materialize", 11;
    Memoize => "Memoize", 11;
    Gather => "Gather", 12;
    GatherMerge => "Gather Merge", 12;
    Append => "Append", 13;
    MergeAppend => "Merge Append", 13;
    RecursiveUnion => "Recursive Union", 13;
    Result => "Result", 14;
    ProjectSet => "ProjectSet", 14;
    ModifyTable => "ModifyTable", 14;
    LockRows => "LockRows", 14;
    Limit => "Limit", 14;
}

impl OpKind {
    /// Join operators.
    pub fn is_join(self) -> bool {
        matches!(
            self,
            OpKind::NestedLoop | OpKind::HashJoin | OpKind::MergeJoin
        )
    }

    /// Operators that read a relation or a tuple source.
    pub fn is_scan(self) -> bool {
        self.bucket() <= 3
    }
}

/// What an instrumented run (`EXPLAIN ANALYZE`, or the extension's executor hooks) measured.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Actuals {
    /// Rows produced over all loops.
    pub rows: f64,
    /// Time spent in this node alone (its inclusive time minus its inputs'), milliseconds.
    pub self_ms: f64,
    /// Time spent in this node and everything below it, milliseconds.
    pub total_ms: f64,
}

/// One plan operator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanNode {
    /// The operator.
    pub op: OpKind,
    /// Estimated rows per loop ("Plan Rows").
    pub est_rows: f64,
    /// Estimated startup cost.
    pub startup_cost: f64,
    /// Estimated total cost (inclusive of inputs, as PostgreSQL reports it).
    pub total_cost: f64,
    /// Estimated row width in bytes.
    pub width: f64,
    /// Times the node was (or, without actuals, is assumed to be) executed.
    pub loops: f64,
    /// "Parallel Aware".
    pub parallel_aware: bool,
    /// Workers planned (Gather / Gather Merge), 0 elsewhere.
    pub workers: u16,
    /// Stable hash ([`crate::rng::fnv1a64`]) of the relation name, 0 when the node reads none.
    pub relation_hash: u64,
    /// Short display label: relation, alias, index or CTE name. Never query constants.
    pub label: String,
    /// Measured values, when the plan was run with instrumentation.
    pub actual: Option<Actuals>,
}

impl PlanNode {
    /// A node with the given operator and estimates, no relation and no actuals.
    pub fn new(op: OpKind, est_rows: f64, total_cost: f64) -> Self {
        PlanNode {
            op,
            est_rows,
            startup_cost: 0.0,
            total_cost,
            width: 8.0,
            loops: 1.0,
            parallel_aware: false,
            workers: 0,
            relation_hash: 0,
            label: String::new(),
            actual: None,
        }
    }

    /// Rows this node emits over all loops: measured when known, estimated otherwise.
    /// This is what flows along its output edge.
    pub fn output_rows(&self) -> f64 {
        match &self.actual {
            Some(a) => a.rows,
            None => self.est_rows * self.loops.max(1.0),
        }
    }

    fn validate(&self, i: usize) -> Result<()> {
        let bad = |field: &str, v: f64, max: f64| -> Result<()> {
            if !v.is_finite() || v < 0.0 || v > max {
                Err(NeuralDagError::InvalidDagStructure(format!(
                    "node {i} ({}): {field} = {v} is not a finite number in [0, {max:e}]",
                    self.op.name()
                )))
            } else {
                Ok(())
            }
        };
        bad("est_rows", self.est_rows, MAX_ROWS)?;
        bad("startup_cost", self.startup_cost, MAX_COST)?;
        bad("total_cost", self.total_cost, MAX_COST)?;
        bad("width", self.width, MAX_ROWS)?;
        bad("loops", self.loops, MAX_ROWS)?;
        if let Some(a) = &self.actual {
            bad("actual rows", a.rows, MAX_ROWS)?;
            bad("actual self_ms", a.self_ms, MAX_MS)?;
            bad("actual total_ms", a.total_ms, MAX_MS)?;
        }
        Ok(())
    }
}

/// A validated plan DAG with precomputed adjacency, orders and depths.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanDag {
    nodes: Vec<PlanNode>,
    edges: Vec<(u32, u32)>,
    child_start: Vec<u32>,
    child_list: Vec<u32>,
    parent_start: Vec<u32>,
    parent_list: Vec<u32>,
    topo: Vec<u32>,
    depth: Vec<u32>,
    height: Vec<u32>,
    roots: Vec<u32>,
    self_cost: Vec<f64>,
    /// [`PlanDag::shape_hash`] and [`PlanDag::content_hash`], computed once (a plan never
    /// changes after it is built).
    shape: u64,
    content: u64,
}

/// Compressed adjacency: for every node, its neighbours in edge-list order.
fn csr(
    n: usize,
    edges: &[(u32, u32)],
    key: impl Fn(&(u32, u32)) -> (u32, u32),
) -> (Vec<u32>, Vec<u32>) {
    let mut start = vec![0u32; n + 1];
    for e in edges {
        start[key(e).0 as usize + 1] += 1;
    }
    for i in 0..n {
        start[i + 1] += start[i];
    }
    let mut fill = start.clone();
    let mut list = vec![0u32; edges.len()];
    for e in edges {
        let (from, to) = key(e);
        list[fill[from as usize] as usize] = to;
        fill[from as usize] += 1;
    }
    (start, list)
}

impl PlanDag {
    /// Build and validate. `edges` are `(child, parent)` pairs; their order is the order of
    /// inputs (outer before inner), which the hierarchical layout respects.
    ///
    /// Errors: no nodes, more than [`MAX_NODES`], an edge out of range, a self loop, a duplicate
    /// edge, a cycle, a disconnected graph, or a non-finite / negative / absurd number.
    pub fn new(nodes: Vec<PlanNode>, edges: Vec<(u32, u32)>) -> Result<Self> {
        let n = nodes.len();
        if n == 0 {
            return Err(NeuralDagError::InvalidDagStructure(
                "the plan has no nodes".into(),
            ));
        }
        if n > MAX_NODES {
            return Err(NeuralDagError::InvalidDagStructure(format!(
                "the plan has {n} nodes, more than the limit of {MAX_NODES}"
            )));
        }
        for (i, node) in nodes.iter().enumerate() {
            node.validate(i)?;
        }
        for (k, &(c, p)) in edges.iter().enumerate() {
            if c as usize >= n || p as usize >= n {
                return Err(NeuralDagError::InvalidDagStructure(format!(
                    "edge {k} ({c} -> {p}) refers to a node outside 0..{n}"
                )));
            }
            if c == p {
                return Err(NeuralDagError::InvalidDagStructure(format!(
                    "edge {k} is a self loop on node {c}"
                )));
            }
        }
        let (child_start, child_list) = csr(n, &edges, |&(c, p)| (p, c));
        let (parent_start, parent_list) = csr(n, &edges, |&(c, p)| (c, p));
        for v in 0..n {
            let kids = &child_list[child_start[v] as usize..child_start[v + 1] as usize];
            for (a, x) in kids.iter().enumerate() {
                if kids[..a].contains(x) {
                    return Err(NeuralDagError::InvalidDagStructure(format!(
                        "duplicate edge {x} -> {v}"
                    )));
                }
            }
        }

        // Kahn's algorithm from the leaves; leaves first, ties in index order.
        let mut indeg: Vec<u32> = (0..n)
            .map(|v| child_start[v + 1] - child_start[v])
            .collect();
        let mut topo: Vec<u32> = (0..n as u32).filter(|&v| indeg[v as usize] == 0).collect();
        let mut head = 0;
        while head < topo.len() {
            let v = topo[head] as usize;
            head += 1;
            for &p in &parent_list[parent_start[v] as usize..parent_start[v + 1] as usize] {
                indeg[p as usize] -= 1;
                if indeg[p as usize] == 0 {
                    topo.push(p);
                }
            }
        }
        if topo.len() != n {
            let on_cycle = (0..n).find(|&v| indeg[v] > 0).unwrap_or(0);
            return Err(NeuralDagError::InvalidDagStructure(format!(
                "the graph has a cycle (through node {on_cycle})"
            )));
        }

        // Weak connectivity by union-find.
        let mut uf: Vec<u32> = (0..n as u32).collect();
        fn find(uf: &mut [u32], mut x: u32) -> u32 {
            while uf[x as usize] != x {
                uf[x as usize] = uf[uf[x as usize] as usize];
                x = uf[x as usize];
            }
            x
        }
        let mut components = n;
        for &(c, p) in &edges {
            let (a, b) = (find(&mut uf, c), find(&mut uf, p));
            if a != b {
                uf[a as usize] = b;
                components -= 1;
            }
        }
        if components != 1 {
            return Err(NeuralDagError::InvalidDagStructure(format!(
                "the graph falls into {components} disconnected parts"
            )));
        }

        // height: longest path from a leaf; depth: longest path from a root.
        let mut height = vec![0u32; n];
        for &v in &topo {
            let v = v as usize;
            for &c in &child_list[child_start[v] as usize..child_start[v + 1] as usize] {
                height[v] = height[v].max(height[c as usize] + 1);
            }
        }
        let mut depth = vec![0u32; n];
        for &v in topo.iter().rev() {
            let v = v as usize;
            for &p in &parent_list[parent_start[v] as usize..parent_start[v + 1] as usize] {
                depth[v] = depth[v].max(depth[p as usize] + 1);
            }
        }
        let roots: Vec<u32> = (0..n as u32)
            .filter(|&v| parent_start[v as usize + 1] == parent_start[v as usize])
            .collect();

        // Self cost: PostgreSQL's total cost includes its inputs'. An input read by several
        // consumers (a CTE) is included only in its first consumer's cost: the node it hangs
        // under as an InitPlan; the CTE Scans that read it later do not include it.
        let mut self_cost: Vec<f64> = nodes.iter().map(|x| x.total_cost).collect();
        for c in 0..n {
            if let Some(&owner) =
                parent_list[parent_start[c] as usize..parent_start[c + 1] as usize].first()
            {
                self_cost[owner as usize] -= nodes[c].total_cost;
            }
        }
        for s in &mut self_cost {
            *s = s.max(0.0);
        }

        let mut dag = PlanDag {
            nodes,
            edges,
            child_start,
            child_list,
            parent_start,
            parent_list,
            topo,
            depth,
            height,
            roots,
            self_cost,
            shape: 0,
            content: 0,
        };
        dag.shape = dag.compute_shape_hash();
        dag.content = dag.compute_content_hash();
        Ok(dag)
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a valid plan has at least one node. Present for API symmetry.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// All nodes.
    pub fn nodes(&self) -> &[PlanNode] {
        &self.nodes
    }

    /// One node.
    pub fn node(&self, v: NodeId) -> &PlanNode {
        &self.nodes[v]
    }

    /// Edges `(child, parent)` in input order.
    pub fn edges(&self) -> &[(u32, u32)] {
        &self.edges
    }

    /// Inputs of `v`, outer first.
    pub fn children(&self, v: NodeId) -> &[u32] {
        &self.child_list[self.child_start[v] as usize..self.child_start[v + 1] as usize]
    }

    /// Consumers of `v` (several only for shared subplans such as CTEs).
    pub fn parents(&self, v: NodeId) -> &[u32] {
        &self.parent_list[self.parent_start[v] as usize..self.parent_start[v + 1] as usize]
    }

    /// Topological order, leaves first, root(s) last.
    pub fn topo_order(&self) -> &[u32] {
        &self.topo
    }

    /// Longest distance (in edges) from `v` up to a root.
    pub fn depth(&self, v: NodeId) -> u32 {
        self.depth[v]
    }

    /// Longest distance (in edges) from a leaf up to `v`.
    pub fn height(&self, v: NodeId) -> u32 {
        self.height[v]
    }

    /// Nodes nothing consumes (a PostgreSQL plan has exactly one).
    pub fn roots(&self) -> &[u32] {
        &self.roots
    }

    /// Whether `v` has no inputs.
    pub fn is_leaf(&self, v: NodeId) -> bool {
        self.child_start[v] == self.child_start[v + 1]
    }

    /// Estimated cost of `v` alone: total cost minus the total cost of the inputs it owns (an
    /// input read by several consumers belongs to the first), never negative.
    pub fn self_cost(&self, v: NodeId) -> f64 {
        self.self_cost[v]
    }

    /// Work done by `v` alone: measured self time when known, estimated self cost otherwise.
    /// Plans are either all instrumented or not at all, so the two are never compared.
    pub fn self_work(&self, v: NodeId) -> f64 {
        match &self.nodes[v].actual {
            Some(a) => a.self_ms,
            None => self.self_cost[v],
        }
    }

    /// Each node's share of the plan's measured self time (the temporal mechanism's history
    /// entry and a trajectory's per-operator shares); None unless every node was measured.
    pub fn measured_shares(&self) -> Option<Vec<f32>> {
        let ms: Vec<f64> = self
            .nodes
            .iter()
            .map(|n| n.actual.map(|a| a.self_ms))
            .collect::<Option<_>>()?;
        let total = ms.iter().sum::<f64>().max(1e-9);
        Some(ms.iter().map(|m| (m / total) as f32).collect())
    }

    /// Hash of the plan's shape: operators, relations and how they connect, nothing else (no
    /// estimates, no measurements, no constants). Independent of node numbering; inputs are
    /// ordered (outer before inner), so swapping a join's sides changes it. Stable across
    /// platforms and releases: it keys persisted per-query statistics.
    pub fn shape_hash(&self) -> u64 {
        self.shape
    }

    fn compute_shape_hash(&self) -> u64 {
        let mut h = vec![0u64; self.len()];
        for &v in &self.topo {
            let v = v as usize;
            let mut f = crate::rng::Fnv1a64::new();
            f.write(self.nodes[v].op.name().as_bytes());
            f.write(&[0]);
            f.write(&self.nodes[v].relation_hash.to_le_bytes());
            for &c in self.children(v) {
                f.write(&h[c as usize].to_le_bytes());
            }
            h[v] = f.finish();
        }
        let mut roots: Vec<u64> = self.roots.iter().map(|&r| h[r as usize]).collect();
        roots.sort_unstable();
        let mut f = crate::rng::Fnv1a64::new();
        for r in roots {
            f.write(&r.to_le_bytes());
        }
        f.finish()
    }

    /// Hash of everything the embedding sees: the node numbering, operators, relations,
    /// estimates, measurements and edges in order. Equal plans (the same statement planned the
    /// same way) hash equal; any changed estimate changes it. Keys caches, never persisted (not
    /// stable across releases).
    pub fn content_hash(&self) -> u64 {
        self.content
    }

    fn compute_content_hash(&self) -> u64 {
        let mut h = crate::rng::WordHash::new();
        for n in &self.nodes {
            h.word(n.op as u64);
            for x in [n.est_rows, n.startup_cost, n.total_cost, n.width, n.loops] {
                h.word(x.to_bits());
            }
            h.word(u64::from(n.parallel_aware) | u64::from(n.workers) << 8);
            h.word(n.relation_hash);
            match n.actual {
                Some(a) => {
                    for x in [a.rows, a.self_ms, a.total_ms] {
                        h.word(x.to_bits());
                    }
                }
                None => h.word(u64::MAX),
            }
        }
        h.word(self.edges.len() as u64);
        for &(c, p) in &self.edges {
            h.word(u64::from(c) | u64::from(p) << 32);
        }
        h.finish()
    }

    /// Whether every node carries measured values.
    pub fn has_actuals(&self) -> bool {
        self.nodes.iter().all(|n| n.actual.is_some())
    }

    /// The same plan with node `v` renamed to `perm[v]`. Edge order is kept, so the input order
    /// of every operator is kept. Used to check that algorithms do not depend on numbering.
    pub fn permuted(&self, perm: &[usize]) -> Result<PlanDag> {
        let n = self.len();
        if perm.len() != n {
            return Err(NeuralDagError::InvalidDagStructure(format!(
                "permutation has {} entries for {n} nodes",
                perm.len()
            )));
        }
        let mut nodes: Vec<Option<PlanNode>> = vec![None; n];
        for (v, &to) in perm.iter().enumerate() {
            if to >= n || nodes[to].is_some() {
                return Err(NeuralDagError::InvalidDagStructure(
                    "not a permutation".into(),
                ));
            }
            nodes[to] = Some(self.nodes[v].clone());
        }
        let nodes = nodes.into_iter().flatten().collect();
        let edges = self
            .edges
            .iter()
            .map(|&(c, p)| (perm[c as usize] as u32, perm[p as usize] as u32))
            .collect();
        PlanDag::new(nodes, edges)
    }
}

#[cfg(test)]
#[allow(clippy::needless_range_loop)]
mod tests {
    use super::*;

    fn chain(n: usize) -> (Vec<PlanNode>, Vec<(u32, u32)>) {
        let nodes = (0..n)
            .map(|i| PlanNode::new(OpKind::SeqScan, 10.0, (n - i) as f64 * 10.0))
            .collect();
        let edges = (1..n as u32).map(|i| (i, i - 1)).collect();
        (nodes, edges)
    }

    fn err_text(r: Result<PlanDag>) -> String {
        match r {
            Err(NeuralDagError::InvalidDagStructure(m)) => m,
            other => panic!("expected InvalidDagStructure, got {other:?}"),
        }
    }

    #[test]
    fn shape_hash_sees_shape_not_numbers_or_numbering() {
        use crate::synth::{random_permutation, random_plan, SynthOptions};
        let d = random_plan(3, 40, SynthOptions::default());
        let h = d.shape_hash();
        let perm = random_permutation(9, d.len());
        assert_eq!(d.permuted(&perm).unwrap().shape_hash(), h);
        // Other estimates, same shape.
        let mut nodes = d.nodes().to_vec();
        nodes.iter_mut().for_each(|n| n.est_rows *= 3.0);
        assert_eq!(
            PlanDag::new(nodes.clone(), d.edges().to_vec())
                .unwrap()
                .shape_hash(),
            h
        );
        // Another operator or relation changes it.
        nodes[5].op = if nodes[5].op == OpKind::Sort {
            OpKind::Hash
        } else {
            OpKind::Sort
        };
        assert_ne!(
            PlanDag::new(nodes.clone(), d.edges().to_vec())
                .unwrap()
                .shape_hash(),
            h
        );
        let mut nodes = d.nodes().to_vec();
        nodes[7].relation_hash ^= 1;
        assert_ne!(
            PlanDag::new(nodes, d.edges().to_vec())
                .unwrap()
                .shape_hash(),
            h
        );
        assert_ne!(random_plan(4, 40, SynthOptions::default()).shape_hash(), h);
    }

    /// The shape hash keys persisted evidence: computed as it always was (FNV-1a over each
    /// node's operator name, a zero byte, its relation hash and its inputs' hashes, then over
    /// the sorted root hashes), whatever the implementation.
    #[test]
    fn shape_hash_is_the_persisted_definition() {
        use crate::synth::{random_plan, SynthOptions};
        fn reference(d: &PlanDag) -> u64 {
            let mut h = vec![0u64; d.len()];
            for &v in d.topo_order() {
                let v = v as usize;
                let mut bytes = Vec::new();
                bytes.extend_from_slice(d.node(v).op.name().as_bytes());
                bytes.push(0);
                bytes.extend_from_slice(&d.node(v).relation_hash.to_le_bytes());
                for &c in d.children(v) {
                    bytes.extend_from_slice(&h[c as usize].to_le_bytes());
                }
                h[v] = crate::rng::fnv1a64(&bytes);
            }
            let mut roots: Vec<u64> = d.roots().iter().map(|&r| h[r as usize]).collect();
            roots.sort_unstable();
            let bytes: Vec<u8> = roots.iter().flat_map(|r| r.to_le_bytes()).collect();
            crate::rng::fnv1a64(&bytes)
        }
        for seed in 0..40 {
            let d = random_plan(seed, 3 + seed as usize * 5, SynthOptions::default());
            assert_eq!(d.shape_hash(), reference(&d), "seed {seed}");
        }
        // And a value fixed once, so the definition itself cannot drift unnoticed.
        let (nodes, edges) = chain(3);
        assert_eq!(
            PlanDag::new(nodes, edges).unwrap().shape_hash(),
            18_105_060_171_528_405_734
        );
    }

    #[test]
    fn content_hash_sees_every_estimate_measurement_and_edge() {
        let (nodes, edges) = chain(4);
        let d = PlanDag::new(nodes.clone(), edges.clone()).unwrap();
        let h = d.content_hash();
        assert_eq!(
            PlanDag::new(nodes.clone(), edges.clone())
                .unwrap()
                .content_hash(),
            h
        );
        let changed = |f: &dyn Fn(&mut PlanNode)| {
            let mut n = nodes.clone();
            f(&mut n[2]);
            PlanDag::new(n, edges.clone()).unwrap().content_hash()
        };
        assert_ne!(changed(&|n| n.est_rows += 1.0), h);
        assert_ne!(changed(&|n| n.startup_cost += 1.0), h);
        assert_ne!(changed(&|n| n.width += 1.0), h);
        assert_ne!(changed(&|n| n.loops += 1.0), h);
        assert_ne!(changed(&|n| n.workers += 1), h);
        assert_ne!(changed(&|n| n.parallel_aware = !n.parallel_aware), h);
        assert_ne!(changed(&|n| n.relation_hash ^= 1), h);
        assert_ne!(changed(&|n| n.op = OpKind::Sort), h);
        assert_ne!(
            changed(&|n| n.actual = Some(Actuals {
                rows: 1.0,
                self_ms: 0.5,
                total_ms: 1.0
            })),
            h
        );
    }

    #[test]
    fn chain_orders_and_depths() {
        let (nodes, edges) = chain(4);
        let d = PlanDag::new(nodes, edges).unwrap();
        assert_eq!(d.topo_order(), &[3, 2, 1, 0]);
        assert_eq!(d.roots(), &[0]);
        assert_eq!((d.depth(3), d.height(3)), (3, 0));
        assert_eq!((d.depth(0), d.height(0)), (0, 3));
        assert_eq!(d.children(0), &[1]);
        assert_eq!(d.parents(1), &[0]);
        assert!(d.is_leaf(3) && !d.is_leaf(2));
        // total costs 40,30,20,10: every node costs 10 by itself.
        for v in 0..4 {
            assert!((d.self_cost(v) - 10.0).abs() < 1e-9);
        }
    }

    #[test]
    fn rejects_cycle_range_self_loop_duplicates_disconnection_and_bad_numbers() {
        let (nodes, mut edges) = chain(3);
        edges.push((0, 2));
        assert!(err_text(PlanDag::new(nodes, edges)).contains("cycle"));

        let (nodes, mut edges) = chain(3);
        edges.push((7, 0));
        assert!(err_text(PlanDag::new(nodes, edges)).contains("outside 0..3"));

        let (nodes, mut edges) = chain(3);
        edges.push((1, 1));
        assert!(err_text(PlanDag::new(nodes, edges)).contains("self loop"));

        let (nodes, mut edges) = chain(3);
        edges.push((1, 0));
        assert!(err_text(PlanDag::new(nodes, edges)).contains("duplicate edge"));

        let (nodes, _) = chain(3);
        assert!(err_text(PlanDag::new(nodes, vec![(1, 0)])).contains("disconnected"));

        assert!(err_text(PlanDag::new(Vec::new(), Vec::new())).contains("no nodes"));

        for bad in [f64::NAN, f64::INFINITY, -1.0, 1e30] {
            let (mut nodes, edges) = chain(3);
            nodes[1].est_rows = bad;
            let msg = err_text(PlanDag::new(nodes, edges));
            assert!(msg.contains("node 1") && msg.contains("est_rows"), "{msg}");
        }
        let (mut nodes, edges) = chain(3);
        nodes[2].actual = Some(Actuals {
            rows: 1.0,
            self_ms: f64::NAN,
            total_ms: 1.0,
        });
        assert!(err_text(PlanDag::new(nodes, edges)).contains("self_ms"));
    }

    #[test]
    fn node_limit() {
        let nodes = vec![PlanNode::new(OpKind::Result, 1.0, 1.0); MAX_NODES + 1];
        assert!(err_text(PlanDag::new(nodes, Vec::new())).contains("limit"));
    }

    #[test]
    fn shared_input_cost_is_charged_to_its_first_consumer() {
        // node 3 (cost 10) feeds both 1 (its owner, edge listed first) and 2, which feed 0.
        let mut nodes = vec![PlanNode::new(OpKind::Append, 1.0, 40.0)];
        nodes.push(PlanNode::new(OpKind::CteScan, 1.0, 15.0));
        nodes.push(PlanNode::new(OpKind::CteScan, 1.0, 15.0));
        nodes.push(PlanNode::new(OpKind::SeqScan, 1.0, 10.0));
        let d = PlanDag::new(nodes, vec![(1, 0), (2, 0), (3, 1), (3, 2)]).unwrap();
        assert!((d.self_cost(1) - 5.0).abs() < 1e-9);
        assert!((d.self_cost(2) - 15.0).abs() < 1e-9);
        assert!((d.self_cost(0) - 10.0).abs() < 1e-9);
        assert_eq!(d.depth(3), 2);
        assert_eq!(d.parents(3), &[1, 2]);
    }

    #[test]
    fn permutation_keeps_structure() {
        let (nodes, edges) = chain(5);
        let d = PlanDag::new(nodes, edges).unwrap();
        let perm = [4, 2, 0, 1, 3];
        let p = d.permuted(&perm).unwrap();
        for v in 0..5 {
            assert_eq!(d.depth(v), p.depth(perm[v]));
            assert_eq!(d.node(v), p.node(perm[v]));
        }
        assert!(d.permuted(&[0, 0, 1, 2, 3]).is_err());
    }

    #[test]
    fn op_names_round_trip() {
        for &op in OpKind::ALL {
            if op != OpKind::Other {
                assert_eq!(OpKind::from_explain_name(op.name()), op);
            }
            assert!(op.bucket() < 16);
        }
        assert_eq!(OpKind::from_explain_name("Quantum Join"), OpKind::Other);
    }
}
