//! Shared memory (needs `shared_preload_libraries = 'ruvector_dag'`): the trajectory ring that
//! backends write and the learner drains, and the version counters backends poll.
//!
//! The ring is a byte buffer of `ruvector.dag_ring_size` MiB holding variable-length records
//! `[len u32][database oid u32][taken u32][reserved u32][payload]`, each 16-byte aligned.
//! Offsets grow without bound (`head`, `tail`); a record never wraps (a padding record fills the
//! end instead). When a new record does not fit, the oldest ones are dropped and counted. The
//! learner of a database takes only that database's records; a record another database left
//! behind is dropped when its space is needed. One LWLock guards the ring; the versions are
//! atomics read without it.

use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use pgrx::pg_sys;

const HEADER: usize = 16;
const PADDING_DB: u32 = u32::MAX;
const NAME: &std::ffi::CStr = c"ruvector_dag";

/// Most databases that learn in the background at once.
pub const MAX_LEARNERS: usize = 16;

#[repr(C)]
struct LearnerSlot {
    db: std::sync::atomic::AtomicU32,
    pid: AtomicI32,
}

/// Most attention plugins whose calls are counted across backends (per server).
pub const MAX_PLUGIN_SLOTS: usize = 64;
const PLUGIN_ERROR_BYTES: usize = 240;

#[repr(C)]
struct PluginSlot {
    /// Hash of (database OID, name); 0 marks a free slot.
    key: AtomicU64,
    calls: AtomicU64,
    failures: AtomicU64,
    /// It failed in a planner path: no backend attaches it until it is registered again.
    planner_off: std::sync::atomic::AtomicBool,
    /// Writer of `error` (a try-lock: a contended update is skipped, never waited for).
    busy: std::sync::atomic::AtomicBool,
    error_len: std::sync::atomic::AtomicU32,
    error: std::cell::UnsafeCell<[u8; PLUGIN_ERROR_BYTES]>,
}

#[repr(C)]
struct Shared {
    lock: *mut pg_sys::LWLock,
    /// Bytes of the data area (fixed at server start).
    size: usize,
    /// Bumped (after commit) whenever the learned-state table changes.
    learned_version: AtomicU64,
    /// Bumped (after commit) whenever the enabled tables change.
    scope_version: AtomicU64,
    /// Bumped (after commit) whenever an attention plugin is registered, replaced or removed.
    plugins_version: AtomicU64,
    /// The running learners: (database OID, pid); 0 marks a free slot.
    learners: [LearnerSlot; MAX_LEARNERS],
    /// Databases that want a learner (an in-scope statement was planned there, or a table
    /// enabled, since the server started); 0 marks a free slot.
    wanted: [std::sync::atomic::AtomicU32; MAX_LEARNERS],
    /// Cycles the background worker ran.
    worker_cycles: AtomicU64,
    /// Records of misestimated scans pushed to the ring (statistics advice; counted in the
    /// ring's `pushed` too).
    advice_pushed: AtomicU64,
    /// Memory granted to statements running under an arm that raises `work_mem`, kB now, the
    /// most at once, and the runs granted and refused (`hooks::memory`).
    work_mem: [AtomicU64; 4],
    /// When this shared memory was set up (server start, or the restart after a crash): the
    /// ring holds trajectories recorded since then; those not learned from before were lost.
    started_at: pg_sys::TimestampTz,
    /// Attention plugin counters, by (database, name).
    plugins: [PluginSlot; MAX_PLUGIN_SLOTS],
    /// Statements offered to the background explorers (see `offer`, `take`).
    offers: [OfferSlot; OFFER_SLOTS],
    /// Order of offers (the oldest is taken first).
    offer_seq: AtomicU64,
    /// The running explorers and their counters, by database; 0 marks a free slot.
    explorers: [ExplorerSlot; MAX_LEARNERS],
    /// The launcher's process latch (0 while none runs): set when a database first asks for
    /// its learner.
    launcher_latch: std::sync::atomic::AtomicUsize,
    /// Every explorer waits (`ruvector_dag_explorer_pause`).
    explore_paused: std::sync::atomic::AtomicBool,
    /// Processes executing a statement, by [`Executor`]: the users' (client backends and the
    /// parallel workers of their queries) and the explorers' (with their parallel workers).
    executing: [AtomicI32; 2],
    /// Statements the users' processes started executing since the server started (client
    /// backends and the parallel workers of their queries): an explorer reads it to know
    /// whether the server has been quiet for a while.
    user_starts: AtomicU64,
    /// Query shapes the explorer could not run (a re-plan or re-run failed): never offered
    /// again until the server restarts. A ring of fingerprints; 0 marks a free entry.
    refused: [AtomicU64; REFUSED_SHAPES],
    refused_next: std::sync::atomic::AtomicU32,
    /// Each learning database's enabled tables as last read (see [`scope_set`]).
    scopes: [ScopeSlot; MAX_LEARNERS],
    /// Moves after the commit of a transaction that dropped, renamed or moved one of the
    /// extension's relations or its schema, or dropped a database: the OIDs shared before are
    /// forgotten (see [`shared_name`]). 0 for good after a prepared transaction did so (its
    /// commit may come from any process).
    names_epoch: AtomicU64,
    /// Each database's OIDs of the extension's relations and schema, as some process found
    /// them (see [`shared_name`]).
    names: [NamesSlot; MAX_LEARNERS],
    /// Guarded by `lock`.
    ring: std::cell::UnsafeCell<RingHeader>,
}

/// Most enabled tables a database's shared scope entry holds: a database with more reads its
/// set from `ruvector_dag.enabled_tables` in each session, as without shared memory.
pub const SCOPE_TABLES: usize = 256;

/// One database's enabled tables, read by a backend and shared with every later session (a
/// session's first statement then needs no query of its own). Written under `busy` as a
/// sequence lock: `label` is 0 while the set is written, so a reader that sees the same
/// non-zero label before and after copying has a whole set.
#[repr(C)]
struct ScopeSlot {
    db: std::sync::atomic::AtomicU32,
    busy: std::sync::atomic::AtomicBool,
    /// The scope version the set was read at (0: being written or none yet).
    label: AtomicU64,
    /// The OID of the `ruvector_dag.enabled_tables` it was read from (a dropped and created
    /// again extension has another).
    table: std::sync::atomic::AtomicU32,
    len: std::sync::atomic::AtomicU32,
    oids: [std::sync::atomic::AtomicU32; SCOPE_TABLES],
}

/// The extension's relations whose OIDs are shared between processes
/// (`crate::extension_relid`), its schema after them.
pub const SHARED_NAMES: usize = 3;
/// Where the schema's OID is in a [`NamesSlot`].
pub const NAMESPACE_NAME: usize = SHARED_NAMES - 1;

/// One database's OIDs of the extension's relations and schema, found by a process's catalog
/// lookups and shared with every later session (a session's first statement then makes none).
/// Written under `busy` as a sequence lock: `label` is 0 while written, otherwise the names
/// epoch the OIDs were found at; 0 in `oids` is not known.
#[repr(C)]
struct NamesSlot {
    db: std::sync::atomic::AtomicU32,
    busy: std::sync::atomic::AtomicBool,
    label: AtomicU64,
    oids: [std::sync::atomic::AtomicU32; SHARED_NAMES],
}

