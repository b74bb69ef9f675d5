//! The planner, executor and EXPLAIN hooks, each chaining to whatever was installed before.
//! Installed only when the library is preloaded (`shared_preload_libraries`).
//!
//! - planner: for an in-scope statement (it reads a table enabled with
//!   `ruvector_enable_neural_dag`), plan it normally, turn the plan into the core's `PlanDag`,
//!   ask this backend's copy of the learned optimizer for an arm, and in `learn` / `frozen`
//!   mode plan again with the arm's settings at a new GUC nest level, restored before
//!   returning (on error too).
//! - ExecutorStart: in `observe` / `learn` mode, request per-node timing for sampled in-scope
//!   statements. ExecutorEnd: read the instrumentation into a trajectory (fingerprints and
//!   numbers only), push it to the shared ring for the learner, and observe it locally (so a
//!   regressing arm is blocked in this backend at once).
//! - ExplainOneQuery: EXPLAIN (text format) prints the decision and its reason.
//!
//! Rooms: [`state`] (this backend's copy of the learned optimizer, its counters, the one
//! guard of the learning path), [`scope`] (which statements are in scope), [`cheap`] (which
//! statements need no copy to plan again: too cheap every time), [`planner`] (the
//! planner hook, candidate plans, arms applied at a GUC nest level), [`identity`] (which
//! remembered decision a statement the executor runs belongs to), [`executor`] (timing and
//! observing), [`memory`] (arms that raise `work_mem` where their plans run, within
//! `ruvector.dag_work_mem_max`), [`explain`] (EXPLAIN's lines; `explain18` for PostgreSQL 18's
//! extension points).
//!
//! The backend's optimizer is loaded from `ruvector_dag.learned_state` and reloaded when the
//! shared version moves. Anything that goes wrong in the learning path is counted, logged once
//! per session, and the statement runs with the default plan.

use std::cell::{Cell, RefCell};
use std::collections::{HashSet, VecDeque};
use std::ffi::CString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::time::Instant;

use pgrx::pg_sys;
use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use ruvector_dag_core::learning::{Candidate, Decision, NeuralDagConfig, Optimizer, Rule};

use crate::guc::{self, Mode};
use crate::plantree::{dag_from_plan, dag_with_actuals_and_plans, measure};
use crate::{learner, shared};

mod cheap;
mod executor;
mod explain;
#[cfg(feature = "pg18")]
pub mod explain18;
mod identity;
pub(crate) mod memory;
pub(crate) mod phases;
pub(crate) mod plain;
mod planner;
pub(crate) mod recalled;
mod scope;
pub(crate) mod settled;
mod state;

use executor::*;
use explain::*;
use identity::*;
use phases::Phase;
use planner::*;
use scope::*;
use state::*;

#[cfg(any(test, feature = "pg_test"))]
pub(crate) use cheap::{has_digit_or_quote, key_of_text as text_key, STREAK as CHEAP_STREAK};
pub(crate) use executor::cores;
#[cfg(any(test, feature = "pg_test"))]
pub(crate) use executor::run_depth;
pub(crate) use planner::{
    begin_probe, compare, set_explorer_process, set_setting, take_probe, under_arm, Probed,
};
pub(crate) use scope::query_relations;
pub use scope::scope_changed;
#[cfg(any(test, feature = "pg_test"))]
pub(crate) use state::forget_copy;
pub(crate) use state::Busy;
pub use state::{
    adopt, counters, evidence_summary, full_evidence, last_decision, last_error, lean_copy,
    learn_now, loaded_info, plugin_error, plugin_selector_stats, with_optimizer,
    with_optimizer_for, Counters,
};
pub(crate) use state::{observe_shared, prepare_process, with_shape};

static mut PREV_PLANNER: pg_sys::planner_hook_type = None;
static mut PREV_EXPLAIN: pg_sys::ExplainOneQuery_hook_type = None;
static mut PREV_EXECUTOR_START: pg_sys::ExecutorStart_hook_type = None;
static mut PREV_EXECUTOR_END: pg_sys::ExecutorEnd_hook_type = None;
static mut PREV_EXECUTOR_RUN: pg_sys::ExecutorRun_hook_type = None;
static INSTALLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Install the hooks (from `_PG_init`, while preloading).
pub fn install() {
    // SAFETY: _PG_init runs once per process, single-threaded, before any query.
    unsafe {
        PREV_PLANNER = pg_sys::planner_hook;
        pg_sys::planner_hook = Some(planner_hook);
        PREV_EXPLAIN = pg_sys::ExplainOneQuery_hook;
        pg_sys::ExplainOneQuery_hook = Some(explain_hook);
        PREV_EXECUTOR_START = pg_sys::ExecutorStart_hook;
        pg_sys::ExecutorStart_hook = Some(executor_start_hook);
        PREV_EXECUTOR_END = pg_sys::ExecutorEnd_hook;
        pg_sys::ExecutorEnd_hook = Some(executor_end_hook);
        PREV_EXECUTOR_RUN = pg_sys::ExecutorRun_hook;
        pg_sys::ExecutorRun_hook = Some(executor_run_hook);
    }
    install_abort_callbacks();
    #[cfg(feature = "pg18")]
    explain18::install();
    INSTALLED.store(true, std::sync::atomic::Ordering::Release);
}

/// Whether the hooks are installed (the library was preloaded).
pub fn installed() -> bool {
    INSTALLED.load(std::sync::atomic::Ordering::Acquire)
}
