//! `rvdag-plugin`: check and try an attention plugin without PostgreSQL.
//!
//! ```text
//! rvdag-plugin validate PLUGIN.wasm [LIMITS]
//! rvdag-plugin run PLUGIN.wasm PLAN.json [--kind KIND] [--repeat N] [LIMITS]
//! LIMITS: --fuel N  --memory-mb N  --stack-kb N  --output-kb N  --module-mb N
//! ```
//!
//! `run` reads `EXPLAIN (FORMAT JSON [, ANALYZE])` output (or `ruvector_dag_explain_json`'s),
//! runs the plugin under the same sandbox and limits as the extension, and prints its weight
//! for every node beside a built-in kind's (`ensemble` unless `--kind` says otherwise), then the
//! fuel used and the time per call.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use ruvector_dag_core::attention::{mechanism, AttentionKind};
use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::{AttentionConfig, AttentionContext};
use ruvector_dag_wasm::{group, Limits, Sandbox};

const USAGE: &str = "usage:
  rvdag-plugin validate PLUGIN.wasm [LIMITS]
  rvdag-plugin run PLUGIN.wasm PLAN.json [--kind KIND] [--repeat N] [LIMITS]
LIMITS (defaults are the extension's): --fuel N  --memory-mb N  --stack-kb N  --output-kb N  --module-mb N";

#[derive(Debug)]
struct Args {
    command: String,
    files: Vec<String>,
    kind: AttentionKind,
    repeat: usize,
    limits: Limits,
}

fn parse_args(mut it: impl Iterator<Item = String>) -> Result<Args, String> {
    let command = it.next().ok_or("no command given")?;
    if command == "-h" || command == "--help" {
        return Err(String::new());
    }
    let mut args = Args {
        command,
        files: Vec::new(),
        kind: AttentionKind::Ensemble,
        repeat: 20,
        limits: Limits::default(),
    };
    while let Some(a) = it.next() {
        let mut num = |name: &str| -> Result<u64, String> {
            let v = it.next().ok_or_else(|| format!("{name} needs a value"))?;
            v.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("{name}: {v:?} is not a whole number"))
        };
        match a.as_str() {
            "--kind" => {
                let v = it.next().ok_or("--kind needs a value")?;
                args.kind = AttentionKind::from_name(&v).map_err(|e| e.to_string())?;
            }
            "--repeat" => args.repeat = num("--repeat")?.clamp(1, 100_000) as usize,
            "--fuel" => args.limits.fuel = num("--fuel")?,
            "--memory-mb" => args.limits.memory_bytes = (num("--memory-mb")? << 20) as usize,
            "--stack-kb" => args.limits.stack_bytes = (num("--stack-kb")? << 10) as usize,
            "--output-kb" => args.limits.output_bytes = (num("--output-kb")? << 10) as usize,
            "--module-mb" => args.limits.module_bytes = (num("--module-mb")? << 20) as usize,
            "-h" | "--help" => return Err(String::new()),
            s if s.starts_with("--") => return Err(format!("unknown option {s}")),
            _ => args.files.push(a),
        }
    }
    let want = match args.command.as_str() {
        "validate" => 1,
        "run" => 2,
        other => return Err(format!("unknown command {other:?}")),
    };
    if args.files.len() != want {
        return Err(format!(
            "{} takes {want} file(s), got {}",
            args.command,
            args.files.len()
        ));
    }
    Ok(args)
}

fn micros(d: Duration) -> String {
    format!("{:.1} us", d.as_secs_f64() * 1e6)
}

fn main() -> ExitCode {
    let args = match parse_args(std::env::args().skip(1)) {
        Ok(a) => a,
        Err(e) if e.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("rvdag-plugin: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rvdag-plugin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    let path = Path::new(&args.files[0]);
    let name = path
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("plugin")
        .to_string();
    let wasm = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut sandbox = Sandbox::new(args.limits)?;
    let started = std::time::Instant::now();
    let plugin = sandbox.load(&name, &wasm).map_err(|e| e.to_string())?;
    let compile = started.elapsed();
    println!(
        "plugin '{}': {} bytes, sha256 {}, ABI version {}: valid (validated and compiled in {:.1} ms)",
        plugin.name(),
        group(plugin.bytes() as u64),
        plugin.sha256(),
        ruvector_dag_core::plugin_abi::ABI_VERSION,
        compile.as_secs_f64() * 1e3
    );
    if args.command == "validate" {
        return Ok(());
    }
    let plan_path = Path::new(&args.files[1]);
    let text = std::fs::read_to_string(plan_path)
        .map_err(|e| format!("cannot read {}: {e}", plan_path.display()))?;
    let dag = parse_explain(&text).map_err(|e| format!("{}: {e}", plan_path.display()))?;
    let history: Vec<Vec<f32>> = dag.measured_shares().into_iter().collect();
    let ctx = AttentionContext {
        history: &history,
        ensemble_weights: None,
        want_pairwise: false,
    };
    let cfg = AttentionConfig::default();
    let first = sandbox
        .attend(&plugin, &dag, &ctx, &cfg)
        .map_err(|e| e.to_string())?;
    let mut times = vec![first.elapsed];
    for _ in 1..args.repeat {
        times.push(
            sandbox
                .attend(&plugin, &dag, &ctx, &cfg)
                .map_err(|e| e.to_string())?
                .elapsed,
        );
    }
    times.sort();
    let builtin = mechanism(args.kind, &cfg)
        .and_then(|m| m.attend(&dag, &ctx))
        .map_err(|e| e.to_string())?;
    println!(
        "{:>4}  {:<22} {:<24} {:>10} {:>10}",
        "node",
        "operator",
        "relation",
        name.chars().take(10).collect::<String>(),
        args.kind.name().chars().take(10).collect::<String>()
    );
    for (v, node) in dag.nodes().iter().enumerate() {
        println!(
            "{v:>4}  {:<22} {:<24} {:>10.4} {:>10.4}",
            node.op.name(),
            node.label.chars().take(24).collect::<String>(),
            first.weights[v],
            builtin.alpha[v]
        );
    }
    println!(
        "{} nodes; fuel used {} of {}; time per call (instance kept between calls) median {}, min {}, first {} over {} calls",
        dag.len(),
        group(first.fuel_used),
        group(args.limits.fuel),
        micros(times[times.len() / 2]),
        micros(times[0]),
        micros(first.elapsed),
        times.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Args, String> {
        parse_args(s.split_whitespace().map(String::from))
    }

    #[test]
    fn arguments_are_parsed_and_checked() {
        let a = parse("run p.wasm plan.json --fuel 1_000_000 --kind critical_path --memory-mb 8")
            .unwrap();
        assert_eq!(a.files, ["p.wasm", "plan.json"]);
        assert_eq!(a.limits.fuel, 1_000_000);
        assert_eq!(a.limits.memory_bytes, 8 << 20);
        assert_eq!(a.kind, AttentionKind::CriticalPath);
        assert!(parse("run p.wasm").unwrap_err().contains("takes 2 file(s)"));
        assert!(parse("validate p.wasm --fuel lots")
            .unwrap_err()
            .contains("not a whole number"));
        assert!(parse("validate p.wasm --kind nope")
            .unwrap_err()
            .contains("unknown attention kind"));
        assert!(parse("explode p.wasm")
            .unwrap_err()
            .contains("unknown command"));
        assert!(parse("validate p.wasm --colour red")
            .unwrap_err()
            .contains("unknown option"));
    }
}
