//! Background workers.
//!
//! - "ruvector_dag launcher" (registered at server start, connected to no database): every
//!   10 s it starts a learner for each database that wants one and has none running: every
//!   database where an in-scope statement was planned or a table enabled since the server
//!   started, except those `ruvector.dag_database` excludes (`!name`); or, when that list
//!   names databases, exactly those (one that does not exist yet is reported once). A learner
//!   that cannot start (max_worker_processes) is reported once and tried again every period.
//! - "ruvector_dag explorer" (started by the launcher on demand, while
//!   `ruvector.dag_explore_share` is above 0 and the explorers are not paused: when statements
//!   wait in its database's queue; it stops after [`crate::explorer::IDLE_EXIT_S`] without
//!   one, giving its `max_worker_processes` slot back to parallel queries): verifies candidate
//!   plans off the users' path (see [`crate::explorer`]).
//! - "ruvector_dag learner" (started by the launcher, one per database): runs the
//!   persisted learning cycle every `ruvector.dag_background_interval_ms`, or sooner when a
//!   quarter of the shared ring is waiting; in between, every second that trajectories wait, a
//!   light cycle observes them (BTSP memory, history; the evidence is in the shared book, see
//!   [`crate::book`]) and writes the snapshot with the book in it. In a database without the extension it waits. If it
//!   fails, the launcher starts it again at its next check; the learned state keeps its last
//!   committed version.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, DynamicBackgroundWorker, SignalWakeFlags,
};
use pgrx::prelude::*;

use crate::{guc, learner, shared};

/// Seconds between the launcher's checks.
pub(crate) const LAUNCHER_PERIOD: u64 = 10;

/// Register the launcher (from `_PG_init`, while preloading).
pub fn register() {
    BackgroundWorkerBuilder::new("ruvector_dag launcher")
        .set_type("ruvector_dag launcher")
        .set_function("ruvector_dag_launcher_main")
        .set_library("ruvector_dag")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(LAUNCHER_PERIOD)))
        .load();
}

/// What `ruvector.dag_database` says: databases to learn in (only those), or with `!name`
/// databases never to learn in; empty: every database that wants a learner.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Selection {
    pub(crate) only: Vec<String>,
    pub(crate) never: Vec<String>,
}

/// Read `ruvector.dag_database` (a comma-separated list; duplicates ignored).
fn selection() -> Selection {
    let text = guc::DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_default();
    parse_selection(&text)
}

pub(crate) fn parse_selection(text: &str) -> Selection {
    let mut sel = Selection::default();
    for n in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let (list, name) = match n.strip_prefix('!') {
            Some(name) => (&mut sel.never, name.trim()),
            None => (&mut sel.only, n),
        };
        if !name.is_empty() && !list.iter().any(|m| m == name) {
            list.push(name.to_string());
        }
    }
    sel
}

/// The databases to learn in now: those `ruvector.dag_database` names (reported once when one
/// does not exist), or else every database that wants a learner ([`shared::want_learner`]: an
/// in-scope statement was planned there, or a table enabled) and is not excluded. At most
/// [`shared::MAX_LEARNERS`].
fn targets(sel: &Selection, missing: &mut Vec<String>) -> Vec<(pg_sys::Oid, String)> {
    let all = BackgroundWorker::transaction(databases);
    let mut out: Vec<(pg_sys::Oid, String)> = Vec::new();
    if sel.only.is_empty() {
        for db in shared::wanted_learners() {
            match all.iter().find(|(oid, _)| oid.to_u32() == db) {
                Some((oid, name)) if !sel.never.contains(name) => out.push((*oid, name.clone())),
                Some(_) => {}
                // Dropped since it asked.
                None => shared::unwant_learner(db),
            }
        }
    } else {
        for name in &sel.only {
            match all.iter().find(|(_, n)| n == name) {
                Some((oid, _)) => {
                    missing.retain(|m| m != name);
                    out.push((*oid, name.clone()));
                }
                None if !missing.contains(name) => {
                    log!("ruvector_dag launcher: database \"{name}\" (ruvector.dag_database) does not exist; its learner starts when it does");
                    missing.push(name.clone());
                }
                None => {}
            }
        }
    }
    if out.len() > shared::MAX_LEARNERS {
        out.truncate(shared::MAX_LEARNERS);
    }
    out
}

/// A worker the launcher starts per database.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Learner,
    Explorer,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Learner => "learner",
            Kind::Explorer => "explorer",
        }
    }
    fn function(self) -> &'static str {
        match self {
            Kind::Learner => "ruvector_dag_worker_main",
            Kind::Explorer => "ruvector_dag_explorer_main",
        }
    }
}

/// One worker of one database the launcher looks after.
struct Started {
    worker: Option<DynamicBackgroundWorker>,
    /// The last start failed (reported once until one succeeds).
    failed: bool,
}

