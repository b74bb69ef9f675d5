//! A deterministic workload simulator for the optimizer (issue 3): query templates, each a
//! family of plan DAGs with parameter noise and a hidden latency per arm. The optimizer sees
//! only the plans and the latencies of the arms it chose; the simulator also knows what every
//! other arm would have cost, which gives the oracle and the always-default baselines.

use ruvector_dag_core::learning::{Candidate, Decision, NeuralDagConfig, Optimizer, Rule};
use ruvector_dag_core::rng::SplitMix64;
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::{PlanDag, PlanNode};

/// The arms, as host-pg's default `ruvector.dag_arms` names them.
pub const ARMS: [&str; 8] = [
    "default",
    "enable_nestloop=off",
    "enable_hashjoin=off",
    "enable_mergejoin=off",
    "enable_seqscan=off",
    "enable_indexscan=off,enable_bitmapscan=off",
    "enable_nestloop=off,enable_mergejoin=off",
    "max_parallel_workers_per_gather=0",
];

/// Arm names as the optimizer wants them.
pub fn arm_names() -> Vec<String> {
    ARMS.iter().map(|s| s.to_string()).collect()
}

/// What a template was built to show.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Family {
    /// One non-default arm is 5-50x faster.
    Win,
    /// The default arm is best; the others are 1.2-4x slower.
    DefaultBest,
    /// One arm is 100x slower (and maybe another one faster).
    Catastrophic,
}

/// A query template: a plan shape, its hidden per-arm latency factors.
#[derive(Debug, Clone)]
pub struct Template {
    /// Index, for reports.
    pub id: usize,
    /// What it was built to show.
    pub family: Family,
    /// The default plan before parameter noise.
    pub plan: PlanDag,
    /// Typical default-arm latency, ms.
    pub base_ms: f64,
    /// Latency of each arm relative to the default.
    pub factors: [f64; 8],
    /// The 100x arm, for catastrophic templates.
    pub catastrophic: Option<u8>,
    /// The planner's cost of each arm's plan over the default plan's: the planner chose the
    /// default, so every other plan costs more; losers more the slower they are (with
    /// noise), winners a little more (the misestimate that made the planner miss them).
    pub cost_ratio: [f64; 8],
}

fn log_uniform(rng: &mut SplitMix64, lo: f64, hi: f64) -> f64 {
    (lo.ln() + rng.next_f64() * (hi.ln() - lo.ln())).exp()
}

/// `count` templates: 14 in 30 with a winning arm, 8 where the default is best, 8 with a
/// catastrophic arm (half of them with a winning arm too); same seed, same templates.
pub fn templates(seed: u64, count: usize) -> Vec<Template> {
    let mut rng = SplitMix64::new(seed);
    (0..count)
        .map(|id| {
            let family = match id * 30 / count {
                0..14 => Family::Win,
                14..22 => Family::DefaultBest,
                _ => Family::Catastrophic,
            };
            let n = 8 + rng.below(40);
            let plan = random_plan(
                seed.wrapping_mul(1000) + id as u64,
                n,
                SynthOptions::default(),
            );
            let mut factors = [1.0; 8];
            for f in factors.iter_mut().skip(1) {
                *f = log_uniform(&mut rng, 1.2, 4.0);
            }
            let mut catastrophic = None;
            let win = |rng: &mut SplitMix64, factors: &mut [f64; 8], not: Option<u8>| loop {
                let a = 1 + rng.below(7) as u8;
                if Some(a) != not {
                    factors[a as usize] = 1.0 / log_uniform(rng, 5.0, 50.0);
                    break;
                }
            };
            match family {
                Family::Win => win(&mut rng, &mut factors, None),
                Family::DefaultBest => {}
                Family::Catastrophic => {
                    let c = 1 + rng.below(7) as u8;
                    factors[c as usize] = 100.0;
                    catastrophic = Some(c);
                    if id % 2 == 0 {
                        win(&mut rng, &mut factors, Some(c));
                    }
                }
            }
            let mut cost_ratio = [1.0; 8];
            for (c, f) in cost_ratio.iter_mut().zip(factors).skip(1) {
                *c = if f < 1.0 {
                    (0.4 * rng.next_f64()).exp()
                } else {
                    (f.ln() * (0.3 + 0.9 * rng.next_f64())).exp().max(1.01)
                };
            }
            Template {
                id,
                family,
                plan,
                base_ms: log_uniform(&mut rng, 2.0, 200.0),
                factors,
                catastrophic,
                cost_ratio,
            }
        })
        .collect()
}

