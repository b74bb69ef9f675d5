//! One evidence book per database in shared memory: what every query shape's runs measured
//! (its default plan, each candidate plan, the verdicts) and the exploration budget, read and
//! written in place by every backend, the background explorer and the learner.
//!
//! Before it decides, a backend brings the statement's shape in ([`bring_in`]: a shared lock
//! on one partition and a few hundred bytes decoded, no table read); at ExecutorEnd it
//! records the run under that partition's exclusive lock ([`update`]). So a run measured in
//! one session counts in every other at once, the budget is one budget whatever the number of
//! backends, and nothing waits for the learner's next cycle or a reload of the learned state.
//! The model (cost model, patterns, selector, BTSP memory) stays in the snapshot and is
//! reloaded only when the learner trained it.
//!
//! The book is filled ("seeded") from the learned state by the first process that loads it
//! after the server starts, after `ruvector_dag_reset()`, `ruvector_dag_import()` or a
//! `ruvector_dag_reset(table)` (which [`clear`] it at commit), or after the extension was
//! dropped and created again (the learned-state table is another one: its OID is part of the
//! book's identity). The learner writes the book back into the learned state with every cycle,
//! so a restart loses at most the last second. On a standby the book is not used (the
//! primary's learned state arrives by replication).
//!
//! Shape slots of [`SLOT_BYTES`] (`ruvector.dag_shared_shapes` of them, for all databases),
//! in [`PARTITIONS`] partitions by fingerprint, each with its own LWLock. At capacity the least
//! recently used slot of the partition is taken over (counted: `shared_book_evicted`). A
//! shape whose evidence does not fit a slot is not shared (counted: `shared_book_too_large`).

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};

use pgrx::pg_sys;
use ruvector_dag_core::learning::{Budget, EvidenceBook, Optimizer, ShapeEvidence};

use crate::shared::MAX_LEARNERS;

const NAME: &std::ffi::CStr = c"ruvector_dag book";
/// Partitions of the book (one LWLock each).
pub const PARTITIONS: usize = 64;
/// Bytes of one shape's encoded evidence at most.
pub const SLOT_BYTES: usize = 1008;

const UNSEEDED: u32 = 0;
const SEEDING: u32 = 1;
const SEEDED: u32 = 2;

/// Whose a slot is: kept apart from the slots, side by side, so that finding a shape reads a
/// few contiguous cache lines instead of one line (and page) per slot of its partition.
#[repr(C)]
struct Key {
    /// Database OID; 0 marks a free slot. Guarded by the partition's lock.
    db: UnsafeCell<u32>,
    fingerprint: UnsafeCell<u64>,
}

#[repr(C)]
struct Slot {
    len: UnsafeCell<u32>,
    /// Logical time of the last use (read under a shared lock, hence atomic).
    used: AtomicU64,
    bytes: UnsafeCell<[u8; SLOT_BYTES]>,
}

/// One database's book: its identity and the budget.
#[repr(C)]
struct Header {
    db: AtomicU32,
    state: AtomicU32,
    /// OID of the `ruvector_dag.learned_state` it was seeded from.
    table: AtomicU32,
    /// A copy loaded from an older version may not seed it (set by [`clear`]).
    min_version: AtomicI64,
    /// Times it was seeded (a copy loaded before the last seeding may not seed it again).
    seeds: AtomicU64,
    /// The learned-state version it was last seeded from.
    seeded_from: AtomicI64,
    /// [`Budget::fields`]: f64 bits, then counts.
    ms: [AtomicU64; 4],
    counts: [AtomicU64; 4],
    evicted: AtomicU64,
    too_large: AtomicU64,
    unreadable: AtomicU64,
}

#[repr(C)]
struct Book {
    locks: *mut pg_sys::LWLockPadded,
    per_partition: usize,
    tick: AtomicU64,
    headers: [Header; MAX_LEARNERS],
}

static mut BOOK: *mut Book = std::ptr::null_mut();

/// Shape slots asked for at server start (`ruvector.dag_shared_shapes`), per partition.
fn per_partition() -> usize {
    (crate::guc::SHARED_SHAPES.get().max(PARTITIONS as i32) as usize).div_ceil(PARTITIONS)
}

fn size() -> usize {
    slots_offset()
        + per_partition() * PARTITIONS * std::mem::size_of::<Slot>()
        + per_partition() * PARTITIONS * std::mem::size_of::<Key>()
}

