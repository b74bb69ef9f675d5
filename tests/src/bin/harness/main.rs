//! The workload harness: how much faster PostgreSQL gets with ruvector_dag, on TPC-H and on a
//! workload with correlated columns, against stock PostgreSQL and against the best any arm could
//! do. README's main-job command (`scripts/run.sh`) runs it end to end:
//!
//! 1. builds and installs the extension (`cargo pgrx install --release`; `--no-install` skips);
//! 2. starts a throwaway PostgreSQL 15 (own data directory and port; removed afterwards unless
//!    `--keep`) with the extension preloaded and its shipped settings;
//! 3. loads the workloads (TPC-H generated in-process by `tpchgen` and streamed in with COPY;
//!    the correlated dataset), indexes keys, ANALYZEs, enables the tables;
//! 4. runs the rounds: every template once per round with newly drawn constants, each instance
//!    in four modes interleaved (stock, learn, frozen, oracle);
//! 5. pgbench select-only with the extension off / observe / learn, interleaved;
//! 6. writes `report.json` and `report.html` (inline SVG) and prints a summary.

mod cluster;
mod correlated;
mod report;
mod rng;
mod run;
mod tpch;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressStyle};

use cluster::Cluster;
use rng::Rng;
use run::{Exec, Mode, Outcome};

const USAGE: &str = "usage: harness [options]
  --scale F            TPC-H scale factor; the correlated dataset grows with its square root
                       (default 0.3, about 10 minutes here; 1 is the benchmark)
  --rounds N           rounds (default 10); the first half are warm-up unless --warmup
  --warmup N           warm-up rounds (default rounds / 2)
  --workloads LIST     tpch,correlated (default both; a lone comma runs none: pgbench alone)
  --pgbench-seconds N  seconds per pgbench run (default 10; 0 skips pgbench)
  --pgbench-rounds N   pgbench rounds, each mode once per round in a rotating order
                       (default 6); ratios to off are per round, their spread printed
  --pgbench-paired-seconds N
                       seconds of the paired pgbench run in each pgbench database: every
                       client picks off or a mode for each transaction at random, so the modes'
                       difference is measured free of the machine's drift (default 40; 0 skips)
  --timeout-s N        statement cap for stock / learn / frozen runs (default 300)
  --seed N             constants' seed (default 1)
  --sessions per-round|per-query
                       a new session for every mode each round (default), or for every
                       instance (what one connection per request meets: each session loads
                       the learned state again)
  --out DIR            where report.json and report.html go (default target/harness)
  --pg 15|18           PostgreSQL major (default 15, the system's; 18 is unpacked by
                       scripts/setup-pg18.sh into a directory of its own)
  --set 'NAME = VALUE' a server setting beyond the shipped ones (repeatable; listed in the
                       report's settings, so a run that is not on the shipped defaults says so)
  --keep               leave the cluster running afterwards
  --no-install         do not build and install the extension (already installed)";

struct Args {
    scale: f64,
    rounds: u32,
    warmup: Option<u32>,
    workloads: Vec<String>,
    pgbench_seconds: u32,
    pgbench_rounds: u32,
    pgbench_paired_seconds: u32,
    timeout_s: u64,
    seed: u64,
    out: PathBuf,
    keep: bool,
    install: bool,
    pg: u32,
    /// A new session per instance (true) or per round (false).
    session_per_query: bool,
    /// Server settings beyond the shipped ones (`--set`), as postgresql.conf lines.
    extra_settings: Vec<String>,
}

fn parse_args(repo: &Path) -> Result<Args, String> {
    let mut a = Args {
        scale: 0.3,
        rounds: 10,
        warmup: None,
        workloads: vec!["tpch".into(), "correlated".into()],
        pgbench_seconds: 10,
        pgbench_rounds: 6,
        pgbench_paired_seconds: 40,
        timeout_s: 300,
        seed: 1,
        out: repo.join("target").join("harness"),
        keep: false,
        install: true,
        pg: 15,
        session_per_query: false,
        extra_settings: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = |what: &str| it.next().ok_or_else(|| format!("{flag} needs {what}"));
        let num_err = |v: &str, what: &str| format!("{flag} {v}: not {what}");
        match flag.as_str() {
            "--scale" => {
                let v = value("a number")?;
                a.scale = v
                    .parse()
                    .ok()
                    .filter(|s: &f64| *s > 0.0 && *s <= 100.0)
                    .ok_or_else(|| num_err(&v, "a scale in (0, 100]"))?;
            }
            "--rounds" => {
                let v = value("a number")?;
                a.rounds = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| num_err(&v, "a round count >= 1"))?;
            }
            "--warmup" => {
                let v = value("a number")?;
                a.warmup = Some(v.parse().map_err(|_| num_err(&v, "a number"))?);
            }
            "--workloads" => {
                let v = value("a list")?;
                a.workloads = v
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect();
                if let Some(bad) = a
                    .workloads
                    .iter()
                    .find(|w| *w != "tpch" && *w != "correlated")
                {
                    return Err(format!(
                        "--workloads: unknown workload '{bad}' (want tpch, correlated)"
                    ));
                }
            }
            "--pgbench-seconds" => {
                let v = value("a number")?;
                a.pgbench_seconds = v.parse().map_err(|_| num_err(&v, "a number of seconds"))?;
            }
            "--pgbench-paired-seconds" => {
                let v = value("a number")?;
                a.pgbench_paired_seconds =
                    v.parse().map_err(|_| num_err(&v, "a number of seconds"))?;
            }
            "--pgbench-rounds" => {
                let v = value("a number")?;
                a.pgbench_rounds = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 2)
                    .ok_or_else(|| num_err(&v, "a round count >= 2"))?;
            }
            "--timeout-s" => {
                let v = value("a number")?;
                a.timeout_s = v
                    .parse()
                    .ok()
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| num_err(&v, "a number of seconds >= 1"))?;
            }
            "--seed" => {
                let v = value("a number")?;
                a.seed = v.parse().map_err(|_| num_err(&v, "a number"))?;
            }
            "--out" => a.out = PathBuf::from(value("a directory")?),
            "--keep" => a.keep = true,
            "--pg" => {
                let v = value("15 or 18")?;
                a.pg = v
                    .parse()
                    .ok()
                    .filter(|m| *m == 15 || *m == 18)
                    .ok_or_else(|| num_err(&v, "15 or 18"))?;
            }
            "--no-install" => a.install = false,
            "--set" => {
                let v = value("'name = value'")?;
                let (name, setting) = v
                    .split_once('=')
                    .map(|(n, s)| (n.trim(), s.trim()))
                    .filter(|(n, s)| {
                        !n.is_empty()
                            && !s.is_empty()
                            && n.chars()
                                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                    })
                    .ok_or_else(|| format!("--set '{v}': want 'name = value'"))?;
                if v.contains('\n') {
                    return Err(format!("--set '{v}': one setting, on one line"));
                }
                a.extra_settings.push(format!("{name} = {setting}"));
            }
            "--sessions" => {
                let v = value("per-round or per-query")?;
                a.session_per_query = match v.as_str() {
                    "per-round" => false,
                    "per-query" => true,
                    _ => return Err(format!("--sessions '{v}': want per-round or per-query")),
                };
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown option '{other}'\n{USAGE}")),
        }
    }
    if let Some(w) = a.warmup {
        if w >= a.rounds {
            return Err(format!(
                "--warmup {w} leaves no round after warm-up (--rounds {})",
                a.rounds
            ));
        }
    }
    Ok(a)
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the repository")
        .to_path_buf();
    let args = match parse_args(&repo) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("harness: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = harness(&repo, &args) {
        eprintln!("harness: {e}");
        std::process::exit(1);
    }
}

