//! The report: figures computed from the executions, `report.json`, a self-contained
//! `report.html` (inline SVG charts drawn by plotters, no network), and the terminal summary.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use plotters::prelude::*;
use serde::Serialize;

use crate::run::{Exec, Mode};

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub stock_ms: f64,
    pub learn_ms: f64,
    pub frozen_ms: f64,
    pub oracle_ms: f64,
}

impl Totals {
    fn add(&mut self, mode: Mode, ms: f64) {
        match mode {
            Mode::Stock => self.stock_ms += ms,
            Mode::Learn => self.learn_ms += ms,
            Mode::Frozen => self.frozen_ms += ms,
            Mode::Oracle => self.oracle_ms += ms,
        }
    }
    fn ratio(&self, ms: f64) -> f64 {
        if self.stock_ms > 0.0 {
            ms / self.stock_ms
        } else {
            f64::NAN
        }
    }
    /// Share of the oracle's gain over stock that `ms` captures (NaN when the oracle gains nothing).
    fn captured(&self, ms: f64) -> f64 {
        self.captured_of(self.oracle_ms, ms)
    }
    /// Share of the gain of an oracle that took `oracle_ms` that `ms` captures.
    fn captured_of(&self, oracle_ms: f64, ms: f64) -> f64 {
        let gain = self.stock_ms - oracle_ms;
        if gain > 1e-9 {
            (self.stock_ms - ms) / gain
        } else {
            f64::NAN
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TemplateSummary {
    pub template: String,
    /// Sums over the rounds after warm-up.
    pub after_warmup: Totals,
    pub learn_vs_stock: f64,
    pub frozen_vs_stock: f64,
    pub oracle_vs_stock: f64,
    /// The arm the oracle found best most often after warm-up.
    pub oracle_arm: String,
    /// The held-out oracle after warm-up against stock ([`held_out`]; NaN when it cannot be
    /// taken), and the arm it chose most often.
    pub held_out_vs_stock: f64,
    pub held_out_arm: String,
    /// Learn-mode executions of this template up to and including the first one that applied a
    /// verified non-default arm (None: never).
    pub adopted_at: Option<u32>,
    pub adopted_arm: Option<String>,
    /// The slowest learn execution against the stock run of the same instance.
    pub worst_learn_vs_stock: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Overhead {
    /// Learn-mode planning time minus stock planning time of the same instance, microseconds.
    pub median_us: f64,
    pub p99_us: f64,
    pub stock_planning_median_us: f64,
    pub learn_planning_median_us: f64,
    pub pairs: usize,
    /// The same difference for the learn session's first instance (it loads the learned
    /// state), and for its later ones: median microseconds and pairs.
    pub first_in_session_median_us: f64,
    pub first_in_session_pairs: usize,
    pub later_median_us: f64,
    pub later_pairs: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct WorkloadSummary {
    pub workload: String,
    pub rounds: u32,
    pub warmup_rounds: u32,
    pub all_rounds: Totals,
    pub after_warmup: Totals,
    pub warmup: Totals,
    pub learn_vs_stock: f64,
    pub frozen_vs_stock: f64,
    pub oracle_vs_stock: f64,
    /// The oracle over the first `run::FIRST_ARMS` arms alone, after warm-up (None: the list
    /// has no more arms than that).
    pub oracle_first_arms_vs_stock: Option<f64>,
    /// The held-out oracle after warm-up ([`held_out`]) against stock: NaN when it cannot be
    /// taken (one round, or a report without every arm's time).
    pub held_out_vs_stock: f64,
    /// Instances after warm-up whose held-out arm's own run there was cut short (counted at
    /// the time it was cut at, a lower bound).
    pub held_out_censored: usize,
    pub warmup_learn_vs_stock: f64,
    /// Shares of the oracle's gain over stock that learn and frozen capture: of the held-out
    /// oracle's where it can be taken, else of the fastest arm's.
    pub learn_gain_captured: f64,
    pub frozen_gain_captured: f64,
    /// The same shares of the fastest arm's gain (the oracle column: biased low, see
    /// [`held_out`]).
    pub learn_fastest_captured: f64,
    pub templates: Vec<TemplateSummary>,
    /// Templates whose learn-mode time after warm-up exceeds 1.1x stock.
    pub regressions: Vec<(String, f64)>,
    /// Learn executions slower than 2x the stock run of the same instance: (template, round, ratio).
    pub slow_learn_runs: Vec<(String, u32, f64)>,
    pub overhead: Overhead,
    pub timeouts: usize,
    pub errors: Vec<String>,
    pub status: BTreeMap<String, String>,
}

/// The median (of an even count, the mean of the middle two); NaN when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn quantile(v: &mut [f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let k = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[k]
}

pub fn summarize(
    workload: &str,
    execs: &[Exec],
    rounds: u32,
    warmup: u32,
    status: BTreeMap<String, String>,
) -> WorkloadSummary {
    let ex: Vec<&Exec> = execs.iter().filter(|e| e.workload == workload).collect();
    let mut all = Totals::default();
    let mut after = Totals::default();
    let mut early = Totals::default();
    for e in &ex {
        all.add(e.mode, e.ms);
        if e.round > warmup {
            after.add(e.mode, e.ms);
        } else {
            early.add(e.mode, e.ms);
        }
    }
    // Stock run of each instance, by (round, seq).
    let stock: BTreeMap<(u32, u32), &Exec> = ex
        .iter()
        .filter(|e| e.mode == Mode::Stock)
        .map(|e| ((e.round, e.seq), *e))
        .collect();
    let mut names: Vec<String> = Vec::new();
    for e in &ex {
        if !names.contains(&e.template) {
            names.push(e.template.clone());
        }
    }
    let held = held_out(&ex, warmup);
    let mut templates = Vec::new();
    let mut slow = Vec::new();
    for name in &names {
        let mut t = Totals::default();
        let mut best_arms: BTreeMap<String, u32> = BTreeMap::new();
        let mut adopted = None;
        let mut learn_n = 0;
        let mut worst = 0.0f64;
        for e in ex.iter().filter(|e| &e.template == name) {
            if e.round > warmup {
                t.add(e.mode, e.ms);
                if e.mode == Mode::Oracle {
                    *best_arms.entry(e.arm.clone()).or_default() += 1;
                }
            }
            if e.mode == Mode::Learn {
                learn_n += 1;
                if adopted.is_none() && e.applied && e.rule == "verified" && e.arm != "default" {
                    adopted = Some((learn_n, e.arm.clone()));
                }
                if let Some(s) = stock.get(&(e.round, e.seq)) {
                    let r = e.ms / s.ms.max(1e-3);
                    worst = worst.max(r);
                    if r > 2.0 && e.ms - s.ms > 10.0 {
                        slow.push((name.clone(), e.round, r));
                    }
                }
            }
        }
        let oracle_arm = best_arms
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or_else(|| "-".to_string(), |(a, _)| a.clone());
        let (held_ratio, held_arm) = match held.as_ref().and_then(|h| h.templates.get(name)) {
            Some((ms, arms)) => (
                t.ratio(*ms),
                arms.iter()
                    .max_by_key(|(_, n)| **n)
                    .map_or_else(|| "-".to_string(), |(a, _)| a.clone()),
            ),
            None => (f64::NAN, "-".to_string()),
        };
        templates.push(TemplateSummary {
            template: name.clone(),
            learn_vs_stock: t.ratio(t.learn_ms),
            frozen_vs_stock: t.ratio(t.frozen_ms),
            oracle_vs_stock: t.ratio(t.oracle_ms),
            after_warmup: t,
            oracle_arm,
            held_out_vs_stock: held_ratio,
            held_out_arm: held_arm,
            adopted_at: adopted.as_ref().map(|a| a.0),
            adopted_arm: adopted.map(|a| a.1),
            worst_learn_vs_stock: worst,
        });
    }
    let regressions = templates
        .iter()
        .filter(|t| t.learn_vs_stock > 1.1)
        .map(|t| (t.template.clone(), t.learn_vs_stock))
        .collect();
    let mut diffs = Vec::new();
    let mut sp = Vec::new();
    let mut lp = Vec::new();
    let (mut first, mut later) = (Vec::new(), Vec::new());
    for e in ex
        .iter()
        .filter(|e| e.mode == Mode::Learn && e.error.is_none() && !e.timed_out)
    {
        if let Some(s) = stock.get(&(e.round, e.seq)) {
            if s.error.is_none() && !s.timed_out {
                let d = (e.planning_ms - s.planning_ms) * 1000.0;
                diffs.push(d);
                if e.first_in_session {
                    first.push(d);
                } else {
                    later.push(d);
                }
                sp.push(s.planning_ms * 1000.0);
                lp.push(e.planning_ms * 1000.0);
            }
        }
    }
    let overhead = Overhead {
        pairs: diffs.len(),
        median_us: quantile(&mut diffs.clone(), 0.5),
        p99_us: quantile(&mut diffs, 0.99),
        stock_planning_median_us: quantile(&mut sp, 0.5),
        learn_planning_median_us: quantile(&mut lp, 0.5),
        first_in_session_pairs: first.len(),
        first_in_session_median_us: quantile(&mut first, 0.5),
        later_pairs: later.len(),
        later_median_us: quantile(&mut later, 0.5),
    };
    WorkloadSummary {
        workload: workload.to_string(),
        rounds,
        warmup_rounds: warmup,
        learn_vs_stock: after.ratio(after.learn_ms),
        frozen_vs_stock: after.ratio(after.frozen_ms),
        oracle_vs_stock: after.ratio(after.oracle_ms),
        oracle_first_arms_vs_stock: ex
            .iter()
            .filter(|e| e.mode == Mode::Oracle && e.round > warmup)
            .map(|e| e.first_arms_ms)
            .sum::<Option<f64>>()
            .map(|ms| after.ratio(ms)),
        warmup_learn_vs_stock: early.ratio(early.learn_ms),
        held_out_vs_stock: held.as_ref().map_or(f64::NAN, |h| after.ratio(h.ms)),
        held_out_censored: held.as_ref().map_or(0, |h| h.censored),
        learn_gain_captured: match &held {
            Some(h) => after.captured_of(h.ms, after.learn_ms),
            None => after.captured(after.learn_ms),
        },
        frozen_gain_captured: match &held {
            Some(h) => after.captured_of(h.ms, after.frozen_ms),
            None => after.captured(after.frozen_ms),
        },
        learn_fastest_captured: after.captured(after.learn_ms),
        all_rounds: all,
        after_warmup: after,
        warmup: early,
        templates,
        regressions,
        slow_learn_runs: slow,
        overhead,
        timeouts: ex.iter().filter(|e| e.timed_out).count(),
        errors: ex
            .iter()
            .filter_map(|e| {
                e.error
                    .as_ref()
                    .map(|m| format!("{} {} round {}: {m}", e.template, e.mode.name(), e.round))
            })
            .collect(),
        status,
    }
}

/// The held-out oracle of a workload's instances after warm-up (`HeldOut::ms`, summed).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HeldOut {
    pub ms: f64,
    /// Per template: its instances' sum, ms, and how often each arm was chosen.
    pub templates: BTreeMap<String, (f64, BTreeMap<String, u32>)>,
    /// Instances whose chosen arm was cut short there (counted at the time it was cut at).
    pub censored: usize,
}

/// The oracle without the winner's curse. The oracle column is, per instance, the fastest of
/// the arms' plans, each the median of three runs: where several plans are about as fast (or
/// the arms give one plan), the noise picks the fastest, and that minimum of noisy times is
/// below what any of them takes typically (on 2 cores a run of one plan varies by 30 % and
/// more). The held-out oracle chooses each instance's arm on the template's other rounds
/// (warm-up ones too: the oracle does not learn) by the median of that arm's times there, and
/// takes the chosen arm's time in the instance itself: a measurement the choice was not made
/// on, so what the best fixed arm per template gives, unbiased. A time cut short (the arm's
/// plan slower than the best so far) counts at the time it was cut at: a lower bound, which
/// only flatters the held-out oracle. None when an instance after warm-up has no other round
/// with every arm's time (one round, or a report from before every arm was kept).
pub fn held_out(ex: &[&Exec], warmup: u32) -> Option<HeldOut> {
    let oracle: Vec<&Exec> = ex
        .iter()
        .copied()
        .filter(|e| e.mode == Mode::Oracle)
        .collect();
    let mut out = HeldOut::default();
    for e in oracle.iter().filter(|e| e.round > warmup) {
        let (ms, arm, censored) = if e.oracle_arms.is_empty() {
            // It failed: its time is the cap, whichever arm (without an error, a report from
            // before every arm's time was kept: none).
            e.error.as_ref()?;
            (e.ms, e.arm.clone(), false)
        } else {
            let others: Vec<&Exec> = oracle
                .iter()
                .copied()
                .filter(|o| {
                    o.template == e.template && o.round != e.round && !o.oracle_arms.is_empty()
                })
                .collect();
            if others.is_empty() {
                return None;
            }
            // (median elsewhere, times cut short elsewhere, position) of each arm timed here.
            let chosen = e
                .oracle_arms
                .iter()
                .enumerate()
                .filter_map(|(i, a)| {
                    let mut times: Vec<f64> = Vec::new();
                    let mut cut = 0usize;
                    for o in &others {
                        if let Some(t) = o.oracle_arms.iter().find(|t| t.arm == a.arm) {
                            times.push(t.ms);
                            cut += usize::from(t.censored);
                        }
                    }
                    (!times.is_empty()).then(|| (median(&mut times), cut, i))
                })
                .min_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)))?;
            let a = &e.oracle_arms[chosen.2];
            (a.ms, a.arm.clone(), a.censored)
        };
        out.ms += ms;
        out.censored += usize::from(censored);
        let t = out.templates.entry(e.template.clone()).or_default();
        t.0 += ms;
        *t.1.entry(arm).or_default() += 1;
    }
    Some(out)
}

