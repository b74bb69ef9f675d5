//! `ruvector-dag-web`: the browser demo's engine. The real core, compiled to wasm, reads a plan
//! (PostgreSQL `EXPLAIN (FORMAT JSON [, ANALYZE, BUFFERS])` output, or the JSON of
//! `ruvector_dag_explain_json(query)`) and computes everything the page draws: the DAG, each
//! attention kind's weights, the critical path, the min cut, row misestimates, the plan
//! embedding and every node's coordinates. The page (`www/`) only draws what this returns;
//! nothing is computed in JavaScript and nothing leaves the browser.
//!
//! [`analyze_document`] is the whole engine in plain Rust (tested natively); the
//! `#[wasm_bindgen]` functions wrap it for the page.

pub mod compare;
pub mod layout;

use ruvector_dag_core::attention::{critical_path, mechanism};
use ruvector_dag_core::explain::from_value;
use ruvector_dag_core::mincut::bottleneck_report;
use ruvector_dag_core::{
    embed, AttentionConfig, AttentionContext, AttentionKind, OpKind, PlanDag, PlanNode,
};
use serde_json::{json, Value};
use wasm_bindgen::prelude::*;

/// The format tag of `ruvector_dag_explain_json`'s output.
pub const EXPLAIN_JSON_FORMAT: &str = "ruvector_dag/explain/1";
/// The format tag of `ruvector_dag_compare_json`'s output (two plans and the decision).
pub const COMPARE_JSON_FORMAT: &str = "ruvector_dag/compare/1";

/// A plan read from a document, with what the document adds to it.
struct Read {
    dag: PlanDag,
    /// Per node, the JSON path of its object in the document (EXPLAIN input only).
    paths: Vec<String>,
    planning_ms: Option<f64>,
    execution_ms: Option<f64>,
    source: &'static str,
}

/// Read `text`: EXPLAIN JSON, or `ruvector_dag_explain_json` output. The error says which field
/// is wrong and where.
fn read(text: &str) -> Result<Read, String> {
    read_value(&parse(text)?)
}

fn parse(text: &str) -> Result<Value, String> {
    serde_json::from_str(text).map_err(|e| {
        format!("not valid JSON: {e} (paste EXPLAIN (FORMAT JSON) output or ruvector_dag_explain_json's)")
    })
}

fn read_value(doc: &Value) -> Result<Read, String> {
    match doc.get("format").and_then(Value::as_str) {
        Some(EXPLAIN_JSON_FORMAT) => return read_explain_json(doc),
        Some(COMPARE_JSON_FORMAT) => {
            return Err(
                "this is ruvector_dag_compare_json output, which holds two plans: open it as a comparison"
                    .into(),
            )
        }
        _ => {}
    }
    let e = from_value(doc).map_err(|e| e.to_string())?;
    Ok(Read {
        dag: e.dag,
        paths: e.node_paths,
        planning_ms: e.planning_ms,
        execution_ms: e.execution_ms,
        source: "EXPLAIN (FORMAT JSON)",
    })
}

