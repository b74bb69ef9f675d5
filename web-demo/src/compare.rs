//! Two plans of one query side by side: which operators the second plan (say, the learned
//! arm's) keeps, changes, adds or drops against the first (the default plan), and the
//! extension's decision that produced it.
//!
//! Operators are matched by what they compute, not by where they sit: an operator's *scope* is
//! the multiset of relations scanned in its subtree. Two operators of the same type over the
//! same scope, whose inputs have the same scopes in the same order, are the same; an operator
//! whose scope the other plan computes with a different operator or with its inputs in another
//! order is *changed* (a hash join become a merge join, a sequential scan become an index scan,
//! the hash built on the other side); an operator whose scope the other plan never computes (another join order) or that
//! the other plan has no counterpart for (an added sort) is *new* in the second plan and
//! *removed* from the first.

use ruvector_dag_core::PlanDag;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// How one operator of a plan relates to the other plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// The other plan has an operator of the same type over the same relations, its inputs
    /// over the same relations in the same order.
    Same,
    /// The other plan computes the same relations with another operator, or its inputs in
    /// another order (`peer`).
    Changed,
    /// Only in the second plan.
    New,
    /// Only in the first plan.
    Removed,
}

impl Status {
    pub fn name(self) -> &'static str {
        match self {
            Status::Same => "same",
            Status::Changed => "changed",
            Status::New => "new",
            Status::Removed => "removed",
        }
    }
}

/// One operator's status and its counterpart in the other plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mark {
    pub status: Status,
    pub peer: Option<u32>,
}

/// The matching of two plans: one mark per operator of each.
#[derive(Debug)]
pub struct Diff {
    pub first: Vec<Mark>,
    pub second: Vec<Mark>,
}

/// Per operator, the sorted relation names scanned in its subtree (itself included).
fn scopes(dag: &PlanDag) -> Vec<Vec<String>> {
    let mut out: Vec<Vec<String>> = vec![Vec::new(); dag.len()];
    // Children before parents: a topological order of the plan's edges (child -> consumer).
    for &v in dag.topo_order() {
        let v = v as usize;
        let mut s: Vec<String> = Vec::new();
        for &c in dag.children(v) {
            s.extend(out[c as usize].iter().cloned());
        }
        let n = dag.node(v);
        if n.relation_hash != 0 {
            s.push(n.label.clone());
        }
        s.sort_unstable();
        out[v] = s;
    }
    out
}