fn spinner(msg: &str) -> ProgressBar {
    let b = ProgressBar::new_spinner();
    b.set_style(
        ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("a valid template"),
    );
    b.set_message(msg.to_string());
    b.enable_steady_tick(std::time::Duration::from_millis(200));
    b
}

fn sql_err(what: &str) -> impl Fn(postgres::Error) -> String + '_ {
    move |e| format!("{what}: {}", run::pg_error(&e))
}

/// One workload's database, loaded and enabled.
struct Workload {
    name: String,
    templates: Vec<(String, String)>,
    tables: Vec<&'static str>,
}

fn load_tpch(cluster: &Cluster, sf: f64) -> Result<Workload, String> {
    println!("==> TPC-H scale {sf}: generating in-process and loading with COPY");
    let mut c = cluster.connect("tpch", "off")?;
    c.batch_execute(tpch::SCHEMA)
        .map_err(sql_err("TPC-H schema"))?;
    for t in tpch::TABLES {
        let bar = ProgressBar::new(1).with_style(tpch::load_style());
        let t0 = Instant::now();
        let rows = tpch::load_table(&mut c, t, sf, &bar)?;
        bar.finish_and_clear();
        println!(
            "    {t:>9} {rows:>9} rows {:>6.1} s",
            t0.elapsed().as_secs_f64()
        );
    }
    let s = spinner("    indexing keys and ANALYZE");
    c.batch_execute(tpch::INDEXES)
        .map_err(sql_err("TPC-H indexes"))?;
    c.batch_execute("VACUUM ANALYZE")
        .map_err(sql_err("VACUUM ANALYZE"))?;
    s.finish_and_clear();
    println!("    keys indexed, ANALYZEd");
    Ok(Workload {
        name: "tpch".into(),
        templates: tpch::QUERIES
            .iter()
            .map(|(n, t)| (n.to_string(), t.to_string()))
            .collect(),
        tables: tpch::TABLES.to_vec(),
    })
}