/// `ruvector_dag_explain_json` output: nodes (operator, label, estimates, consumers) in order;
/// `startup_cost`, `width`, `loops`, `parallel_aware`, `workers`, `scans_relation` and the
/// measured `actual_rows`, `self_ms`, `total_ms` when present (each node as the core saw it).
fn read_explain_json(doc: &Value) -> Result<Read, String> {
    let nodes = doc
        .get("nodes")
        .and_then(Value::as_array)
        .ok_or("nodes: expected an array of plan nodes")?;
    let mut plan = Vec::with_capacity(nodes.len());
    let mut edges = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        let field = |k: &str| format!("nodes[{i}].{k}");
        let num = |k: &str| {
            n.get(k)
                .and_then(Value::as_f64)
                .ok_or_else(|| format!("{}: expected a number", field(k)))
        };
        let op = n
            .get("operator")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("{}: expected a string", field("operator")))?;
        let mut node = PlanNode::new(
            OpKind::from_explain_name(op),
            num("est_rows")?,
            num("total_cost")?,
        );
        node.label = n
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let opt = |k: &str| match n.get(k) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| format!("{}: expected a number", field(k))),
        };
        let flag = |k: &str| match n.get(k) {
            None | Some(Value::Null) => Ok(false),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| format!("{}: expected true or false", field(k))),
        };
        if let Some(x) = opt("startup_cost")? {
            node.startup_cost = x;
        }
        if let Some(x) = opt("width")? {
            node.width = x;
        }
        if let Some(x) = opt("loops")? {
            node.loops = x;
        }
        if let Some(x) = opt("workers")? {
            node.workers = x.clamp(0.0, 65_535.0) as u16;
        }
        node.parallel_aware = flag("parallel_aware")?;
        if flag("scans_relation")? {
            node.relation_hash = ruvector_dag_core::rng::fnv1a64(node.label.as_bytes());
        }
        if let (Some(rows), Some(self_ms), Some(total_ms)) =
            (opt("actual_rows")?, opt("self_ms")?, opt("total_ms")?)
        {
            node.actual = Some(ruvector_dag_core::Actuals {
                rows,
                self_ms,
                total_ms,
            });
        }
        plan.push(node);
        for c in n
            .get("consumers")
            .and_then(Value::as_array)
            .ok_or_else(|| format!("{}: expected an array of node ids", field("consumers")))?
        {
            let p = c
                .as_u64()
                .filter(|&p| (p as usize) < nodes.len())
                .ok_or_else(|| format!("{}: {c} is not a node id", field("consumers")))?;
            edges.push((i as u32, p as u32));
        }
    }
    let dag = PlanDag::new(plan, edges).map_err(|e| e.to_string())?;
    Ok(Read {
        paths: vec![String::new(); dag.len()],
        dag,
        planning_ms: None,
        execution_ms: None,
        source: "ruvector_dag_explain_json",
    })
}

/// How far off the planner's row estimate is: `max(a, e) / min(a, e)` of actual and estimated
/// rows per loop (each + 1, so an empty result does not divide by zero); None without actuals.
fn misestimate(n: &PlanNode) -> Option<f64> {
    let a = n.actual?;
    let loops = n.loops.max(1.0);
    let (actual, estimated) = (a.rows / loops + 1.0, n.est_rows + 1.0);
    Some(actual.max(estimated) / actual.min(estimated))
}

/// Everything the page draws for the plan in `text`, with the nodes flagged in `collapsed`
/// folded (their subtrees hidden). See the crate documentation.
pub fn analyze_document(text: &str, collapsed: &[u32]) -> Result<Value, String> {
    analyze_read(&read(text)?, collapsed)
}

