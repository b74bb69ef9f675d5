//! Trace-driven replay of real PostgreSQL plans: every TPC-H query's plan under every arm and
//! what it took, recorded on PostgreSQL 15 by `scripts/tpch-rounds.sh --record` into
//! `tests/fixtures/tpch-sf1/` (and the demo's correlated-columns query by
//! `scripts/record-correlated.sh` into `tests/fixtures/correlated/`), replayed through `decide` / `choose` / `observe` /
//! `learn_cycle` as the extension would run them (the real plan of the chosen arm, its recorded
//! latency with noise), round after round.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ruvector_dag_core::dag::without_disable_cost;
use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::learning::{Candidate, NeuralDagConfig, Optimizer, Rule};
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_core::PlanDag;

/// Directory of the recorded TPC-H traces.
pub fn trace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("tpch-sf1")
}

/// Directory of the recorded correlated-columns traces.
pub fn correlated_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("correlated")
}

/// One arm's recording of one query.
#[derive(Debug, Clone)]
pub struct ArmTrace {
    /// The plan as the planner made it (no measurements: what the planner hook sees).
    pub plan: PlanDag,
    /// The planner's cost of the plan, without `disable_cost` penalties.
    pub cost: f64,
    /// Its two recorded execution times, ms (the cut-off twice when censored).
    pub ms: [f64; 2],
    /// Cut off at 4x the default plan's time: the time is a lower bound.
    pub censored: bool,
}

impl ArmTrace {
    /// Mean of the two recorded times.
    pub fn mean_ms(&self) -> f64 {
        (self.ms[0] + self.ms[1]) / 2.0
    }
}

/// One query: its arms' recordings, arm 0 (the default) first.
#[derive(Debug, Clone)]
pub struct QueryTrace {
    /// `q01` ... `q22`.
    pub name: String,
    /// By arm index.
    pub arms: Vec<ArmTrace>,
}

impl QueryTrace {
    /// The fastest arm's mean time.
    pub fn oracle_ms(&self) -> f64 {
        self.arms
            .iter()
            .map(ArmTrace::mean_ms)
            .fold(f64::INFINITY, f64::min)
    }
}

/// The plan as the planner hook sees it: no measurements, one loop per node.
fn as_planned(dag: &PlanDag) -> PlanDag {
    let nodes = dag
        .nodes()
        .iter()
        .map(|n| {
            let mut n = n.clone();
            n.actual = None;
            n.loops = 1.0;
            n
        })
        .collect();
    PlanDag::new(nodes, dag.edges().to_vec()).expect("a valid plan stays valid")
}

/// The recorded traces: (arm names, queries).
pub fn load() -> (Vec<String>, Vec<QueryTrace>) {
    load_dir(&trace_dir())
}

/// The traces recorded in `dir` (`times.tsv` and `<query>.<arm>.json`): arm names and queries.
pub fn load_dir(dir: &Path) -> (Vec<String>, Vec<QueryTrace>) {
    let tsv = std::fs::read_to_string(dir.join("times.tsv"))
        .unwrap_or_else(|e| panic!("cannot read {}/times.tsv: {e}", dir.display()));
    let mut names: Vec<String> = Vec::new();
    let mut queries: BTreeMap<String, Vec<ArmTrace>> = BTreeMap::new();
    for line in tsv.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        assert_eq!(f.len(), 6, "times.tsv: {line}");
        let (query, arm) = (f[0], f[1].parse::<usize>().expect("arm index"));
        if !names.contains(&f[2].to_string()) {
            assert_eq!(arm, names.len(), "arms in order: {line}");
            names.push(f[2].to_string());
        }
        let path = dir.join(format!("{query}.{arm}.json"));
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let plan =
            as_planned(&parse_explain(&text).unwrap_or_else(|e| panic!("{query}.{arm}: {e}")));
        let root = plan.roots()[0] as usize;
        let cost = without_disable_cost(plan.node(root).total_cost);
        let ms = [f[3], f[4]].map(|x| x.parse::<f64>().expect("a time"));
        let arms = queries.entry(query.to_string()).or_default();
        assert_eq!(arms.len(), arm, "{query}: arms in order");
        arms.push(ArmTrace {
            plan,
            cost,
            ms,
            censored: f[5] == "1",
        });
    }
    let queries = queries
        .into_iter()
        .map(|(name, arms)| QueryTrace { name, arms })
        .collect();
    (names, queries)
}

/// One executed query of the replay.
#[derive(Debug, Clone)]
pub struct Run {
    /// Round, from 1.
    pub round: usize,
    /// Index into the queries.
    pub query: usize,
    /// Arm that ran, and the rule that chose it.
    pub arm: u8,
    pub rule: Rule,
    /// What it took, and what the default plan would have taken, ms.
    pub ms: f64,
    pub default_ms: f64,
    /// The decision's reason.
    pub reason: String,
}

/// Replay `rounds` rounds of every query (in a seeded shuffled order per round) through a fresh
/// optimizer with `cfg`, a learning cycle after every round (the background learner). Returns the
/// runs and the optimizer.
pub fn replay(
    cfg: NeuralDagConfig,
    names: &[String],
    queries: &[QueryTrace],
    rounds: usize,
    seed: u64,
) -> (Vec<Run>, Optimizer) {
    let mut opt = Optimizer::new(cfg, names.to_vec()).expect("optimizer");
    let runs = replay_with(&mut opt, queries, 1..=rounds, seed);
    (runs, opt)
}

/// [`replay`] on a given optimizer, for the given round numbers.
pub fn replay_with(
    opt: &mut Optimizer,
    queries: &[QueryTrace],
    rounds: std::ops::RangeInclusive<usize>,
    seed: u64,
) -> Vec<Run> {
    let mut rng = SplitMix64::new(seed);
    let mut runs = Vec::new();
    for round in rounds {
        let mut order: Vec<usize> = (0..queries.len()).collect();
        for i in (1..order.len()).rev() {
            order.swap(i, rng.below(i + 1));
        }
        for &qi in &order {
            let q = &queries[qi];
            let default = &q.arms[0].plan;
            let mut d = opt.decide(default).expect("decide");
            if d.wants_candidates {
                let cands: Vec<Candidate> = (1..q.arms.len())
                    .filter(|&a| !d.blocked.contains(&(a as u8)))
                    .map(|a| Candidate {
                        arm: a as u8,
                        plan: q.arms[a].plan.shape_hash(),
                        cost: q.arms[a].cost,
                    })
                    .collect();
                opt.choose(&mut d, &cands).expect("choose");
            }
            let arm = d.arm;
            // One of the two recordings (alternating by round) with 5% log-normal noise, the
            // same draw for the arm that ran and for the default it is compared with.
            let noise = rng.normal();
            let pick = |a: usize| q.arms[a].ms[round % 2] * (0.05 * noise).exp();
            let ms = pick(usize::from(arm));
            let default_ms = pick(0);
            let executed = &q.arms[usize::from(arm)].plan;
            let t = opt
                .trajectory(&d, arm, Some(executed), ms as f32)
                .expect("trajectory");
            opt.observe(t).expect("observe");
            runs.push(Run {
                round,
                query: qi,
                arm,
                rule: d.rule,
                ms,
                default_ms,
                reason: d.reason.clone(),
            });
        }
        opt.learn_cycle().expect("learn cycle");
    }
    runs
}
