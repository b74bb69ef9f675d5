//! Arms that raise `work_mem` or `hash_mem_multiplier` (issue 23's per-query memory raise).
//! Memory matters where a plan runs, not only where it is made: a sort planned under a raised
//! `work_mem` still spills to disk if it runs under the session's. So such an arm's settings
//! are applied around the planning (as every arm's) and again around its plan's ExecutorStart
//! (a hash aggregate sizes itself there) and each ExecutorRun (sorts and hash tables are built
//! there, and parallel workers take the settings the leader has when it starts them), each at
//! a GUC nest level of its own that ends with the call: nothing of it outlives the call, also
//! when two portals interleave.
//!
//! A raise is memory taken from the server: `ruvector.dag_work_mem_max` bounds what all
//! statements under such arms may add at once. A statement takes its share when it starts (the
//! raise over the session's limit, per node that sorts or hashes, hashing ones at the raised
//! `hash_mem_multiplier`, times its parallel processes: PostgreSQL's own bound) and gives it
//! back when it ends, is cut short, or its process exits; when the rest is not enough it runs
//! with the session's settings and its time is not evidence for the arm.
//!
//! The plan such an arm makes is often the default plan's shape (the same sort, in memory):
//! its identity is the shape salted with the raise ([`plan_id`]), so the evidence tells it from
//! the default plan. Only the background explorer plans and runs these arms, and only for a
//! shape whose default plan spilled to disk there; the foreground applies them once verified.

use super::*;

/// Settings that take effect where a plan runs, not only where it is planned.
pub(crate) const RUNTIME_SETTINGS: [&str; 2] = ["work_mem", "hash_mem_multiplier"];

/// What an arm raises over the session's settings.
#[derive(Clone, Debug)]
pub(crate) struct Raise {
    /// The arm's runtime settings, as the arm list has them.
    pub(crate) settings: Vec<(String, String)>,
    /// `work_mem` under the arm and the session's, kB.
    work_mem_kb: (f64, f64),
    /// `hash_mem_multiplier` under the arm and the session's.
    hash_mult: (f64, f64),
}

/// Arm `arm`'s raise over this session's `work_mem` and `hash_mem_multiplier`: None for the
/// default arm, an arm that sets neither, or one that raises neither (a lower or equal value,
/// or one PostgreSQL would not take: then it is only a planning setting, as any other).
pub(crate) fn raise(arm: u8) -> Option<Raise> {
    if arm == 0 {
        return None;
    }
    let arms = guc::arms_shared().ok()?;
    let (_, settings) = arms.0.get(usize::from(arm))?;
    if !sets_memory_in(settings) {
        return None;
    }
    // SAFETY: the backend's current settings.
    let (wm, hm) = unsafe { (f64::from(pg_sys::work_mem), pg_sys::hash_mem_multiplier) };
    let mut r = Raise {
        settings: Vec::new(),
        work_mem_kb: (wm, wm),
        hash_mult: (hm, hm),
    };
    for (k, v) in settings {
        let value = CString::new(v.as_str()).ok()?;
        match k.as_str() {
            "work_mem" => {
                let mut kb: i32 = 0;
                // SAFETY: a NUL-terminated value; the hint is not kept.
                let ok = unsafe {
                    pg_sys::parse_int(
                        value.as_ptr(),
                        &mut kb,
                        pg_sys::GUC_UNIT_KB as i32,
                        std::ptr::null_mut(),
                    )
                };
                if !ok || kb < 64 {
                    return None;
                }
                r.work_mem_kb.0 = f64::from(kb);
            }
            "hash_mem_multiplier" => {
                let mut m: f64 = 0.0;
                // SAFETY: as above.
                let ok =
                    unsafe { pg_sys::parse_real(value.as_ptr(), &mut m, 0, std::ptr::null_mut()) };
                if !ok || !(1.0..=1000.0).contains(&m) {
                    return None;
                }
                r.hash_mult.0 = m;
            }
            _ => continue,
        }
        r.settings.push((k.clone(), v.clone()));
    }
    let more = r.work_mem_kb.0 > r.work_mem_kb.1
        || r.work_mem_kb.0 * r.hash_mult.0 > r.work_mem_kb.1 * r.hash_mult.1;
    more.then_some(r)
}

/// The identity of the plan `shape` that arm `arm` made: its shape, salted by the raise when
/// the arm raises memory where it runs (the same shape runs otherwise: another plan for the
/// evidence). Never the shape itself for such an arm.
pub(crate) fn plan_id(shape: u64, arm: u8) -> u64 {
    shape ^ salt_of(arm)
}

/// What [`plan_id`] salts arm `arm`'s plans with under this session's settings (0: nothing).
pub(crate) fn salt_of(arm: u8) -> u64 {
    raise(arm).map_or(0, |r| salt(&r.settings))
}