/// Statements that can wait for a background explorer at once (all databases).
pub const OFFER_SLOTS: usize = 32;
/// Bytes of one offered statement (its text, parameters and settings, encoded): a longer one
/// is not offered.
pub const OFFER_BYTES: usize = 16 * 1024;
/// Query shapes remembered as not runnable by the explorer.
pub const REFUSED_SHAPES: usize = 256;

const OFFER_FREE: u32 = 0;
const OFFER_WRITING: u32 = 1;
const OFFER_READY: u32 = 2;
const OFFER_TAKEN: u32 = 3;

#[repr(C)]
struct OfferSlot {
    /// OFFER_FREE, OFFER_WRITING (one backend fills it), OFFER_READY, OFFER_TAKEN (an
    /// explorer runs it).
    state: std::sync::atomic::AtomicU32,
    db: std::sync::atomic::AtomicU32,
    fingerprint: AtomicU64,
    seq: AtomicU64,
    len: std::sync::atomic::AtomicU32,
    bytes: std::cell::UnsafeCell<[u8; OFFER_BYTES]>,
}

/// One database's explorer: its pid and what it did since the server started.
#[repr(C)]
struct ExplorerSlot {
    db: std::sync::atomic::AtomicU32,
    pid: AtomicI32,
    /// A run is in progress (a pause waits for it).
    running: std::sync::atomic::AtomicBool,
    /// How long no user's statement must have started before it starts a run, ms (its
    /// back-off after runs given up; see `explorer::Backoff`).
    quiet_ms: std::sync::atomic::AtomicU32,
    /// The launcher starts an explorer for this database when statements are offered (it is
    /// one of the databases it learns in, and its last start did not fail): the foreground
    /// offers while none runs.
    startable: std::sync::atomic::AtomicBool,
    counters: [AtomicU64; EXPLORER_COUNTERS],
}

/// What an explorer counts (`ruvector_dag_status()` shows each by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExplorerCounter {
    /// Statements offered to it by the database's backends.
    Offered,
    /// Offers refused because the queue was full.
    QueueFull,
    /// Statements it explored (took from the queue and ran).
    Explored,
    /// Runs it made (default and candidate plans).
    Runs,
    /// Microseconds its runs took (the machine time exploring cost; parallel workers' time is
    /// within the run's wall time).
    RunUs,
    /// Candidate runs cut short at their timeout.
    Cut,
    /// Statements dropped because the explorer could not re-plan or re-run them.
    Failed,
    /// Statements dropped because the role may not run them any more.
    Denied,
    /// Statements given back because the server stayed busy.
    Busy,
    /// Microseconds its runs' processes (the explorer and its parallel workers) waited for a
    /// CPU while other work had it (the kernel's run-queue delay; see `explorer::priority`).
    WaitUs,
    /// Runs not counted as evidence because they waited for a CPU too long.
    Contended,
    /// Runs given up for a user's statement that needed the cores (not evidence).
    Yielded,
    /// Runs of a candidate plan that waited for a CPU too long yet took less than the default
    /// plan's typical time: evidence that the plan is at most that slow.
    ContendedKept,
}

const EXPLORER_COUNTERS: usize = 13;

impl ExplorerCounter {
    pub const ALL: [ExplorerCounter; EXPLORER_COUNTERS] = [
        ExplorerCounter::Offered,
        ExplorerCounter::QueueFull,
        ExplorerCounter::Explored,
        ExplorerCounter::Runs,
        ExplorerCounter::RunUs,
        ExplorerCounter::Cut,
        ExplorerCounter::Failed,
        ExplorerCounter::Denied,
        ExplorerCounter::Busy,
        ExplorerCounter::WaitUs,
        ExplorerCounter::Contended,
        ExplorerCounter::Yielded,
        ExplorerCounter::ContendedKept,
    ];

    /// Its name in `ruvector_dag_status()`.
    pub fn name(self) -> &'static str {
        match self {
            ExplorerCounter::Offered => "explorer_offered",
            ExplorerCounter::QueueFull => "explorer_queue_full",
            ExplorerCounter::Explored => "explorer_explored",
            ExplorerCounter::Runs => "explorer_runs",
            ExplorerCounter::RunUs => "explorer_run_ms",
            ExplorerCounter::Cut => "explorer_cut_short",
            ExplorerCounter::Failed => "explorer_failed",
            ExplorerCounter::Denied => "explorer_denied",
            ExplorerCounter::Busy => "explorer_busy",
            ExplorerCounter::WaitUs => "explorer_wait_ms",
            ExplorerCounter::Contended => "explorer_contended",
            ExplorerCounter::Yielded => "explorer_yielded",
            ExplorerCounter::ContendedKept => "explorer_contended_kept",
        }
    }
}

struct RingHeader {
    head: u64,
    tail: u64,
    pushed: u64,
    dropped: u64,
    taken: u64,
}

static mut SHARED: *mut Shared = std::ptr::null_mut();
static mut PREV_REQUEST: pg_sys::shmem_request_hook_type = None;
static mut PREV_STARTUP: pg_sys::shmem_startup_hook_type = None;

/// Bytes of the ring asked for at server start (`ruvector.dag_ring_size`, MiB).
fn configured_size() -> usize {
    (crate::guc::RING_SIZE_MB.get().clamp(1, 1024) as usize) << 20
}

fn total_size() -> usize {
    std::mem::size_of::<Shared>().next_multiple_of(HEADER) + configured_size()
}