/// pgbench's label for learn mode on tables not enabled for learning.
pub const LEARN_NOT_ENABLED: &str = "learn, tables not enabled";

#[derive(Clone, Debug, Serialize)]
pub struct Pgbench {
    pub scale: u32,
    pub seconds: u32,
    pub clients: u32,
    /// TPS of each round, by mode (off, observe, learn, learn on tables not enabled).
    pub tps: BTreeMap<String, Vec<f64>>,
    /// Each mode but off against off, from the per-round ratios.
    pub ratios: Vec<Ratio>,
    /// Each mode but off against off within one run, transaction by transaction.
    pub paired: Vec<Paired>,
}

/// One mode's cost per statement against off's, from one pgbench run in which every client
/// picks off's script or the mode's at random for each transaction (`SET ruvector.dag_mode`,
/// then the select-only statement), so both meet the machine at the same moments: its drift
/// and bursts, which make separate runs of one mode differ by 10 % here, cancel. The mean
/// latency of each script is taken per second of the run; the mode's extra time is the mean of
/// those per-second differences, with a 95 % interval (Student's t over the seconds).
#[derive(Clone, Debug, Serialize)]
pub struct Paired {
    pub database: String,
    pub mode: String,
    /// Seconds in which both scripts ran at least [`Paired::MIN_PER_SECOND`] transactions.
    pub seconds: usize,
    /// The mode's transactions in those seconds.
    pub transactions: u64,
    /// Extra latency per transaction over off, microseconds.
    pub extra_us: f64,
    pub extra_low_us: f64,
    pub extra_high_us: f64,
    /// What that makes of `pgbench -S` against off: off's time per transaction (from the
    /// interleaved runs: clients over TPS) over itself plus the extra time.
    pub off_latency_us: f64,
    pub ratio: f64,
    pub ratio_low: f64,
    pub ratio_high: f64,
}