impl Started {
    fn running(&self) -> bool {
        self.worker.as_ref().is_some_and(|l| {
            matches!(
                l.pid(),
                Ok(_) | Err(pgrx::bgworkers::BackgroundWorkerStatus::NotYetStarted)
            )
        })
    }
}

/// One database the launcher looks after: its learner and its explorer.
struct Watched {
    oid: pg_sys::Oid,
    name: String,
    learner: Started,
    explorer: Started,
}

/// The launcher's entry point.
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ruvector_dag_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: only the shared catalogs (pg_database) are read.
    BackgroundWorker::connect_worker_to_spi(None, None);
    // A database that first asks for its learner wakes the launcher.
    shared::set_launcher_latch(&raw mut (*pg_sys::MyProc).procLatch);
    pg_sys::before_shmem_exit(Some(launcher_exit), pg_sys::Datum::from(0usize));
    let mut watched: Vec<Watched> = Vec::new();
    let mut missing: Vec<String> = Vec::new();
    let mut wait = Duration::ZERO;
    let mut slots_said = 0;
    while BackgroundWorker::wait_latch(Some(wait)) {
        wait = Duration::from_secs(LAUNCHER_PERIOD);
        if BackgroundWorker::sighup_received() {
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
        let now = targets(&selection(), &mut missing);
        // A database no longer selected keeps its running learner until it stops.
        for (oid, name) in now.iter() {
            if !watched.iter().any(|w| w.oid == *oid) {
                watched.push(Watched {
                    oid: *oid,
                    name: name.clone(),
                    learner: Started {
                        worker: None,
                        failed: false,
                    },
                    explorer: Started {
                        worker: None,
                        failed: false,
                    },
                });
            }
        }
        // The explorer only where it may run (ruvector.dag_explore_share above 0, not paused)
        // and has statements to run: it stops once nothing was offered for a while
        // (explorer::IDLE_EXIT_S), and an offer, or the end of a pause, wakes this launcher.
        let share = guc::EXPLORE_SHARE.get() > 0.0;
        let explore = share && !shared::explorers_paused();
        for w in &mut watched {
            let db = w.oid.to_u32();
            if !now.iter().any(|(oid, _)| *oid == w.oid) {
                // Its backends stop offering, and what they offered is dropped once no
                // explorer of it runs (one that runs stops when idle).
                shared::set_explorer_startable(db, false);
                if shared::explorer_pid(db) == 0 {
                    shared::release_all(db, true);
                }
                continue;
            }
            if !w.learner.running() {
                w.learner = start(w.oid, &w.name, Kind::Learner, w.learner.failed);
            }
            // A start that failed (max_worker_processes) is tried again every period, offers
            // or not; meanwhile the backends do not offer.
            if explore && !w.explorer.running() && (shared::queued(db) > 0 || w.explorer.failed) {
                w.explorer = start(w.oid, &w.name, Kind::Explorer, w.explorer.failed);
            }
            shared::set_explorer_startable(db, share && !w.explorer.failed);
        }
        let ours = 1 + watched
            .iter()
            .map(|w| i32::from(w.learner.running()) + i32::from(w.explorer.running()))
            .sum::<i32>();
        report_worker_slots(ours, &mut slots_said);
    }
}

/// Warn (once for each number of workers) when this extension's `ours` background workers
/// leave parallel queries fewer slots than `max_parallel_workers` allows: background workers
/// and parallel workers share `max_worker_processes`, so every learner and explorer running is
/// one worker fewer a user's parallel query can start (measured: with PostgreSQL's default 8
/// and two learning databases, 2 were left, and an explorer's run took both from the users'
/// queries running beside it). `said`: the number last warned about, 0 when none.
fn report_worker_slots(ours: i32, said: &mut i32) {
    // SAFETY: the server's settings, read in this process.
    let (slots, parallel) = unsafe { (pg_sys::max_worker_processes, pg_sys::max_parallel_workers) };
    let left = slots - ours;
    // The launcher alone is one slot, like PostgreSQL's own logical replication launcher: said
    // only once a database learns.
    if left >= parallel || ours <= 1 {
        *said = 0;
        return;
    }
    if ours != *said {
        warning!(
            "ruvector_dag launcher: its {ours} background workers (the launcher, and a learner and an explorer per learning database) take {ours} of max_worker_processes = {slots}, which parallel queries share: at most {} parallel workers can run, fewer than max_parallel_workers = {parallel}; set max_worker_processes to at least {} plus one for every other background worker (PostgreSQL's logical replication launcher is one; a restart) so users' parallel queries keep their workers",
            left.max(0),
            parallel + ours
        );
        *said = ours;
    }
}