fn slots_offset() -> usize {
    std::mem::size_of::<Book>().next_multiple_of(64)
}

/// Ask for the book's shared memory and locks (from the shmem request hook).
///
/// # Safety
/// Called from the postmaster's shmem request hook.
pub(crate) unsafe fn on_request() {
    pg_sys::RequestAddinShmemSpace(size());
    pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), PARTITIONS as i32);
}

/// Set the book up (from the shmem startup hook, holding AddinShmemInitLock).
///
/// # Safety
/// Called from the shmem startup hook, with AddinShmemInitLock held.
pub(crate) unsafe fn on_startup() {
    let mut found = false;
    let p = pg_sys::ShmemInitStruct(NAME.as_ptr(), size(), &mut found).cast::<Book>();
    if !found {
        let n = per_partition();
        p.write(Book {
            locks: pg_sys::GetNamedLWLockTranche(NAME.as_ptr()),
            per_partition: n,
            tick: AtomicU64::new(1),
            headers: std::array::from_fn(|_| Header {
                db: AtomicU32::new(0),
                state: AtomicU32::new(UNSEEDED),
                table: AtomicU32::new(0),
                min_version: AtomicI64::new(0),
                seeds: AtomicU64::new(0),
                seeded_from: AtomicI64::new(0),
                ms: std::array::from_fn(|_| AtomicU64::new(0f64.to_bits())),
                counts: std::array::from_fn(|_| AtomicU64::new(0)),
                evicted: AtomicU64::new(0),
                too_large: AtomicU64::new(0),
                unreadable: AtomicU64::new(0),
            }),
        });
        let slots = slots_ptr(p);
        let keys = keys_ptr(p, n);
        for i in 0..n * PARTITIONS {
            slots.add(i).write(Slot {
                len: UnsafeCell::new(0),
                used: AtomicU64::new(0),
                bytes: UnsafeCell::new([0; SLOT_BYTES]),
            });
            keys.add(i).write(Key {
                db: UnsafeCell::new(0),
                fingerprint: UnsafeCell::new(0),
            });
        }
    }
    BOOK = p;
}

unsafe fn slots_ptr(p: *mut Book) -> *mut Slot {
    p.cast::<u8>().add(slots_offset()).cast::<Slot>()
}

/// The keys follow the slots (`per_partition` of each for every partition).
unsafe fn keys_ptr(p: *mut Book, per_partition: usize) -> *mut Key {
    slots_ptr(p).add(per_partition * PARTITIONS).cast::<Key>()
}

fn book() -> Option<&'static Book> {
    // SAFETY: set once at shared memory startup (inherited by every backend), never freed.
    unsafe { BOOK.as_ref() }
}

impl Book {
    fn partition(&self, fingerprint: u64) -> usize {
        // The fingerprint is a hash already; its high bits pick the partition.
        (fingerprint >> 58) as usize % PARTITIONS
    }

    fn slots(&self, partition: usize) -> &[Slot] {
        // SAFETY: the slots follow the book, `per_partition` of them for each partition.
        unsafe {
            let base = slots_ptr(self as *const Book as *mut Book);
            std::slice::from_raw_parts(base.add(partition * self.per_partition), self.per_partition)
        }
    }

    /// The keys of partition `partition`'s slots, in slot order.
    fn keys(&self, partition: usize) -> &[Key] {
        // SAFETY: the keys follow the slots, `per_partition` of them for each partition.
        unsafe {
            let base = keys_ptr(self as *const Book as *mut Book, self.per_partition);
            std::slice::from_raw_parts(base.add(partition * self.per_partition), self.per_partition)
        }
    }

    fn lock(&self, partition: usize, exclusive: bool) -> Locked {
        // SAFETY: the tranche has PARTITIONS locks.
        let lock = unsafe { &raw mut (*self.locks.add(partition)).lock };
        let mode = if exclusive {
            pg_sys::LWLockMode::LW_EXCLUSIVE
        } else {
            pg_sys::LWLockMode::LW_SHARED
        };
        // SAFETY: a lock of ours; released by Locked's drop (also when a panic unwinds; an
        // ERROR releases every LWLock at abort).
        unsafe { pg_sys::LWLockAcquire(lock, mode) };
        Locked(lock)
    }

