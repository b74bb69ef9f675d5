//! Statements whose verified plan is planned under its arm alone. Applying a verified plan the
//! usual way costs two plannings: the default plan (its shape is what the evidence is kept
//! under, so the decision needs it) and the plan under the arm. On TPC-H the second planning
//! was most of the extension's planning overhead (q08: 1.4 ms planning, +1.6 ms applied).
//!
//! This backend remembers, by the statement's text without its constants
//! ([`super::cheap::key`]), the default plan of a statement whose last [`STREAK`] plannings
//! gave a default plan of the same shape and applied a verified plan for it at the same cost.
//! From then on the statement is decided on that remembered default plan and planned under the
//! decided arm alone; the plan is kept only when it is the verified plan itself (the same shape
//! hash) at the cost it had then (within [`COST_DRIFT`]: the same estimates, so the decision on
//! the remembered default plan, its embeddings and what BTSP memory recalls for them, still
//! holds). Otherwise (other constants, other data, other settings) the statement is planned the
//! usual way, the default plan first (the plan under the arm is used again if the decision
//! applies that arm), and must settle again over a streak twice as long as before. Every
//! [`FULL_EVERY`]th planning goes the usual way too, so a default plan whose shape changed while
//! the arm's plan did not is seen within that many plannings; the default plan measured again
//! every `RECHECK_EVERY` applied runs (learn mode) goes the usual way as well, as the decision
//! for it is not the verified rule.

use super::*;
use ruvector_dag_core::PlanDag;

/// Plannings in a row with the same default shape and a verified plan applied before a
/// statement is planned under its arm alone.
pub(crate) const STREAK: u8 = 2;
/// One planning in this many of a settled statement goes the usual way (the default plan
/// first), to see a default plan whose shape changed.
pub(crate) const FULL_EVERY: u8 = 8;
/// How far the verified plan's cost may move (a share of it) and still be the same planning.
pub(crate) const COST_DRIFT: f64 = 0.1;
/// Statements remembered (direct-mapped by key: a collision forgets the older one).
const SLOTS: usize = 64;

struct Settled {
    key: u64,
    /// The default plan of its last usual planning, and its shape hash.
    dag: Rc<PlanDag>,
    fingerprint: u64,
    /// The planner's total cost of the verified plan applied then.
    cost: f64,
    /// Usual plannings in a row with this default shape and a verified plan applied.
    streak: u8,
    /// Plannings under the arm alone since the last usual one.
    alone: u8,
    /// Plannings under the arm alone that did not give the verified plan: the streak needed
    /// is [`STREAK`] doubled this many times.
    misses: u8,
}

thread_local! {
    static SETTLED: RefCell<Vec<Option<Settled>>> = const { RefCell::new(Vec::new()) };
}

fn slot(key: u64) -> usize {
    (key % SLOTS as u64) as usize
}

/// After a usual planning of `key`'s statement: its default plan `dag` (of shape hash
/// `fingerprint`), and the cost of the verified plan applied for it (None: no verified plan was
/// applied, or the arm's plan was another one).
pub(super) fn note(key: u64, dag: PlanDag, fingerprint: u64, verified_cost: Option<f64>) {
    SETTLED.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_empty() {
            s.resize_with(SLOTS, || None);
        }
        let at = &mut s[slot(key)];
        let Some(cost) = verified_cost else {
            if at.as_ref().is_some_and(|x| x.key == key) {
                *at = None;
            }
            return;
        };
        let (streak, misses) = match at {
            Some(x) if x.key == key && x.fingerprint == fingerprint && same_cost(x.cost, cost) => {
                (x.streak.saturating_add(1), x.misses)
            }
            Some(x) if x.key == key => (1, x.misses),
            _ => (1, 0),
        };
        *at = Some(Settled {
            key,
            dag: Rc::new(dag),
            fingerprint,
            cost,
            streak,
            alone: 0,
            misses,
        });
    });
}

/// Whether a plan's costs `a` and `b` are those of the same planning (within [`COST_DRIFT`]).
pub(super) fn same_cost(a: f64, b: f64) -> bool {
    (a - b).abs() <= COST_DRIFT * a.abs().max(1.0)
}

/// The remembered default plan of `key`'s statement and its verified plan's cost, when it is to
/// be planned under its arm alone this time (counted as such).
pub(super) fn take(key: u64) -> Option<(Rc<PlanDag>, f64)> {
    SETTLED.with(|s| {
        let mut s = s.borrow_mut();
        let x = s.get_mut(slot(key))?.as_mut()?;
        let needed = u32::from(STREAK) << x.misses.min(5);
        if x.key != key || u32::from(x.streak) < needed || x.alone + 1 >= FULL_EVERY {
            return None;
        }
        x.alone += 1;
        Some((Rc::clone(&x.dag), x.cost))
    })
}

/// `key`'s statement planned under its arm alone did not give the verified plan: planned the
/// usual way until it settles again, over a streak twice as long.
pub(super) fn missed(key: u64) {
    SETTLED.with(|s| {
        if let Some(Some(x)) = s.borrow_mut().get_mut(slot(key)) {
            if x.key == key {
                x.streak = 0;
                x.misses = x.misses.saturating_add(1);
            }
        }
    });
}

/// `key`'s statement has no verified plan to apply any more (or failed to be decided):
/// planned the usual way until it settles again.
pub(super) fn forget(key: u64) {
    SETTLED.with(|s| {
        if let Some(at) = s.borrow_mut().get_mut(slot(key)) {
            if at.as_ref().is_some_and(|x| x.key == key) {
                *at = None;
            }
        }
    });
}
