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

/// A planned statement the executor hooks should recognise.
#[derive(Clone)]
pub(super) struct Planned {
    pub(super) stmt: usize,
    pub(super) tree: usize,
    /// [`copy_identity`]: finds the plan again after the plan cache copied it.
    pub(super) copy_identity: u64,
    /// None: the hook planned this in-scope statement without a decision (too cheap, or the
    /// learning path failed), so neither it nor a plan cache copy of it is observed.
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
        if b.planned.len() == REMEMBERED {
            b.planned.pop_front();
        }
        b.planned.push_back(p);
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
        let (found, copy) = if let Some(p) = b.planned.iter().rev().find(|p| same(p)) {
            // Planned in scope without a decision (too cheap, say): nothing to time or observe.
            p.decision.as_ref()?;
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
                let mut p = b
                    .planned
                    .iter()
                    .rev()
                    .find(|p| p.copy_identity == identity)?
                    .clone();
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
