//! PostgreSQL `EXPLAIN (FORMAT JSON [, ANALYZE, BUFFERS])` -> [`PlanDag`].
//!
//! The tree of "Plans" becomes edges `child -> parent` in input order (outer first). InitPlans
//! and SubPlans stay children of the node they hang under. A CTE (an InitPlan named
//! "CTE name") additionally feeds every "CTE Scan" that reads it, which is what makes a plan a
//! DAG; its cost stays charged to the node it hangs under, as PostgreSQL charges it.
//!
//! With ANALYZE, actual rows are totalled over loops and each node's self time is its
//! inclusive time minus its inputs'. Inside a parallel section (below Gather / Gather Merge)
//! "Actual Loops" counts the participating processes, which run at the same time, so the
//! inclusive time is the per-loop time times loops / participants.
//!
//! Errors name the JSON path of the offending field, e.g.
//! `Plan.Plans[1]."Total Cost": expected a number, found a string`.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde_json::{Map, Value};

use crate::dag::{Actuals, OpKind, PlanDag, PlanNode, MAX_COST, MAX_MS, MAX_ROWS};
use crate::error::{NeuralDagError, Result};
use crate::rng::fnv1a64;

/// Largest nesting of "Plans" accepted; deeper input is refused before it can exhaust the stack.
pub const MAX_PLAN_NESTING: usize = 1_000;

/// A parsed EXPLAIN document: the plan and the statement-level timings when present.
#[derive(Debug, Clone)]
pub struct ExplainedPlan {
    /// The plan graph.
    pub dag: PlanDag,
    /// "Planning Time" (ms), with ANALYZE or SUMMARY.
    pub planning_ms: Option<f64>,
    /// "Execution Time" (ms), with ANALYZE.
    pub execution_ms: Option<f64>,
    /// Per node (by id), the JSON path of its plan object in the document, as error messages
    /// spell paths (`[0].Plan.Plans[1]`): where a viewer finds the node's other fields.
    pub node_paths: Vec<String>,
}

/// Parse EXPLAIN JSON text into a plan DAG.
pub fn parse_explain(text: &str) -> Result<PlanDag> {
    parse_explain_full(text).map(|e| e.dag)
}

/// Parse EXPLAIN JSON text, keeping statement-level timings.
pub fn parse_explain_full(text: &str) -> Result<ExplainedPlan> {
    // serde_json's default recursion limit (128) protects the parser itself.
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| NeuralDagError::InvalidExplain(format!("not valid JSON: {e}")))?;
    from_value(&doc)
}

/// Convert an already parsed EXPLAIN JSON document.
pub fn from_value(doc: &Value) -> Result<ExplainedPlan> {
    let (top, prefix) = match doc {
        Value::Array(items) => match items.first() {
            Some(first) if items.len() == 1 => (first, "[0]"),
            Some(_) => {
                return Err(bad(
                    "",
                    format!("expected one statement, found {}", items.len()),
                ))
            }
            None => return Err(bad("", "the document is an empty array".into())),
        },
        other => (other, ""),
    };
    let top = top.as_object().ok_or_else(|| {
        bad(
            prefix,
            format!("expected an object, found {}", type_name(top)),
        )
    })?;
    let (plan, path) = match top.get("Plan") {
        Some(p) => (
            p,
            format!("{prefix}{}Plan", if prefix.is_empty() { "" } else { "." }),
        ),
        None if top.contains_key("Node Type") => (&Value::Object(top.clone()), prefix.to_string()),
        None => {
            return Err(bad(
                prefix,
                "no \"Plan\" field: is this EXPLAIN (FORMAT JSON) output?".into(),
            ))
        }
    };
    let planning_ms = opt_number(top, "Planning Time", prefix, MAX_MS)?;
    let execution_ms = opt_number(top, "Execution Time", prefix, MAX_MS)?;

    let mut b = Builder::default();
    b.walk(plan, &path, None, 0, 1)?;
    let node_paths = b.raw.iter().map(|r| r.path.clone()).collect();
    let dag = b.finish()?;
    Ok(ExplainedPlan {
        dag,
        planning_ms,
        execution_ms,
        node_paths,
    })
}

