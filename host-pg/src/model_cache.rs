//! The learned model's snapshot in shared memory (`ruvector.dag_model_cache`): the transaction
//! that writes a version of `ruvector_dag.learned_state` copies the model's bytes here when it
//! commits, and a backend that had to read the table (after a restart, or when a slot was found
//! stale, nothing written since: a frozen server writes nothing) copies what it read, from a
//! transaction that has written nothing. So a backend loading the state (a session's first
//! in-scope statement, a reload after training) decodes it in place ([`read`]) instead of
//! reading the table: no query, no cold catalog caches for the table, its index and TOAST (on TPC-H plans
//! about 0.6 ms of a new session's first statement).
//!
//! [`SLOTS`] databases at once, each with a slot of a fixed share of the setting; a model
//! larger than its slot, a database without a slot, a standby (whose table changes by WAL
//! replay) or a slot the learner found stale all read the table, as without the cache. A slot
//! holds the newest version written for its table: an older writer that commits late does not
//! overwrite it, and the learner, which reads the table's version every cycle, empties a slot
//! that does not hold it (a version written around the extension's functions).

use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use pgrx::pg_sys;

const NAME: &std::ffi::CStr = c"ruvector_dag model cache";

/// Databases whose model is cached at once.
pub const SLOTS: usize = 2;

#[repr(C)]
struct Slot {
    /// Database OID (0: free).
    db: AtomicU32,
    /// OID of the `ruvector_dag.learned_state` the bytes were written to.
    table: AtomicU32,
    /// Its version (0: nothing usable: never written, too large, or found stale).
    version: AtomicI64,
    /// The newest version of that table a writer committed (cached or not).
    newest: AtomicI64,
    len: AtomicU64,
    /// Copies made from it (status).
    hits: AtomicU64,
}

#[repr(C)]
struct Cache {
    locks: *mut pg_sys::LWLockPadded,
    /// Bytes of each slot's data area.
    capacity: usize,
    slots: [Slot; SLOTS],
    /// Models not cached because they were larger than a slot.
    too_large: AtomicU64,
}

static mut CACHE: *mut Cache = std::ptr::null_mut();

fn capacity() -> usize {
    let mb = crate::guc::MODEL_CACHE_MB.get().clamp(0, 1024) as usize;
    (mb << 20) / SLOTS
}

fn size() -> usize {
    std::mem::size_of::<Cache>().next_multiple_of(64) + capacity() * SLOTS
}

/// Ask for the cache's shared memory and locks (from the shmem request hook).
///
/// # Safety
/// Called from the postmaster's shmem request hook.
pub(crate) unsafe fn on_request() {
    pg_sys::RequestAddinShmemSpace(size());
    pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), SLOTS as i32);
}

/// Set the cache up (from the shmem startup hook, holding AddinShmemInitLock).
///
/// # Safety
/// Called from the shmem startup hook, with AddinShmemInitLock held.
pub(crate) unsafe fn on_startup() {
    let mut found = false;
    let p = pg_sys::ShmemInitStruct(NAME.as_ptr(), size(), &mut found).cast::<Cache>();
    if !found {
        p.write(Cache {
            locks: pg_sys::GetNamedLWLockTranche(NAME.as_ptr()),
            capacity: capacity(),
            slots: std::array::from_fn(|_| Slot {
                db: AtomicU32::new(0),
                table: AtomicU32::new(0),
                version: AtomicI64::new(0),
                newest: AtomicI64::new(0),
                len: AtomicU64::new(0),
                hits: AtomicU64::new(0),
            }),
            too_large: AtomicU64::new(0),
        });
    }
    CACHE = p;
}

fn cache() -> Option<&'static Cache> {
    // SAFETY: set once at shared memory startup (inherited by every backend), never freed.
    unsafe { CACHE.as_ref() }.filter(|c| c.capacity > 0)
}

/// Slot `i`'s lock, held while the result lives.
fn lock_slot(c: &Cache, i: usize, mode: pg_sys::LWLockMode::Type) -> crate::shared::LockHeld {
    // SAFETY: the tranche has SLOTS locks, in shared memory for the server's life.
    unsafe { crate::shared::LockHeld::acquire(&raw mut (*c.locks.add(i)).lock, mode) }
}

fn data(c: &Cache, i: usize) -> *mut u8 {
    let base = c as *const Cache as *mut u8;
    // SAFETY: the data areas follow the header in the same allocation.
    unsafe { base.add(std::mem::size_of::<Cache>().next_multiple_of(64) + i * c.capacity) }
}

