//! Analysis functions: a query's plan as a DAG, each attention kind's weights, the min cut and
//! the JSON the web demo reads. All of them plan the query (EXPLAIN, never run it) and compute
//! every value with the core.

use pgrx::prelude::*;
use pgrx::Json;
use ruvector_dag_core::attention::{critical_path, mechanism};
use ruvector_dag_core::mincut::bottleneck_report;
use ruvector_dag_core::{AttentionContext, AttentionKind, AttentionMap, PlanDag};
use serde_json::json;

use crate::{fail, guc, plan::plan_of, plugins};

fn attend(dag: &PlanDag, kind: AttentionKind) -> AttentionMap {
    attend_with(dag, kind, &[])
}

fn attend_with(dag: &PlanDag, kind: AttentionKind, history: &[Vec<f32>]) -> AttentionMap {
    let cfg = guc::attention_config();
    let ctx = AttentionContext {
        history,
        ..AttentionContext::default()
    };
    let result = mechanism(kind, &cfg).and_then(|m| m.attend(dag, &ctx));
    result.unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag: {} attention: {e}", kind.name()),
        )
    })
}

/// Per-node weights of `dag` under `ruvector.dag_attention_type` (a failing plugin is an
/// ERROR naming it).
pub(crate) fn weights_under_setting(dag: &PlanDag) -> Vec<f32> {
    match guc::attention_setting() {
        guc::AttentionSetting::Kind(k) => attend(dag, k).alpha,
        guc::AttentionSetting::Plugin(name) => plugins::attend(&name, dag),
    }
}

/// The execution history the learned state holds for the query shape of `dag` (the default
/// plan's: `query` planned with the planner hook passing through), for temporal BTSP
/// attention; empty when nothing was measured, or the library is not preloaded.
fn recorded_history(dag: &PlanDag) -> Vec<Vec<f32>> {
    if !crate::hooks::installed() {
        return Vec::new();
    }
    crate::hooks::with_optimizer(|o| o.history(dag.shape_hash()).to_vec()).unwrap_or_default()
}

/// The plan of `query` as PostgreSQL makes it, whatever arm the session would apply.
fn default_plan_of(query: &str) -> PlanDag {
    let _busy = crate::hooks::Busy::enter();
    plan_of(query)
}

fn kind_named(name: &str) -> AttentionKind {
    AttentionKind::from_name(name.trim()).unwrap_or_else(|e| {
        let why = match e {
            ruvector_dag_core::NeuralDagError::InvalidConfig(m) => m,
            other => other.to_string(),
        };
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: {why}, or plugin:<name> for a registered attention plugin"),
        )
    })
}

fn consumers(dag: &PlanDag, v: usize) -> Vec<i32> {
    dag.parents(v).iter().map(|&p| p as i32).collect()
}

/// The plan of `query` as a DAG: one row per operator with its consumers, estimates, weight
/// under `ruvector.dag_attention_type`, whether it lies on the critical path, and whether its
/// output crosses the minimum cut (a bottleneck producer).
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_analyze(
    query: &str,
) -> TableIterator<
    'static,
    (
        name!(node, i32),
        name!(consumers, Vec<i32>),
        name!(operator, String),
        name!(label, String),
        name!(est_rows, f64),
        name!(est_cost, f64),
        name!(self_cost, f64),
        name!(attention, f64),
        name!(critical, bool),
        name!(bottleneck, bool),
    ),
> {
    let dag = plan_of(query);
    let alpha = weights_under_setting(&dag);
    let cp = critical_path(&dag);
    let report = bottleneck_report(&dag);
    let rows: Vec<_> = (0..dag.len())
        .map(|v| {
            let n = dag.node(v);
            (
                v as i32,
                consumers(&dag, v),
                n.op.name().to_string(),
                n.label.clone(),
                n.est_rows,
                n.total_cost,
                dag.self_cost(v),
                f64::from(alpha[v]),
                cp.on_path[v],
                report.bottlenecks.iter().any(|b| b.node as usize == v),
            )
        })
        .collect();
    TableIterator::new(rows)
}