/// Start database `oid`'s worker of `kind`; `failed`: its last start failed (reported).
fn start(oid: pg_sys::Oid, name: &str, kind: Kind, failed: bool) -> Started {
    // SAFETY: MyProcPid is this process's pid.
    let me = unsafe { pg_sys::MyProcPid };
    let what = kind.name();
    let worker = BackgroundWorkerBuilder::new(&format!("ruvector_dag {what} {name}"))
        .set_type(&format!("ruvector_dag {what}"))
        .set_function(kind.function())
        .set_library("ruvector_dag")
        .enable_spi_access()
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(oid.to_u32())))
        .set_extra(name)
        .set_notify_pid(me)
        .load_dynamic()
        .ok();
    match (&worker, failed) {
        (None, false) => {
            log!("ruvector_dag launcher: cannot start the {what} for \"{name}\" (max_worker_processes reached?); trying again every {LAUNCHER_PERIOD} s (logged once)");
        }
        (Some(_), true) => {
            log!("ruvector_dag launcher: started the {what} for \"{name}\"");
        }
        _ => {}
    }
    Started {
        failed: worker.is_none(),
        worker,
    }
}

/// Every database that accepts connections (not templates' `datallowconn = false`): (OID,
/// name). A heap scan of pg_database, as the logical replication launcher reads
/// pg_subscription: without a database, and before any backend has written the shared relcache
/// init file, index scans cannot be used.
fn databases() -> Vec<(pg_sys::Oid, String)> {
    // SAFETY: inside a transaction; the tuples are read while the scan holds them.
    unsafe {
        let rel = pg_sys::table_open(
            pg_sys::DatabaseRelationId,
            pg_sys::AccessShareLock as pg_sys::LOCKMODE,
        );
        let scan = pg_sys::table_beginscan_catalog(rel, 0, std::ptr::null_mut());
        let mut out = Vec::new();
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let form = (header as *mut u8).add(usize::from((*header).t_hoff))
                as *const pg_sys::FormData_pg_database;
            if (*form).datallowconn {
                let datname = std::ffi::CStr::from_ptr((*form).datname.data.as_ptr());
                out.push(((*form).oid, datname.to_string_lossy().into_owned()));
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(rel, pg_sys::AccessShareLock as pg_sys::LOCKMODE);
        out
    }
}

pub(crate) fn extension_here() -> bool {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'ruvector_dag')",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The learner's entry point; its argument is the database's OID.
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ruvector_dag_worker_main(arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let oid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid), None);
    shared::set_learner(oid.to_u32(), std::process::id() as i32);
    // Free the slot however this process ends (an ERROR ends a worker too).
    pg_sys::before_shmem_exit(Some(learner_exit), pg_sys::Datum::from(oid.to_u32()));
    // The launcher passes the name along (reading the catalog needs a transaction).
    let name = BackgroundWorker::get_extra();
    log!("ruvector_dag learner: started, learning for database \"{name}\"");
    let mut last = Instant::now();
    let mut last_error: Option<String> = None;
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sighup_received() {
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
        let interval = Duration::from_millis(guc::BACKGROUND_INTERVAL_MS.get().max(100) as u64);
        let stats = shared::stats();
        let crowded = stats.is_some_and(|s| s.bytes_used as usize >= shared::ring_bytes() / 4);
        let waiting = stats.is_some_and(|s| s.pending > 0);
        // Training is due on the interval (or when the ring fills); trajectories that wait are
        // observed every second in a light cycle, which keeps the shared evidence book on disk.
        let train = last.elapsed() >= interval || crowded;
        if !train && !waiting {
            continue;
        }
        if train {
            last = Instant::now();
        }
        let outcome = BackgroundWorker::transaction(|| {
            if !extension_here() {
                return None;
            }
            Some(learner::cycle(train))
        });
        match outcome {
            None => {}
            Some(Ok(o)) => {
                last_error = None;
                shared::count_worker_cycle();
                if train && (o.drained > 0 || o.report.patterns_created > 0) {
                    log!(
                        "ruvector_dag learner: {} trajectories, {} new patterns, {} patterns, version {}",
                        o.drained,
                        o.report.patterns_created,
                        o.report.patterns,
                        o.version
                    );
                }
            }
            // The same failure every interval (say, arms changed) is logged once.
            Some(Err(e)) if last_error.as_deref() != Some(e.as_str()) => {
                log!("ruvector_dag learner: cycle failed: {e} (logged again only if it changes)");
                last_error = Some(e);
            }
            Some(Err(_)) => {}
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn launcher_exit(_code: i32, _arg: pg_sys::Datum) {
    shared::set_launcher_latch(std::ptr::null_mut());
}

#[pg_guard]
unsafe extern "C-unwind" fn learner_exit(_code: i32, arg: pg_sys::Datum) {
    shared::set_learner(arg.value() as u32, 0);
}