/// Match `second` against `first` (see the module documentation). Operators are paired in
/// node order within each key, so the result is deterministic.
pub fn diff(first: &PlanDag, second: &PlanDag) -> Diff {
    let (sa, sb) = (scopes(first), scopes(second));
    let op = |d: &PlanDag, v: usize| d.node(v).op.name();
    let mut ma: Vec<Option<Mark>> = vec![None; first.len()];
    let mut mb: Vec<Option<Mark>> = vec![None; second.len()];
    let scope = |s: &[Vec<String>], v: usize| s[v].join("\u{1f}");
    // The inputs' scopes in order: a join whose inputs swapped sides (the hash built on the
    // other relation, another outer loop) is a changed operator.
    let inputs = |d: &PlanDag, s: &[Vec<String>], v: usize| {
        d.children(v)
            .iter()
            .map(|&c| scope(s, c as usize))
            .collect::<Vec<_>>()
            .join("\u{1d}")
    };
    let consumer = |d: &PlanDag, s: &[Vec<String>], v: usize| {
        d.parents(v).first().map_or_else(String::new, |&p| {
            format!("{}:{}", op(d, p as usize), scope(s, p as usize))
        })
    };
    let category = |d: &PlanDag, v: usize| {
        let k = d.node(v).op;
        if k.is_scan() {
            "scan"
        } else if k.is_join() {
            "join"
        } else {
            op(d, v)
        }
    };
    // Passes, strictest first; each pairs what the earlier ones left:
    // 1. the same operator, relations and inputs, under the same kind of consumer (two scans
    //    of one relation are told apart by where they feed);
    // 2. the same operator, relations and inputs anywhere;
    // 3. a scan for a scan, a join for a join, over the same relations (changed);
    // 4. any operator over the same relations (changed: a hash became a sort).
    type Key<'a> = &'a dyn Fn(&PlanDag, &[Vec<String>], usize) -> String;
    let k1 = |d: &PlanDag, s: &[Vec<String>], v: usize| {
        format!(
            "{}\u{1e}{}\u{1e}{}\u{1e}{}",
            op(d, v),
            scope(s, v),
            inputs(d, s, v),
            consumer(d, s, v)
        )
    };
    let k2 = |d: &PlanDag, s: &[Vec<String>], v: usize| {
        format!("{}\u{1e}{}\u{1e}{}", op(d, v), scope(s, v), inputs(d, s, v))
    };
    let k3 = |d: &PlanDag, s: &[Vec<String>], v: usize| {
        format!("{}\u{1e}{}", category(d, v), scope(s, v))
    };
    let k4 = |_: &PlanDag, s: &[Vec<String>], v: usize| scope(s, v);
    let passes: [(Key, Status); 4] = [
        (&k1, Status::Same),
        (&k2, Status::Same),
        (&k3, Status::Changed),
        (&k4, Status::Changed),
    ];
    for (key, status) in passes {
        let mut free: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        for v in (0..first.len()).rev() {
            if ma[v].is_none() {
                free.entry(key(first, &sa, v)).or_default().push(v);
            }
        }
        for (v, mark) in mb.iter_mut().enumerate() {
            if mark.is_some() {
                continue;
            }
            if let Some(a) = free.get_mut(&key(second, &sb, v)).and_then(Vec::pop) {
                ma[a] = Some(Mark {
                    status,
                    peer: Some(v as u32),
                });
                *mark = Some(Mark {
                    status,
                    peer: Some(a as u32),
                });
            }
        }
    }
    let fill = |m: Vec<Option<Mark>>, status| {
        m.into_iter()
            .map(|x| x.unwrap_or(Mark { status, peer: None }))
            .collect()
    };
    Diff {
        first: fill(ma, Status::Removed),
        second: fill(mb, Status::New),
    }
}

/// A plan's marks as JSON: per operator `{"status", "peer"}`.
pub fn marks_json(marks: &[Mark]) -> Value {
    Value::Array(
        marks
            .iter()
            .map(|m| json!({"status": m.status.name(), "peer": m.peer}))
            .collect(),
    )
}

/// The counts of each status over both plans.
pub fn summary_json(d: &Diff) -> Value {
    let count = |marks: &[Mark], s: Status| marks.iter().filter(|m| m.status == s).count();
    json!({
        "same": count(&d.second, Status::Same),
        "changed": count(&d.second, Status::Changed),
        "new": count(&d.second, Status::New),
        "removed": count(&d.first, Status::Removed),
        "identical": d.first.iter().chain(&d.second).all(|m| m.status == Status::Same),
    })
}

/// The fields of a decision, in the order the page shows them: the key in
/// `ruvector_dag_compare_json`'s `decision` object and the label PostgreSQL 18's EXPLAIN
/// gives it in its `ruvector_dag` group.
pub const DECISION_FIELDS: [(&str, &str); 9] = [
    ("arm", "Arm"),
    ("applied", "Applied"),
    ("rule", "Rule"),
    ("pattern", "Pattern"),
    ("similarity", "Similarity"),
    ("confidence", "Confidence"),
    ("attention", "Attention"),
    ("predicted_ms", "Predicted Time"),
    ("reason", "Reason"),
];

/// The extension's decision carried by an EXPLAIN JSON document (PostgreSQL 18 with
/// ruvector_dag loaded prints it as the `ruvector_dag` group beside `Plan`), in
/// `ruvector_dag_compare_json`'s field names; None when the document has none.
pub fn decision_in_explain(doc: &Value) -> Option<Value> {
    let top = match doc {
        Value::Array(items) => items.first()?,
        other => other,
    };
    let group = top.get("ruvector_dag")?.as_object()?;
    let out: serde_json::Map<String, Value> = DECISION_FIELDS
        .iter()
        .filter_map(|(key, label)| group.get(*label).map(|v| (key.to_string(), v.clone())))
        .collect();
    (!out.is_empty()).then_some(Value::Object(out))
}