fn scores(
    query: &str,
    kind: Kind,
) -> TableIterator<
    'static,
    (
        name!(node, i32),
        name!(operator, String),
        name!(label, String),
        name!(weight, f64),
    ),
> {
    let (rows, _) = scored(query, kind);
    TableIterator::new(rows)
}

/// Per-operator rows of `kind`'s weights over the plan of `query`, and how many recorded runs
/// of the query's shape temporal BTSP attention used (0 for the other kinds).
fn scored(query: &str, kind: Kind) -> (Vec<(i32, String, String, f64)>, usize) {
    let (dag, history) = match kind {
        Kind::Builtin(AttentionKind::TemporalBtsp) => {
            let dag = default_plan_of(query);
            let history = recorded_history(&dag);
            (dag, history)
        }
        _ => (plan_of(query), Vec::new()),
    };
    let alpha = match kind {
        Kind::Builtin(kind) => attend_with(&dag, kind, &history).alpha,
        Kind::Plugin(name) => plugins::attend(&name, &dag),
    };
    let rows: Vec<_> = (0..dag.len())
        .map(|v| {
            let n = dag.node(v);
            (
                v as i32,
                n.op.name().to_string(),
                n.label.clone(),
                f64::from(alpha[v]),
            )
        })
        .collect();
    (rows, history.len())
}

/// Per-operator weights of attention `kind` (topological, causal_cone, critical_path,
/// mincut_gated, hierarchical_lorentz, parallel_branch, temporal_btsp, ensemble, or
/// `plugin:<name>` for a registered attention plugin) over the plan of `query`; they sum to 1.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_attention_scores(
    query: &str,
    kind: &str,
) -> TableIterator<
    'static,
    (
        name!(node, i32),
        name!(operator, String),
        name!(label, String),
        name!(weight, f64),
    ),
> {
    let kind = match kind.trim().strip_prefix(plugins::PREFIX) {
        Some(name) => Kind::Plugin(name.trim().to_string()),
        None => Kind::Builtin(kind_named(kind)),
    };
    scores(query, kind)
}

/// A built-in attention kind or a registered plugin.
enum Kind {
    Builtin(AttentionKind),
    Plugin(String),
}

macro_rules! per_kind {
    ($($fn_name:ident => $kind:ident, $doc:literal;)*) => {$(
        #[doc = $doc]
        #[pg_extern(volatile, parallel_unsafe)]
        fn $fn_name(
            query: &str,
        ) -> TableIterator<
            'static,
            (
                name!(node, i32),
                name!(operator, String),
                name!(label, String),
                name!(weight, f64),
            ),
        > {
            scores(query, Kind::Builtin(AttentionKind::$kind))
        }
    )*};
}

per_kind! {
    ruvector_attention_topological => Topological, "Topological attention over the plan of `query`.";
    ruvector_attention_causal_cone => CausalCone, "Causal-cone attention over the plan of `query`.";
    ruvector_attention_critical_path => CriticalPath, "Critical-path attention over the plan of `query`.";
    ruvector_attention_mincut_gated => MinCutGated, "Min-cut gated attention over the plan of `query`.";
    ruvector_attention_hierarchical_lorentz => HierarchicalLorentz, "Hierarchical Lorentz attention over the plan of `query`.";
    ruvector_attention_parallel_branch => ParallelBranch, "Parallel-branch attention over the plan of `query`.";
    ruvector_attention_ensemble => Ensemble, "The ensemble of the seven mechanisms over the plan of `query`.";
}

/// Temporal BTSP attention over the plan of `query`, from the execution history the learned
/// state holds for the query's shape (per-operator time shares of its recent timed runs):
/// `history_runs` says how many runs it used; 0 means none was recorded and the weights are
/// the topological ones.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_attention_temporal_btsp(
    query: &str,
) -> TableIterator<
    'static,
    (
        name!(node, i32),
        name!(operator, String),
        name!(label, String),
        name!(weight, f64),
        name!(history_runs, i32),
    ),
