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
use ruvector_dag_core::learning::{
    explore_timeout_ms, Candidate, Exploration, NeuralDagConfig, Optimizer, Rule, RunKind, Step,
    EXPLORE_MAX_RUNS,
};
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
        for qi in round_order(&mut rng, queries.len()) {
            let q = &queries[qi];
            let mut d = opt.decide(&q.arms[0].plan).expect("decide");
            if d.wants_candidates {
                let cands = candidates(q, &d.blocked);
                opt.choose(&mut d, &cands).expect("choose");
            }
            runs.push(user_run(opt, q, qi, round, &d, &mut rng));
        }
        opt.learn_cycle().expect("learn cycle");
    }
    runs
}

/// The queries of one round, in a seeded shuffled order.
fn round_order(rng: &mut SplitMix64, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i + 1));
    }
    order
}

/// The candidate plans the host would plan for `q`: every arm but the default and `blocked`.
fn candidates(q: &QueryTrace, blocked: &[u8]) -> Vec<Candidate> {
    (1..q.arms.len())
        .filter(|&a| !blocked.contains(&(a as u8)))
        .map(|a| Candidate {
            arm: a as u8,
            plan: q.arms[a].plan.shape_hash(),
            cost: q.arms[a].cost,
        })
        .collect()
}

/// One user's run of `q` under decision `d`: one of the two recordings (alternating by round)
/// with 5% log-normal noise, the same draw for the arm that ran and for the default it is
/// compared with; observed, and returned.
fn user_run(
    opt: &mut Optimizer,
    q: &QueryTrace,
    qi: usize,
    round: usize,
    d: &ruvector_dag_core::learning::Decision,
    rng: &mut SplitMix64,
) -> Run {
    let arm = d.arm;
    let noise = rng.normal();
    let pick = |a: usize| q.arms[a].ms[round % 2] * (0.05 * noise).exp();
    let (ms, default_ms) = (pick(usize::from(arm)), pick(0));
    let t = opt
        .trajectory(d, arm, Some(&q.arms[usize::from(arm)].plan), ms as f32)
        .expect("trajectory");
    opt.observe(t).expect("observe");
    Run {
        round,
        query: qi,
        arm,
        rule: d.rule,
        ms,
        default_ms,
        reason: d.reason.clone(),
    }
}

/// [`replay`] with the background explorer, as the extension ships: no user's run explores
/// ([`Exploration::Explorer`]); the queries that ask for it are queued, and between rounds the
/// explorer runs what [`Optimizer::explore_step`] names, within `share` of the round's user
/// time (its pacing), each candidate run cut at [`explore_timeout_ms`]; its runs are observed as
/// background runs (the budget untouched). Returns the users' runs, the explorer's machine time
/// per round (ms), and the optimizer.
pub fn replay_explorer(
    cfg: NeuralDagConfig,
    names: &[String],
    queries: &[QueryTrace],
    rounds: usize,
    seed: u64,
    share: f64,
) -> (Vec<Run>, Vec<f64>, Optimizer) {
    let mut opt = Optimizer::new(cfg, names.to_vec()).expect("optimizer");
    let mut rng = SplitMix64::new(seed);
    let mut runs = Vec::new();
    let mut machine = Vec::new();
    let mut queue: std::collections::VecDeque<usize> = std::collections::VecDeque::new();
    for round in 1..=rounds {
        let mut user_ms = 0.0;
        for qi in round_order(&mut rng, queries.len()) {
            let q = &queries[qi];
            let d = opt
                .decide_with(&q.arms[0].plan, Exploration::Explorer)
                .expect("decide");
            let run = user_run(&mut opt, q, qi, round, &d, &mut rng);
            user_ms += run.ms;
            if d.background && !queue.contains(&qi) {
                queue.push_back(qi);
            }
            runs.push(run);
        }
        let mut spent = 0.0;
        while spent < share * user_ms {
            let Some(qi) = queue.pop_front() else { break };
            spent += explore_query(&mut opt, &queries[qi], round, &mut rng);
        }
        machine.push(spent);
        opt.learn_cycle().expect("learn cycle");
    }
    (runs, machine, opt)
}

/// What the explorer does with one offered query: plan its candidates, then run what the
/// optimizer names until it is settled or [`EXPLORE_MAX_RUNS`] runs. The machine time, ms.
fn explore_query(opt: &mut Optimizer, q: &QueryTrace, round: usize, rng: &mut SplitMix64) -> f64 {
    let default = &q.arms[0].plan;
    let d = opt
        .decide_with(default, Exploration::Explorer)
        .expect("decide");
    opt.note_candidates(d.fingerprint, d.default_cost, &candidates(q, &d.blocked))
        .expect("candidates");
    let mut spent = 0.0;
    for _ in 0..EXPLORE_MAX_RUNS {
        let mut d = opt
            .decide_with(default, Exploration::Explorer)
            .expect("decide");
        let arm = match opt.explore_step(&d) {
            Step::Done => break,
            Step::Default => 0,
            Step::Plan { arm, .. } => arm,
        };
        let noise = rng.normal();
        let ms = q.arms[usize::from(arm)].ms[round % 2] * (0.05 * noise).exp();
        let typical = opt
            .evidence()
            .get(d.fingerprint)
            .and_then(|e| e.default_ms());
        let cut_at = typical.map(explore_timeout_ms);
        let cut = arm != 0 && cut_at.is_some_and(|c| ms > c);
        let ms = if cut { cut_at.unwrap_or(ms) } else { ms };
        d.arm = arm;
        let t = opt
            .trajectory(&d, arm, Some(&q.arms[usize::from(arm)].plan), ms as f32)
            .expect("trajectory");
        let kind = RunKind {
            cut,
            background: true,
        };
        opt.observe_run(t, kind, true).expect("observe");
        spent += ms;
    }
    spent
}