fn analyze_read(r: &Read, collapsed: &[u32]) -> Result<Value, String> {
    let dag = &r.dag;
    let n = dag.len();
    let cfg = AttentionConfig::default();
    let ctx = AttentionContext::default();
    let mut weights: Vec<(AttentionKind, Vec<f32>)> = Vec::new();
    for kind in AttentionKind::ALL {
        let map = mechanism(kind, &cfg)
            .and_then(|m| m.attend(dag, &ctx))
            .map_err(|e| format!("{} attention: {e}", kind.name()))?;
        weights.push((kind, map.alpha));
    }
    let embedding = embed(
        dag,
        &ruvector_dag_core::AttentionMap {
            kind: AttentionKind::Topological,
            alpha: weights[0].1.clone(),
            pairwise: None,
        },
    )
    .map_err(|e| format!("embedding: {e}"))?;
    let cp = critical_path(dag);
    let cut = bottleneck_report(dag);
    let mut folded = vec![false; n];
    for &c in collapsed {
        if let Some(f) = folded.get_mut(c as usize) {
            *f = true;
        }
    }
    let lay = layout::layout(dag, &folded);
    let nodes: Vec<Value> = (0..n)
        .map(|v| {
            let node = dag.node(v);
            let w: serde_json::Map<String, Value> = weights
                .iter()
                .map(|(k, a)| (k.name().to_string(), json!(a[v])))
                .collect();
            let factor = misestimate(node);
            let flag = factor.map_or(0, |f| match f {
                f if f >= 1000.0 => 1000,
                f if f >= 100.0 => 100,
                f if f >= 10.0 => 10,
                _ => 0,
            });
            json!({
                "id": v,
                "operator": node.op.name(),
                "label": node.label,
                "est_rows": node.est_rows,
                "startup_cost": node.startup_cost,
                "width": node.width,
                "parallel_aware": node.parallel_aware,
                "workers": node.workers,
                "scans_relation": node.relation_hash != 0,
                "loops": node.loops,
                "actual_rows": node.actual.map(|a| a.rows),
                "self_ms": node.actual.map(|a| a.self_ms),
                "total_ms": node.actual.map(|a| a.total_ms),
                "total_cost": node.total_cost,
                "self_cost": dag.self_cost(v),
                "misestimate": factor,
                "misestimate_flag": flag,
                "critical": cp.on_path[v],
                "slack": cp.slack[v],
                "consumers": dag.parents(v),
                "inputs": dag.children(v),
                "path": r.paths[v],
                "weights": w,
                "x": lay.at[v].map(|p| p.0),
                "y": lay.at[v].map(|p| p.1),
                "collapsed": folded[v],
                "hidden_below": lay.hidden_below[v],
            })
        })
        .collect();
    let cut_edges: Vec<(u32, u32)> = cut
        .bottlenecks
        .iter()
        .map(|b| (b.node, b.consumer))
        .collect();
    let edges: Vec<Value> = dag
        .edges()
        .iter()
        .map(|&(c, p)| {
            let child = dag.node(c as usize);
            json!({
                "from": c,
                "to": p,
                "rows": child.output_rows(),
                "actual": child.actual.is_some(),
                "cut": cut_edges.contains(&(c, p)),
            })
        })
        .collect();
    let ranges: serde_json::Map<String, Value> = weights
        .iter()
        .map(|(k, a)| {
            let max = a.iter().copied().fold(0.0f32, f32::max);
            (
                k.name().to_string(),
                json!({"min": a.iter().copied().fold(f32::INFINITY, f32::min), "max": max}),
            )
        })
        .collect();
    Ok(json!({
        "source": r.source,
        "kinds": AttentionKind::ALL.iter().map(|k| k.name()).collect::<Vec<_>>(),
        "nodes": nodes,
        "edges": edges,
        "weight_ranges": ranges,
        "analyzed": dag.has_actuals(),
        "planning_ms": r.planning_ms,
        "execution_ms": r.execution_ms,
        "critical_path_cost": cp.length,
        "min_cut": {"rows": cut.cut_rows, "global_rows": cut.global_cut_rows},
        "embedding": embedding.as_slice(),
        "layout": {"width": lay.width, "height": lay.height,
                   "node_width": layout::NODE_W, "node_height": layout::NODE_H},
    }))
}

/// Whether `text` is `ruvector_dag_compare_json` output (two plans in one document). Text that
/// is not JSON is not.
pub fn is_comparison(text: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|d| {
            d.get("format")
                .and_then(Value::as_str)
                .map(|f| f == COMPARE_JSON_FORMAT)
        })
        .unwrap_or(false)
}

