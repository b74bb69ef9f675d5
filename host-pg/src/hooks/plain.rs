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
//! A plan verified faster for any shape (in a session or by the background explorer) is what
//! most often makes a settled statement want more: it moves the verdict epoch
//! ([`verdict_changed`]), and a streak counted in an earlier epoch settles nothing, so every
//! statement is planned with its copy again once (and applies a new verified plan at once)
//! before it settles again. (A missed planning is left for what the epoch does not follow:
//! verdicts of 256 epochs ago, a reset or an import.)
//!
//! [`SLOTS`] statements for all databases, direct-mapped, one atomic word each (the
//! statement's tag, the epoch of its streak and the streak): no lock; two backends racing lose
//! a count at worst, which costs a copy or delays one. Nothing of it outlives the server.

use std::sync::atomic::{AtomicU64, Ordering};

/// Plannings in a row that decided the default plan with nothing to run before a statement is
/// planned without a copy of its Query.
pub(crate) const STREAK: u64 = 2;
/// Statements remembered, for all databases.
pub(crate) const SLOTS: usize = 4096;
/// The low bits of a slot's word: the streak; above them, the low bits of the verdict epoch it
/// was counted in; the rest is the statement's tag.
const STREAK_BITS: u64 = 0xFF;
const EPOCH_SHIFT: u32 = 8;
const EPOCH_BITS: u64 = 0xFF << EPOCH_SHIFT;
const TAG_BITS: u64 = !(STREAK_BITS | EPOCH_BITS);

const NAME: &std::ffi::CStr = c"ruvector_dag plain statements";

#[repr(C)]
struct Memo {
    /// Plannings made without the copy, and those of them whose decision wanted more.
    uncopied: AtomicU64,
    missed: AtomicU64,
    /// Plans verified faster so far (any shape, any database).
    epoch: AtomicU64,
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
    let tag = (mixed & TAG_BITS).max(TAG_BITS & TAG_BITS.wrapping_neg());
    (tag, ((mixed >> 40) as usize) % SLOTS)
}

/// The current verdict epoch's bits in a slot's word.
fn epoch(m: &Memo) -> u64 {
    (m.epoch.load(Ordering::Acquire) << EPOCH_SHIFT) & EPOCH_BITS
}

/// Whether the word `v` of a slot counts a streak that settles its statement now.
fn settles(m: &Memo, v: u64) -> bool {
    v & EPOCH_BITS == epoch(m) && v & STREAK_BITS >= STREAK
}

/// Whether `key`'s statement settled on the default plan: plan it without a copy.
pub(super) fn settled(key: u64) -> bool {
    let Some(m) = memo() else { return false };
    let (tag, i) = tag(key);
    let v = m.slots[i].load(Ordering::Acquire);
    v & TAG_BITS == tag && settles(m, v)
}

/// A plan was verified faster for a shape: every statement settled on the default plan is
/// planned with its copy again (it may now apply that plan), until it settles again.
pub(crate) fn verdict_changed() {
    if let Some(m) = memo() {
        m.epoch.fetch_add(1, Ordering::AcqRel);
    }
}

/// A planning of `key`'s statement decided the default plan with nothing to run (`plain`), or
/// not (then it is forgotten).
pub(super) fn saw(key: u64, plain: bool) {
    let Some(m) = memo() else { return };
    let (tag, i) = tag(key);
    let slot = &m.slots[i];
    let now = tag | epoch(m);
    let mut v = slot.load(Ordering::Acquire);
    loop {
        let next = match (plain, v & TAG_BITS == tag) {
            // A streak of this epoch goes on; one of an earlier epoch starts over.
            (true, true) if v & EPOCH_BITS == now & EPOCH_BITS => {
                now | ((v & STREAK_BITS) + 1).min(STREAK_BITS)
            }
            (true, _) => now | 1,
            // Another statement's slot: left as it is.
            (false, false) => return,
            (false, true) => 0,
        };
        if next == v {
            return;
        }
        match slot.compare_exchange_weak(v, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return,
            Err(seen) => v = seen,
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
        .filter(|s| settles(m, s.load(Ordering::Relaxed)))
        .count() as u64;
    Some([
        held,
        m.uncopied.load(Ordering::Relaxed),
        m.missed.load(Ordering::Relaxed),
    ])
}