/// One query of a template: its default plan (estimates moved by the parameter and by noise)
/// and what each arm would take.
#[derive(Debug, Clone)]
pub struct Query {
    /// The template's index.
    pub template: usize,
    /// The default plan as the planner would show it.
    pub plan: PlanDag,
    /// Latency of every arm, ms.
    pub ms: [f64; 8],
    /// The executed plan with per-node measurements, when the family simulates them.
    pub executed: Option<PlanDag>,
}

impl Query {
    /// The fastest arm's latency.
    pub fn oracle_ms(&self) -> f64 {
        self.ms.iter().copied().fold(f64::INFINITY, f64::min)
    }
}

/// Draw one query of `t`. The parameter `p` in [0, 1) scales the estimates of the whole plan
/// (visible) and the latency (hidden) together; each node's estimates get 5% noise, each
/// latency 10% shared and 5% per-arm noise.
pub fn query(t: &Template, rng: &mut SplitMix64) -> Query {
    let p = rng.next_f64();
    let scale = (1.5 * (p - 0.5)).exp();
    let nodes: Vec<PlanNode> = t
        .plan
        .nodes()
        .iter()
        .map(|n| {
            let mut n = n.clone();
            let noise = (0.05 * rng.normal()).exp();
            n.est_rows = (n.est_rows * scale * noise).max(1.0);
            n.total_cost *= scale * noise;
            n.startup_cost = n.startup_cost.min(n.total_cost);
            n
        })
        .collect();
    let plan = PlanDag::new(nodes, t.plan.edges().to_vec()).expect("noise keeps plans valid");
    let common = (p - 0.5).exp() * (0.1 * rng.normal()).exp();
    let mut ms = [0.0; 8];
    for (a, m) in ms.iter_mut().enumerate() {
        *m = t.base_ms * t.factors[a] * common * (0.05 * rng.normal()).exp();
    }
    Query {
        template: t.id,
        plan,
        ms,
        executed: None,
    }
}

/// One query's outcome.
#[derive(Debug, Clone, Copy)]
pub struct Record {
    /// Template index.
    pub template: usize,
    /// Arm that ran.
    pub arm: u8,
    /// Rule that chose it.
    pub rule: Rule,
    /// What it took.
    pub ms: f64,
    /// What the default arm would have taken.
    pub default_ms: f64,
    /// What the best arm would have taken.
    pub oracle_ms: f64,
    /// Whether the arm that ran was the template's catastrophic one.
    pub catastrophic: bool,
}

/// Held-out error: mean |ln predicted - ln actual| of the estimator over `(plan, arm, ms)`.
pub fn held_out_error(opt: &Optimizer, samples: &[(PlanDag, u8, f64)]) -> f64 {
    let total: f64 = samples
        .iter()
        .map(|(plan, arm, ms)| {
            let p = opt.predict_ms(plan, *arm).expect("prediction");
            (f64::from(p).ln() - ms.ln()).abs()
        })
        .sum();
    total / samples.len() as f64
}

/// `n` held-out samples over `templates`, from their own seed: a fresh query of a random
/// template under either the default arm or the template's best arm, the two predictions the
/// decisions rest on (an arm the workload never runs cannot be learned, so it is not asked).
pub fn held_out(templates: &[Template], n: usize, seed: u64) -> Vec<(PlanDag, u8, f64)> {
    let mut rng = SplitMix64::new(seed);
    (0..n)
        .map(|i| {
            let t = &templates[rng.below(templates.len())];
            let q = query(t, &mut rng);
            let best = (0..8u8)
                .min_by(|&a, &b| t.factors[a as usize].total_cmp(&t.factors[b as usize]))
                .unwrap_or(0);
            let arm = if i % 2 == 0 { 0 } else { best };
            (q.plan, arm, q.ms[arm as usize])
        })
        .collect()
}

/// A simulation run in learn mode.
pub struct Run {
    /// The optimizer after the run.
    pub optimizer: Optimizer,
    /// Every query's outcome, in order.
    pub records: Vec<Record>,
    /// Held-out error before the first query and after each cycle.
    pub held_out: Vec<f64>,
}

/// Run `queries` queries drawn uniformly from `templates` through `opt` (decide, execute the
/// chosen arm, observe), with a background cycle every `cycle_every` queries.
pub fn run_with(
    opt: Optimizer,
    templates: &[Template],
    queries: usize,
    cycle_every: usize,
    seed: u64,
    held: &[(PlanDag, u8, f64)],
) -> Run {
    run_queries(opt, templates, query, queries, cycle_every, seed, held)
}

