//! Where the planner hook's time goes in this session, phase by phase, and the page faults
//! the hook took: measured only while `ruvector.dag_phase_timing` is on (two clock reads per
//! phase, ~25 ns each here, and two `getrusage` calls per statement, ~0.7 us each, outside the
//! times; off, one setting read), shown by `ruvector_dag_status()` as `backend_phase_us` and
//! by `ruvector_dag_phases()`. Each phase counts its own time, not that
//! of the phases within it (PostgreSQL's planning within planning under an arm is `postgres`,
//! the rest `arm`): the phases add up to `total`, the whole hook, and `other` is what no phase
//! names. `scripts/first-statement.sh` and `scripts/tpch-planning.sh` read them.

use std::cell::{Cell, RefCell};
use std::fmt::Write;
use std::time::Instant;

use crate::guc;

/// A phase of the planner hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The whole hook for an in-scope statement: its own time is what no other phase names
    /// (`other`); its whole time is `total`.
    Hook,
    /// PostgreSQL's own planning, every call (the default plan, an arm's, the candidates').
    Postgres,
    /// Which enabled tables the statement reads.
    Scope,
    /// The statement's text key (`cheap`).
    Key,
    /// Looking the statement up among those settled on a verified plan.
    Settled,
    /// Planning a settled statement under its arm alone, and checking the plan.
    Alone,
    /// The copy of its Query kept to plan it again.
    Copy,
    /// A plan read into the core's plan DAG.
    Dag,
    /// Making sure the session holds the current learned state.
    Load,
    /// Restoring the learned state (its head alone for a lean decision) from the model cache.
    Restore,
    /// The shape's evidence brought in from the shared book.
    Book,
    /// The decision itself.
    Decide,
    /// Planning under the decided arm: the subtransaction and the settings around it.
    Arm,
    /// Planning the candidate plans (learn mode, exploring in the statement itself).
    Candidates,
    /// What follows a decision: counted, offered to the explorer, remembered for the executor.
    After,
    /// Without a current copy of the learned state: the shape looked up among the decisions
    /// kept in shared memory, and the optimizer that holds the rules alone made (`recalled`).
    Recall,
}

/// Each phase's name, in the order of [`Phase`] (indexed by its discriminant).
const NAMES: [&str; 16] = [
    "other",
    "postgres",
    "scope",
    "key",
    "settled",
    "alone",
    "copy",
    "dag",
    "load",
    "restore",
    "book",
    "decide",
    "arm",
    "candidates",
    "after",
    "recall",
];
// One name per phase: Recall is the last.
const _: () = assert!(NAMES.len() == Phase::Recall as usize + 1);

#[derive(Clone, Copy)]
struct Total {
    /// Own time, nanoseconds.
    ns: u64,
    times: u64,
}

const ZERO: Total = Total { ns: 0, times: 0 };

thread_local! {
    /// Per phase, this session.
    static TOTALS: RefCell<[Total; NAMES.len()]> = const { RefCell::new([ZERO; NAMES.len()]) };
    /// The hook's whole time and the page faults it took (minor and major), this session.
    static WHOLE: Cell<(u64, u64)> = const { Cell::new((0, 0)) };
    /// Own time of every phase ended so far: what a phase's inner phases took is what this
    /// grew by while it ran.
    static ENDED: Cell<u64> = const { Cell::new(0) };
    /// In the hook's decision on an in-scope statement: the other phases count only there
    /// (the same functions run for EXPLAIN's view, status, the explorer).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Times a phase until dropped (nothing while `ruvector.dag_phase_timing` is off, nor outside
/// the hook's [`Phase::Hook`]).
pub(crate) struct Timing(Option<Started>);

#[derive(Clone, Copy)]
struct Started {
    phase: Phase,
    at: Instant,
    /// The page faults so far (the hook's only).
    faults: u64,
    ended: u64,
}

/// The page faults this process took so far (a `getrusage` call; 0 where it fails).
fn faults() -> u64 {
    // SAFETY: getrusage fills the struct it is given.
    unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut u) != 0 {
            return 0;
        }
        (u.ru_minflt + u.ru_majflt).max(0) as u64
    }
}

pub(crate) fn timing(phase: Phase) -> Timing {
    // A hook within the hook (planning a statement inside planning one) counts in the outer.
    let on = guc::PHASE_TIMING.get() && (phase == Phase::Hook) != IN_HOOK.get();
    if !on {
        return Timing(None);
    }
    if phase == Phase::Hook {
        IN_HOOK.set(true);
    }
    Timing(Some(Started {
        phase,
        // Read before the clock: not part of the times.
        faults: if phase == Phase::Hook { faults() } else { 0 },
        ended: ENDED.get(),
        at: Instant::now(),
    }))
}

impl Timing {
    /// Not counted after all (the statement turned out not to be in scope).
    pub(crate) fn discard(mut self) {
        if let Some(Started {
            phase: Phase::Hook, ..
        }) = self.0.take()
        {
            IN_HOOK.set(false);
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        let Some(s) = self.0 else { return };
        let ns = s.at.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
        let ended = ENDED.get();
        let own = ns.saturating_sub(ended.saturating_sub(s.ended));
        ENDED.set(ended.saturating_add(own));
        if s.phase == Phase::Hook {
            IN_HOOK.set(false);
            let faults = faults().saturating_sub(s.faults);
            let (w, f) = WHOLE.get();
            WHOLE.set((w.saturating_add(ns), f.saturating_add(faults)));
        }
        TOTALS.with(|p| {
            let e = &mut p.borrow_mut()[s.phase as usize];
            e.ns = e.ns.saturating_add(own);
            e.times += 1;
        });
    }
}

/// This session's totals, in hook order: `total` (the whole hook, with its page faults) first,
/// then each phase measured: name, microseconds, times, page faults (the hook's only).
pub(crate) fn totals() -> Vec<(&'static str, f64, u64, Option<u64>)> {
    TOTALS.with(|p| {
        let p = p.borrow();
        let hooks = p[Phase::Hook as usize].times;
        if hooks == 0 {
            return Vec::new();
        }
        let (ns, faults) = WHOLE.get();
        let mut out = vec![("total", ns as f64 / 1000.0, hooks, Some(faults))];
        out.extend(
            NAMES
                .iter()
                .zip(p.iter())
                .filter(|(_, t)| t.times > 0)
                .map(|(&name, t)| (name, t.ns as f64 / 1000.0, t.times, None)),
        );
        out
    })
}

/// [`totals`] as one line, `name total_us (times)` per phase; None when nothing was measured.
pub(crate) fn summary() -> Option<String> {
    let mut s = String::new();
    for (name, us, n, _) in totals() {
        if !s.is_empty() {
            s.push_str(", ");
        }
        let _ = write!(s, "{name} {us:.1} ({n})");
    }
    (!s.is_empty()).then_some(s)
}