/// One script's transactions in one second of a run: (latency sum in us, transactions).
pub type Tally = (f64, u64);

impl Paired {
    /// Seconds with fewer transactions of either script are left out (the run's first and
    /// last, cut short).
    pub const MIN_PER_SECOND: u64 = 20;

    /// From the run's per-second sums `(off's (latency sum us, transactions), the mode's)`
    /// and off's time per `pgbench -S` transaction.
    pub fn from_seconds(
        database: &str,
        mode: &str,
        per_second: &[(Tally, Tally)],
        off_latency_us: f64,
    ) -> Result<Paired, String> {
        let kept: Vec<_> = per_second
            .iter()
            .filter(|((_, a), (_, b))| *a >= Self::MIN_PER_SECOND && *b >= Self::MIN_PER_SECOND)
            .collect();
        if kept.len() < 3 {
            return Err(format!(
                "pgbench {mode} in {database}: {} seconds with both scripts run (want >= 3)",
                kept.len()
            ));
        }
        if !(off_latency_us.is_finite() && off_latency_us > 0.0) {
            return Err(format!(
                "pgbench: off's time per transaction is {off_latency_us}"
            ));
        }
        let diffs: Vec<f64> = kept
            .iter()
            .map(|((so, no), (sm, nm))| sm / *nm as f64 - so / *no as f64)
            .collect();
        let n = diffs.len() as f64;
        let mean = diffs.iter().sum::<f64>() / n;
        let var = diffs.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let half = t95(diffs.len() - 1) * (var / n).sqrt();
        let ratio = |extra: f64| off_latency_us / (off_latency_us + extra);
        Ok(Paired {
            database: database.to_string(),
            mode: mode.to_string(),
            seconds: diffs.len(),
            transactions: kept.iter().map(|(_, (_, nm))| nm).sum(),
            extra_us: mean,
            extra_low_us: mean - half,
            extra_high_us: mean + half,
            off_latency_us,
            ratio: ratio(mean),
            ratio_low: ratio(mean + half),
            ratio_high: ratio(mean - half),
        })
    }