fn load_correlated(cluster: &Cluster, scale: f64) -> Result<Workload, String> {
    let s = correlated::sizes(scale);
    let sp = spinner(&format!(
        "==> correlated: {} orders, {} items, {} customers",
        s.orders, s.items, s.customers
    ));
    let mut c = cluster.connect("correlated", "off")?;
    c.batch_execute(&correlated::dataset(scale))
        .map_err(sql_err("correlated dataset"))?;
    c.batch_execute("VACUUM ANALYZE")
        .map_err(sql_err("VACUUM ANALYZE"))?;
    sp.finish_and_clear();
    println!(
        "==> correlated: {} orders, {} items, {} customers loaded, ANALYZEd",
        s.orders, s.items, s.customers
    );
    Ok(Workload {
        name: "correlated".into(),
        templates: correlated::TEMPLATES
            .iter()
            .map(|(n, _)| (n.to_string(), String::new()))
            .collect(),
        tables: correlated::TABLES.to_vec(),
    })
}

fn enable(cluster: &Cluster, w: &Workload) -> Result<(), String> {
    let mut c = cluster.connect(&w.name, "off")?;
    c.batch_execute("CREATE EXTENSION ruvector_dag")
        .map_err(sql_err("CREATE EXTENSION ruvector_dag"))?;
    for t in &w.tables {
        c.batch_execute(&format!(
            "SELECT ruvector_dag.ruvector_enable_neural_dag('{t}'::regclass)"
        ))
        .map_err(sql_err(&format!("enabling {t}")))?;
    }
    Ok(())
}

fn status(cluster: &Cluster, db: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    match cluster.connect(db, "off").and_then(|mut c| {
        c.query(
            "SELECT key, value FROM ruvector_dag.ruvector_dag_status()",
            &[],
        )
        .map_err(|e| run::pg_error(&e))
    }) {
        Ok(rows) => {
            for r in rows {
                out.insert(r.get(0), r.get(1));
            }
        }
        Err(e) => {
            out.insert("error".into(), e);
        }
    }
    // The statistics advice the run left (`advice NN` keys, most promising first).
    if let Ok(rows) = cluster.connect(db, "off").and_then(|mut c| {
        c.query(
            "SELECT relation || ' (' || array_to_string(columns, ', ') || '): ' || status \
               FROM ruvector_dag.ruvector_dag_advice()",
            &[],
        )
        .map_err(|e| run::pg_error(&e))
    }) {
        for (i, r) in rows.iter().enumerate() {
            out.insert(format!("advice {i:02}"), r.get(0));
        }
    }
    out
}

/// The four sessions of a workload, one per mode.
struct Sessions {
    /// Per mode: its session, and whether it ran an instance yet.
    by_mode: Vec<(Mode, postgres::Client, bool)>,
    /// Whether the background explorers were last let run (true) or paused (false).
    explorers: Option<bool>,
}

impl Sessions {
    fn open(cluster: &Cluster, db: &str) -> Result<Self, String> {
        let mut by_mode = Vec::new();
        for m in Mode::ALL {
            by_mode.push((m, cluster.connect(db, m.dag_mode())?, false));
        }
        Ok(Sessions {
            by_mode,
            explorers: None,
        })
    }
    /// Close every session: the next `get` opens a new one.
    fn renew(&mut self, cluster: &Cluster, db: &str) -> Result<(), String> {
        let explorers = self.explorers;
        *self = Sessions::open(cluster, db)?;
        self.explorers = explorers;
        Ok(())
    }

    /// Let the background explorers run while mode `m` runs (learn, frozen) or pause them
    /// (stock and the oracle measure PostgreSQL alone; a pause waits for a run in progress).
    /// (From the stock session, which no in-scope statement counts.)
    fn explorers_for(&mut self, cluster: &Cluster, db: &str, m: Mode) -> Result<(), String> {
        let on = matches!(m, Mode::Learn | Mode::Frozen);
        if self.explorers == Some(on) {
            return Ok(());
        }
        let f = if on { "resume" } else { "pause" };
        self.get(cluster, db, Mode::Stock)?
            .batch_execute(&format!("SELECT ruvector_dag.ruvector_dag_explorer_{f}()"))
            .map_err(sql_err("pausing or resuming the explorers"))?;
        self.explorers = Some(on);
        Ok(())
    }

