//! Where the planner hook's time goes in this session, phase by phase, and the page faults
//! taken meanwhile: measured only while `ruvector.dag_phase_timing` is on (two clock reads and
//! two `getrusage` calls per phase; off, one setting read), shown
//! by `ruvector_dag_status()` as `backend_phase_us`. `scripts/first-statement.sh` reads it for
//! a session's first statement and for its later ones.

use std::cell::{Cell, RefCell};
use std::fmt::Write;
use std::time::Instant;

use crate::guc;

/// A phase of the planner hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Phase {
    /// The whole hook for an in-scope statement (PostgreSQL's planning included).
    Hook,
    /// PostgreSQL's own planning, every call (the default plan, an arm's, the candidates').
    Postgres,
    /// Which enabled tables the statement reads.
    Scope,
    /// The statement's text key (`cheap`).
    Key,
    /// Looking the statement up among those settled on a verified plan.
    Settled,
    /// The copy of its Query kept to plan it again.
    Copy,
    /// The default plan read into the core's plan DAG.
    Dag,
    /// Making sure the session holds the current learned state (loading it when not).
    Load,
    /// The shape's evidence brought in from the shared book.
    Book,
    /// The decision itself.
    Decide,
    /// What follows a decision: counted, offered to the explorer, remembered for the executor.
    After,
}

const PHASES: [Phase; 11] = [
    Phase::Hook,
    Phase::Postgres,
    Phase::Scope,
    Phase::Key,
    Phase::Settled,
    Phase::Copy,
    Phase::Dag,
    Phase::Load,
    Phase::Book,
    Phase::Decide,
    Phase::After,
];

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Hook => "hook",
            Phase::Postgres => "postgres",
            Phase::Scope => "scope",
            Phase::Key => "key",
            Phase::Settled => "settled",
            Phase::Copy => "copy",
            Phase::Dag => "dag",
            Phase::Load => "load",
            Phase::Book => "book",
            Phase::Decide => "decide",
            Phase::After => "after",
        }
    }
}

thread_local! {
    /// Per phase: nanoseconds, times, and the page faults this process took meanwhile (minor
    /// and major), this session.
    static TOTALS: RefCell<[(u64, u64, u64); PHASES.len()]> =
        const { RefCell::new([(0, 0, 0); PHASES.len()]) };
    /// In the hook's decision on an in-scope statement: the other phases count only there
    /// (the same functions run for EXPLAIN's view, status, the explorer).
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
}

/// Times a phase until dropped (nothing while `ruvector.dag_phase_timing` is off, nor outside
/// the hook's [`Phase::Hook`]).
pub(crate) struct Timing(Option<(Phase, Instant, u64)>);

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
    if on && phase == Phase::Hook {
        IN_HOOK.set(true);
    }
    Timing(on.then(|| (phase, Instant::now(), faults())))
}

impl Timing {
    /// Not counted after all (the statement turned out not to be in scope).
    pub(crate) fn discard(mut self) {
        if let Some((Phase::Hook, _, _)) = self.0.take() {
            IN_HOOK.set(false);
        }
    }
}

impl Drop for Timing {
    fn drop(&mut self) {
        if let Some((phase, t, f)) = self.0 {
            let ns = t.elapsed().as_nanos().min(u128::from(u64::MAX)) as u64;
            let f = faults().saturating_sub(f);
            if phase == Phase::Hook {
                IN_HOOK.set(false);
            }
            TOTALS.with(|p| {
                let e = &mut p.borrow_mut()[phase as usize];
                e.0 = e.0.saturating_add(ns);
                e.1 += 1;
                e.2 += f;
            });
        }
    }
}

/// This session's totals per phase measured, in hook order: name, microseconds, times, page
/// faults.
pub(crate) fn totals() -> Vec<(&'static str, f64, u64, u64)> {
    TOTALS.with(|p| {
        PHASES
            .iter()
            .zip(p.borrow().iter())
            .filter(|(_, &(_, n, _))| n > 0)
            .map(|(phase, &(ns, n, f))| (phase.name(), ns as f64 / 1000.0, n, f))
            .collect()
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