    /// "learn +1.2 us per transaction (95 % 0.8-1.6): learn/off 0.970 (95 % 0.960-0.980)".
    pub fn text(&self) -> String {
        format!(
            "{} {:+.2} us per transaction (95 % {:.2} to {:.2}; {} s, {} transactions): {}/off {:.3} (95 % {:.3}-{:.3})",
            self.mode,
            self.extra_us,
            self.extra_low_us,
            self.extra_high_us,
            self.seconds,
            self.transactions,
            self.mode,
            self.ratio,
            self.ratio_low,
            self.ratio_high
        )
    }
}

/// One mode's TPS against off's: the geometric mean of the per-round ratios and its 95 %
/// confidence interval (Student's t on the logarithms, rounds taken as independent).
#[derive(Clone, Debug, Serialize)]
pub struct Ratio {
    pub mode: String,
    pub per_round: Vec<f64>,
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

/// Student's t, two-sided 95 %, for 1..=30 degrees of freedom (beyond: 1.96).
fn t95(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    T.get(df.wrapping_sub(1)).copied().unwrap_or(1.96)
}

impl Ratio {
    /// `mode`'s runs against `off`'s, round by round (the same number of rounds, >= 2).
    pub fn per_round(mode: &str, runs: &[f64], off: &[f64]) -> Result<Ratio, String> {
        if runs.len() != off.len() || runs.len() < 2 {
            return Err(format!(
                "pgbench {mode}: {} runs against {} of off (want the same number, >= 2)",
                runs.len(),
                off.len()
            ));
        }
        if let Some(bad) = runs
            .iter()
            .chain(off)
            .find(|t| !(t.is_finite() && **t > 0.0))
        {
            return Err(format!("pgbench {mode}: a run measured {bad} TPS"));
        }
        let per_round: Vec<f64> = runs.iter().zip(off).map(|(r, o)| r / o).collect();
        let logs: Vec<f64> = per_round.iter().map(|r| r.ln()).collect();
        let n = logs.len() as f64;
        let mean = logs.iter().sum::<f64>() / n;
        let var = logs.iter().map(|l| (l - mean).powi(2)).sum::<f64>() / (n - 1.0);
        let half = t95(logs.len() - 1) * (var / n).sqrt();
        Ok(Ratio {
            mode: mode.to_string(),
            per_round,
            mean: mean.exp(),
            low: (mean - half).exp(),
            high: (mean + half).exp(),
        })
    }

    /// "learn/off 0.981 (95 % 0.962-1.001)".
    pub fn text(&self) -> String {
        format!(
            "{}/off {:.3} (95 % {:.3}-{:.3})",
            self.mode, self.mean, self.low, self.high
        )
    }
}

impl Pgbench {
    /// The figures of the runs `tps` (by mode, one per round; "off" among them).
    pub fn from_runs(
        scale: u32,
        seconds: u32,
        clients: u32,
        tps: BTreeMap<String, Vec<f64>>,
    ) -> Result<Pgbench, String> {
        let off = tps
            .get("off")
            .ok_or("pgbench: no run with the extension off")?;
        let mut ratios = Vec::new();
        for mode in ["observe", "learn", LEARN_NOT_ENABLED] {
            if let Some(runs) = tps.get(mode) {
                ratios.push(Ratio::per_round(mode, runs, off)?);
            }
        }
        Ok(Pgbench {
            scale,
            seconds,
            clients,
            tps,
            ratios,
            paired: Vec::new(),
        })
    }

    /// Off's time per `pgbench -S` transaction over the interleaved runs (clients over the
    /// mean TPS), microseconds.
    pub fn off_latency_us(&self) -> f64 {
        let off = self.tps.get("off").map_or(&[][..], Vec::as_slice);
        let mean = off.iter().sum::<f64>() / off.len().max(1) as f64;
        f64::from(self.clients) * 1e6 / mean
    }