/// [`run_with`] with another query generator.
pub fn run_queries(
    mut opt: Optimizer,
    templates: &[Template],
    draw: fn(&Template, &mut SplitMix64) -> Query,
    queries: usize,
    cycle_every: usize,
    seed: u64,
    held: &[(PlanDag, u8, f64)],
) -> Run {
    let mut rng = SplitMix64::new(seed);
    let mut records = Vec::with_capacity(queries);
    let mut errors = Vec::new();
    if !held.is_empty() {
        errors.push(held_out_error(&opt, held));
    }
    for i in 0..queries {
        let t = &templates[rng.below(templates.len())];
        let q = draw(t, &mut rng);
        let mut d = opt.decide(&q.plan).expect("decide");
        if d.wants_candidates {
            let cands = candidates(t, &d);
            opt.choose(&mut d, &cands).expect("choose");
        }
        let ms = q.ms[d.arm as usize];
        let traj = opt
            .trajectory(&d, d.arm, q.executed.as_ref(), ms as f32)
            .expect("trajectory");
        opt.observe(traj).expect("observe");
        records.push(Record {
            template: t.id,
            arm: d.arm,
            rule: d.rule,
            ms,
            default_ms: q.ms[0],
            oracle_ms: q.oracle_ms(),
            catastrophic: t.catastrophic == Some(d.arm),
        });
        if (i + 1) % cycle_every == 0 {
            opt.learn_cycle().expect("learn cycle");
            if !held.is_empty() {
                errors.push(held_out_error(&opt, held));
            }
        }
    }
    Run {
        optimizer: opt,
        records,
        held_out: errors,
    }
}

/// The plans the host would make for `d`'s query under each unblocked arm: every arm its own
/// plan, costed by the template's ratios.
pub fn candidates(t: &Template, d: &Decision) -> Vec<Candidate> {
    (1..8u8)
        .filter(|a| !d.blocked.contains(a))
        .map(|a| Candidate {
            arm: a,
            plan: d.fingerprint ^ 0x9E37_79B9_7F4A_7C15u64.wrapping_mul(u64::from(a) + 1),
            cost: d.default_cost * t.cost_ratio[usize::from(a)],
        })
        .collect()
}

/// [`run_with`] on a fresh optimizer with `cfg`.
pub fn run(
    cfg: NeuralDagConfig,
    templates: &[Template],
    queries: usize,
    cycle_every: usize,
    seed: u64,
    held: &[(PlanDag, u8, f64)],
) -> Run {
    let opt = Optimizer::new(cfg, arm_names()).expect("optimizer");
    run_with(opt, templates, queries, cycle_every, seed, held)
}

/// Sums over records: (chosen, default, oracle).
pub fn totals(records: &[Record]) -> (f64, f64, f64) {
    records.iter().fold((0.0, 0.0, 0.0), |(a, b, c), r| {
        (a + r.ms, b + r.default_ms, c + r.oracle_ms)
    })
}

/// A template family built to favour temporal BTSP attention: the same plan shape, with the
/// same estimates, over different tables (so each template is its own query shape), where the
/// planner cannot see what differs: the measured time concentrates on a different operator in
/// each template (think of a bloated table or a cold index), and the latency is the template's
/// own (log-uniform 2-200 ms). Only the temporal mechanism reads the execution history, so only
/// its embedding tells the templates apart; every other kind sees identical plans and can only
/// predict the family's average.
pub fn temporal_family(seed: u64, count: usize) -> Vec<Template> {
    let mut rng = SplitMix64::new(seed);
    let base = random_plan(seed ^ 0x7E4, count.max(2) + 4, SynthOptions::default());
    (0..count)
        .map(|id| {
            let nodes: Vec<PlanNode> = base
                .nodes()
                .iter()
                .map(|n| {
                    let mut n = n.clone();
                    if n.relation_hash != 0 {
                        n.relation_hash ^= (id as u64 + 1).wrapping_mul(0x9E37_79B9);
                    }
                    n
                })
                .collect();
            let plan = PlanDag::new(nodes, base.edges().to_vec()).expect("valid family plan");
            let mut factors = [1.0; 8];
            for f in factors.iter_mut().skip(1) {
                *f = log_uniform(&mut rng, 1.5, 3.0);
            }
            Template {
                id,
                family: Family::DefaultBest,
                plan,
                base_ms: log_uniform(&mut rng, 2.0, 200.0),
                cost_ratio: factors.map(|f| f.sqrt()),
                factors,
                catastrophic: None,
            }
        })
        .collect()
}