fn bad(path: &str, msg: String) -> NeuralDagError {
    if path.is_empty() {
        NeuralDagError::InvalidExplain(msg)
    } else {
        NeuralDagError::InvalidExplain(format!("{path}: {msg}"))
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn opt_number(obj: &Map<String, Value>, key: &str, path: &str, max: f64) -> Result<Option<f64>> {
    let Some(v) = obj.get(key) else {
        return Ok(None);
    };
    let field = || format!("{path}.\"{key}\"");
    let x = v.as_f64().ok_or_else(|| {
        bad(
            &field(),
            format!("expected a number, found {}", type_name(v)),
        )
    })?;
    if !x.is_finite() || x < 0.0 || x > max {
        return Err(bad(
            &field(),
            format!("{x} is outside the plausible range [0, {max:e}]"),
        ));
    }
    Ok(Some(x))
}

fn number(obj: &Map<String, Value>, key: &str, path: &str, max: f64) -> Result<f64> {
    opt_number(obj, key, path, max)?.ok_or_else(|| {
        bad(
            path,
            format!("missing \"{key}\" (EXPLAIN with COSTS OFF is not supported)"),
        )
    })
}

fn opt_str<'a>(obj: &'a Map<String, Value>, key: &str, path: &str) -> Result<Option<&'a str>> {
    match obj.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(
            &format!("{path}.\"{key}\""),
            format!("expected a string, found {}", type_name(v)),
        )),
    }
}

struct RawNode {
    node: PlanNode,
    path: String,
    /// Inclusive wall time in ms, when measured.
    inclusive_ms: Option<f64>,
    cte_defines: Option<String>,
    cte_reads: Option<String>,
}

#[derive(Default)]
struct Builder {
    raw: Vec<RawNode>,
    edges: Vec<(u32, u32)>,
}

impl Builder {
    /// Adds the node at `v` and its inputs; returns its index. `participants` is the number of
    /// processes running this part of the plan at once (1 outside parallel sections).
    fn walk(
        &mut self,
        v: &Value,
        path: &str,
        parent: Option<u32>,
        nesting: usize,
        participants: u32,
    ) -> Result<u32> {
        if nesting > MAX_PLAN_NESTING {
            return Err(bad(
                path,
                format!("plans nested deeper than {MAX_PLAN_NESTING} levels"),
            ));
        }
        let obj = v.as_object().ok_or_else(|| {
            bad(
                path,
                format!("expected a plan object, found {}", type_name(v)),
            )
        })?;
        let node_type = opt_str(obj, "Node Type", path)?
            .ok_or_else(|| bad(path, "missing \"Node Type\"".into()))?;
        let op = OpKind::from_explain_name(node_type);
        let parallel_aware = match obj.get("Parallel Aware") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(other) => {
                return Err(bad(
                    &format!("{path}.\"Parallel Aware\""),
                    format!("expected a boolean, found {}", type_name(other)),
                ))
            }
        };
        let workers_planned = opt_number(obj, "Workers Planned", path, 65_535.0)?;
        let workers_launched = opt_number(obj, "Workers Launched", path, 65_535.0)?;
        let actual_loops = opt_number(obj, "Actual Loops", path, MAX_ROWS)?;
        let actual_rows = opt_number(obj, "Actual Rows", path, MAX_ROWS)?;
        let actual_time = opt_number(obj, "Actual Total Time", path, MAX_MS)?;
        let relation = opt_str(obj, "Relation Name", path)?;
        let label = relation
            .or(opt_str(obj, "CTE Name", path)?)
            .or(opt_str(obj, "Index Name", path)?)
            .or(opt_str(obj, "Function Name", path)?)
            .or(opt_str(obj, "Alias", path)?)
            .unwrap_or("");
        let subplan_name = opt_str(obj, "Subplan Name", path)?;
        let loops = actual_loops.unwrap_or(1.0);
        let actual = match (actual_rows, actual_time) {
            (Some(rows), Some(_)) => Some(Actuals {
                rows: rows * loops,
                self_ms: 0.0,
                total_ms: 0.0,
            }),
            _ => None,
        };
        let inclusive_ms = actual_time.map(|t| t * loops / f64::from(participants.max(1)));
        let node = PlanNode {
            op,
            est_rows: number(obj, "Plan Rows", path, MAX_ROWS)?,
            startup_cost: number(obj, "Startup Cost", path, MAX_COST)?,
            total_cost: number(obj, "Total Cost", path, MAX_COST)?,
            width: number(obj, "Plan Width", path, MAX_ROWS)?,
            loops,
            parallel_aware,
            workers: workers_planned.unwrap_or(0.0) as u16,
            relation_hash: relation.map_or(0, |r| fnv1a64(r.as_bytes())),
            label: label.to_string(),
            actual,
        };
        let cte_defines = match (obj.get("Parent Relationship"), subplan_name) {
            (Some(Value::String(rel)), Some(name)) if rel == "InitPlan" => {
                name.strip_prefix("CTE ").map(String::from)
            }
            _ => None,
        };
        let cte_reads = if op == OpKind::CteScan {
            opt_str(obj, "CTE Name", path)?.map(String::from)
        } else {
            None
        };
        let id = self.raw.len() as u32;
        if self.raw.len() >= crate::dag::MAX_NODES {
            return Err(bad(
                path,
                format!("the plan has more than {} nodes", crate::dag::MAX_NODES),
            ));
        }
        self.raw.push(RawNode {
            node,
            path: path.to_string(),
            inclusive_ms,
            cte_defines,
            cte_reads,
        });
        if let Some(p) = parent {
            self.edges.push((id, p));
        }