/// Ask for the shared memory (from `_PG_init` during `shared_preload_libraries`).
pub fn request() {
    // SAFETY: called once from _PG_init in the postmaster, single-threaded.
    unsafe {
        PREV_REQUEST = pg_sys::shmem_request_hook;
        pg_sys::shmem_request_hook = Some(on_request);
        PREV_STARTUP = pg_sys::shmem_startup_hook;
        pg_sys::shmem_startup_hook = Some(on_startup);
    }
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_request() {
    if let Some(prev) = PREV_REQUEST {
        prev();
    }
    pg_sys::RequestAddinShmemSpace(total_size());
    pg_sys::RequestNamedLWLockTranche(NAME.as_ptr(), 1);
    crate::book::on_request();
    crate::model_cache::on_request();
    crate::hooks::settled::AREA.request();
    crate::hooks::plain::on_request();
    crate::hooks::recalled::AREA.request();
}

#[pgrx::pg_guard]
unsafe extern "C-unwind" fn on_startup() {
    if let Some(prev) = PREV_STARTUP {
        prev();
    }
    let init_lock = &raw mut (*pg_sys::MainLWLockArray.add(21)).lock; // AddinShmemInitLock
    pg_sys::LWLockAcquire(init_lock, pg_sys::LWLockMode::LW_EXCLUSIVE);
    let mut found = false;
    let p = pg_sys::ShmemInitStruct(NAME.as_ptr(), total_size(), &mut found).cast::<Shared>();
    if !found {
        p.write(Shared {
            lock: &raw mut (*pg_sys::GetNamedLWLockTranche(NAME.as_ptr())).lock,
            size: configured_size(),
            learned_version: AtomicU64::new(1),
            scope_version: AtomicU64::new(1),
            plugins_version: AtomicU64::new(1),
            learners: std::array::from_fn(|_| LearnerSlot {
                db: std::sync::atomic::AtomicU32::new(0),
                pid: AtomicI32::new(0),
            }),
            wanted: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
            worker_cycles: AtomicU64::new(0),
            advice_pushed: AtomicU64::new(0),
            work_mem: std::array::from_fn(|_| AtomicU64::new(0)),
            started_at: pg_sys::GetCurrentTimestamp(),
            plugins: std::array::from_fn(|_| PluginSlot {
                key: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                failures: AtomicU64::new(0),
                planner_off: std::sync::atomic::AtomicBool::new(false),
                busy: std::sync::atomic::AtomicBool::new(false),
                error_len: std::sync::atomic::AtomicU32::new(0),
                error: std::cell::UnsafeCell::new([0; PLUGIN_ERROR_BYTES]),
            }),
            offers: std::array::from_fn(|_| OfferSlot {
                state: std::sync::atomic::AtomicU32::new(OFFER_FREE),
                db: std::sync::atomic::AtomicU32::new(0),
                fingerprint: AtomicU64::new(0),
                seq: AtomicU64::new(0),
                len: std::sync::atomic::AtomicU32::new(0),
                bytes: std::cell::UnsafeCell::new([0; OFFER_BYTES]),
            }),
            offer_seq: AtomicU64::new(1),
            explorers: std::array::from_fn(|_| ExplorerSlot {
                db: std::sync::atomic::AtomicU32::new(0),
                pid: AtomicI32::new(0),
                running: std::sync::atomic::AtomicBool::new(false),
                quiet_ms: std::sync::atomic::AtomicU32::new(0),
                startable: std::sync::atomic::AtomicBool::new(false),
                counters: std::array::from_fn(|_| AtomicU64::new(0)),
            }),
            launcher_latch: std::sync::atomic::AtomicUsize::new(0),
            explore_paused: std::sync::atomic::AtomicBool::new(false),
            executing: std::array::from_fn(|_| AtomicI32::new(0)),
            user_starts: AtomicU64::new(0),
            refused: std::array::from_fn(|_| AtomicU64::new(0)),
            refused_next: std::sync::atomic::AtomicU32::new(0),
            scopes: std::array::from_fn(|_| ScopeSlot {
                db: std::sync::atomic::AtomicU32::new(0),
                busy: std::sync::atomic::AtomicBool::new(false),
                label: AtomicU64::new(0),
                table: std::sync::atomic::AtomicU32::new(0),
                len: std::sync::atomic::AtomicU32::new(0),
                oids: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
            }),
            names_epoch: AtomicU64::new(1),
            names: std::array::from_fn(|_| NamesSlot {
                db: std::sync::atomic::AtomicU32::new(0),
                busy: std::sync::atomic::AtomicBool::new(false),
                label: AtomicU64::new(0),
                oids: std::array::from_fn(|_| std::sync::atomic::AtomicU32::new(0)),
            }),
            ring: std::cell::UnsafeCell::new(RingHeader {
                head: 0,
                tail: 0,
                pushed: 0,
                dropped: 0,
                taken: 0,
            }),
        });
    }
    SHARED = p;
    crate::book::on_startup();
    crate::model_cache::on_startup();
    crate::hooks::settled::AREA.startup();
    crate::hooks::plain::on_startup();
    crate::hooks::recalled::AREA.startup();
    pg_sys::LWLockRelease(init_lock);
}

/// A shared-memory area of its own: a header `H`, then `slots` slots of `S`, every byte zero
/// when the server starts (so `H` and `S` must be valid all zero: atomics, numbers, arrays of
/// them), and a tranche of `partitions` LWLocks, slot `i` under lock `i % partitions`. Asked
/// for and set up by the shmem hooks ([`SlotArea::request`], [`SlotArea::startup`]); every
/// process reads it in place.
pub(crate) struct SlotArea<H, S> {
    name: &'static std::ffi::CStr,
    slots: usize,
    partitions: usize,
    /// The area, once set up (inherited by every backend).
    base: std::sync::atomic::AtomicPtr<u8>,
    /// The tranche's locks.
    locks: std::sync::atomic::AtomicPtr<pg_sys::LWLockPadded>,
    _types: std::marker::PhantomData<(H, S)>,
}

// SAFETY: the pointers are set once at startup; what they point to is shared memory that `H`
// and `S` give access to through atomics and locks only.
unsafe impl<H, S> Sync for SlotArea<H, S> {}

impl<H, S> SlotArea<H, S> {
    pub(crate) const fn new(
        name: &'static std::ffi::CStr,
        slots: usize,
        partitions: usize,
    ) -> Self {
        SlotArea {
            name,
            slots,
            partitions,
            base: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            locks: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            _types: std::marker::PhantomData,
        }
    }

    fn slots_offset() -> usize {
        std::mem::size_of::<H>().next_multiple_of(64)
    }

    fn size(&self) -> usize {
        Self::slots_offset() + self.slots * std::mem::size_of::<S>()
    }

    /// Ask for the memory and the locks (from the shmem request hook).
    ///
    /// # Safety
    /// Called from the postmaster's shmem request hook.
    pub(crate) unsafe fn request(&self) {
        pg_sys::RequestAddinShmemSpace(self.size());
        pg_sys::RequestNamedLWLockTranche(self.name.as_ptr(), self.partitions as i32);
    }

    /// Set the area up, all zero (from the shmem startup hook, holding AddinShmemInitLock).
    ///
    /// # Safety
    /// Called from the shmem startup hook, with AddinShmemInitLock held; `H` and `S` are valid
    /// all zero.
    pub(crate) unsafe fn startup(&self) {
        let mut found = false;
        let p = pg_sys::ShmemInitStruct(self.name.as_ptr(), self.size(), &mut found).cast::<u8>();
        if !found {
            std::ptr::write_bytes(p, 0, self.size());
        }
        self.locks.store(
            pg_sys::GetNamedLWLockTranche(self.name.as_ptr()),
            Ordering::Release,
        );
        self.base.store(p, Ordering::Release);
    }

    /// The header, once the area is set up (None: the library was not preloaded).
    pub(crate) fn header(&self) -> Option<&H> {
        // SAFETY: set at startup to an area that starts with an H, for the server's life.
        unsafe { self.base.load(Ordering::Acquire).cast::<H>().as_ref() }
    }

    /// Slot `i` (`i < slots`), of an area set up ([`SlotArea::header`] was Some).
    pub(crate) fn slot(&self, i: usize) -> &S {
        assert!(i < self.slots, "slot {i} of {}", self.slots);
        let base = self.base.load(Ordering::Acquire);
        assert!(!base.is_null(), "{:?} is not set up", self.name);
        // SAFETY: `slots` slots of S follow the header in the same allocation; i < slots.
        unsafe { &*base.add(Self::slots_offset()).cast::<S>().add(i) }
    }

    /// The lock of slot `i`'s partition, held while the result lives.
    pub(crate) fn lock(&self, i: usize, mode: pg_sys::LWLockMode::Type) -> LockHeld {
        let locks = self.locks.load(Ordering::Acquire);
        assert!(!locks.is_null(), "{:?} is not set up", self.name);
        // SAFETY: the tranche has `partitions` locks, in shared memory for the server's life.
        unsafe { LockHeld::acquire(&raw mut (*locks.add(i % self.partitions)).lock, mode) }
    }
}

/// An LWLock in shared memory, held while this lives (released on unwind too; PostgreSQL
/// releases LWLocks itself if an ERROR escapes).
pub(crate) struct LockHeld(*mut pg_sys::LWLock);
impl LockHeld {
    /// # Safety
    /// `lock` is an LWLock in shared memory, set up for the server's life, not held by this
    /// process.
    pub(crate) unsafe fn acquire(
        lock: *mut pg_sys::LWLock,
        mode: pg_sys::LWLockMode::Type,
    ) -> Self {
        pg_sys::LWLockAcquire(lock, mode);
        LockHeld(lock)
    }
}
impl Drop for LockHeld {
    fn drop(&mut self) {
        // SAFETY: acquired in `acquire`.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

fn shared() -> Option<&'static Shared> {
    // SAFETY: set once at shared memory startup (inherited by every backend), never freed.
    unsafe { SHARED.as_ref() }
}

/// Bytes of the ring (0 without shared memory).
pub fn ring_bytes() -> usize {
    shared().map_or(0, |s| s.size)
}

/// Whether the shared memory exists (the library was preloaded).
pub fn available() -> bool {
    shared().is_some()
}

/// On a standby (recovery in progress) the tables change by WAL replay, which bumps no shared
/// counter: there every version below also changes each second, so that backends read the
/// replicated tables again (a cheap version check; the state itself is loaded only when its
/// version in the table changed). 0 on a primary.
fn standby_epoch() -> u64 {
    if !crate::guc::standby() {
        return 0;
    }
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // Above the bits a counter bumped on this server reaches.
    (secs & 0xFFFF_FFFF) << 32
}

/// The learned-state version (0 without shared memory).
pub fn learned_version() -> u64 {
    shared().map_or(0, |s| {
        s.learned_version.load(Ordering::Acquire) ^ standby_epoch()
    })
}

/// The enabled-tables version (0 without shared memory).
pub fn scope_version() -> u64 {
    shared().map_or(0, |s| {
        s.scope_version.load(Ordering::Acquire) ^ standby_epoch()
    })
}

/// When the shared memory (and so the trajectory ring) was set up, as PostgreSQL prints a
/// timestamptz; None without shared memory.
pub fn started_at() -> Option<String> {
    let s = shared()?;
    // SAFETY: timestamptz_to_str returns a static buffer, copied at once.
    unsafe {
        let text = pg_sys::timestamptz_to_str(s.started_at);
        Some(
            std::ffi::CStr::from_ptr(text)
                .to_string_lossy()
                .into_owned(),
        )
    }
}

/// Tell every backend to reload the learned state.
pub fn bump_learned() {
    if let Some(s) = shared() {
        s.learned_version.fetch_add(1, Ordering::AcqRel);
    }
}

/// The attention plugins' registry version (0 without shared memory).
pub fn plugins_version() -> u64 {
    shared().map_or(0, |s| {
        s.plugins_version.load(Ordering::Acquire) ^ standby_epoch()
    })
}

/// Tell every backend to read the attention plugins' registry again.
pub fn bump_plugins() {
    if let Some(s) = shared() {
        s.plugins_version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Tell every backend to reload the enabled tables.
pub fn bump_scope() {
    if let Some(s) = shared() {
        s.scope_version.fetch_add(1, Ordering::AcqRel);
    }
}

/// Database `db`'s enabled tables as shared at the current scope version, read from its
/// `ruvector_dag.enabled_tables` of OID `table`; None when none is shared for them (then the
/// caller reads the table and may [`publish_scope`] what it read).
pub fn scope_set(db: u32, table: u32) -> Option<Vec<u32>> {
    let s = shared()?;
    let version = scope_version();
    let slot = s
        .scopes
        .iter()
        .find(|x| x.db.load(Ordering::Acquire) == db)?;
    let label = slot.label.load(Ordering::Acquire);
    if label == 0 || label != version || slot.table.load(Ordering::Acquire) != table {
        return None;
    }
    let len = (slot.len.load(Ordering::Acquire) as usize).min(SCOPE_TABLES);
    let set = slot.oids[..len]
        .iter()
        .map(|o| o.load(Ordering::Acquire))
        .collect();
    // Written meanwhile: the copy may mix two sets.
    (slot.label.load(Ordering::Acquire) == label).then_some(set)
}

/// Share `set`, database `db`'s enabled tables read from its `ruvector_dag.enabled_tables` of
/// OID `table` with a snapshot taken after scope version `version` was current. Skipped (the
/// next reader tries again) when the version moved since, another backend is writing, every
/// slot is taken, or the set has more than [`SCOPE_TABLES`] tables.
pub fn publish_scope(db: u32, table: u32, version: u64, set: &std::collections::HashSet<u32>) {
    let Some(s) = shared() else { return };
    if set.len() > SCOPE_TABLES || version == 0 {
        return;
    }
    let Some(slot) = slot_to_write(&s.scopes, db, |x| (&x.db, &x.busy)) else {
        return;
    };
    if scope_version() == version {
        slot.label.store(0, Ordering::Release);
        slot.table.store(table, Ordering::Release);
        slot.len.store(set.len() as u32, Ordering::Release);
        for (o, &oid) in slot.oids.iter().zip(set) {
            o.store(oid, Ordering::Release);
        }
        slot.label.store(version, Ordering::Release);
    }
    slot.busy.store(false, Ordering::Release);
}

/// The names epoch now (0: names are not shared, or no shared memory).
pub fn names_epoch() -> u64 {
    shared().map_or(0, |s| s.names_epoch.load(Ordering::Acquire))
}

/// The OID of the extension's relation (or schema) number `which` ([`SHARED_NAMES`]) in
/// database `db`, as a process found it since the names epoch last moved; None when none is
/// shared.
pub fn shared_name(db: u32, which: usize) -> Option<u32> {
    let s = shared()?;
    let epoch = s.names_epoch.load(Ordering::Acquire);
    if epoch == 0 {
        return None;
    }
    let slot = s
        .names
        .iter()
        .find(|x| x.db.load(Ordering::Acquire) == db)?;
    if slot.label.load(Ordering::Acquire) != epoch {
        return None;
    }
    let oid = slot.oids.get(which)?.load(Ordering::Acquire);
    // Written or forgotten meanwhile: not known.
    (oid != 0
        && slot.label.load(Ordering::Acquire) == epoch
        && s.names_epoch.load(Ordering::Acquire) == epoch)
        .then_some(oid)
}

/// Share `found` ((which, OID) pairs, see [`shared_name`]), database `db`'s OIDs found by
/// catalog lookups that began at names epoch `epoch` (with this process's invalidations taken
/// in). Skipped when the epoch moved since, another process is writing or every slot is taken.
pub fn publish_names(db: u32, found: &[(usize, u32)], epoch: u64) {
    let Some(s) = shared() else { return };
    if epoch == 0 {
        return;
    }
    let Some(slot) = slot_to_write(&s.names, db, |x| (&x.db, &x.busy)) else {
        return;
    };
    if s.names_epoch.load(Ordering::Acquire) == epoch {
        let before = slot.label.swap(0, Ordering::AcqRel);
        if before != epoch {
            // Found at an earlier epoch: forgotten.
            for o in &slot.oids {
                o.store(0, Ordering::Release);
            }
        }
        for &(which, oid) in found {
            if let Some(o) = slot.oids.get(which) {
                o.store(oid, Ordering::Release);
            }
        }
        slot.label.store(epoch, Ordering::Release);
    }
    slot.busy.store(false, Ordering::Release);
}

/// Whether `oid` is one of the OIDs shared for database `db` (at any epoch).
pub fn is_shared_name(db: u32, oid: u32) -> bool {
    shared().is_some_and(|s| {
        s.names
            .iter()
            .filter(|x| x.db.load(Ordering::Acquire) == db)
            .any(|x| x.oids.iter().any(|o| o.load(Ordering::Acquire) == oid))
    })
}

/// A committed transaction may have changed the extension's names (after its invalidations
/// were sent): every OID shared before is forgotten.
pub fn names_changed() {
    if let Some(s) = shared() {
        let _ = s
            .names_epoch
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |e| {
                (e != 0).then(|| e.wrapping_add(1).max(1))
            });
    }
}

/// A prepared transaction may change the extension's names whenever it is committed, by any
/// process: names are not shared again until the server restarts.
pub fn stop_sharing_names() {
    if let Some(s) = shared() {
        s.names_epoch.store(0, Ordering::Release);
    }
}

/// Record that the learner `pid` runs for database `db` (pid 0: it stopped).
pub fn set_learner(db: u32, pid: i32) {
    let Some(s) = shared() else { return };
    if let Some(l) = find_or_claim(&s.learners, db, |l| &l.db) {
        l.pid.store(pid, Ordering::Release);
        if pid == 0 {
            l.db.store(0, Ordering::Release);
        }
    }
}

/// Database `db` wants a learner: the launcher starts one for it (unless
/// `ruvector.dag_database` restricts or excludes it). Lock-free and cheap when already known,
/// as it is called while planning. False when [`MAX_LEARNERS`] databases already want one.
pub fn want_learner(db: u32) -> bool {
    let Some(s) = shared() else { return false };
    if db == 0 || s.wanted.iter().any(|w| w.load(Ordering::Relaxed) == db) {
        return true;
    }
    let claimed = s.wanted.iter().any(|w| {
        w.compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
            || w.load(Ordering::Acquire) == db
    });
    // Wake the launcher: the learner starts now, not at its next check.
    if claimed {
        wake_launcher(s);
    }
    claimed
}

/// Set the launcher's latch (when it runs): it looks at once at what to start.
fn wake_launcher(s: &Shared) {
    let latch = s.launcher_latch.load(Ordering::Acquire);
    if latch != 0 {
        // SAFETY: the launcher's PGPROC latch, in shared memory (cleared when it exits).
        unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
    }
}

/// Wake the launcher when statements wait for database `db`'s explorer and none runs (it
/// starts explorers on demand: an explorer that ran out of offers stops, see
/// `explorer::IDLE_EXIT_S`).
pub fn explorer_wanted(db: u32) {
    let Some(s) = shared() else { return };
    if explorer_pid(db) == 0 && queued(db) > 0 {
        wake_launcher(s);
    }
}

/// Record the launcher's latch (its process's `MyLatch`, in shared memory), or clear it.
pub fn set_launcher_latch(latch: *mut pg_sys::Latch) {
    if let Some(s) = shared() {
        s.launcher_latch.store(latch as usize, Ordering::Release);
    }
}

/// The databases that want a learner.
pub fn wanted_learners() -> Vec<u32> {
    shared().map_or_else(Vec::new, |s| {
        s.wanted
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .filter(|&db| db != 0)
            .collect()
    })
}

/// Database `db` no longer wants a learner (it was dropped).
pub fn unwant_learner(db: u32) {
    if let Some(s) = shared() {
        for w in &s.wanted {
            let _ = w.compare_exchange(db, 0, Ordering::AcqRel, Ordering::Acquire);
        }
    }
}

/// The pid of the learner of database `db`, or 0.
pub fn learner_pid(db: u32) -> i32 {
    shared().map_or(0, |s| {
        s.learners
            .iter()
            .find(|l| l.db.load(Ordering::Acquire) == db)
            .map_or(0, |l| l.pid.load(Ordering::Acquire))
    })
}

fn plugin_key(db: u32, name: &str) -> u64 {
    let mut bytes = db.to_le_bytes().to_vec();
    bytes.extend_from_slice(name.as_bytes());
    ruvector_dag_core::rng::fnv1a64(&bytes).max(1)
}

fn plugin_slot(db: u32, name: &str, claim: bool) -> Option<&'static PluginSlot> {
    let s = shared()?;
    let key = plugin_key(db, name);
    s.plugins
        .iter()
        .find(|p| p.key.load(Ordering::Acquire) == key)
        .or_else(|| {
            claim.then(|| {
                s.plugins.iter().find(|p| {
                    p.key
                        .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
                        .is_ok()
                })
            })?
        })
}

/// Count a call of plugin `name` of database `db`, and its error when it failed (the error is
/// cut to 240 bytes). Without shared memory, or with every slot taken, nothing is counted.
pub fn count_plugin_call(db: u32, name: &str, error: Option<&str>) {
    let Some(slot) = plugin_slot(db, name, true) else {
        return;
    };
    slot.calls.fetch_add(1, Ordering::AcqRel);
    let Some(msg) = error else { return };
    slot.failures.fetch_add(1, Ordering::AcqRel);
    if slot
        .busy
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let mut end = msg.len().min(PLUGIN_ERROR_BYTES);
        while !msg.is_char_boundary(end) {
            end -= 1;
        }
        // SAFETY: `busy` gives this backend the only write access; readers take it too.
        unsafe { (&mut *slot.error.get())[..end].copy_from_slice(&msg.as_bytes()[..end]) };
        slot.error_len.store(end as u32, Ordering::Release);
        slot.busy.store(false, Ordering::Release);
    }
}

/// Calls, failures and the last error of plugin `name` of database `db`.
pub fn plugin_stats(db: u32, name: &str) -> (i64, i64, Option<String>) {
    let Some(slot) = plugin_slot(db, name, false) else {
        return (0, 0, None);
    };
    let calls = slot.calls.load(Ordering::Acquire) as i64;
    let failures = slot.failures.load(Ordering::Acquire) as i64;
    let mut error = None;
    if slot
        .busy
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        let len = slot.error_len.load(Ordering::Acquire) as usize;
        if len > 0 {
            // SAFETY: `busy` is held; len bytes were written as valid UTF-8.
            let bytes = unsafe { (&*slot.error.get())[..len].to_vec() };
            error = Some(String::from_utf8_lossy(&bytes).into_owned());
        }
        slot.busy.store(false, Ordering::Release);
    }
    (calls, failures, error)
}

