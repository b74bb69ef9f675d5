//! Plan identity: which remembered decision the statement the executor runs belongs to. By
//! the `PlannedStmt` address the planner hook returned, or, for a plan cache copy (PREPARE /
//! EXECUTE, the extended protocol, PL/pgSQL), by [`copy_identity`].

use super::*;

/// Planned statements whose decision is remembered for the executor hooks.
pub(super) const REMEMBERED: usize = 64;
/// Plan cache copies (prepared statements' generic plans, PL/pgSQL's plans) recognised by
/// fingerprint, kept by address while they are executed: the least recently executed is
/// forgotten first, so a statement planned once and run for hours stays observed however many
/// others are planned meanwhile.
pub(super) const ADOPTED: usize = 256;

/// In-scope statements planned without a decision remembered (a ring: the oldest is
/// forgotten). A statement is executed right after it is planned, or copied by the plan cache
/// right after and its copy executed: its record is needed only that long.
pub(super) const PASSED: usize = 16;

/// An in-scope statement planned without a decision (too cheap, or the learning path failed):
/// neither it nor a plan cache copy of it is observed. Kept apart from [`Planned`] (nothing to
/// count or drop): most statements of an OLTP workload are these.
#[derive(Clone, Copy)]
pub(super) struct Passed {
    /// 0: an empty slot, or a plan freed since.
    pub(super) stmt: usize,
    pub(super) tree: usize,
    pub(super) copy_identity: u64,
}

/// A planned statement the executor hooks should recognise.
#[derive(Clone)]
pub(super) struct Planned {
    pub(super) stmt: usize,
    pub(super) tree: usize,
    /// [`copy_identity`]: finds the plan again after the plan cache copied it.
    pub(super) copy_identity: u64,
    /// None only in `adopted`: a plan cache copy of a planning without a decision ([`Passed`]),
    /// not observed. Plannings with a decision are the only ones in `planned`.
    pub(super) decision: Option<Rc<Decision>>,
    /// The enabled tables the statement reads (learned with the trajectory, for
    /// `ruvector_dag_reset(regclass)`).
    pub(super) relids: Rc<Vec<u32>>,
    pub(super) arm_ran: u8,
    /// Timed as a whole and observed.
    pub(super) timed: bool,
    /// Executed with per-node timing too.
    pub(super) node_timed: bool,
}

/// What identifies one planning's plan after `copyObject`: the plan cache (PREPARE / EXECUTE,
/// the extended protocol, PL/pgSQL) copies a plan into its own memory after the planner hook
/// returned, so the executor sees another address. The statement's kind and query id, the top
/// plan node's type, costs, rows and width, its inputs' types and costs, and the range table's
/// relations. Not "the same plan" in the learning's sense (`PlanDag::shape_hash`, which keys
/// the evidence, the candidates and the harness's oracle, and sees no estimates): two plannings
/// of one shape with other constants differ here, so a copy is matched to its own planning.
pub(super) unsafe fn copy_identity(stmt: *mut pg_sys::PlannedStmt) -> u64 {
    // Every planning in scope computes this: words mixed as they are read, nothing allocated.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut put = |x: u64| {
        h = (h ^ x).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 32;
    };
    put((*stmt).commandType as u64);
    // uint64 before PostgreSQL 18, int64 from 18 on: its bits either way.
    put(u64::from_ne_bytes((*stmt).queryId.to_ne_bytes()));
    let top = (*stmt).planTree;
    if top.is_null() {
        put(0);
    } else {
        for p in [top, (*top).lefttree, (*top).righttree] {
            if p.is_null() {
                put(0);
                continue;
            }
            put((*p).type_ as u64);
            put((*p).startup_cost.to_bits());
            put((*p).total_cost.to_bits());
            put((*p).plan_rows.to_bits());
            put((*p).plan_width as u64);
        }
    }
    for rte in list_ptrs::<pg_sys::RangeTblEntry>((*stmt).rtable) {
        if !rte.is_null() {
            put((*rte).rtekind as u64);
            put(u64::from((*rte).relid.to_u32()));
        }
    }
    h.max(1)
}

