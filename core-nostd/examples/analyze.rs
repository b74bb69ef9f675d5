//! Print a plan as an indented tree with every attention kind's weight per node, the critical
//! path (`*`) and the min-cut bottleneck producers (`|`).
//!
//! `cargo run -p ruvector-dag-core --example analyze -- plan.json` (EXPLAIN (FORMAT JSON) output,
//! with or without ANALYZE; `-` reads standard input).

use std::io::Read;
use std::process::ExitCode;

use ruvector_dag_core::attention::{critical_path, mechanism};
use ruvector_dag_core::explain::parse_explain_full;
use ruvector_dag_core::mincut::bottleneck_report;
use ruvector_dag_core::{AttentionConfig, AttentionContext, AttentionKind, PlanDag};

const SHORT: [&str; 8] = ["topo", "cone", "crit", "cut", "lor", "brch", "btsp", "ens"];

fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: analyze <explain.json | ->");
        return ExitCode::from(2);
    };
    let text = if path == "-" {
        let mut s = String::new();
        if let Err(e) = std::io::stdin().read_to_string(&mut s) {
            eprintln!("cannot read standard input: {e}");
            return ExitCode::from(1);
        }
        s
    } else {
        match std::fs::read_to_string(&path) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("cannot read {path}: {e}");
                return ExitCode::from(1);
            }
        }
    };
    let explained = match parse_explain_full(&text) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("{path}: {e}");
            return ExitCode::from(1);
        }
    };
    let dag = &explained.dag;
    let cfg = AttentionConfig::default();
    // With measured self times, the plan's own run is the temporal mechanism's history.
    let history: Vec<Vec<f32>> = dag.measured_shares().into_iter().collect();
    let ctx = AttentionContext {
        history: &history,
        ..Default::default()
    };
    let mut weights = Vec::new();
    for kind in AttentionKind::ALL {
        match mechanism(kind, &cfg).and_then(|m| m.attend(dag, &ctx)) {
            Ok(a) => weights.push(a.alpha),
            Err(e) => {
                eprintln!("{}: {e}", kind.name());
                return ExitCode::from(1);
            }
        }
    }
    let cp = critical_path(dag);
    let report = bottleneck_report(dag);
    let mut on_cut = vec![false; dag.len()];
    for b in &report.bottlenecks {
        on_cut[b.node as usize] = true;
    }

    let measured = dag.has_actuals();
    print!(
        "{:<44} {:>10} {:>10}",
        "node",
        "rows",
        if measured { "self ms" } else { "self cost" }
    );
    for s in SHORT {
        print!(" {s:>5}");
    }
    println!();
    let mut seen = vec![false; dag.len()];
    for &r in dag.roots() {
        print_tree(
            dag,
            r as usize,
            0,
            &weights,
            &cp.on_path,
            &on_cut,
            &mut seen,
        );
    }
    println!();
    println!(
        "{} nodes, {} edges; * critical path ({:.3} {}), | min-cut producer",
        dag.len(),
        dag.edges().len(),
        cp.length,
        if measured { "ms" } else { "cost units" }
    );
    print!("min cut: {} rows across", report.cut_rows);
    for b in &report.bottlenecks {
        print!(
            " [{} #{} -> #{}: {} rows]",
            b.op.name(),
            b.node,
            b.consumer,
            b.rows
        );
    }
    println!();
    if let Some(g) = report.global_cut_rows {
        println!("global min cut (undirected): {g} rows");
    }
    if let (Some(p), Some(e)) = (explained.planning_ms, explained.execution_ms) {
        println!("planning {p:.3} ms, execution {e:.3} ms");
    }
    ExitCode::SUCCESS
}

fn print_tree(
    dag: &PlanDag,
    v: usize,
    indent: usize,
    weights: &[Vec<f32>],
    crit: &[bool],
    cut: &[bool],
    seen: &mut [bool],
) {
    let node = dag.node(v);
    let mark = format!(
        "{}{}",
        if crit[v] { '*' } else { ' ' },
        if cut[v] { '|' } else { ' ' }
    );
    let shared = if seen[v] { " (shared, above)" } else { "" };
    let label = if node.label.is_empty() {
        String::new()
    } else {
        format!(" on {}", node.label)
    };
    let mut name = format!(
        "{mark}{}#{v} {}{label}{shared}",
        "  ".repeat(indent),
        node.op.name()
    );
    if name.chars().count() > 44 {
        name = name.chars().take(43).collect::<String>() + "~";
    }
    let work = dag.self_work(v);
    print!("{name:<44} {:>10.0} {:>10.2}", node.output_rows(), work);
    for w in weights {
        print!(" {:>5.3}", w[v]);
    }
    println!();
    if seen[v] {
        return;
    }
    seen[v] = true;
    for &c in dag.children(v) {
        print_tree(dag, c as usize, indent + 1, weights, crit, cut, seen);
    }
}