    fn get(
        &mut self,
        cluster: &Cluster,
        db: &str,
        m: Mode,
    ) -> Result<&mut postgres::Client, String> {
        let k = self
            .by_mode
            .iter()
            .position(|(x, _, _)| *x == m)
            .expect("every mode has a session");
        if self.by_mode[k].1.is_closed() {
            // The server closed the session (a crashed backend): a new one, counted as an error.
            self.by_mode[k].1 = cluster.connect(db, m.dag_mode())?;
        }
        Ok(&mut self.by_mode[k].1)
    }

    /// Whether mode `m`'s session runs its first instance now (and from now on it has run one).
    fn first_use(&mut self, m: Mode) -> bool {
        self.by_mode
            .iter_mut()
            .find(|(x, _, _)| *x == m)
            .is_some_and(|(_, _, used)| !std::mem::replace(used, true))
    }
}

fn harness(repo: &Path, a: &Args) -> Result<(), String> {
    let t0 = Instant::now();
    let started = Command::new("date")
        .arg("-Iseconds")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    std::fs::create_dir_all(&a.out).map_err(|e| format!("{}: {e}", a.out.display()))?;
    let (mut cluster, settings, server_version) = start_cluster(repo, a)?;
    let mut workloads = Vec::new();
    for w in &a.workloads {
        let wl = if w == "tpch" {
            load_tpch(&cluster, a.scale)?
        } else {
            load_correlated(&cluster, a.scale)?
        };
        enable(&cluster, &wl)?;
        workloads.push(wl);
    }
    let warmup = a.warmup.unwrap_or(a.rounds / 2);
    // `--workloads ,` measures pgbench alone.
    let (execs, explorer_ms_by_round) = if workloads.is_empty() {
        (Vec::new(), Vec::new())
    } else {
        run_rounds(&cluster, &workloads, a, warmup, t0)?
    };
    let pgbench = if a.pgbench_seconds > 0 {
        Some(pgbench(&cluster, a)?)
    } else {
        None
    };
    let mut summaries = Vec::new();
    for w in &workloads {
        summaries.push(report::summarize(
            &w.name,
            &execs,
            a.rounds,
            warmup,
            status(&cluster, &w.name),
        ));
    }
    let mut conf = settings;
    conf.push(format!(
        "nproc = {}",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    ));
    let rep = report::Report {
        command: std::env::args().collect::<Vec<_>>().join(" "),
        started,
        server_version,
        scale: a.scale,
        rounds: a.rounds,
        warmup_rounds: warmup,
        seed: a.seed,
        settings: conf,
        workloads: summaries,
        explorer_ms_by_round,
        pgbench,
        crashes_in_server_log: cluster.crashes_in_log(),
        duration_s: t0.elapsed().as_secs_f64(),
        executions: execs,
    };
    write_report(&a.out, &rep)?;
    cluster.stop_unless_kept();
    Ok(())
}

/// Install the extension when asked, start the throwaway cluster with the extension's shipped
/// settings (plus the machine's memory settings) and create the databases: (cluster, the
/// settings given, the server's version).
fn start_cluster(repo: &Path, a: &Args) -> Result<(Cluster, Vec<String>, String), String> {
    cluster::use_major(repo, a.pg)?;
    println!("==> PostgreSQL {} ({})", a.pg, cluster::pg_bin().display());
    if a.install {
        let s = spinner("==> building and installing the extension (cargo pgrx install --release)");
        cluster::install_extension(repo)?;
        s.finish_and_clear();
        println!("==> extension built and installed (cargo pgrx install --release)");
    }
    let mut dbs: Vec<&str> = a.workloads.iter().map(String::as_str).collect();
    if a.pgbench_seconds > 0 {
        dbs.extend(PGBENCH_DBS);
    }
    // `ruvector.dag_database` is left at its shipped default (empty: a database learns once the
    // extension is used there). Naming every database here started a learner and an explorer
    // for the pgbench databases before the rounds: 7 background workers of PostgreSQL's 8
    // `max_worker_processes`, so at most 1 parallel worker could run on the whole server while
    // TPC-H ran (in every mode, stock included), which no user without those databases has.
    let mut settings = vec![
        "shared_buffers = 2GB".to_string(),
        "work_mem = 64MB".to_string(),
        "max_parallel_workers_per_gather = 2".to_string(),
    ];
    // Later lines win in postgresql.conf: a --set overrides a setting above.
    settings.extend(a.extra_settings.iter().cloned());
    let cluster = Cluster::start(&settings, a.keep)?;
    println!(
        "==> cluster in {} (port {}), the extension's shipped settings{}",
        cluster.dir.display(),
        cluster.port,
        if a.extra_settings.is_empty() {
            String::new()
        } else {
            format!(" except {}", a.extra_settings.join(", "))
        }
    );
    let mut admin = cluster.connect("postgres", "off")?;
    let server_version: String = admin
        .query_one("SELECT version()", &[])
        .map_err(sql_err("version()"))?
        .get(0);
    for db in &dbs {
        admin
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .map_err(sql_err("CREATE DATABASE"))?;
    }
    Ok((cluster, settings, server_version))
}