/// Copy `bytes`, version `version` of database `db`'s model written to its learned-state table
/// of OID `table`, into its slot (claimed on first use), unless the slot holds a newer version
/// of that table. Called when the writing transaction commits.
pub fn publish(db: u32, table: u32, version: i64, bytes: &[u8]) {
    let Some(c) = cache() else { return };
    let Some((i, slot)) = c
        .slots
        .iter()
        .enumerate()
        .find(|(_, s)| s.db.load(Ordering::Acquire) == db)
        .or_else(|| {
            c.slots.iter().enumerate().find(|(_, s)| {
                s.db.compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
        })
    else {
        return;
    };
    let _held = lock_slot(c, i, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let same_table = slot.table.load(Ordering::Acquire) == table;
    if same_table && slot.newest.load(Ordering::Acquire) >= version {
        return;
    }
    slot.table.store(table, Ordering::Release);
    slot.newest.store(version, Ordering::Release);
    if bytes.len() > c.capacity {
        // Too large: readers go to the table (and an older version is not left here).
        slot.version.store(0, Ordering::Release);
        slot.len.store(0, Ordering::Release);
        c.too_large.fetch_add(1, Ordering::AcqRel);
        return;
    }
    // SAFETY: the slot's data area has `capacity` bytes; the exclusive lock is held.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), data(c, i), bytes.len()) };
    slot.len.store(bytes.len() as u64, Ordering::Release);
    slot.version.store(version, Ordering::Release);
}

/// What the cache holds of database `db`'s model in its learned-state table of OID `table`:
/// `(version, f(bytes))`, `f` called (on the bytes in shared memory, under the slot's shared
/// lock: no copy) only when the caller does not hold that version (`held`). None: not cached
/// (read the table).
///
/// A new session's first statement loads the model from here: decoding it where it lies
/// instead of copying it first saves that session the copy and the page faults of a fresh
/// buffer as large as the model. `f` must not raise a PostgreSQL error (the decoder is pure
/// Rust); a writer waits for it.
pub fn read<R>(
    db: u32,
    table: u32,
    held: Option<i64>,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<(i64, Option<R>)> {
    read_if(db, table, |v| held != Some(v), f)
}

/// `f` on the bytes of exactly version `version` of `table` in database `db`'s slot, read where
/// they lie under the slot's shared lock ([`read`]); None when the slot holds another version,
/// nothing usable, or there is no slot for the database.
pub fn read_exact<R>(db: u32, table: u32, version: i64, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    read_if(db, table, |v| v == version, f).and_then(|(_, out)| out)
}

/// The version database `db`'s slot holds of `table` (None: no slot, nothing usable), and `f`
/// on its bytes when `wanted` says so of that version.
fn read_if<R>(
    db: u32,
    table: u32,
    wanted: impl FnOnce(i64) -> bool,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<(i64, Option<R>)> {
    let c = cache()?;
    let i = c
        .slots
        .iter()
        .position(|s| s.db.load(Ordering::Acquire) == db)?;
    let slot = &c.slots[i];
    let _held = lock_slot(c, i, pg_sys::LWLockMode::LW_SHARED);
    let version = slot.version.load(Ordering::Acquire);
    if version == 0 || slot.table.load(Ordering::Acquire) != table {
        return None;
    }
    if !wanted(version) {
        return Some((version, None));
    }
    let len = (slot.len.load(Ordering::Acquire) as usize).min(c.capacity);
    // SAFETY: `len` bytes were written under the exclusive lock; the shared lock is held
    // while `f` reads them.
    let bytes = unsafe { std::slice::from_raw_parts(data(c, i), len) };
    let out = f(bytes);
    slot.hits.fetch_add(1, Ordering::AcqRel);
    Some((version, Some(out)))
}

/// The learner read version `version` from database `db`'s learned-state table of OID `table`,
/// holding the learning lock (every writer takes it, and publishes before it lets go): a slot
/// holding anything else (a version written around the extension's functions) is emptied.
pub fn check(db: u32, table: u32, version: i64) {
    let Some(c) = cache() else { return };
    let Some(i) = c
        .slots
        .iter()
        .position(|s| s.db.load(Ordering::Acquire) == db)
    else {
        return;
    };
    let slot = &c.slots[i];
    let cached = slot.version.load(Ordering::Acquire);
    if cached == 0 || cached == version && slot.table.load(Ordering::Acquire) == table {
        return;
    }
    let _held = lock_slot(c, i, pg_sys::LWLockMode::LW_EXCLUSIVE);
    slot.table.store(table, Ordering::Release);
    slot.newest.store(version, Ordering::Release);
    slot.version.store(0, Ordering::Release);
    slot.len.store(0, Ordering::Release);
}

/// Status: for database `db`, `(cached version, bytes, copies made)`, and the models not
/// cached for being larger than a slot (all databases); None without the cache.
pub fn stats(db: u32) -> Option<(Option<(i64, u64, u64)>, u64, usize)> {
    let c = cache()?;
    let mine = c
        .slots
        .iter()
        .find(|s| s.db.load(Ordering::Acquire) == db)
        .map(|s| {
            (
                s.version.load(Ordering::Acquire),
                s.len.load(Ordering::Acquire),
                s.hits.load(Ordering::Acquire),
            )
        });
    Some((mine, c.too_large.load(Ordering::Acquire), c.capacity))
}