/// Two plans of one query side by side: `second` is empty and `first` is
/// `ruvector_dag_compare_json` output (the default plan, the plan under the extension's arm and
/// its decision), or both are plans (EXPLAIN JSON or `ruvector_dag_explain_json`; the decision
/// is read from the second's `ruvector_dag` group, which PostgreSQL 18 prints). Returns both
/// analyses ([`analyze_document`]'s) with each operator's `change` (`same` / `changed` / `new` /
/// `removed` and its `peer` in the other plan, see [`compare`]), the decision (or null), the
/// counts, and each plan's own JSON text.
pub fn analyze_pair_document(
    first: &str,
    second: &str,
    collapsed_first: &[u32],
    collapsed_second: &[u32],
) -> Result<Value, String> {
    let (docs, titles, decision, note) = if second.trim().is_empty() {
        let doc = parse(first)?;
        if doc.get("format").and_then(Value::as_str) != Some(COMPARE_JSON_FORMAT) {
            return Err(format!(
                "two plans are needed: paste a second plan, or ruvector_dag_compare_json output (format \"{COMPARE_JSON_FORMAT}\")"
            ));
        }
        let part = |k: &str| {
            doc.get(k)
                .filter(|v| !v.is_null())
                .cloned()
                .ok_or_else(|| format!("{k}: expected the plan's EXPLAIN JSON"))
        };
        let decision = doc.get("decision").cloned().unwrap_or(Value::Null);
        if !(decision.is_null() || decision.is_object()) {
            return Err("decision: expected an object or null".into());
        }
        let arm = decision
            .get("arm")
            .and_then(Value::as_str)
            .map_or_else(|| "no decision".to_string(), |a| format!("arm '{a}'"));
        let note = doc.get("note").and_then(Value::as_str).map(str::to_string);
        (
            [part("default")?, part("learned")?],
            [
                "the default plan".to_string(),
                format!("the extension's plan ({arm})"),
            ],
            decision,
            note,
        )
    } else {
        let (a, b) = (
            parse(first).map_err(|e| format!("first plan: {e}"))?,
            parse(second).map_err(|e| format!("second plan: {e}"))?,
        );
        let decision = compare::decision_in_explain(&b).unwrap_or(Value::Null);
        (
            [a, b],
            ["first plan".to_string(), "second plan".to_string()],
            decision,
            None,
        )
    };
    let which = ["first plan", "second plan"];
    let mut reads = Vec::with_capacity(2);
    for (i, d) in docs.iter().enumerate() {
        reads.push(read_value(d).map_err(|e| format!("{}: {e}", which[i]))?);
    }
    let d = compare::diff(&reads[0].dag, &reads[1].dag);
    let mut sides = Vec::with_capacity(2);
    for (i, (r, marks)) in reads.iter().zip([&d.first, &d.second]).enumerate() {
        let collapsed = if i == 0 {
            collapsed_first
        } else {
            collapsed_second
        };
        let mut a = analyze_read(r, collapsed).map_err(|e| format!("{}: {e}", which[i]))?;
        if let Some(nodes) = a.get_mut("nodes").and_then(Value::as_array_mut) {
            for (n, m) in nodes.iter_mut().zip(marks.iter()) {
                n["change"] = json!({"status": m.status.name(), "peer": m.peer});
            }
        }
        a["title"] = json!(titles[i]);
        a["text"] = json!(docs[i].to_string());
        sides.push(a);
    }
    let [left, right]: [Value; 2] = sides
        .try_into()
        .map_err(|_| "internal: two plans expected")?;
    Ok(json!({
        "left": left,
        "right": right,
        "decision": decision,
        "decision_fields": compare::DECISION_FIELDS.iter().map(|(k, _)| *k).collect::<Vec<_>>(),
        "note": note,
        "changes": compare::summary_json(&d),
    }))
}

/// For the page: [`is_comparison`].
#[wasm_bindgen]
pub fn comparison(text: &str) -> bool {
    is_comparison(text)
}

/// For the page: [`analyze_pair_document`] as JSON text; an `Error` naming the plan and field.
#[wasm_bindgen]
pub fn analyze_pair(
    first: &str,
    second: &str,
    collapsed_first: Vec<u32>,
    collapsed_second: Vec<u32>,
) -> Result<String, JsError> {
    analyze_pair_document(first, second, &collapsed_first, &collapsed_second)
        .map(|v| v.to_string())
        .map_err(|e| JsError::new(&e))
}

/// For the page: [`analyze_document`] as JSON text; an `Error` with the core's message.
#[wasm_bindgen]
pub fn analyze(text: &str, collapsed: Vec<u32>) -> Result<String, JsError> {
    analyze_document(text, &collapsed)
        .map(|v| v.to_string())
        .map_err(|e| JsError::new(&e))
}

/// The attention kinds, in the core's order (`AttentionKind::ALL`), as a JSON array: the page
/// lists these rather than spelling them again.
#[wasm_bindgen]
pub fn kinds() -> String {
    json!(AttentionKind::ALL
        .iter()
        .map(|k| k.name())
        .collect::<Vec<_>>())
    .to_string()
}

/// The portability benchmark's workloads ([`WORKLOADS`]) as a JSON array.
#[wasm_bindgen]
pub fn workloads() -> String {
    json!(WORKLOADS).to_string()
}

/// The version of the core the page runs.
#[wasm_bindgen]
pub fn core_version() -> String {
    env!("CARGO_PKG_VERSION").to_string()
}