    fn header(&self, db: u32) -> Option<&Header> {
        crate::shared::find_or_claim(&self.headers, db, |h| &h.db)
    }

    fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }
}

struct Locked(*mut pg_sys::LWLock);
impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: acquired in Book::lock. LWLockRelease does not raise an ERROR for a held lock.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// What a process's copy of the learned state is, for the book: where it was loaded from, and
/// whether it is still whole (it may then seed the book).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// OID of the learned-state table it was loaded from (0: none; never uses the book).
    pub table: u32,
    pub version: i64,
    /// The book's seed count when it was loaded.
    seeds: u64,
    /// Loaded and not yet used with the book: its evidence is the learned state's, whole.
    whole: bool,
}

impl Holding {
    /// A copy just loaded from `table` at `version` for database `db`.
    pub fn loaded(db: u32, table: u32, version: i64) -> Holding {
        let seeds = book()
            .and_then(|b| b.header(db))
            .map_or(0, |h| h.seeds.load(Ordering::Acquire));
        Holding {
            table,
            version,
            seeds,
            whole: true,
        }
    }

    /// A copy that holds nothing of the learned state's evidence (an optimizer that holds the
    /// rules alone): it uses the book of `table` (at `version`) once seeded, and never seeds
    /// it.
    pub fn borrowed(db: u32, table: u32, version: i64) -> Holding {
        Holding {
            whole: false,
            ..Holding::loaded(db, table, version)
        }
    }

    /// A copy that must not use the book until it is loaded again (an import or a reset
    /// adopted before it commits).
    pub fn detached() -> Holding {
        Holding {
            table: 0,
            version: 0,
            seeds: 0,
            whole: false,
        }
    }
}

fn add_f64(a: &AtomicU64, delta: f64) {
    if delta == 0.0 || !delta.is_finite() {
        return;
    }
    let _ = a.fetch_update(Ordering::AcqRel, Ordering::Acquire, |bits| {
        Some((f64::from_bits(bits) + delta).to_bits())
    });
}

impl Header {
    fn budget(&self) -> Budget {
        Budget::from_fields(
            std::array::from_fn(|i| f64::from_bits(self.ms[i].load(Ordering::Acquire))),
            std::array::from_fn(|i| self.counts[i].load(Ordering::Acquire)),
        )
    }

    fn set_budget(&self, b: &Budget) {
        let (ms, counts) = b.fields();
        for i in 0..4 {
            self.ms[i].store(ms[i].to_bits(), Ordering::Release);
            self.counts[i].store(counts[i], Ordering::Release);
        }
    }
}

/// The book of database `db` if the copy `h` may use it (seeding it from `evidence` first when
/// the copy is the one to).
fn usable<'a>(db: u32, h: &mut Holding, evidence: &EvidenceBook) -> Option<(&'a Book, &'a Header)> {
    if h.table == 0 || crate::guc::standby() {
        return None;
    }
    let b = book()?;
    let hd = b.header(db)?;
    let state = hd.state.load(Ordering::Acquire);
    if state == SEEDED && hd.table.load(Ordering::Acquire) == h.table {
        h.whole = false;
        return Some((b, hd));
    }
    // Only a whole copy loaded since the last seeding, of a version the book may start from.
    let may_seed = h.whole
        && h.seeds == hd.seeds.load(Ordering::Acquire)
        && match state {
            UNSEEDED => h.version >= hd.min_version.load(Ordering::Acquire),
            // The extension was created again: another learned-state table.
            SEEDED => hd.table.load(Ordering::Acquire) != h.table,
            _ => false,
        };
    if !may_seed
        || hd
            .state
            .compare_exchange(state, SEEDING, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
    {
        return None;
    }
    remove_all(b, db);
    let mut shapes: Vec<(&u64, &ShapeEvidence)> = evidence.iter().collect();
    shapes.sort_by_key(|(_, e)| e.seen);
    for (fp, e) in shapes {
        let p = b.partition(*fp);
        let _l = b.lock(p, true);
        write(b, hd, db, p, *fp, Some(e));
    }
    hd.set_budget(&evidence.budget());
    hd.table.store(h.table, Ordering::Release);
    hd.seeded_from.store(h.version, Ordering::Release);
    h.seeds = hd.seeds.fetch_add(1, Ordering::AcqRel) + 1;
    h.whole = false;
    hd.state.store(SEEDED, Ordering::Release);
    Some((b, hd))
}