> {
    let (rows, runs) = scored(query, Kind::Builtin(AttentionKind::TemporalBtsp));
    TableIterator::new(
        rows.into_iter()
            .map(|(n, o, l, w)| (n, o, l, w, runs as i32))
            .collect::<Vec<_>>(),
    )
}

/// The minimum cut of the plan's data flow (rows as capacities): one row per operator whose
/// output crosses it, with the rows crossing, the cut's total, and the global (undirected)
/// minimum cut when it could be computed.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_mincut(
    query: &str,
) -> TableIterator<
    'static,
    (
        name!(producer, i32),
        name!(operator, String),
        name!(label, String),
        name!(consumer, i32),
        name!(rows, f64),
        name!(cut_rows, f64),
        name!(global_cut_rows, Option<f64>),
    ),
> {
    let dag = plan_of(query);
    let report = bottleneck_report(&dag);
    let rows: Vec<_> = report
        .bottlenecks
        .iter()
        .map(|b| {
            (
                b.node as i32,
                b.op.name().to_string(),
                b.label.clone(),
                b.consumer as i32,
                b.rows,
                report.cut_rows,
                report.global_cut_rows,
            )
        })
        .collect();
    TableIterator::new(rows)
}

/// Everything the web demo draws for the plan of `query`: nodes with estimates (every field the
/// core's node holds, so the demo rebuilds the same plan) and the weights of every attention
/// kind, edges, the critical path and the min cut.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_explain_json(query: &str) -> Json {
    let dag = plan_of(query);
    let maps: Vec<(AttentionKind, AttentionMap)> = AttentionKind::ALL
        .iter()
        .map(|&k| (k, attend(&dag, k)))
        .collect();
    let cp = critical_path(&dag);
    let report = bottleneck_report(&dag);
    let nodes: Vec<serde_json::Value> = (0..dag.len())
        .map(|v| {
            let n = dag.node(v);
            let attention: serde_json::Map<String, serde_json::Value> = maps
                .iter()
                .map(|(k, m)| (k.name().to_string(), json!(m.alpha[v])))
                .collect();
            json!({
                "id": v,
                "operator": n.op.name(),
                "label": n.label,
                "est_rows": n.est_rows,
                "total_cost": n.total_cost,
                "startup_cost": n.startup_cost,
                "width": n.width,
                "loops": n.loops,
                "parallel_aware": n.parallel_aware,
                "workers": n.workers,
                "scans_relation": n.relation_hash != 0,
                "self_cost": dag.self_cost(v),
                "consumers": consumers(&dag, v),
                "critical": cp.on_path[v],
                "attention": attention,
            })
        })
        .collect();
    let edges: Vec<[u32; 2]> = dag.edges().iter().map(|&(c, p)| [c, p]).collect();
    let cut: Vec<serde_json::Value> = report
        .bottlenecks
        .iter()
        .map(|b| json!({"producer": b.node, "consumer": b.consumer, "rows": b.rows}))
        .collect();
    Json(json!({
        "format": "ruvector_dag/explain/1",
        "nodes": nodes,
        "edges": edges,
        "critical_path_cost": cp.length,
        "min_cut": {"rows": report.cut_rows, "global_rows": report.global_cut_rows, "edges": cut},
    }))
}

/// Two plans of `query` side by side, for the web demo: PostgreSQL's default plan, the plan
/// the extension gives the query in this session (the arm's plan; in observe mode the plan the
/// arm would give), and the decision between them (arm, applied or not, rule, pattern,
/// similarity, confidence, attention kind, predicted time, reason, the arm's settings), or
/// null and a `note` saying why there is none (mode off, no enabled table, a plan too cheap
/// to re-plan). Each plan is PostgreSQL's `EXPLAIN (FORMAT JSON)` output; nothing is run.
/// Deciding is what EXPLAIN of the query would do: in learn mode it may explore.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_compare_json(query: &str) -> Json {
    Json(crate::hooks::compare(query))
}