/// Every round: each template of each workload once, with newly drawn constants, under every
/// mode ([`run_instance`]); the executions, and the background explorers' run time per round.
fn run_rounds(
    cluster: &Cluster,
    workloads: &[Workload],
    a: &Args,
    warmup: u32,
    t0: Instant,
) -> Result<(Vec<Exec>, Vec<f64>), String> {
    let mut execs: Vec<Exec> = Vec::new();
    // Per round: the time the background explorers' runs took (machine time, no user waited).
    let mut explorer_ms: Vec<f64> = Vec::new();
    let mut sessions = Vec::new();
    let mut arms = Vec::new();
    for w in workloads {
        let mut s = Sessions::open(cluster, &w.name)?;
        arms.push(run::arms(s.get(cluster, &w.name, Mode::Oracle)?)?);
        sessions.push(s);
    }
    println!(
        "==> {} rounds ({} warm-up); each instance: stock, learn, frozen and the oracle over {} arms (each distinct plan the median of {} runs), in rotating order",
        a.rounds,
        warmup,
        arms.first().map_or(0, Vec::len),
        run::ORACLE_RUNS
    );
    warm_caches(cluster, workloads, a)?;
    let total: u64 = workloads.iter().map(|w| w.templates.len() as u64).sum();
    let mut seq = vec![0u32; workloads.len()];
    for round in 1..=a.rounds {
        let bar = ProgressBar::new(total).with_style(
            ProgressStyle::with_template(
                "    round {prefix:>2} [{bar:30}] {pos}/{len} {msg} {elapsed}",
            )
            .expect("a valid template")
            .progress_chars("=> "),
        );
        bar.set_prefix(round.to_string());
        let mut sums: BTreeMap<Mode, f64> = BTreeMap::new();
        for (wi, w) in workloads.iter().enumerate() {
            if round > 1 && !a.session_per_query {
                sessions[wi].renew(cluster, &w.name)?;
            }
            for (ti, (name, text)) in w.templates.iter().enumerate() {
                bar.set_message(format!("{} {name}", w.name));
                if a.session_per_query && (round, ti) != (1, 0) {
                    sessions[wi].renew(cluster, &w.name)?;
                }
                seq[wi] += 1;
                let at = Instance {
                    round,
                    seq: seq[wi],
                    template: ti,
                    name,
                    text,
                };
                for e in run_instance(cluster, &mut sessions[wi], &arms[wi], w, a, &at, &bar)? {
                    *sums.entry(e.mode).or_default() += e.ms;
                    execs.push(e);
                }
                bar.inc(1);
            }
        }
        let parts: Vec<String> = sums
            .iter()
            .map(|(m, ms)| format!("{} {:.1} s", m.name(), ms / 1000.0))
            .collect();
        // A counter of ruvector_dag_status summed over the workloads' databases.
        let total = |key: &str| -> f64 {
            workloads
                .iter()
                .map(|w| {
                    status(cluster, &w.name)
                        .get(key)
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(0.0)
                })
                .sum()
        };
        explorer_ms.push(total("explorer_run_ms") - explorer_ms.iter().sum::<f64>());
        let (waited, contended) = (total("explorer_wait_ms"), total("explorer_contended"));
        let yielded = total("explorer_yielded");
        let kept = total("explorer_contended_kept");
        bar.finish_and_clear();
        println!(
            "    round {round:>2}: {}; the explorers' runs {:.1} s (at {:.0} s; so far they waited {:.1} s for a CPU, {contended:.0} runs were contended and {yielded:.0} given up for users' statements, not evidence; {kept:.0} contended yet faster than the default plan, kept)",
            parts.join(", "),
            explorer_ms.last().copied().unwrap_or(0.0) / 1000.0,
            t0.elapsed().as_secs_f64(),
            waited / 1000.0,
        );
    }
    Ok((execs, explorer_ms))
}