/// Free every slot of database `db`.
fn remove_all(b: &Book, db: u32) {
    for p in 0..PARTITIONS {
        let _l = b.lock(p, true);
        for k in b.keys(p) {
            // SAFETY: guarded by the partition's exclusive lock.
            unsafe {
                if *k.db.get() == db {
                    *k.db.get() = 0;
                }
            }
        }
    }
}

/// The slot of `fingerprint` in partition `p` (the caller holds its lock).
fn find(b: &Book, db: u32, p: usize, fingerprint: u64) -> Option<usize> {
    // SAFETY: the caller holds the partition's lock (shared or exclusive).
    b.keys(p)
        .iter()
        .position(|k| unsafe { *k.fingerprint.get() == fingerprint && *k.db.get() == db })
}

/// Write (Some) or remove (None) the evidence of `fingerprint` (the caller holds partition
/// `p`'s exclusive lock).
fn write(b: &Book, hd: &Header, db: u32, p: usize, fingerprint: u64, e: Option<&ShapeEvidence>) {
    let (keys, slots) = (b.keys(p), b.slots(p));
    let found = find(b, db, p, fingerprint);
    let Some(e) = e else {
        if let Some(i) = found {
            // SAFETY: exclusive lock held.
            unsafe { *keys[i].db.get() = 0 };
        }
        return;
    };
    let mut buf = [0u8; SLOT_BYTES];
    let len = match postcard::to_slice(e, &mut buf) {
        Ok(used) => used.len(),
        Err(_) => {
            hd.too_large.fetch_add(1, Ordering::Relaxed);
            if let Some(i) = found {
                // SAFETY: exclusive lock held.
                unsafe { *keys[i].db.get() = 0 };
            }
            return;
        }
    };
    let i = found.unwrap_or_else(|| {
        // SAFETY: exclusive lock held.
        let free = keys.iter().position(|k| unsafe { *k.db.get() == 0 });
        free.unwrap_or_else(|| {
            hd.evicted.fetch_add(1, Ordering::Relaxed);
            (0..slots.len())
                .min_by_key(|&i| slots[i].used.load(Ordering::Relaxed))
                .expect("a partition has slots")
        })
    });
    let slot = &slots[i];
    // SAFETY: exclusive lock held.
    unsafe {
        *keys[i].db.get() = db;
        *keys[i].fingerprint.get() = fingerprint;
        *slot.len.get() = len as u32;
        (&mut *slot.bytes.get())[..len].copy_from_slice(&buf[..len]);
    }
    slot.used.store(b.tick(), Ordering::Relaxed);
}