/// Remember `p` for the executor hooks (the oldest of [`REMEMBERED`] is forgotten), with the
/// plan tree's address and [`copy_identity`] of `stmt`.
pub(super) fn push_planned(stmt: *mut pg_sys::PlannedStmt, mut p: Planned) {
    // SAFETY: stmt is the planner's result, valid here.
    (p.tree, p.copy_identity) = unsafe { ((*stmt).planTree as usize, copy_identity(stmt)) };
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        // This planning is newer than a passed one of the same identity: a plan cache copy of
        // that identity is this statement's from now on ([`planned_for`] asks the passed first).
        for x in b.passed.iter_mut() {
            if x.copy_identity == p.copy_identity {
                x.stmt = 0;
                x.copy_identity = 0;
            }
        }
        if b.planned.len() == REMEMBERED {
            b.planned.pop_front();
        }
        b.planned.push_back(p);
    });
}

/// Remember `stmt` as planned in scope without a decision (the oldest of [`PASSED`] is
/// forgotten).
pub(super) fn push_passed(stmt: *mut pg_sys::PlannedStmt) {
    // SAFETY: stmt is the planner's result, valid here.
    let (tree, copy_identity) = unsafe { ((*stmt).planTree as usize, copy_identity(stmt)) };
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let at = b.passed_next % PASSED;
        b.passed[at] = Passed {
            stmt: stmt as usize,
            tree,
            copy_identity,
        };
        b.passed_next = (at + 1) % PASSED;
    });
}

/// A new plan is at `stmt`: whatever was remembered at that address was freed.
pub(super) fn forget_address(stmt: usize) {
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        for x in b.passed.iter_mut().filter(|x| x.stmt == stmt) {
            // Its identity stays: a plan cache copy of it is still known as passed.
            x.stmt = 0;
        }
        if !b.planned.is_empty() {
            b.planned.retain(|p| p.stmt != stmt);
        }
        if !b.adopted.is_empty() {
            b.adopted.retain(|p| p.stmt != stmt);
        }
    });
}

/// What the planner hook remembered of the statement: (decision, tables, arm ran, timed,
/// node-timed).
pub(super) type Remembered = (Rc<Decision>, Rc<Vec<u32>>, u8, bool, bool);

/// The remembered decision for the statement `query_desc` executes: the plan the hook
/// returned (by address), or a plan cache copy of one (by [`copy_identity`], the most
/// recent planning of that shape; then kept by the copy's address, see [`ADOPTED`]). The flag
/// says it is a copy.
pub(super) fn planned_for(query_desc: *mut pg_sys::QueryDesc) -> Option<(Remembered, bool)> {
    // SAFETY: the executor passes a valid QueryDesc.
    let s = unsafe { (*query_desc).plannedstmt };
    if s.is_null() {
        return None;
    }
    // SAFETY: a valid PlannedStmt.
    let (stmt, tree) = (s as usize, unsafe { (*s).planTree } as usize);
    let same = |p: &Planned| p.stmt == stmt && p.tree == tree;
    BACKEND.with(|b| {
        let mut b = b.borrow_mut();
        let b = &mut *b;
        if b.passed.iter().any(|p| p.stmt == stmt && p.tree == tree) {
            // Planned in scope without a decision (too cheap, say): nothing to time or observe.
            return None;
        }
        let (found, copy) = if let Some(p) = b.planned.iter().rev().find(|p| same(p)) {
            (p.clone(), false)
        } else {
            if b.planned.is_empty() && b.adopted.is_empty() {
                return None;
            }
            // SAFETY: as above.
            let identity = unsafe { copy_identity(s) };
            // A copy seen before, unless its memory now holds another plan.
            if let Some(i) = b
                .adopted
                .iter()
                .position(|p| same(p) && p.copy_identity == identity)
            {
                let p = b.adopted.remove(i)?;
                b.adopted.push_back(p.clone());
                (p, true)
            } else {
                b.adopted.retain(|p| !same(p));
                // A passed planning of this identity is newer than any remembered one (see
                // `push_planned`): the copy is adopted as passed (its next runs find it at once).
                let mut p = if b.passed.iter().any(|p| p.copy_identity == identity) {
                    Planned {
                        stmt,
                        tree,
                        copy_identity: identity,
                        decision: None,
                        relids: Rc::new(Vec::new()),
                        arm_ran: 0,
                        timed: false,
                        node_timed: false,
                    }
                } else {
                    b.planned
                        .iter()
                        .rev()
                        .find(|p| p.copy_identity == identity)?
                        .clone()
                };
                (p.stmt, p.tree) = (stmt, tree);
                if b.adopted.len() == ADOPTED {
                    b.adopted.pop_front();
                }
                b.adopted.push_back(p.clone());
                (p, true)
            }
        };
        Some((
            (
                Rc::clone(found.decision.as_ref()?),
                Rc::clone(&found.relids),
                found.arm_ran,
                found.timed,
                found.node_timed,
            ),
            copy,
        ))
    })
}