/// Plugin `name` of database `db` failed in a planner path: no backend attaches it again until
/// it is registered again ([`forget_plugin`]) or the server restarts.
pub fn set_plugin_planner_off(db: u32, name: &str) {
    if let Some(slot) = plugin_slot(db, name, true) {
        slot.planner_off.store(true, Ordering::Release);
    }
}

/// Whether plugin `name` of database `db` failed in a planner path since it was registered.
pub fn plugin_planner_off(db: u32, name: &str) -> bool {
    plugin_slot(db, name, false).is_some_and(|s| s.planner_off.load(Ordering::Acquire))
}

/// Forget the counters of plugin `name` of database `db` (it was unregistered or replaced).
pub fn forget_plugin(db: u32, name: &str) {
    if let Some(slot) = plugin_slot(db, name, false) {
        slot.calls.store(0, Ordering::Release);
        slot.failures.store(0, Ordering::Release);
        slot.planner_off.store(false, Ordering::Release);
        slot.error_len.store(0, Ordering::Release);
        slot.key.store(0, Ordering::Release);
    }
}

/// Count one record of a misestimated scan pushed to the ring.
pub fn count_advice_pushed() {
    if let Some(s) = shared() {
        s.advice_pushed.fetch_add(1, Ordering::AcqRel);
    }
}

