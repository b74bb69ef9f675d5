//! The background worker "ruvector_dag learner": connected to `ruvector.dag_database`, it
//! runs the persisted learning cycle every `ruvector.dag_background_interval_ms`, or sooner
//! when a quarter of the shared ring is waiting. In a database without the extension it
//! waits. A failed cycle is logged; the worker restarts after 10 s and the learned state keeps
//! its last committed version.

use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, BackgroundWorkerBuilder, SignalWakeFlags};
use pgrx::prelude::*;

use crate::{guc, learner, shared};

/// Register the worker (from `_PG_init`, while preloading).
pub fn register() {
    BackgroundWorkerBuilder::new("ruvector_dag learner")
        .set_type("ruvector_dag learner")
        .set_function("ruvector_dag_worker_main")
        .set_library("ruvector_dag")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(10)))
        .load();
}

fn extension_here() -> bool {
    Spi::get_one::<bool>(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_extension WHERE extname = 'ruvector_dag')",
    )
    .ok()
    .flatten()
    .unwrap_or(false)
}

/// The worker's entry point.
///
/// # Safety
/// Called by the postmaster as a background worker's main function.
#[pg_guard]
#[no_mangle]
pub unsafe extern "C-unwind" fn ruvector_dag_worker_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let db = guc::DATABASE
        .get()
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|| "postgres".into());
    BackgroundWorker::connect_worker_to_spi(Some(&db), None);
    shared::set_worker_pid(std::process::id() as i32);
    log!("ruvector_dag learner: started, learning for database \"{db}\"");
    let mut last = Instant::now();
    let mut last_error: Option<String> = None;
    while BackgroundWorker::wait_latch(Some(Duration::from_secs(1))) {
        if BackgroundWorker::sighup_received() {
            pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP);
        }
        let interval = Duration::from_millis(guc::BACKGROUND_INTERVAL_MS.get().max(100) as u64);
        let crowded =
            shared::stats().is_some_and(|s| s.bytes_used as usize >= shared::ring_bytes() / 4);
        if last.elapsed() < interval && !crowded {
            continue;
        }
        last = Instant::now();
        let outcome = BackgroundWorker::transaction(|| {
            if !extension_here() {
                return None;
            }
            Some(learner::cycle())
        });
        match outcome {
            None => {}
            Some(Ok(o)) => {
                last_error = None;
                shared::count_worker_cycle();
                if o.drained > 0 || o.report.patterns_created > 0 {
                    log!(
                        "ruvector_dag learner: {} trajectories, {} new patterns, {} patterns, version {}",
                        o.drained,
                        o.report.patterns_created,
                        o.report.patterns,
                        o.version
                    );
                }
            }
            Some(Err(e)) => {
                // The same failure every interval (say, arms changed) is logged once.
                if last_error.as_deref() != Some(e.as_str()) {
                    log!(
                        "ruvector_dag learner: cycle failed: {e} (logged again only if it changes)"
                    );
                    last_error = Some(e);
                }
                continue;
            }
        }
    }
    shared::set_worker_pid(0);
}
