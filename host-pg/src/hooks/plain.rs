//! Statements that settle on the default plan. In `learn` and `frozen` mode the planner hook
//! copies a statement's Query before planning it, so that it can plan it again under an arm
//! (the planner scribbles on its Query). Most statements of a steady workload keep the default
//! plan: every candidate was tried and none verified faster, or nothing is verified in frozen
//! mode. For them the copy (17-22 us of a TPC-H statement's overhead) is made for nothing.
//!
//! The server remembers in shared memory, by the statement's text without its constants
//! ([`super::cheap::key`]), the mode deciding it and its database, how many plannings in a row (in any session)
//! decided the default plan with nothing for it to run, here or in the background. After
//! [`STREAK`] of them the statement is planned without the copy, and decided as before. A
//! decision that then wants anything else (a verified plan to apply, candidates for the
//! explorer) cannot have it this once: the statement keeps its default plan, says so in its
//! reason, is counted ([`missed`]), and is planned with the copy from its next planning on (in
//! every session), until it settles again.
//!
//! [`SLOTS`] statements for all databases, direct-mapped, one atomic word each (the
//! statement's tag and its streak): no lock; two backends racing lose a count at worst, which
//! costs a copy or delays one. Nothing of it outlives the server.

use std::sync::atomic::{AtomicU64, Ordering};

/// Plannings in a row that decided the default plan with nothing to run before a statement is
/// planned without a copy of its Query.
pub(crate) const STREAK: u64 = 2;
/// Statements remembered, for all databases.
pub(crate) const SLOTS: usize = 4096;
/// The low bits of a slot's word: the streak (the rest is the statement's tag).
const STREAK_BITS: u64 = 0xFF;

const NAME: &std::ffi::CStr = c"ruvector_dag plain statements";

#[repr(C)]
struct Memo {
    /// Plannings made without the copy, and those of them whose decision wanted more.
    uncopied: AtomicU64,
    missed: AtomicU64,
    slots: [AtomicU64; SLOTS],
}

static mut MEMO: *mut Memo = std::ptr::null_mut();

/// Ask for the shared memory (from the shmem request hook).
///
/// # Safety
/// Called from the postmaster's shmem request hook.
pub(crate) unsafe fn on_request() {
    pgrx::pg_sys::RequestAddinShmemSpace(std::mem::size_of::<Memo>());
}

/// Set the memory up, nothing remembered (from the shmem startup hook, holding
/// AddinShmemInitLock).
///
/// # Safety
/// Called from the shmem startup hook, with AddinShmemInitLock held.
pub(crate) unsafe fn on_startup() {
    let mut found = false;
    let p = pgrx::pg_sys::ShmemInitStruct(NAME.as_ptr(), std::mem::size_of::<Memo>(), &mut found)
        .cast::<Memo>();
    if !found {
        // All zero is nothing remembered.
        std::ptr::write_bytes(p.cast::<u8>(), 0, std::mem::size_of::<Memo>());
    }
    MEMO = p;
}

fn memo() -> Option<&'static Memo> {
    // SAFETY: set once at shared memory startup (inherited by every backend), never freed.
    unsafe { MEMO.as_ref() }
}

/// The tag of `key`'s statement in this database (never 0: 0 is a free slot) and its slot.
fn tag(key: u64) -> (u64, usize) {
    // SAFETY: a backend's database, set before any statement is planned.
    let db = unsafe { pgrx::pg_sys::MyDatabaseId.to_u32() };
    let mixed = (key ^ u64::from(db).wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_mul(0xFF51_AFD7_ED55_8CCD);
    let tag = (mixed & !STREAK_BITS).max(STREAK_BITS + 1);
    (tag, ((mixed >> 40) as usize) % SLOTS)
}

/// Whether `key`'s statement settled on the default plan: plan it without a copy.
pub(super) fn settled(key: u64) -> bool {
    let Some(m) = memo() else { return false };
    let (tag, i) = tag(key);
    let v = m.slots[i].load(Ordering::Acquire);
    v & !STREAK_BITS == tag && v & STREAK_BITS >= STREAK
}

/// A planning of `key`'s statement decided the default plan with nothing to run (`plain`), or
/// not (then it is forgotten).
pub(super) fn saw(key: u64, plain: bool) {
    let Some(m) = memo() else { return };
    let (tag, i) = tag(key);
    let slot = &m.slots[i];
    let mut v = slot.load(Ordering::Acquire);
    loop {
        let next = match (plain, v & !STREAK_BITS == tag) {
            (true, true) => tag | ((v & STREAK_BITS) + 1).min(STREAK_BITS),
            (true, false) => tag | 1,
            // Another statement's slot: left as it is.
            (false, false) => return,
            (false, true) => 0,
        };
        if next == v {
            return;
        }
        match slot.compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(now) => v = now,
        }
    }
}

/// A statement was planned without the copy.
pub(super) fn uncopied() {
    if let Some(m) = memo() {
        m.uncopied.fetch_add(1, Ordering::Relaxed);
    }
}

/// A statement planned without the copy was decided to want more than the default plan.
pub(super) fn missed() {
    if let Some(m) = memo() {
        m.missed.fetch_add(1, Ordering::Relaxed);
    }
}

/// For `ruvector_dag_status()`: statements settled on the default plan now (all databases),
/// plannings made without the copy, and those of them that wanted more (over the server's
/// life).
pub(crate) fn stats() -> Option<[u64; 3]> {
    let m = memo()?;
    let held = m
        .slots
        .iter()
        .filter(|s| s.load(Ordering::Relaxed) & STREAK_BITS >= STREAK)
        .count() as u64;
    Some([
        held,
        m.uncopied.load(Ordering::Relaxed),
        m.missed.load(Ordering::Relaxed),
    ])
}