/// Take `kb` of the memory arms raising `work_mem` may add at once (at most `cap_kb` in all):
/// whether it was granted (counted either way).
pub fn grant_work_mem(kb: u64, cap_kb: u64) -> bool {
    let Some(s) = shared() else { return false };
    let [now, peak, granted, refused] = &s.work_mem;
    let took = now
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            n.checked_add(kb).filter(|&t| t <= cap_kb)
        })
        .ok();
    match took {
        Some(before) => {
            peak.fetch_max(before + kb, Ordering::AcqRel);
            granted.fetch_add(1, Ordering::AcqRel);
            true
        }
        None => {
            refused.fetch_add(1, Ordering::AcqRel);
            false
        }
    }
}

/// Give back `kb` granted by [`grant_work_mem`].
pub fn release_work_mem(kb: u64) {
    if let Some(s) = shared() {
        let _ = s.work_mem[0].fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            Some(n.saturating_sub(kb))
        });
    }
}

/// (kB granted now, the most at once, runs granted, runs refused) of [`grant_work_mem`].
pub fn work_mem_grants() -> [u64; 4] {
    shared().map_or([0; 4], |s| {
        s.work_mem.each_ref().map(|a| a.load(Ordering::Acquire))
    })
}

/// Count one cycle of the background worker.
pub fn count_worker_cycle() {
    if let Some(s) = shared() {
        s.worker_cycles.fetch_add(1, Ordering::AcqRel);
    }
}