/// Whether arm `arm` sets `work_mem` or `hash_mem_multiplier` at all (whatever the session's).
pub(crate) fn sets_memory(arm: u8) -> bool {
    arm != 0
        && guc::arms_shared().is_ok_and(|(arms, _)| {
            arms.get(usize::from(arm))
                .is_some_and(|(_, settings)| sets_memory_in(settings))
        })
}

fn sets_memory_in(settings: &[(String, String)]) -> bool {
    settings
        .iter()
        .any(|(k, _)| RUNTIME_SETTINGS.contains(&k.as_str()))
}

/// A nonzero hash of runtime settings.
fn salt(settings: &[(String, String)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in settings {
        for b in k.bytes().chain([b'=']).chain(v.bytes()).chain([b';']) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    h | 1
}

/// Memory a run of `stmt` under `r` may add over the session's settings, kB: per node that
/// sorts, hashes or keeps rows in memory, the raise of its limit, times the processes that may
/// run it (the leader and the parallel workers its Gather nodes plan).
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
unsafe fn extra_kb(stmt: *mut pg_sys::PlannedStmt, r: &Raise) -> u64 {
    let Ok((_, plans)) = crate::plantree::dag_and_plans(stmt) else {
        return u64::MAX;
    };
    let (plain, hashed) = (
        (r.work_mem_kb.0 - r.work_mem_kb.1).max(0.0),
        (r.work_mem_kb.0 * r.hash_mult.0 - r.work_mem_kb.1 * r.hash_mult.1).max(0.0),
    );
    let (mut kb, mut workers) = (0.0f64, 0u64);
    for &p in &plans {
        let plan = p as *mut pg_sys::Plan;
        if plan.is_null() {
            continue;
        }
        use pg_sys::NodeTag as T;
        kb += match (*plan).type_ {
            T::T_Sort | T::T_IncrementalSort | T::T_Material | T::T_WindowAgg => plain,
            T::T_Hash | T::T_Memoize | T::T_RecursiveUnion => hashed,
            T::T_Agg => {
                let agg = plan as *mut pg_sys::Agg;
                if (*agg).aggstrategy == pg_sys::AggStrategy::AGG_PLAIN
                    || (*agg).aggstrategy == pg_sys::AggStrategy::AGG_SORTED
                {
                    plain
                } else {
                    hashed
                }
            }
            T::T_SetOp => hashed,
            T::T_Gather => {
                workers += (*(plan as *mut pg_sys::Gather)).num_workers.max(0) as u64;
                0.0
            }
            T::T_GatherMerge => {
                workers += (*(plan as *mut pg_sys::GatherMerge)).num_workers.max(0) as u64;
                0.0
            }
            _ => 0.0,
        };
    }
    (kb * (1 + workers) as f64).ceil().min(u64::MAX as f64) as u64
}

thread_local! {
    /// kB this process holds of the server's raise (given back at exit if a run never ended).
    static HELD: Cell<u64> = const { Cell::new(0) };
    /// The process is exiting: its grants were given back.
    static GONE: Cell<bool> = const { Cell::new(false) };
}

/// A share of `ruvector.dag_work_mem_max` a run holds: given back when dropped.
pub(super) struct Grant {
    kb: u64,
}

/// Grants this process holds: ExecutorRun looks for a run's raise only while there is one.
/// A process-wide static, not a thread-local: a plain load on every statement's run.
static GRANTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// Whether this process holds no grant (no run under a raise is under way).
pub(super) fn none_held() -> bool {
    GRANTS.load(std::sync::atomic::Ordering::Relaxed) == 0
}

impl Drop for Grant {
    fn drop(&mut self) {
        GRANTS.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        if GONE.get() {
            return;
        }
        HELD.set(HELD.get().saturating_sub(self.kb));
        shared::release_work_mem(self.kb);
    }
}

/// The share a run of `stmt` under `r` needs, if the server has it left.
///
/// # Safety
/// `stmt` is a valid PlannedStmt.
pub(super) unsafe fn grant(stmt: *mut pg_sys::PlannedStmt, r: &Raise) -> Option<Grant> {
    let cap = u64::try_from(guc::WORK_MEM_MAX.get()).unwrap_or(0);
    if cap == 0 {
        return None;
    }
    let kb = extra_kb(stmt, r);
    if !shared::grant_work_mem(kb, cap) {
        return None;
    }
    static REGISTERED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    if !REGISTERED.swap(true, std::sync::atomic::Ordering::AcqRel) {
        // SAFETY: registers a callback for this process's exit.
        pg_sys::before_shmem_exit(Some(give_back_at_exit), pg_sys::Datum::from(0));
    }
    HELD.set(HELD.get() + kb);
    GRANTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    Some(Grant { kb })
}

#[pg_guard]
unsafe extern "C-unwind" fn give_back_at_exit(_code: i32, _arg: pg_sys::Datum) {
    shared::release_work_mem(HELD.replace(0));
    GONE.set(true);
}