/// A query of a [`temporal_family`] template: estimates with 5% noise, latency with 5% noise,
/// and the executed plan whose node `id` (the template's hot operator) took 70% of the time.
pub fn temporal_query(t: &Template, rng: &mut SplitMix64) -> Query {
    let nodes: Vec<PlanNode> = t
        .plan
        .nodes()
        .iter()
        .map(|n| {
            let mut n = n.clone();
            let noise = (0.05 * rng.normal()).exp();
            n.est_rows = (n.est_rows * noise).max(1.0);
            n.total_cost *= noise;
            n.startup_cost = n.startup_cost.min(n.total_cost);
            n
        })
        .collect();
    let plan = PlanDag::new(nodes.clone(), t.plan.edges().to_vec()).expect("valid family plan");
    let common = (0.05 * rng.normal()).exp();
    let mut ms = [0.0; 8];
    for (a, m) in ms.iter_mut().enumerate() {
        *m = t.base_ms * t.factors[a] * common;
    }
    let n = nodes.len();
    let hot = t.id % n;
    let share = |v: usize| if v == hot { 0.7 } else { 0.3 / (n - 1) as f64 };
    let mut total = vec![0.0f64; n];
    for &v in plan.topo_order() {
        let v = v as usize;
        total[v] = ms[0] * share(v)
            + plan
                .children(v)
                .iter()
                .map(|&c| total[c as usize])
                .sum::<f64>();
    }
    let measured: Vec<PlanNode> = nodes
        .into_iter()
        .enumerate()
        .map(|(v, mut node)| {
            node.actual = Some(ruvector_dag_core::Actuals {
                rows: node.est_rows,
                self_ms: ms[0] * share(v),
                total_ms: total[v],
            });
            node
        })
        .collect();
    let executed = PlanDag::new(measured, t.plan.edges().to_vec()).ok();
    Query {
        template: t.id,
        plan,
        ms,
        executed,
    }
}

/// What [`distinct_shapes`] reports at each learning cycle.
#[derive(Debug, Clone, Copy)]
pub struct ScalePoint {
    /// Queries run so far (each a query shape never seen before).
    pub queries: usize,
    /// Patterns, BTSP engrams and query shapes with evidence held.
    pub patterns: usize,
    pub engrams: usize,
    pub shapes: usize,
    /// Bytes of the snapshot (what the extension stores and every backend loads).
    pub snapshot_bytes: usize,
    /// Mean microseconds of `decide` over the queries since the last point.
    pub decide_us: f64,
}

/// Run `n` queries through `opt`: `n / repeats` plan shapes never seen before, each run
/// `repeats` times in a row (a seeded random plan of 8 to 47 operators; its default plan 5-200
/// ms, each other arm 0.2x-5x of it), a learning cycle every `cycle_every` queries, calling
/// `at` after each cycle.
pub fn distinct_shapes(
    mut opt: Optimizer,
    n: usize,
    repeats: usize,
    cycle_every: usize,
    seed: u64,
    mut at: impl FnMut(&ScalePoint, &Optimizer),
) -> Optimizer {
    let mut rng = SplitMix64::new(seed);
    let mut decide_ns = 0u128;
    let mut since = 0usize;
    let repeats = repeats.max(1);
    let mut plan = random_plan(seed, 8, SynthOptions::default());
    let mut ms = [1.0; 8];
    let mut base = 1.0;
    for i in 0..n {
        if i % repeats == 0 {
            plan = random_plan(
                seed.wrapping_mul(1_000_003)
                    .wrapping_add((i / repeats) as u64),
                8 + rng.below(40),
                SynthOptions::default(),
            );
            base = log_uniform(&mut rng, 5.0, 200.0);
            ms = [base; 8];
            for m in ms.iter_mut().skip(1) {
                *m = base * log_uniform(&mut rng, 0.2, 5.0);
            }
        }
        let t0 = std::time::Instant::now();
        let mut d = opt.decide(&plan).expect("decide");
        decide_ns += t0.elapsed().as_nanos();
        since += 1;
        if d.wants_candidates {
            let cands: Vec<Candidate> = (1..8u8)
                .filter(|a| !d.blocked.contains(a))
                .map(|a| Candidate {
                    arm: a,
                    plan: d.fingerprint ^ u64::from(a).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                    cost: d.default_cost * ms[usize::from(a)] / base,
                })
                .collect();
            opt.choose(&mut d, &cands).expect("choose");
        }
        let t = opt
            .trajectory(&d, d.arm, None, ms[usize::from(d.arm)] as f32)
            .expect("trajectory");
        opt.observe(t).expect("observe");
        if (i + 1) % cycle_every == 0 {
            opt.learn_cycle().expect("learn cycle");
            let point = ScalePoint {
                queries: i + 1,
                patterns: opt.bank().patterns().len(),
                engrams: opt.btsp().len(),
                shapes: opt.evidence().len(),
                snapshot_bytes: opt.snapshot().expect("snapshot").len(),
                decide_us: decide_ns as f64 / 1000.0 / since.max(1) as f64,
            };
            decide_ns = 0;
            since = 0;
            at(&point, &opt);
        }
    }
    opt
}