/// A synthetic `EXPLAIN (FORMAT JSON)` document of `n` operators (a balanced tree of joins over
/// scans, seeded), for trying the page on large plans: what a 500- or 5,000-node plan looks
/// like without a database that makes one.
pub fn synthetic_explain_json(n: usize, seed: u64) -> Value {
    let n = n.clamp(1, ruvector_dag_core::dag::MAX_NODES);
    let mut rng = ruvector_dag_core::rng::SplitMix64::new(seed);
    // Node i's inputs are 2i+1 and 2i+2: depth log2(n), far inside serde_json's nesting limit.
    let rows: Vec<f64> = (0..n)
        .map(|_| (1.0 + rng.next_f64() * 1e5).round())
        .collect();
    let mut cost = vec![0.0f64; n];
    for i in (0..n).rev() {
        let inputs: f64 = [2 * i + 1, 2 * i + 2]
            .iter()
            .filter(|&&c| c < n)
            .map(|&c| cost[c])
            .sum();
        cost[i] = inputs + rows[i] * 0.01;
    }
    fn node(i: usize, n: usize, rows: &[f64], cost: &[f64]) -> Value {
        let inputs: Vec<usize> = [2 * i + 1, 2 * i + 2]
            .into_iter()
            .filter(|&c| c < n)
            .collect();
        let mut obj = serde_json::Map::new();
        let op = match inputs.len() {
            0 => "Seq Scan",
            1 => "Sort",
            _ if i % 3 == 0 => "Nested Loop",
            _ => "Hash Join",
        };
        obj.insert("Node Type".into(), json!(op));
        if inputs.is_empty() {
            obj.insert("Relation Name".into(), json!(format!("t{}", i % 97)));
        }
        obj.insert("Startup Cost".into(), json!(0.0));
        obj.insert(
            "Total Cost".into(),
            json!((cost[i] * 100.0).round() / 100.0),
        );
        obj.insert("Plan Rows".into(), json!(rows[i]));
        obj.insert("Plan Width".into(), json!(32));
        if !inputs.is_empty() {
            let kids: Vec<Value> = inputs.iter().map(|&c| node(c, n, rows, cost)).collect();
            obj.insert("Plans".into(), Value::Array(kids));
        }
        Value::Object(obj)
    }
    json!([{ "Plan": node(0, n, &rows, &cost) }])
}

/// For the page and its tests: [`synthetic_explain_json`] as text.
#[wasm_bindgen]
pub fn synthetic_explain(n: usize, seed: u32) -> String {
    synthetic_explain_json(n, u64::from(seed)).to_string()
}

/// The workloads of the portability figure (README): each attention kind, the embedding and
/// the min cut, on a seeded synthetic plan of `nodes` operators.
pub const WORKLOADS: [&str; 10] = [
    "topological",
    "causal_cone",
    "critical_path",
    "mincut_gated",
    "hierarchical_lorentz",
    "parallel_branch",
    "temporal_btsp",
    "ensemble",
    "embed",
    "mincut",
];

/// Run `workload` `iters` times on a synthetic plan of `nodes` operators; returns a checksum
/// (so the work cannot be optimised away). The caller times it: the same code natively
/// (`examples/portability.rs`) and as wasm in node (`bench/portability.mjs`).
pub fn run_workload_native(workload: &str, nodes: usize, iters: u32) -> Result<f64, String> {
    use ruvector_dag_core::synth::{random_plan, SynthOptions};
    let dag = random_plan(0xBE7C, nodes, SynthOptions::default());
    let cfg = AttentionConfig::default();
    let ctx = AttentionContext::default();
    let mut sum = 0.0f64;
    let kind = AttentionKind::from_name(workload).ok();
    let topo = mechanism(AttentionKind::Topological, &cfg).map_err(|e| e.to_string())?;
    let map = topo.attend(&dag, &ctx).map_err(|e| e.to_string())?;
    let mech = match kind {
        Some(k) => Some(mechanism(k, &cfg).map_err(|e| e.to_string())?),
        None => None,
    };
    for _ in 0..iters {
        sum += match (workload, &mech) {
            (_, Some(m)) => f64::from(m.attend(&dag, &ctx).map_err(|e| e.to_string())?.alpha[0]),
            ("embed", None) => f64::from(embed(&dag, &map).map_err(|e| e.to_string())?[0]),
            ("mincut", None) => bottleneck_report(&dag).cut_rows,
            (other, None) => {
                return Err(format!("unknown workload {other:?}; one of {WORKLOADS:?}"))
            }
        };
    }
    Ok(sum)
}

/// For the portability benchmark in node: [`run_workload_native`].
#[wasm_bindgen]
pub fn run_workload(workload: &str, nodes: usize, iters: u32) -> Result<f64, JsError> {
    run_workload_native(workload, nodes, iters).map_err(|e| JsError::new(&e))
}