        // Processes below a Gather: the workers launched (planned, without ANALYZE) and the leader.
        let below = if matches!(op, OpKind::Gather | OpKind::GatherMerge) {
            1 + workers_launched.or(workers_planned).unwrap_or(0.0) as u32
        } else {
            participants
        };
        match obj.get("Plans") {
            None => {}
            Some(Value::Array(children)) => {
                for (k, child) in children.iter().enumerate() {
                    self.walk(
                        child,
                        &format!("{path}.Plans[{k}]"),
                        Some(id),
                        nesting + 1,
                        below,
                    )?;
                }
            }
            Some(other) => {
                return Err(bad(
                    &format!("{path}.Plans"),
                    format!("expected an array, found {}", type_name(other)),
                ))
            }
        }
        Ok(id)
    }

    fn finish(mut self) -> Result<PlanDag> {
        let n = self.raw.len();
        // Link each CTE to the CTE Scans that read it. The InitPlan edge stays first, so the
        // CTE's cost remains charged where PostgreSQL charges it.
        let mut readers_of: Vec<Vec<u32>> = (0..n).map(|_| Vec::new()).collect();
        for (def, readers) in readers_of.iter_mut().enumerate() {
            let Some(name) = self.raw[def].cte_defines.as_deref() else {
                continue;
            };
            for (scan, raw) in self.raw.iter().enumerate() {
                if raw.cte_reads.as_deref() == Some(name) {
                    self.edges.push((def as u32, scan as u32));
                    readers.push(scan as u32);
                }
            }
        }

        // Self time. A CTE is computed while its scans read it, so its time is inside the time
        // of the scans that pulled its rows (usually the first one to run), not inside the node
        // it hangs under. It is taken out of the readers in plan order, each giving up at most
        // its own remaining time.
        let measured = self.raw.iter().all(|r| r.inclusive_ms.is_some());
        if measured {
            let incl = |k: usize| self.raw[k].inclusive_ms.unwrap_or(0.0);
            let mut self_ms: Vec<f64> = (0..n).map(incl).collect();
            for &(c, p) in &self.edges {
                if readers_of[c as usize].is_empty() {
                    self_ms[p as usize] -= incl(c as usize);
                }
            }
            for (cte, readers) in readers_of.iter().enumerate() {
                let mut remaining = incl(cte);
                for &r in readers {
                    let take = remaining.min(self_ms[r as usize].max(0.0));
                    self_ms[r as usize] -= take;
                    remaining -= take;
                }
            }
            for (r, s) in self.raw.iter_mut().zip(self_ms) {
                if let Some(a) = r.node.actual.as_mut() {
                    a.self_ms = s.max(0.0);
                    a.total_ms = r.inclusive_ms.unwrap_or(0.0);
                }
            }
        } else {
            for r in &mut self.raw {
                r.node.actual = None;
            }
        }
        let nodes = self.raw.into_iter().map(|r| r.node).collect();
        PlanDag::new(nodes, self.edges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = r#"[{"Plan": {"Node Type": "Hash Join", "Startup Cost": 1.0, "Total Cost": 100.0,
        "Plan Rows": 10, "Plan Width": 8, "Actual Total Time": 5.0, "Actual Rows": 10, "Actual Loops": 1,
        "Plans": [
          {"Node Type": "Seq Scan", "Relation Name": "a", "Parent Relationship": "Outer", "Startup Cost": 0,
           "Total Cost": 40, "Plan Rows": 100, "Plan Width": 8, "Actual Total Time": 2.0, "Actual Rows": 100, "Actual Loops": 1},
          {"Node Type": "Hash", "Parent Relationship": "Inner", "Startup Cost": 0, "Total Cost": 30,
           "Plan Rows": 50, "Plan Width": 8, "Actual Total Time": 1.5, "Actual Rows": 50, "Actual Loops": 1,
           "Plans": [{"Node Type": "Seq Scan", "Relation Name": "b", "Startup Cost": 0, "Total Cost": 25,
             "Plan Rows": 50, "Plan Width": 8, "Actual Total Time": 1.0, "Actual Rows": 25, "Actual Loops": 2}]}
        ]}, "Planning Time": 0.1, "Execution Time": 5.2}]"#;

    #[test]
    fn small_plan_with_actuals() {
        let e = parse_explain_full(SMALL).unwrap();
        let d = &e.dag;
        assert_eq!(d.len(), 4);
        assert_eq!(d.edges(), &[(1, 0), (2, 0), (3, 2)]);
        assert_eq!(d.node(1).label, "a");
        assert_eq!(d.node(3).actual.unwrap().rows, 50.0);
        // inclusive 5 - 2 - 1.5 = 1.5; Hash: 1.5 - 1.0*2 < 0 -> 0.
        assert!((d.node(0).actual.unwrap().self_ms - 1.5).abs() < 1e-9);
        assert_eq!(d.node(2).actual.unwrap().self_ms, 0.0);
        assert_eq!(e.execution_ms, Some(5.2));
    }

    fn err(text: &str) -> String {
        match parse_explain(text) {
            Err(NeuralDagError::InvalidExplain(m)) => m,
            other => panic!("expected InvalidExplain, got {other:?}"),
        }
    }

    #[test]
    fn errors_name_the_field() {
        assert!(err("{not json").contains("not valid JSON"));
        assert!(err("[]").contains("empty array"));
        assert!(err("[1]").contains("expected an object"));
        assert!(err(r#"{"Plans": []}"#).contains("no \"Plan\" field"));
        let m = err(&SMALL.replace(r#""Total Cost": 30"#, r#""Total Cost": "thirty""#));
        assert!(
            m.contains(r#"[0].Plan.Plans[1]."Total Cost""#) && m.contains("a string"),
            "{m}"
        );
        let m = err(&SMALL.replace(
            r#""Plan Rows": 50, "Plan Width": 8, "Actual Total Time": 1.0"#,
            r#""Plan Rows": -5, "Plan Width": 8, "Actual Total Time": 1.0"#,
        ));
        assert!(m.contains(r#"Plans[1].Plans[0]."Plan Rows""#), "{m}");
        let m = err(&SMALL.replace(r#""Plan Rows": 100"#, r#""Plan Rows": 1e300"#));
        assert!(m.contains("plausible"), "{m}");
        let m = err(&SMALL.replace(r#""Total Cost": 40, "#, ""));
        assert!(m.contains("Plans[0]") && m.contains("COSTS OFF"), "{m}");
        let m = err(&SMALL.replace(r#""Node Type": "Hash","#, r#""Node Type": 7,"#));
        assert!(m.contains("\"Node Type\"") && m.contains("a number"), "{m}");
        let m = err(&SMALL
            .replace(r#""Plans": [{"#, r#""Plans": {"x": [{"#)
            .replace("}]}\n        ]}", "}]}}\n        ]}"));
        assert!(
            m.contains("Plans[1].Plans") && m.contains("expected an array"),
            "{m}"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut s = String::new();
        for _ in 0..5000 {
            s.push_str(r#"{"Node Type":"Limit","Startup Cost":0,"Total Cost":1,"Plan Rows":1,"Plan Width":1,"Plans":["#);
        }
        // serde_json refuses this nesting itself.
        assert!(err(&s).contains("not valid JSON"));
    }
}