/// The evidence in a slot (the caller holds its partition's lock), a use of it when `touch`
/// (least recently used slots are taken over first); None when it cannot be read (counted; it
/// is then treated as absent).
fn read(b: &Book, hd: &Header, s: &Slot, touch: bool) -> Option<ShapeEvidence> {
    // SAFETY: the caller holds the partition's lock.
    let bytes = unsafe { &(&*s.bytes.get())[..(*s.len.get() as usize).min(SLOT_BYTES)] };
    if touch {
        s.used.store(b.tick(), Ordering::Relaxed);
    }
    match postcard::from_bytes(bytes) {
        Ok(e) => Some(e),
        Err(_) => {
            hd.unreadable.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn bring_in_locked(b: &Book, hd: &Header, db: u32, p: usize, fp: u64, opt: &mut Optimizer) {
    let e = find(b, db, p, fp).and_then(|i| read(b, hd, &b.slots(p)[i], true));
    let ev = opt.evidence_mut();
    ev.put(fp, e);
    ev.set_budget(&hd.budget());
}

/// Bring the book's evidence of shape `fingerprint` and its budget into `opt` (before a
/// decision). False when the copy `h` does not use the book (then `opt` decides on its own
/// evidence).
pub fn bring_in(db: u32, h: &mut Holding, opt: &mut Optimizer, fingerprint: u64) -> bool {
    let Some((b, hd)) = usable(db, h, opt.evidence()) else {
        return false;
    };
    let p = b.partition(fingerprint);
    let _l = b.lock(p, false);
    bring_in_locked(b, hd, db, p, fingerprint, opt);
    true
}

/// Run `f` (an observation, the candidates planned) on `opt` with shape `fingerprint`'s
/// evidence brought in, under its partition's exclusive lock, and write back what `f` changed
/// (the shape, and the budget by difference). The bool: whether the book was used.
pub fn update<R>(
    db: u32,
    h: &mut Holding,
    opt: &mut Optimizer,
    fingerprint: u64,
    f: impl FnOnce(&mut Optimizer) -> R,
) -> (R, bool) {
    let Some((b, hd)) = usable(db, h, opt.evidence()) else {
        return (f(opt), false);
    };
    let p = b.partition(fingerprint);
    let _l = b.lock(p, true);
    bring_in_locked(b, hd, db, p, fingerprint, opt);
    let before = opt.evidence().budget();
    let r = f(opt);
    let delta = opt.evidence().budget().since(&before);
    for i in 0..4 {
        add_f64(&hd.ms[i], delta.ms[i]);
        hd.counts[i].fetch_add(delta.counts[i], Ordering::AcqRel);
    }
    write(b, hd, db, p, fingerprint, opt.evidence().get(fingerprint));
    (r, true)
}

/// Every shape of the book of database `db` (least recently used first) and its budget, for
/// the copy `h`; None when it does not use the book.
pub fn shapes(
    db: u32,
    h: &mut Holding,
    evidence: &EvidenceBook,
) -> Option<(Vec<(u64, ShapeEvidence)>, Budget)> {
    let (b, hd) = usable(db, h, evidence)?;
    let mut all: Vec<(u64, u64, ShapeEvidence)> = Vec::new();
    for p in 0..PARTITIONS {
        let _l = b.lock(p, false);
        for (k, s) in b.keys(p).iter().zip(b.slots(p)) {
            // SAFETY: shared lock held.
            let (sdb, fp) = unsafe { (*k.db.get(), *k.fingerprint.get()) };
            if sdb != db {
                continue;
            }
            if let Some(e) = read(b, hd, s, false) {
                all.push((s.used.load(Ordering::Relaxed), fp, e));
            }
        }
    }
    all.sort_by_key(|(used, _, _)| *used);
    Some((
        all.into_iter().map(|(_, fp, e)| (fp, e)).collect(),
        hd.budget(),
    ))
}

/// Empty database `db`'s book: it is seeded again by the first copy loaded from a version of
/// at least `min_version` (after a reset or an import commits).
pub fn clear(db: u32, min_version: i64) {
    let Some(b) = book() else { return };
    let Some(hd) = b.header(db) else { return };
    hd.min_version.store(min_version, Ordering::Release);
    hd.state.store(UNSEEDED, Ordering::Release);
    remove_all(b, db);
    hd.set_budget(&Budget::default());
}

/// Whether database `db`'s book is seeded (backends then decide on it, not on their copies'
/// evidence); false on a standby and without shared memory.
pub fn in_use(db: u32) -> bool {
    !crate::guc::standby()
        && book()
            .and_then(|b| b.header(db))
            .is_some_and(|h| h.state.load(Ordering::Acquire) == SEEDED)
}

/// What `ruvector_dag_status()` shows of database `db`'s book.
#[derive(Debug, Clone, Default)]
pub struct BookStats {
    /// Shape slots of the server (all databases).
    pub capacity: usize,
    /// Shapes this database holds.
    pub shapes: usize,
    pub seeded: bool,
    pub seeded_from: i64,
    pub evicted: u64,
    pub too_large: u64,
    pub unreadable: u64,
}

/// None without shared memory.
pub fn stats(db: u32) -> Option<BookStats> {
    let b = book()?;
    let hd = b.header(db)?;
    let mut shapes = 0;
    for p in 0..PARTITIONS {
        let _l = b.lock(p, false);
        // SAFETY: shared lock held.
        shapes += b
            .keys(p)
            .iter()
            .filter(|k| unsafe { *k.db.get() == db })
            .count();
    }
    Some(BookStats {
        capacity: b.per_partition * PARTITIONS,
        shapes,
        seeded: hd.state.load(Ordering::Acquire) == SEEDED,
        seeded_from: hd.seeded_from.load(Ordering::Acquire),
        evicted: hd.evicted.load(Ordering::Relaxed),
        too_large: hd.too_large.load(Ordering::Relaxed),
        unreadable: hd.unreadable.load(Ordering::Relaxed),
    })
}