    /// One line of every ratio.
    pub fn summary_line(&self) -> String {
        let rounds = self.tps.get("off").map_or(0, Vec::len);
        let parts: Vec<String> = self.ratios.iter().map(Ratio::text).collect();
        format!(
            "    pgbench -S (scale {}, {} clients, {rounds} interleaved rounds of {} s): {}",
            self.scale,
            self.clients,
            self.seconds,
            parts.join(", ")
        ) + &self
            .paired
            .iter()
            .map(|p| format!("\n    paired in one run ({}): {}", p.database, p.text()))
            .collect::<String>()
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub command: String,
    pub started: String,
    pub server_version: String,
    pub scale: f64,
    pub rounds: u32,
    pub warmup_rounds: u32,
    pub seed: u64,
    pub settings: Vec<String>,
    pub workloads: Vec<WorkloadSummary>,
    /// Per round: what the background explorers' runs took, ms (machine time: no user waited
    /// for it; paused while stock and the oracle ran).
    pub explorer_ms_by_round: Vec<f64>,
    pub pgbench: Option<Pgbench>,
    pub crashes_in_server_log: Vec<String>,
    pub duration_s: f64,
    pub executions: Vec<Exec>,
}

const COLORS: [(Mode, RGBColor); 4] = [
    (Mode::Stock, RGBColor(120, 120, 120)),
    (Mode::Learn, RGBColor(31, 119, 180)),
    (Mode::Frozen, RGBColor(44, 160, 44)),
    (Mode::Oracle, RGBColor(214, 39, 40)),
];

/// Cumulative time by query number, one line per mode.
pub fn curve_svg(w: &WorkloadSummary, execs: &[Exec]) -> Result<String, String> {
    let mut series: Vec<(Mode, Vec<(f64, f64)>)> = Vec::new();
    let mut xmax = 1.0f64;
    let mut ymax = 0.001f64;
    for (mode, _) in COLORS {
        let mut v: Vec<&Exec> = execs
            .iter()
            .filter(|e| e.workload == w.workload && e.mode == mode)
            .collect();
        v.sort_by_key(|e| e.seq);
        let mut acc = 0.0;
        let mut pts = vec![(0.0, 0.0)];
        for e in v {
            acc += e.ms / 1000.0;
            pts.push((f64::from(e.seq), acc));
        }
        xmax = xmax.max(pts.last().map_or(1.0, |p| p.0));
        ymax = ymax.max(acc);
        series.push((mode, pts));
    }
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (760, 380)).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| format!("drawing the learning curve: {x}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: cumulative time by query number", w.workload),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(0f64..xmax, 0f64..ymax * 1.05)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .x_desc("query number (all templates, in arrival order)")
            .y_desc("cumulative time (s)")
            .draw()
            .map_err(|x| e(&x))?;
        for (mode, pts) in series {
            let color = COLORS
                .iter()
                .find(|c| c.0 == mode)
                .map(|c| c.1)
                .unwrap_or(BLACK);
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(|x| e(&x))?
                .label(mode.name())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        root.present().map_err(|x| e(&x))?;
    }
    Ok(out)
}

/// Per template, after warm-up: learned, frozen and oracle time relative to stock (= 1).
pub fn bars_svg(w: &WorkloadSummary) -> Result<String, String> {
    let n = w.templates.len().max(1);
    let finite = |x: f64| if x.is_finite() { x } else { 0.0 };
    let ymax = w
        .templates
        .iter()
        .flat_map(|t| [t.learn_vs_stock, t.frozen_vs_stock, t.oracle_vs_stock])
        .map(finite)
        .fold(1.2f64, f64::max)
        * 1.08;
    let width = (60 + 44 * n as u32).max(480);
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (width, 360)).into_drawing_area();
        let e = |x: &dyn std::fmt::Display| format!("drawing the template bars: {x}");
        root.fill(&WHITE).map_err(|x| e(&x))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{}: time after warm-up relative to stock (1.0)", w.workload),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(50)
            .build_cartesian_2d(0f64..n as f64, 0f64..ymax)
            .map_err(|x| e(&x))?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("time / stock")
            .draw()
            .map_err(|x| e(&x))?;
        let modes = [
            (Mode::Learn, 0.1),
            (Mode::Frozen, 0.37),
            (Mode::Oracle, 0.64),
        ];
        for (mode, off) in modes {
            let color = COLORS
                .iter()
                .find(|c| c.0 == mode)
                .map(|c| c.1)
                .unwrap_or(BLACK);
            let rects = w.templates.iter().enumerate().map(move |(i, t)| {
                let v = match mode {
                    Mode::Learn => t.learn_vs_stock,
                    Mode::Frozen => t.frozen_vs_stock,
                    _ => t.oracle_vs_stock,
                };
                let x = i as f64 + off;
                Rectangle::new([(x, 0.0), (x + 0.26, finite(v))], color.filled())
            });
            chart
                .draw_series(rects)
                .map_err(|x| e(&x))?
                .label(mode.name())
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled())
                });
        }
        chart
            .draw_series(LineSeries::new(
                [(0.0, 1.0), (n as f64, 1.0)],
                BLACK.stroke_width(1),
            ))
            .map_err(|x| e(&x))?
            .label("stock")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperRight)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(|x| e(&x))?;
        // Template names under their bars, in the label area (drawn on the root, not clipped).
        for (i, t) in w.templates.iter().enumerate() {
            let (px, py) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                t.template.clone(),
                (px - 10, py + 8),
                ("sans-serif", 12).into_font().color(&BLACK),
            ))
            .map_err(|x| e(&x))?;
        }
        root.present().map_err(|x| e(&x))?;
    }
    Ok(out)
}

fn x(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}x")
    } else {
        "-".into()
    }
}

fn pct(v: f64) -> String {
    if v.is_finite() {
        format!("{:.0}%", v * 100.0)
    } else {
        "- (oracle gains nothing)".into()
    }
}