/// What the ring has seen.
#[derive(Debug, Clone, Copy, Default)]
pub struct RingStats {
    pub pushed: u64,
    pub dropped: u64,
    pub taken: u64,
    pub pending: u64,
    pub bytes_used: u64,

    pub worker_cycles: u64,
    /// Of `pushed`: records of misestimated scans (statistics advice).
    pub advice_pushed: u64,
}

struct Locked(*mut pg_sys::LWLock);
impl Locked {
    fn exclusive(s: &Shared) -> Locked {
        // SAFETY: the lock lives in shared memory for the server's life. PostgreSQL releases
        // LWLocks itself if an ERROR escapes (nothing between acquire and release raises one).
        unsafe { pg_sys::LWLockAcquire(s.lock, pg_sys::LWLockMode::LW_EXCLUSIVE) };
        Locked(s.lock)
    }
}
impl Drop for Locked {
    fn drop(&mut self) {
        // SAFETY: acquired in `exclusive`.
        unsafe { pg_sys::LWLockRelease(self.0) };
    }
}

/// The ring while the exclusive lock is held: the header, and the data area after it.
struct Ring<'a> {
    h: &'a mut RingHeader,
    data: *mut u8,
    size: usize,
}

impl Ring<'_> {
    /// # Safety
    /// The exclusive lock must be held for the life of the result.
    unsafe fn locked(s: &Shared) -> Ring<'_> {
        let base = s as *const Shared as *mut u8;
        // SAFETY: the data area follows the header in the same allocation; the lock makes
        // this the only reference to the ring header and the data.
        unsafe {
            let data = base.add(std::mem::size_of::<Shared>().next_multiple_of(HEADER));
            Ring {
                h: &mut *s.ring.get(),
                data,
                size: s.size,
            }
        }
    }
    fn read_u32(&self, at: usize) -> u32 {
        debug_assert!(at + 4 <= self.size);
        let mut b = [0u8; 4];
        // SAFETY: at + 4 <= size for every header field.
        unsafe { std::ptr::copy_nonoverlapping(self.data.add(at), b.as_mut_ptr(), 4) };
        u32::from_ne_bytes(b)
    }
    fn write_u32(&mut self, at: usize, v: u32) {
        debug_assert!(at + 4 <= self.size);
        // SAFETY: as above.
        unsafe { std::ptr::copy_nonoverlapping(v.to_ne_bytes().as_ptr(), self.data.add(at), 4) };
    }
    /// (length, database, taken) of the record at absolute offset `off`.
    fn record(&self, off: u64) -> (usize, u32, bool) {
        let at = (off % self.size as u64) as usize;
        (
            (self.read_u32(at) as usize).max(HEADER),
            self.read_u32(at + 4),
            self.read_u32(at + 8) != 0,
        )
    }
    fn drop_oldest(&mut self) {
        let (len, db, taken) = self.record(self.h.tail);
        if db != PADDING_DB && !taken {
            self.h.dropped += 1;
        }
        self.h.tail += len as u64;
    }
    fn skip_taken(&mut self) {
        while self.h.tail < self.h.head {
            let (len, db, taken) = self.record(self.h.tail);
            if !(taken || db == PADDING_DB) {
                break;
            }
            self.h.tail += len as u64;
        }
    }
    /// Make room for `len` more bytes after head, dropping the oldest records.
    fn make_room(&mut self, len: usize) {
        while self.h.head + len as u64 - self.h.tail > self.size as u64 {
            self.drop_oldest();
        }
    }
    fn put(&mut self, db: u32, payload: &[u8]) {
        let len = (HEADER + payload.len()).next_multiple_of(HEADER);
        let pos = (self.h.head % self.size as u64) as usize;
        if pos + len > self.size {
            let pad = self.size - pos;
            self.make_room(pad);
            self.write_u32(pos, pad as u32);
            self.write_u32(pos + 4, PADDING_DB);
            self.write_u32(pos + 8, 1);
            self.h.head += pad as u64;
        }
        self.make_room(len);
        let at = (self.h.head % self.size as u64) as usize;
        self.write_u32(at, len as u32);
        self.write_u32(at + 4, db);
        self.write_u32(at + 8, 0);
        self.write_u32(at + 12, payload.len() as u32);
        // SAFETY: at + len <= size (a record never wraps).
        unsafe {
            std::ptr::copy_nonoverlapping(
                payload.as_ptr(),
                self.data.add(at + HEADER),
                payload.len(),
            )
        };
        self.h.head += len as u64;
        self.h.pushed += 1;
    }
}

/// Why a record was not pushed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    NoSharedMemory,
    TooLarge(usize),
}

/// Append one record for database `db`. The oldest records make room when the ring is full.
pub fn push(db: u32, payload: &[u8]) -> Result<(), PushError> {
    let s = shared().ok_or(PushError::NoSharedMemory)?;
    // Largest record accepted: a quarter of the ring.
    if payload.len() > s.size / 4 {
        return Err(PushError::TooLarge(payload.len()));
    }
    let _lock = Locked::exclusive(s);
    // SAFETY: the lock is held.
    unsafe { Ring::locked(s) }.put(db, payload);
    Ok(())
}

/// Take every record of database `db`, oldest first.
pub fn drain(db: u32) -> Vec<Vec<u8>> {
    let Some(s) = shared() else {
        return Vec::new();
    };
    let _lock = Locked::exclusive(s);
    // SAFETY: the lock is held.
    let mut ring = unsafe { Ring::locked(s) };
    let mut out = Vec::new();
    let mut off = ring.h.tail;
    while off < ring.h.head {
        let (len, rdb, taken) = ring.record(off);
        if rdb == db && !taken {
            let at = (off % ring.size as u64) as usize;
            let n = (ring.read_u32(at + 12) as usize).min(len - HEADER);
            let mut v = vec![0u8; n];
            // SAFETY: the record lies within the ring (written by `put`).
            unsafe { std::ptr::copy_nonoverlapping(ring.data.add(at + HEADER), v.as_mut_ptr(), n) };
            ring.write_u32(at + 8, 1);
            ring.h.taken += 1;
            out.push(v);
        }
        off += len as u64;
    }
    ring.skip_taken();
    out
}