/// Run every template once, before round 1, with the extension off, in a connection of its own,
/// untimed and unrecorded (constants of a round 0 no measured round uses): the data and indexes
/// are then read from memory by whichever mode runs first in round 1. Without it that mode paid
/// for reading them from disk: round 1's order starts every workload with learn, and q01, the
/// first template (a scan of all of lineitem), ran 1.29-1.50x slower in learn than in stock in
/// three of the last four default runs (frozen, the second, 1.55x in one of them).
fn warm_caches(cluster: &Cluster, workloads: &[Workload], a: &Args) -> Result<(), String> {
    let s = spinner("==> warming the caches: every template once, the extension off, not measured");
    for w in workloads {
        let mut c = cluster.connect(&w.name, "off")?;
        for (name, text) in &w.templates {
            let query = instance_of(w, name, text, a, 0)?;
            if let run::Outcome::Failed(e) = run::run_once(&mut c, &query, a.timeout_s * 1000) {
                return Err(format!("warming the caches with {} {name}: {e}", w.name));
            }
        }
    }
    s.finish_and_clear();
    println!("==> caches warmed: every template run once with the extension off (not measured)");
    Ok(())
}

/// The instance of template `name` (text `text`) that round `round` runs: its constants drawn
/// from the run's seed, the workload, the round and the template.
fn instance_of(
    w: &Workload,
    name: &str,
    text: &str,
    a: &Args,
    round: u32,
) -> Result<String, String> {
    let mut rng = Rng::for_instance(a.seed, &w.name, round, name);
    if w.name == "tpch" {
        tpch::instance(name, text, &mut rng, a.scale)
    } else {
        correlated::instance(name, &mut rng, a.scale)
    }
}

/// Which instance of a template a round runs.
struct Instance<'a> {
    round: u32,
    seq: u32,
    template: usize,
    name: &'a str,
    text: &'a str,
}

/// One instance of a template (constants drawn for this round) under stock, learn and frozen
/// (the order rotating by round and template), then the oracle.
fn run_instance(
    cluster: &Cluster,
    sessions: &mut Sessions,
    arms: &[(String, String)],
    w: &Workload,
    a: &Args,
    at: &Instance<'_>,
    bar: &ProgressBar,
) -> Result<Vec<Exec>, String> {
    let (round, name, text, ti) = (at.round, at.name, at.text, at.template);
    let cap_ms = a.timeout_s * 1000;
    let mut out = Vec::new();
    let query = instance_of(w, name, text, a, round)?;
    let base = Exec {
        workload: w.name.clone(),
        round,
        seq: at.seq,
        template: name.to_string(),
        mode: Mode::Stock,
        ms: 0.0,
        planning_ms: 0.0,
        arm: "-".into(),
        rule: "-".into(),
        applied: false,
        timed_out: false,
        error: None,
        plans: 0,
        ran: 0,
        first_in_session: false,
        first_arms_ms: None,
        oracle_arms: Vec::new(),
    };
    // Every mode in turn, the order rotating by round and template, so that no mode always
    // runs first (cold caches) or last.
    let order = [Mode::Stock, Mode::Learn, Mode::Frozen, Mode::Oracle];
    let rot = (round as usize + ti) % order.len();
    for k in 0..order.len() {
        let mode = order[(k + rot) % order.len()];
        sessions.explorers_for(cluster, &w.name, mode)?;
        let first_in_session = sessions.first_use(mode);
        let client = sessions.get(cluster, &w.name, mode)?;
        let mut e = Exec {
            mode,
            first_in_session,
            ..base.clone()
        };
        if mode == Mode::Oracle {
            match run::oracle(client, arms, &query) {
                Ok(o) => {
                    e.ms = o.ms;
                    e.planning_ms = o.planning_ms;
                    e.arm = o.arm;
                    e.plans = o.plans;
                    e.ran = o.ran;
                    e.first_arms_ms = o.first_arms_ms;
                    e.oracle_arms = o.arms;
                }
                Err(msg) => {
                    bar.println(format!("    {} {name} oracle: {msg}", w.name));
                    e.ms = cap_ms as f64;
                    e.arm = "default".into();
                    e.error = Some(msg);
                }
            }
            out.push(e);
            continue;
        }
        match run::run_once(client, &query, cap_ms) {
            Outcome::Done(x) => {
                e.ms = x.planning_ms + x.execution_ms;
                e.planning_ms = x.planning_ms;
                e.arm = x.arm;
                e.rule = x.rule;
                e.applied = x.applied;
            }
            Outcome::TimedOut => {
                e.ms = cap_ms as f64;
                e.timed_out = true;
            }
            Outcome::Failed(msg) => {
                bar.println(format!("    {} {name} {}: {msg}", w.name, mode.name()));
                e.ms = cap_ms as f64;
                e.error = Some(msg);
            }
        }
        out.push(e);
    }
    Ok(out)
}

