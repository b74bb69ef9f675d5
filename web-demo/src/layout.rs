//! Where each operator goes on the page: a tidy tree layout (Reingold-Tilford in its simplest
//! form: leaves take consecutive columns in plan order, a parent sits over the middle of its
//! children), roots at the top. A plan DAG is a tree plus the extra edges of CTEs read more than
//! once: each node hangs under its first consumer (the one PostgreSQL nests it under), and the
//! other edges are drawn as they fall, so the picture reads like EXPLAIN's indentation.
//!
//! Collapsed nodes hide everything that hangs under them (and is not reachable otherwise), so
//! a 5,000-node plan can be opened a level at a time.

use ruvector_dag_core::PlanDag;

/// Width and height of a node's box, and the gaps between boxes, in SVG units.
pub const NODE_W: f64 = 168.0;
pub const NODE_H: f64 = 46.0;
pub const GAP_X: f64 = 18.0;
pub const GAP_Y: f64 = 42.0;
const MARGIN: f64 = 16.0;

/// Positions of the visible nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Per node: top-left corner of its box, or None when hidden under a collapsed node.
    pub at: Vec<Option<(f64, f64)>>,
    /// Per node: how many nodes its collapse hides (0 when it is not collapsed).
    pub hidden_below: Vec<usize>,
    /// Size of the drawing.
    pub width: f64,
    pub height: f64,
}

/// Lay `dag` out, with the subtrees under the nodes in `collapsed` hidden.
pub fn layout(dag: &PlanDag, collapsed: &[bool]) -> Layout {
    let n = dag.len();
    // The tree: each node under its first consumer; children in plan (input) order.
    let tree_parent: Vec<Option<u32>> = (0..n).map(|v| dag.parents(v).first().copied()).collect();
    let kids: Vec<Vec<u32>> = (0..n)
        .map(|v| {
            dag.children(v)
                .iter()
                .copied()
                .filter(|&c| tree_parent[c as usize] == Some(v as u32))
                .collect()
        })
        .collect();
    let is_collapsed = |v: usize| collapsed.get(v).copied().unwrap_or(false);
    let mut at: Vec<Option<(f64, f64)>> = vec![None; n];
    let mut hidden_below = vec![0usize; n];
    let mut next_column = 0.0f64;
    let mut max_depth = 0usize;
    // Iterative post-order (a 5,000-node chain must not exhaust the wasm stack).
    for &root in dag.roots() {
        let mut stack: Vec<(u32, usize, bool)> = vec![(root, 0, false)];
        while let Some((v, depth, expanded)) = stack.pop() {
            let vi = v as usize;
            if at[vi].is_some() {
                continue;
            }
            let open = !is_collapsed(vi);
            if !expanded && open && !kids[vi].is_empty() {
                stack.push((v, depth, true));
                for &c in kids[vi].iter().rev() {
                    stack.push((c, depth + 1, false));
                }
                continue;
            }
            max_depth = max_depth.max(depth);
            let placed: Vec<f64> = if open {
                kids[vi]
                    .iter()
                    .filter_map(|&c| at[c as usize])
                    .map(|p| p.0)
                    .collect()
            } else {
                hidden_below[vi] = count_below(&kids, vi);
                Vec::new()
            };
            let x = match (placed.first(), placed.last()) {
                (Some(a), Some(b)) => (a + b) / 2.0,
                _ => {
                    let x = MARGIN + next_column * (NODE_W + GAP_X);
                    next_column += 1.0;
                    x
                }
            };
            at[vi] = Some((x, MARGIN + depth as f64 * (NODE_H + GAP_Y)));
        }
    }
    Layout {
        at,
        hidden_below,
        width: 2.0 * MARGIN + next_column.max(1.0) * (NODE_W + GAP_X) - GAP_X,
        height: 2.0 * MARGIN + (max_depth as f64 + 1.0) * (NODE_H + GAP_Y) - GAP_Y,
    }
}

fn count_below(kids: &[Vec<u32>], v: usize) -> usize {
    let mut stack: Vec<u32> = kids[v].clone();
    let mut count = 0;
    while let Some(c) = stack.pop() {
        count += 1;
        stack.extend(kids[c as usize].iter().copied());
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruvector_dag_core::synth::{random_plan, SynthOptions};

    #[test]
    fn every_node_gets_its_own_place_and_parents_sit_above_children() {
        for seed in 0..40 {
            let dag = random_plan(
                seed,
                5 + (seed as usize * 13) % 200,
                SynthOptions::default(),
            );
            let l = layout(&dag, &vec![false; dag.len()]);
            let pos: Vec<(f64, f64)> = l.at.iter().map(|p| p.expect("all visible")).collect();
            for (c, p) in dag.edges().iter().map(|&(c, p)| (c as usize, p as usize)) {
                if dag.parents(c)[0] as usize == p {
                    assert!(
                        pos[p].1 < pos[c].1,
                        "seed {seed}: parent {p} not above child {c}"
                    );
                }
            }
            let mut seen = std::collections::HashSet::new();
            for p in &pos {
                assert!(
                    seen.insert((p.0.to_bits(), p.1.to_bits())),
                    "seed {seed}: two nodes at {p:?}"
                );
                assert!(p.0 >= 0.0 && p.0 + NODE_W <= l.width + 1e-9);
                assert!(p.1 >= 0.0 && p.1 + NODE_H <= l.height + 1e-9);
            }
        }
    }

    #[test]
    fn a_collapsed_node_hides_what_hangs_under_it() {
        let dag = random_plan(3, 60, SynthOptions::default());
        let root = dag.roots()[0] as usize;
        let mut collapsed = vec![false; dag.len()];
        collapsed[root] = true;
        let l = layout(&dag, &collapsed);
        assert_eq!(
            l.at.iter().filter(|p| p.is_some()).count(),
            dag.roots().len()
        );
        assert_eq!(l.hidden_below[root] + dag.roots().len(), dag.len());
    }

    #[test]
    fn a_long_chain_does_not_exhaust_the_stack() {
        use ruvector_dag_core::{OpKind, PlanNode};
        let n = 5000;
        let nodes = (0..n)
            .map(|_| PlanNode::new(OpKind::Sort, 10.0, 1.0))
            .collect();
        let edges = (1..n as u32).map(|i| (i, i - 1)).collect();
        let dag = PlanDag::new(nodes, edges).unwrap();
        let l = layout(&dag, &vec![false; n]);
        assert!(l.at.iter().all(|p| p.is_some()));
    }
}