/// The ring's counters and the worker's state.
pub fn stats() -> Option<RingStats> {
    let s = shared()?;
    let _lock = Locked::exclusive(s);
    // SAFETY: the lock is held.
    let ring = unsafe { Ring::locked(s) };
    let h = &*ring.h;
    let mut pending = 0;
    let mut off = h.tail;
    while off < h.head {
        let (len, db, taken) = ring.record(off);
        pending += u64::from(db != PADDING_DB && !taken);
        off += len as u64;
    }
    Some(RingStats {
        pushed: h.pushed,
        dropped: h.dropped,
        taken: h.taken,
        pending,
        bytes_used: h.head - h.tail,

        worker_cycles: s.worker_cycles.load(Ordering::Acquire),
        advice_pushed: s.advice_pushed.load(Ordering::Acquire),
    })
}

/// Why a statement was not offered to the explorer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfferError {
    NoSharedMemory,
    /// Its encoding is longer than [`OFFER_BYTES`].
    TooLong(usize),
    /// A statement of the same shape waits or is being explored.
    Queued,
    /// Every slot is taken.
    Full,
}

/// Offer an encoded statement of shape `fingerprint` to database `db`'s explorer. Never waits
/// for a lock: each slot is claimed with a compare-and-swap.
pub fn offer(db: u32, fingerprint: u64, bytes: &[u8]) -> Result<(), OfferError> {
    let s = shared().ok_or(OfferError::NoSharedMemory)?;
    if bytes.len() > OFFER_BYTES {
        return Err(OfferError::TooLong(bytes.len()));
    }
    if queued_in(s, db, fingerprint) {
        return Err(OfferError::Queued);
    }
    for o in &s.offers {
        if o.state
            .compare_exchange(
                OFFER_FREE,
                OFFER_WRITING,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        o.db.store(db, Ordering::Relaxed);
        o.fingerprint.store(fingerprint, Ordering::Relaxed);
        o.seq.store(
            s.offer_seq.fetch_add(1, Ordering::AcqRel),
            Ordering::Relaxed,
        );
        o.len.store(bytes.len() as u32, Ordering::Relaxed);
        // SAFETY: the slot is ours (OFFER_WRITING) until it is published below.
        unsafe { (&mut *o.bytes.get())[..bytes.len()].copy_from_slice(bytes) };
        o.state.store(OFFER_READY, Ordering::Release);
        count_explorer(db, ExplorerCounter::Offered, 1);
        // No explorer runs for this database (none was needed for a while): the launcher
        // starts one now.
        if explorer_pid(db) == 0 {
            wake_launcher(s);
        }
        return Ok(());
    }
    count_explorer(db, ExplorerCounter::QueueFull, 1);
    Err(OfferError::Full)
}

fn queued_in(s: &Shared, db: u32, fingerprint: u64) -> bool {
    s.offers.iter().any(|o| {
        o.state.load(Ordering::Acquire) != OFFER_FREE
            && o.db.load(Ordering::Relaxed) == db
            && o.fingerprint.load(Ordering::Relaxed) == fingerprint
    })
}

/// Whether a statement of shape `fingerprint` is in database `db`'s explorer's queue (offered,
/// or taken and not released): a later offer would be refused, so the planner hook does not
/// capture the statement's parameters and settings for one.
pub fn offered(db: u32, fingerprint: u64) -> bool {
    shared().is_some_and(|s| queued_in(s, db, fingerprint))
}

/// Take the oldest statement offered to database `db`'s explorer: (slot, bytes). The slot
/// stays taken (so the shape is not offered again meanwhile) until [`release`].
pub fn take(db: u32) -> Option<(usize, Vec<u8>)> {
    let s = shared()?;
    loop {
        let (i, o) = s
            .offers
            .iter()
            .enumerate()
            .filter(|(_, o)| {
                o.state.load(Ordering::Acquire) == OFFER_READY && o.db.load(Ordering::Relaxed) == db
            })
            .min_by_key(|(_, o)| o.seq.load(Ordering::Relaxed))?;
        if o.state
            .compare_exchange(
                OFFER_READY,
                OFFER_TAKEN,
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            continue;
        }
        let n = (o.len.load(Ordering::Relaxed) as usize).min(OFFER_BYTES);
        // SAFETY: published (OFFER_READY) and now ours (OFFER_TAKEN).
        let bytes = unsafe { (&*o.bytes.get())[..n].to_vec() };
        return Some((i, bytes));
    }
}

/// Free a slot [`take`] gave.
pub fn release(slot: usize) {
    if let Some(o) = shared().and_then(|s| s.offers.get(slot)) {
        o.state.store(OFFER_FREE, Ordering::Release);
    }
}

/// Put a slot [`take`] gave back at the end of its database's queue (its statement has more
/// to run; others wait for their turn first).
pub fn requeue(slot: usize) {
    let Some(s) = shared() else { return };
    if let Some(o) = s.offers.get(slot) {
        o.seq.store(
            s.offer_seq.fetch_add(1, Ordering::AcqRel),
            Ordering::Relaxed,
        );
        let _ = o.state.compare_exchange(
            OFFER_TAKEN,
            OFFER_READY,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

/// Free every slot of database `db` an explorer had taken (it ended without releasing them),
/// and, with `all`, every offer waiting for it.
pub fn release_all(db: u32, all: bool) {
    let Some(s) = shared() else { return };
    for o in &s.offers {
        if o.db.load(Ordering::Relaxed) == db {
            let from = if all { OFFER_READY } else { OFFER_TAKEN };
            let _ = o
                .state
                .compare_exchange(from, OFFER_FREE, Ordering::AcqRel, Ordering::Relaxed);
            if all {
                let _ = o.state.compare_exchange(
                    OFFER_TAKEN,
                    OFFER_FREE,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                );
            }
        }
    }
}

/// Offers waiting for database `db`'s explorer (being explored included).
pub fn queued(db: u32) -> usize {
    shared().map_or(0, |s| {
        s.offers
            .iter()
            .filter(|o| {
                o.state.load(Ordering::Acquire) != OFFER_FREE && o.db.load(Ordering::Relaxed) == db
            })
            .count()
    })
}

/// Database `db`'s explorer slot, claimed on first use (None: every slot is taken).
fn explorer_slot(db: u32) -> Option<&'static ExplorerSlot> {
    find_or_claim(&shared()?.explorers, db, |e| &e.db)
}

/// The slot of database `db` among `slots` (its database in `key`; 0 marks a free one),
/// claimed with a compare-and-swap on first use. None: every slot is taken.
pub(crate) fn find_or_claim<T>(
    slots: &[T],
    db: u32,
    key: impl Fn(&T) -> &std::sync::atomic::AtomicU32,
) -> Option<&T> {
    slots
        .iter()
        .find(|x| key(x).load(Ordering::Acquire) == db)
        .or_else(|| {
            slots.iter().find(|x| {
                key(x)
                    .compare_exchange(0, db, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            })
        })
}

/// Database `db`'s slot among `slots` (claimed when it has none) with its busy flag taken: a
/// try-lock, None when another process is writing it or every slot is taken. The caller clears
/// the flag when done.
fn slot_to_write<T>(
    slots: &[T],
    db: u32,
    fields: impl Fn(
        &T,
    ) -> (
        &std::sync::atomic::AtomicU32,
        &std::sync::atomic::AtomicBool,
    ),
) -> Option<&T> {
    let slot = find_or_claim(slots, db, |x| fields(x).0)?;
    fields(slot)
        .1
        .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
        .then_some(slot)
}

/// Record that the explorer of database `db` runs as `pid` (0: it ended); a new one has not
/// backed off yet.
pub fn set_explorer(db: u32, pid: i32) {
    if let Some(e) = explorer_slot(db) {
        e.quiet_ms.store(0, Ordering::Release);
        e.pid.store(pid, Ordering::Release);
    }
}

/// The slot of database `db`'s explorer while one runs.
fn live_explorer(db: u32) -> Option<&'static ExplorerSlot> {
    shared()?
        .explorers
        .iter()
        .find(|e| e.db.load(Ordering::Acquire) == db && e.pid.load(Ordering::Acquire) != 0)
}

/// The pid of database `db`'s explorer, 0 when none runs.
pub fn explorer_pid(db: u32) -> i32 {
    live_explorer(db).map_or(0, |e| e.pid.load(Ordering::Acquire))
}

/// Database `db`'s explorer slot if it has one (none is claimed).
fn claimed_explorer_slot(db: u32) -> Option<&'static ExplorerSlot> {
    shared()?
        .explorers
        .iter()
        .find(|e| e.db.load(Ordering::Acquire) == db)
}

/// The launcher says whether it starts an explorer for database `db` on demand.
pub fn set_explorer_startable(db: u32, startable: bool) {
    // A database the launcher does not explore in claims no slot.
    let slot = if startable {
        explorer_slot(db)
    } else {
        claimed_explorer_slot(db)
    };
    if let Some(e) = slot {
        e.startable.store(startable, Ordering::Release);
    }
}

/// Whether database `db` has an explorer, running or started when a statement is offered.
pub fn explorer_available(db: u32) -> bool {
    explorer_pid(db) != 0
        || shared().is_some_and(|s| s.launcher_latch.load(Ordering::Acquire) != 0)
            && claimed_explorer_slot(db).is_some_and(|e| e.startable.load(Ordering::Acquire))
}

/// Add `n` to one of database `db`'s explorer counters (its slot is claimed on first use).
pub fn count_explorer(db: u32, c: ExplorerCounter, n: u64) {
    if let Some(e) = explorer_slot(db) {
        e.counters[c as usize].fetch_add(n, Ordering::AcqRel);
    }
}

/// Database `db`'s explorer counters, in [`ExplorerCounter::ALL`] order.
pub fn explorer_counters(db: u32) -> [u64; EXPLORER_COUNTERS] {
    claimed_explorer_slot(db).map_or([0; EXPLORER_COUNTERS], |e| {
        std::array::from_fn(|i| e.counters[i].load(Ordering::Acquire))
    })
}

/// Mark database `db`'s explorer as in a run (true) or between runs.
pub fn explorer_running(db: u32, running: bool) {
    if let Some(e) = explorer_slot(db) {
        e.running.store(running, Ordering::Release);
    }
}

/// Whether database `db`'s explorer is in a run.
pub fn explorer_in_run(db: u32) -> bool {
    live_explorer(db).is_some_and(|e| e.running.load(Ordering::Acquire))
}

/// Whether some explorer is in a run.
pub fn any_explorer_running() -> bool {
    shared().is_some_and(|s| {
        s.explorers
            .iter()
            .any(|e| e.pid.load(Ordering::Acquire) != 0 && e.running.load(Ordering::Acquire))
    })
}

/// Whose work a process executing a statement is (see [`executing`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Executor {
    /// A client backend, or a parallel worker of one's query.
    User = 0,
    /// A background explorer, or a parallel worker of its statement.
    Explorer = 1,
}

/// A process of `who` starts (`true`) or ends executing a statement.
pub fn executing_changed(who: Executor, started: bool) {
    if let Some(s) = shared() {
        let c = &s.executing[who as usize];
        if started {
            c.fetch_add(1, Ordering::AcqRel);
            if who == Executor::User {
                s.user_starts.fetch_add(1, Ordering::AcqRel);
            }
        } else {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// Statements the users' processes started executing since the server started.
pub fn user_starts() -> u64 {
    shared().map_or(0, |s| s.user_starts.load(Ordering::Acquire))
}

/// Database `db`'s explorer's quiet window (see `explorer::Backoff`), ms.
pub fn set_explorer_quiet_ms(db: u32, ms: u32) {
    if let Some(e) = explorer_slot(db) {
        e.quiet_ms.store(ms, Ordering::Release);
    }
}

/// Database `db`'s explorer's quiet window, ms (0 when none runs, or it does not back off).
pub fn explorer_quiet_ms(db: u32) -> u32 {
    live_explorer(db).map_or(0, |e| e.quiet_ms.load(Ordering::Acquire))
}

/// Processes executing a statement now: (the users', the explorers').
pub fn executing() -> (i32, i32) {
    shared().map_or((0, 0), |s| {
        (
            s.executing[0].load(Ordering::Acquire).max(0),
            s.executing[1].load(Ordering::Acquire).max(0),
        )
    })
}

/// Ask every explorer in a run to give it up (a user's statement needs the cores): SIGUSR2,
/// which an explorer takes as a cancel of its run only while a run executes
/// (`explorer::yield_run`); between runs it is ignored.
pub fn ask_explorers_to_yield() {
    let Some(s) = shared() else { return };
    for e in &s.explorers {
        let pid = e.pid.load(Ordering::Acquire);
        if pid != 0 && e.running.load(Ordering::Acquire) {
            // SAFETY: a signal to this server's explorer, sent only while its slot says a run is
            // in progress (an explorer clears its running flag and pid before it exits).
            unsafe {
                libc::kill(pid, libc::SIGUSR2);
            }
        }
    }
}

/// Pause (true) or resume (false) every explorer; the previous state.
pub fn pause_explorers(paused: bool) -> bool {
    shared().is_some_and(|s| {
        let was = s.explore_paused.swap(paused, Ordering::AcqRel);
        // Explorers start on demand and not while paused: the launcher looks again now.
        if was && !paused {
            wake_launcher(s);
        }
        was
    })
}

/// Whether the explorers are paused.
pub fn explorers_paused() -> bool {
    shared().is_some_and(|s| s.explore_paused.load(Ordering::Acquire))
}

/// Remember that the explorer could not run shape `fingerprint` (never offered again until the
/// server restarts; the oldest of [`REFUSED_SHAPES`] is forgotten first).
pub fn refuse_shape(fingerprint: u64) {
    let Some(s) = shared() else { return };
    if fingerprint == 0 || shape_refused(fingerprint) {
        return;
    }
    let i = s.refused_next.fetch_add(1, Ordering::AcqRel) as usize % REFUSED_SHAPES;
    s.refused[i].store(fingerprint, Ordering::Release);
}

/// Whether the explorer could not run shape `fingerprint`.
pub fn shape_refused(fingerprint: u64) -> bool {
    shared().is_some_and(|s| {
        s.refused
            .iter()
            .any(|f| f.load(Ordering::Acquire) == fingerprint)
    })
}