/// The workloads' part of [`terminal`]: the summary table, overheads, templates and the
/// explorers' time per round.
fn workloads_summary(r: &Report, s: &mut String) {
    let _ = writeln!(
        s,
        "\n==> summary (after {} warm-up rounds of {}; times are planning + execution)",
        r.warmup_rounds, r.rounds
    );
    let _ = writeln!(
        s,
        "{:<11} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12} {:>12}",
        "workload",
        "stock s",
        "learn",
        "frozen",
        "oracle",
        "held-out",
        "captured",
        "warm-up",
        "plan +us p50",
        "p99"
    );
    for w in &r.workloads {
        let _ = writeln!(
            s,
            "{:<11} {:>10.1} {:>9} {:>9} {:>9} {:>9} {:>9} {:>10} {:>12.0} {:>12.0}",
            w.workload,
            w.after_warmup.stock_ms / 1000.0,
            x(w.learn_vs_stock),
            x(w.frozen_vs_stock),
            x(w.oracle_vs_stock),
            x(w.held_out_vs_stock),
            pct(w.learn_gain_captured).split(' ').next().unwrap_or("-"),
            x(w.warmup_learn_vs_stock),
            w.overhead.median_us,
            w.overhead.p99_us
        );
    }
    let _ = writeln!(
        s,
        "oracle: per instance the fastest arm's plan (median of 3 runs each): biased low, the noise picks the fastest of plans about as fast; held-out: each instance's arm chosen on the template's other rounds, its time taken in the instance itself (unbiased); captured: of the held-out oracle's gain"
    );
    for w in &r.workloads {
        if w.held_out_vs_stock.is_finite() {
            let _ = writeln!(
                s,
                "{}: learn captured {} of the fastest arm's gain; the held-out arm's run was cut short (counted at the cut) in {} instance(s)",
                w.workload,
                pct(w.learn_fastest_captured).split(' ').next().unwrap_or("-"),
                w.held_out_censored
            );
        }
    }
    for w in &r.workloads {
        if let Some(first) = w.oracle_first_arms_vs_stock {
            let _ = writeln!(
                s,
                "{}: the oracle over the first {} arms alone (the same runs): {}; over all {}",
                w.workload,
                crate::run::FIRST_ARMS,
                x(first),
                x(w.oracle_vs_stock)
            );
        }
    }
    for w in &r.workloads {
        let _ = writeln!(
            s,
            "{}: planning overhead (learn - stock, median): a session's first statement {:.0} us ({} pairs), later ones {:.0} us ({} pairs)",
            w.workload,
            w.overhead.first_in_session_median_us,
            w.overhead.first_in_session_pairs,
            w.overhead.later_median_us,
            w.overhead.later_pairs
        );
    }
    for w in &r.workloads {
        let _ = writeln!(s, "\n{}: per template after warm-up (learn / frozen / oracle / held-out oracle vs stock; adopted at learn execution)", w.workload);
        for t in &w.templates {
            let _ = writeln!(
                s,
                "  {:<5} {:>8} {:>8} {:>8} {:>8}  adopted {:<10} oracle arm {}; held-out {}",
                t.template,
                x(t.learn_vs_stock),
                x(t.frozen_vs_stock),
                x(t.oracle_vs_stock),
                x(t.held_out_vs_stock),
                t.adopted_at
                    .map_or_else(|| "never".into(), |n| format!("at {n}")),
                t.oracle_arm,
                t.held_out_arm
            );
        }
        let reg: Vec<String> = w
            .regressions
            .iter()
            .map(|(t, r)| format!("{t} {r:.2}x"))
            .collect();
        let _ = writeln!(
            s,
            "  regressions after warm-up (> 1.1x stock): {}",
            if reg.is_empty() {
                "none".into()
            } else {
                reg.join(", ")
            }
        );
        let _ = writeln!(
            s,
            "  learned state: {} bytes; timeouts {}; errors {}",
            w.status
                .get("learned_state_bytes")
                .map_or("-", String::as_str),
            w.timeouts,
            w.errors.len()
        );
        for (_, advice) in w.status.range("advice ".to_string().."advice~".to_string()) {
            let _ = writeln!(s, "  statistics advice: {advice}");
        }
    }
    let explored: Vec<String> = r
        .explorer_ms_by_round
        .iter()
        .map(|ms| format!("{:.1}", ms / 1000.0))
        .collect();
    let _ = writeln!(
        s,
        "\nbackground explorers' runs per round (s, machine time, paused during stock and oracle): {} (total {:.1} s)",
        explored.join(" "),
        r.explorer_ms_by_round.iter().sum::<f64>() / 1000.0
    );
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The terminal summary.
pub fn terminal(r: &Report) -> String {
    let mut s = String::new();
    // `--workloads ,` measures pgbench alone: no workload summary.
    if !r.workloads.is_empty() {
        workloads_summary(r, &mut s);
    }
    if let Some(p) = &r.pgbench {
        let _ = writeln!(s, "\n{}", p.summary_line().trim_start());
    }
    let _ = writeln!(
        s,
        "server log: {} crash lines",
        r.crashes_in_server_log.len()
    );
    s
}

/// The self-contained HTML report.
pub fn html(r: &Report) -> Result<String, String> {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ruvector_dag workload report</title>\
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}table{{border-collapse:collapse;margin:1em 0}}\
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}}th{{background:#f3f3f3}}td:first-child{{text-align:left}}\
.bad{{color:#b00}}.good{{color:#070}}code{{background:#f5f5f5;padding:1px 4px}}</style></head><body>\
<h1>ruvector_dag: workload report</h1><p>{} &middot; {} &middot; scale {} &middot; {} rounds ({} warm-up) &middot; seed {} &middot; {:.0} s</p>\
<p><code>{}</code></p><p>Every query instance ran in four modes, interleaved per instance: <b>stock</b> (extension off), \
<b>learn</b> (from a cold start, the extension's shipped settings), <b>frozen</b> (the state learned so far, applied without \
exploring) and <b>oracle</b> (every arm of <code>ruvector.dag_arms</code>, each distinct plan timed as the median of three runs, the fastest plan kept; and the <b>held-out oracle</b>: each instance's arm chosen on the template's other rounds, its time taken in the instance itself, without the winner's curse of the fastest of several noisy times; the gain captured is of the held-out oracle's). Times are \
planning + execution from EXPLAIN (ANALYZE, TIMING OFF).</p>",
        esc(&r.server_version),
        esc(&r.started),
        r.scale,
        r.rounds,
        r.warmup_rounds,
        r.seed,
        r.duration_s,
        esc(&r.command)
    );
    h.push_str("<h2>Summary (after warm-up)</h2><table><tr><th>workload</th><th>stock (s)</th><th>learn</th><th>frozen</th><th>oracle (fastest arm per instance)</th><th>held-out oracle</th><th>held-out oracle's gain captured (learn / frozen)</th><th>learn in warm-up</th><th>regressions</th><th>planning overhead p50 / p99 (&micro;s)</th><th>learned state</th></tr>");
    for w in &r.workloads {
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{:.1}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{} / {}</td><td>{}</td><td>{}</td><td>{:.0} / {:.0}</td><td>{} bytes</td></tr>",
            w.workload,
            w.after_warmup.stock_ms / 1000.0,
            x(w.learn_vs_stock),
            x(w.frozen_vs_stock),
            match w.oracle_first_arms_vs_stock {
                Some(first) => format!(
                    "{} (the first {} arms alone: {})",
                    x(w.oracle_vs_stock),
                    crate::run::FIRST_ARMS,
                    x(first)
                ),
                None => x(w.oracle_vs_stock),
            },
            x(w.held_out_vs_stock),
            pct(w.learn_gain_captured),
            pct(w.frozen_gain_captured),
            x(w.warmup_learn_vs_stock),
            w.regressions.len(),
            w.overhead.median_us,
            w.overhead.p99_us,
            esc(w.status.get("learned_state_bytes").map_or("-", String::as_str))
        );
    }
    h.push_str("</table>");
    if let Some(p) = &r.pgbench {
        let _ = write!(
            h,
            "<h2>pgbench</h2><p><code>pgbench -S</code>, scale {}, {} clients, {} s per run, each mode once per round in a rotating order; \
ratios to off per round, their geometric mean and 95 % interval: <b>{}</b></p><table><tr><th>mode</th><th>TPS per round</th></tr>",
            p.scale,
            p.clients,
            p.seconds,
            esc(&p.ratios.iter().map(Ratio::text).collect::<Vec<_>>().join(", "))
        );
        for (m, v) in &p.tps {
            let runs: Vec<String> = v.iter().map(|t| format!("{t:.0}")).collect();
            let _ = write!(h, "<tr><td>{m}</td><td>{}</td></tr>", runs.join(", "));
        }
        h.push_str("</table>");
        if !p.paired.is_empty() {
            h.push_str("<p>Paired in one run (every client picks off's script or the mode's at random for each transaction, so both meet the machine at the same moments; the per-second difference of their mean latencies, and what it makes of off's time per <code>pgbench -S</code> transaction):</p><ul>");
            for x in &p.paired {
                let _ = write!(
                    h,
                    "<li>{}: <b>{}</b></li>",
                    esc(&x.database),
                    esc(&x.text())
                );
            }
            h.push_str("</ul>");
        }
    }
    for w in &r.workloads {
        let _ = write!(h, "<h2>{}</h2>", w.workload);
        h.push_str(&curve_svg(w, &r.executions)?);
        h.push_str(&bars_svg(w)?);
        h.push_str("<table><tr><th>template</th><th>stock (ms, after warm-up)</th><th>learn</th><th>frozen</th><th>oracle</th><th>oracle's arm</th><th>held-out oracle</th><th>its arm</th><th>adopted at learn execution</th><th>worst learn run vs stock</th></tr>");
        for t in &w.templates {
            let cls = if t.learn_vs_stock > 1.1 {
                " class=\"bad\""
            } else if t.learn_vs_stock < 0.9 {
                " class=\"good\""
            } else {
                ""
            };
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{:.1}</td><td{cls}>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.2}x</td></tr>",
                t.template,
                t.after_warmup.stock_ms,
                x(t.learn_vs_stock),
                x(t.frozen_vs_stock),
                x(t.oracle_vs_stock),
                esc(&t.oracle_arm),
                x(t.held_out_vs_stock),
                esc(&t.held_out_arm),
                t.adopted_at.map_or_else(|| "never".to_string(), |n| format!("{n} ({})", esc(t.adopted_arm.as_deref().unwrap_or("")))),
                t.worst_learn_vs_stock
            );
        }
        h.push_str("</table><h3>Regressions</h3>");
        if w.regressions.is_empty() && w.slow_learn_runs.is_empty() {
            h.push_str("<p>None: no template above 1.1x stock after warm-up, no learn run above 2x its stock run.</p>");
        } else {
            h.push_str("<table><tr><th>template</th><th>what</th></tr>");
            for (t, ratio) in &w.regressions {
                let _ = write!(
                    h,
                    "<tr><td>{t}</td><td class=\"bad\">{ratio:.2}x stock after warm-up</td></tr>"
                );
            }
            for (t, round, ratio) in &w.slow_learn_runs {
                let _ = write!(h, "<tr><td>{t}</td><td>round {round}: one learn run at {ratio:.2}x its stock run</td></tr>");
            }
            h.push_str("</table>");
        }
        let _ = write!(
            h,
            "<p>Planning: stock median {:.0} &micro;s, learn median {:.0} &micro;s; learn minus stock for the same instance: median {:.0} &micro;s, p99 {:.0} &micro;s ({} pairs); a session's first statement {:.0} &micro;s ({} pairs), later ones {:.0} &micro;s ({} pairs). Timeouts: {}. Errors: {}.</p>",
            w.overhead.stock_planning_median_us,
            w.overhead.learn_planning_median_us,
            w.overhead.median_us,
            w.overhead.p99_us,
            w.overhead.pairs,
            w.overhead.first_in_session_median_us,
            w.overhead.first_in_session_pairs,
            w.overhead.later_median_us,
            w.overhead.later_pairs,
            w.timeouts,
            w.errors.len()
        );
        for e in &w.errors {
            let _ = write!(h, "<p class=\"bad\">{}</p>", esc(e));
        }
        h.push_str("<details><summary>ruvector_dag_status() at the end</summary><table>");
        for (k, v) in &w.status {
            let _ = write!(h, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
        }
        h.push_str("</table></details>");
    }
    let _ = write!(
        h,
        "<h2>Server</h2><p>Crash lines in the server log: {}</p><ul>",
        r.crashes_in_server_log.len()
    );
    for s in &r.settings {
        let _ = write!(h, "<li><code>{}</code></li>", esc(s));
    }
    h.push_str("</ul><p>All executions are in report.json.</p></body></html>\n");
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgbench_ratios_are_taken_per_round_so_drift_cancels() {
        // The machine doubles its speed between rounds; learn is 2 % slower in each.
        let off = [100.0, 200.0, 400.0, 800.0];
        let learn: Vec<f64> = off.iter().map(|t| t * 0.98).collect();
        let r = Ratio::per_round("learn", &learn, &off).unwrap();
        assert!((r.mean - 0.98).abs() < 1e-9, "{r:?}");
        assert!((r.high - r.low).abs() < 1e-9, "no spread: {r:?}");
        // A noisy mode: its interval holds the mean and widens with the noise.
        let noisy = [99.0, 206.0, 388.0, 812.0];
        let n = Ratio::per_round("observe", &noisy, &off).unwrap();
        assert!(n.low < n.mean && n.mean < n.high, "{n:?}");
        let noisier = [90.0, 220.0, 360.0, 880.0];
        let m = Ratio::per_round("observe", &noisier, &off).unwrap();
        assert!(m.high - m.low > n.high - n.low, "{m:?} vs {n:?}");
    }

    #[test]
    fn paired_pgbench_takes_the_difference_second_by_second() {
        // The machine slows down threefold over the run; the mode costs 2 us more in every
        // second: the drift cancels, the 2 us stays.
        let seconds: Vec<(Tally, Tally)> = (0..10)
            .map(|i| {
                let base = 40.0 * (1.0 + 0.2 * f64::from(i));
                let jitter = if i % 2 == 0 { 0.1 } else { -0.1 };
                ((base * 1000.0, 1000), ((base + 2.0 + jitter) * 500.0, 500))
            })
            .collect();
        let p = Paired::from_seconds("pgbench", "learn", &seconds, 40.0).unwrap();
        assert!((p.extra_us - 2.0).abs() < 1e-9, "{p:?}");
        assert!(p.extra_low_us < 2.0 && 2.0 < p.extra_high_us, "{p:?}");
        assert!(p.extra_high_us - p.extra_low_us < 0.5, "{p:?}");
        assert!((p.ratio - 40.0 / 42.0).abs() < 1e-9, "{p:?}");
        assert!(p.ratio_low < p.ratio && p.ratio < p.ratio_high, "{p:?}");
        assert_eq!(p.seconds, 10);
        assert_eq!(p.transactions, 5000);
        // Seconds cut short are left out; too few seconds is an error.
        let mut short = seconds.clone();
        short.push(((100.0, 1), (50_000.0, 1)));
        assert_eq!(
            Paired::from_seconds("pgbench", "learn", &short, 40.0)
                .unwrap()
                .seconds,
            10
        );
        assert!(Paired::from_seconds("pgbench", "learn", &seconds[..2], 40.0).is_err());
        assert!(Paired::from_seconds("pgbench", "learn", &seconds, 0.0).is_err());
    }

    /// An oracle instance of template `t` in `round` whose arms took `times` (ms, cut short).
    fn oracle_exec(t: &str, round: u32, times: &[(&str, f64, bool)]) -> Exec {
        let best = times
            .iter()
            .filter(|a| !a.2)
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap();
        Exec {
            workload: "w".into(),
            round,
            seq: round,
            template: t.into(),
            mode: Mode::Oracle,
            ms: best.1,
            planning_ms: 0.0,
            arm: best.0.into(),
            rule: "-".into(),
            applied: false,
            timed_out: false,
            error: None,
            plans: times.len() as u32,
            ran: times.len() as u32,
            first_in_session: false,
            first_arms_ms: None,
            oracle_arms: times
                .iter()
                .map(|&(arm, ms, censored)| crate::run::ArmTime {
                    arm: arm.into(),
                    ms,
                    censored,
                })
                .collect(),
        }
    }

    #[test]
    fn the_held_out_oracle_chooses_on_other_rounds_and_is_not_flattered_by_noise() {
        // Arm a takes 100 ms every time; arm b is a plan as fast on average, whose noise makes
        // it the fastest in rounds 2 and 4 (and slow in 1 and 3). Arm c is cut short (slower
        // than the best so far) everywhere.
        let ex = [
            oracle_exec(
                "q",
                1,
                &[("a", 100.0, false), ("b", 130.0, false), ("c", 100.0, true)],
            ),
            oracle_exec(
                "q",
                2,
                &[("a", 100.0, false), ("b", 70.0, false), ("c", 70.0, true)],
            ),
            oracle_exec(
                "q",
                3,
                &[("a", 100.0, false), ("b", 130.0, false), ("c", 100.0, true)],
            ),
            oracle_exec(
                "q",
                4,
                &[("a", 100.0, false), ("b", 70.0, false), ("c", 70.0, true)],
            ),
        ];
        let refs: Vec<&Exec> = ex.iter().collect();
        // The fastest arm per instance after warm-up (rounds 3 and 4): 100 + 70.
        let fastest: f64 = ex[2..].iter().map(|e| e.ms).sum();
        assert_eq!(fastest, 170.0);
        let h = held_out(&refs, 2).unwrap();
        // Round 3: on rounds 1, 2, 4 a's median is 100, b's 70: b, which took 130 in round 3.
        // Round 4: on rounds 1-3 a's median is 100, b's 130: a, 100 in round 4.
        assert_eq!(h.ms, 230.0, "{h:?}");
        assert_eq!(h.templates["q"].1.get("a"), Some(&1));
        assert_eq!(h.templates["q"].1.get("b"), Some(&1));
        assert_eq!(h.censored, 0);
        // Every round warm-up: nothing after it, zero.
        assert_eq!(held_out(&refs, 4).unwrap().ms, 0.0);
        // One round alone: nothing to choose on.
        assert!(held_out(&refs[..1], 0).is_none());
        // A tie between two arms goes to the one cut short less often, then to the earlier.
        let tie = [
            oracle_exec("q", 1, &[("a", 100.0, false), ("b", 100.0, true)]),
            oracle_exec("q", 2, &[("a", 100.0, false), ("b", 90.0, false)]),
        ];
        let refs: Vec<&Exec> = tie.iter().collect();
        let h = held_out(&refs, 1).unwrap();
        assert_eq!((h.ms, h.censored), (100.0, 0), "{h:?}");
    }

    #[test]
    fn pgbench_ratios_refuse_runs_that_do_not_pair() {
        assert!(Ratio::per_round("learn", &[1.0, 2.0], &[1.0]).is_err());
        assert!(Ratio::per_round("learn", &[1.0], &[1.0]).is_err());
        assert!(Ratio::per_round("learn", &[1.0, 0.0], &[1.0, 1.0]).is_err());
        let mut tps = BTreeMap::new();
        tps.insert("learn".to_string(), vec![1.0, 2.0]);
        assert!(Pgbench::from_runs(1, 1, 2, tps).is_err(), "no off runs");
    }
}