/// report.json, report.html and the per-workload SVG charts in `out`; the summary printed.
fn write_report(out: &Path, rep: &report::Report) -> Result<(), String> {
    let json = serde_json::to_string_pretty(rep).map_err(|e| format!("report.json: {e}"))?;
    let jp = out.join("report.json");
    std::fs::write(&jp, json).map_err(|e| format!("{}: {e}", jp.display()))?;
    let hp = out.join("report.html");
    std::fs::write(&hp, report::html(rep)?).map_err(|e| format!("{}: {e}", hp.display()))?;
    for w in &rep.workloads {
        for (name, svg) in [
            ("curve", report::curve_svg(w, &rep.executions)?),
            ("templates", report::bars_svg(w)?),
        ] {
            let p = out.join(format!("{}-{name}.svg", w.workload));
            std::fs::write(&p, svg).map_err(|e| format!("{}: {e}", p.display()))?;
        }
    }
    print!("{}", report::terminal(rep));
    println!("report: {} and {}", hp.display(), jp.display());
    Ok(())
}

/// pgbench's databases: its tables enabled for learning in the first, not in the second
/// (the extension created in both).
const PGBENCH_DBS: [&str; 2] = ["pgbench", "pgbench_plain"];

/// pgbench select-only: off, observe and learn on its tables enabled for learning, and learn
/// where they are not; `--pgbench-rounds` rounds, each mode once per round in a rotating
/// order. Each mode's ratio to off is taken per round (against that round's off run, minutes
/// apart at most), so the machine's drift between rounds cancels; the spread of those ratios
/// is the figure's own error.
fn pgbench(cluster: &Cluster, a: &Args) -> Result<report::Pgbench, String> {
    let scale = ((a.scale * 10.0).round() as u32).clamp(1, 100);
    let clients = 2u32;
    let rounds = a.pgbench_rounds;
    let s = spinner(&format!("==> pgbench: initialising scale {scale}"));
    let host = cluster.dir.display().to_string();
    let port = cluster.port.to_string();
    let base = |cmd: &mut Command| {
        cmd.args(["-h", &host, "-p", &port, "-U", "postgres"]);
    };
    for (i, db) in PGBENCH_DBS.iter().enumerate() {
        let mut init = Command::new(cluster::pg_bin().join("pgbench"));
        base(&mut init);
        init.args(["-i", "-q", "-s", &scale.to_string(), db]);
        let out = init.output().map_err(|e| format!("pgbench -i: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "pgbench -i {db} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        let tables = if i == 0 {
            vec![
                "pgbench_accounts",
                "pgbench_branches",
                "pgbench_tellers",
                "pgbench_history",
            ]
        } else {
            Vec::new()
        };
        enable(
            cluster,
            &Workload {
                name: (*db).into(),
                templates: Vec::new(),
                tables,
            },
        )?;
    }
    s.finish_and_clear();
    // (label, database, ruvector.dag_mode)
    let modes: [(&str, &str, &str); 4] = [
        ("off", PGBENCH_DBS[0], "off"),
        ("observe", PGBENCH_DBS[0], "observe"),
        ("learn", PGBENCH_DBS[0], "learn"),
        (report::LEARN_NOT_ENABLED, PGBENCH_DBS[1], "learn"),
    ];
    println!(
        "==> pgbench -S (scale {scale}, {clients} clients): {} modes x {rounds} rounds of {} s, interleaved",
        modes.len(),
        a.pgbench_seconds
    );
    let bar = ProgressBar::new(u64::from(rounds) * modes.len() as u64).with_style(
        ProgressStyle::with_template("    [{bar:30}] {pos}/{len} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let mut tps: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for round in 0..rounds as usize {
        for k in 0..modes.len() {
            let (label, db, mode) = modes[(k + round) % modes.len()];
            bar.set_message(label);
            let mut cmd = Command::new(cluster::pg_bin().join("pgbench"));
            base(&mut cmd);
            cmd.env("PGOPTIONS", format!("-c ruvector.dag_mode={mode}"))
                .args([
                    "-S",
                    "-n",
                    "-c",
                    &clients.to_string(),
                    "-j",
                    &clients.to_string(),
                    "-T",
                    &a.pgbench_seconds.to_string(),
                    db,
                ]);
            let out = cmd.output().map_err(|e| format!("pgbench: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            if !out.status.success() {
                return Err(format!(
                    "pgbench -S ({label}) failed: {}{}",
                    text,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            let t = text
                .lines()
                .find(|l| l.starts_with("tps = "))
                .and_then(|l| l.split_whitespace().nth(2))
                .and_then(|v| v.parse::<f64>().ok())
                .ok_or_else(|| format!("pgbench ({label}) printed no tps line:\n{text}"))?;
            tps.entry(label.to_string()).or_default().push(t);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    let mut r = report::Pgbench::from_runs(scale, a.pgbench_seconds, clients, tps)?;
    if a.pgbench_paired_seconds > 0 {
        let off_latency = r.off_latency_us();
        // (database, the modes beside off and their labels)
        let runs: [(&str, &[(&str, &str)]); 2] = [
            (
                PGBENCH_DBS[0],
                &[("observe", "observe"), ("learn", "learn")],
            ),
            (PGBENCH_DBS[1], &[("learn", report::LEARN_NOT_ENABLED)]),
        ];
        for (db, modes) in runs {
            let s = spinner(&format!(
                "==> pgbench paired in {db}: off and {} transaction by transaction, {} s",
                modes.iter().map(|m| m.0).collect::<Vec<_>>().join(", "),
                a.pgbench_paired_seconds
            ));
            let seconds = paired_run(cluster, a, db, scale, clients, modes)?;
            s.finish_and_clear();
            for (k, (_, label)) in modes.iter().enumerate() {
                let pairs: Vec<(report::Tally, report::Tally)> = seconds
                    .values()
                    .map(|per_script| (per_script[0], per_script[k + 1]))
                    .collect();
                r.paired.push(report::Paired::from_seconds(
                    db,
                    label,
                    &pairs,
                    off_latency,
                )?);
            }
        }
    }
    println!("{}", r.summary_line());
    Ok(r)
}

/// One pgbench run on `db` whose clients pick, for each transaction, one of off's script and
/// `modes`' at random (`SET ruvector.dag_mode`, then `pgbench -S`'s statement), logging every
/// transaction; per second of the run, per script (off first, then `modes` in order): the sum
/// of the latencies (us) and the number of transactions.
fn paired_run(
    cluster: &Cluster,
    a: &Args,
    db: &str,
    scale: u32,
    clients: u32,
    modes: &[(&str, &str)],
) -> Result<BTreeMap<u64, Vec<report::Tally>>, String> {
    let dir = cluster.dir.join(format!("pgbench-paired-{db}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = Command::new(cluster::pg_bin().join("pgbench"));
    cmd.args([
        "-h",
        &cluster.dir.display().to_string(),
        "-p",
        &cluster.port.to_string(),
        "-U",
        "postgres",
        "-n",
        "-c",
        &clients.to_string(),
        "-j",
        &clients.to_string(),
        "-s",
        &scale.to_string(),
        "-T",
        &a.pgbench_paired_seconds.to_string(),
        "-l",
    ]);
    cmd.arg(format!("--log-prefix={}", dir.join("log").display()));
    let names: Vec<&str> = std::iter::once("off")
        .chain(modes.iter().map(|m| m.0))
        .collect();
    for mode in &names {
        let script = dir.join(format!("{mode}.sql"));
        // pgbench -S's own script, after the mode's SET.
        std::fs::write(
            &script,
            format!(
                "\\set aid random(1, 100000 * :scale)\nSET ruvector.dag_mode = {mode};\nSELECT abalance FROM pgbench_accounts WHERE aid = :aid;\n"
            ),
        )
        .map_err(|e| format!("{}: {e}", script.display()))?;
        cmd.arg("-f").arg(format!("{}@1", script.display()));
    }
    cmd.arg(db).current_dir(&dir);
    let out = cmd.output().map_err(|e| format!("pgbench: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "pgbench paired in {db} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let mut seconds: BTreeMap<u64, Vec<report::Tally>> = BTreeMap::new();
    let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut logs = 0;
    for entry in entries.flatten() {
        if !entry.file_name().to_string_lossy().starts_with("log.") {
            continue;
        }
        logs += 1;
        let text = std::fs::read_to_string(entry.path())
            .map_err(|e| format!("{}: {e}", entry.path().display()))?;
        for line in text.lines() {
            // client_id transaction_no time script_no time_epoch time_us [...]
            let f: Vec<&str> = line.split_whitespace().collect();
            let parsed = (f.len() >= 6)
                .then(|| {
                    Some((
                        f[2].parse::<f64>().ok()?,
                        f[3].parse::<usize>().ok()?,
                        f[4].parse::<u64>().ok()?,
                    ))
                })
                .flatten();
            let Some((us, script, epoch)) = parsed else {
                return Err(format!(
                    "pgbench paired in {db}: an unreadable log line in {}: {line}",
                    entry.path().display()
                ));
            };
            if script >= names.len() {
                return Err(format!(
                    "pgbench paired in {db}: script {script} in the log, {} were given",
                    names.len()
                ));
            }
            let per = seconds
                .entry(epoch)
                .or_insert_with(|| vec![(0.0, 0); names.len()]);
            per[script].0 += us;
            per[script].1 += 1;
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    if logs == 0 {
        return Err(format!("pgbench paired in {db} wrote no transaction log"));
    }
    Ok(seconds)
}
