//! `ruvector_dag`, the PostgreSQL extension: the core's plan analysis, attention, min cut and
//! its learning engine, inside PostgreSQL (15 and 18 tested; see [`compat`]).
//!
//! Modules:
//! - [`guc`]: every `ruvector.*` setting, registered in `_PG_init`;
//! - [`plan`]: a query's plan as the core sees it (EXPLAIN JSON -> `PlanDag`), one statement only;
//! - [`analyze`]: `ruvector_dag_analyze`, `ruvector_attention_*`, `ruvector_dag_mincut`,
//!   `ruvector_dag_explain_json`;
//! - [`scope`]: the tables learning is enabled for, and who may change that;
//! - [`plantree`]: the planner's `PlannedStmt` -> `PlanDag`, without EXPLAIN;
//! - [`hooks`]: planner / executor / EXPLAIN hooks and this backend's copy of the optimizer
//!   (on PostgreSQL 18 also the EXPLAIN extension points: `hooks::explain18`);
//! - [`compat`]: what differs between PostgreSQL majors, in one place;
//! - [`shared`]: the shared-memory trajectory ring and version counters;
//! - [`learner`]: the learning cycle that drains the ring and persists the learned state;
//! - [`worker`]: the background worker that runs it;
//! - [`status`] holds `ruvector_dag_status()`, `ruvector_dag_learn()`, `ruvector_dag_patterns()`.
//!
//! Errors are PostgreSQL ERRORs that name the problem; nothing panics across the FFI boundary
//! (pgrx turns a Rust panic into an ERROR, and the core does not panic on outside data).

// Set-returning functions spell their columns in the signature (pgrx's `name!`).
#![allow(clippy::type_complexity)]

use pgrx::prelude::*;

pub mod admin;
pub mod advice;
pub mod analyze;
pub mod book;
pub mod compat;
pub mod explorer;
pub mod guc;
pub mod hooks;
pub mod learner;
pub mod model_cache;
pub mod names;
pub mod plan;
pub mod plantree;
pub mod plugins;
pub mod scope;
pub mod shared;
pub mod status;
pub mod worker;

::pgrx::pg_module_magic!(name, version);

extension_sql_file!("../sql/bootstrap.sql", bootstrap);

/// The OID of the database this process is connected to.
pub(crate) fn database() -> u32 {
    // SAFETY: MyDatabaseId is set for every process connected to a database (0 before).
    unsafe { pgrx::pg_sys::MyDatabaseId }.to_u32()
}

/// Called when the library is loaded. Preloaded (`shared_preload_libraries`), it also asks
/// for shared memory, installs the hooks and registers the background worker; loaded later
/// (by `CREATE EXTENSION` or a function call) only the analysis functions work, and the
/// learning functions say how to preload it.
#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    guc::register();
    #[cfg(feature = "pg18")]
    hooks::explain18::register_options();
    // SAFETY: a flag PostgreSQL sets while loading shared_preload_libraries.
    if unsafe { pg_sys::process_shared_preload_libraries_in_progress } {
        shared::request();
        hooks::install();
        names::install();
        worker::register();
        learner::prepare_machinery();
        hooks::prepare_process();
    }
}

/// `ruvector_dag.enabled_tables`, by name for [`extension_relid`].
pub(crate) static ENABLED_TABLES: &std::ffi::CStr = c"enabled_tables";
/// `ruvector_dag.learned_state`, by name for [`extension_relid`].
pub(crate) static LEARNED_STATE: &std::ffi::CStr = c"learned_state";

/// The OID of the extension's table `name` (one of the statics above: it is known by the
/// address of its name) in schema `ruvector_dag`, 0 when it is not there (the extension is not
/// installed in this database). Remembered in this process until `pg_class` or `pg_namespace`
/// changes (a catalog cache invalidation: the extension created, dropped or re-created here or
/// in another session, a table renamed), so the planner hook's scope check costs a comparison
/// per statement. Shared between processes ([`names`]): a new session takes what another
/// found, and makes the two syscache lookups (cold in a new backend) only when none did.
pub(crate) fn extension_relid(name: &'static std::ffi::CStr) -> u32 {
    thread_local! {
        /// (name, OID, the invalidation generation it was looked up at).
        static KNOWN: std::cell::RefCell<Vec<(&'static std::ffi::CStr, u32, u64)>> =
            const { std::cell::RefCell::new(Vec::new()) };
    }
    watch_catalog();
    let generation = CATALOG_GENERATION.with(|g| g.get());
    let known = KNOWN.with(|k| {
        k.borrow()
            .iter()
            // The same static is the same name (no string comparison on every statement's
            // scope check; another pointer to an equal name is only looked up once more).
            .find(|(n, _, g)| *g == generation && std::ptr::eq(*n, name))
            .map(|&(_, oid, _)| oid)
    });
    if let Some(oid) = known {
        return oid;
    }
    let remember = |oid: u32, generation: u64| {
        KNOWN.with(|k| {
            let mut k = k.borrow_mut();
            k.retain(|(n, _, g)| *g == generation && !std::ptr::eq(*n, name));
            k.push((name, oid, generation));
        });
    };
    let db = database();
    let which = names::index_of(name);
    let shareable = which.is_some() && names::shareable();
    if let Some(oid) = which
        .filter(|_| shareable)
        .and_then(|w| shared::shared_name(db, w))
    {
        remember(oid, generation);
        return oid;
    }
    let epoch = shared::names_epoch();
    names::counted_lookup();
    // SAFETY: catalog lookups by name, in a transaction (the callers plan or run SQL); the
    // invalidations taken in first make them see every commit before `epoch`.
    let (ns, oid, before) = unsafe {
        if shareable {
            pg_sys::AcceptInvalidationMessages();
        }
        let before = CATALOG_GENERATION.with(|g| g.get());
        let ns = pg_sys::get_namespace_oid(c"ruvector_dag".as_ptr(), true);
        if ns == pg_sys::InvalidOid {
            (0, 0, before)
        } else {
            let oid = pg_sys::get_relname_relid(name.as_ptr(), ns).to_u32();
            (ns.to_u32(), oid, before)
        }
    };
    if shareable && oid != 0 {
        if let Some(w) = which {
            shared::publish_names(db, &[(w, oid), (shared::NAMESPACE_NAME, ns)], epoch);
        }
    }
    // A lookup can itself take in invalidations (a catalog cache miss opens the catalog): what
    // it found is kept only when none arrived meanwhile.
    if CATALOG_GENERATION.with(|g| g.get()) == before {
        remember(oid, before);
    }
    oid
}

thread_local! {
    /// Moves whenever this process takes in an invalidation of `pg_class` or `pg_namespace`
    /// names (a `Cell`: the callback never fails to record one, whatever is borrowed).
    static CATALOG_GENERATION: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    static WATCHING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Forget the OIDs of the extension's relations this process remembered (tests: the next
/// [`extension_relid`] finds them again, as a new session does).
#[cfg(any(test, feature = "pg_test"))]
pub(crate) fn forget_extension_relids() {
    CATALOG_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// Register (once per process) the catalog cache callbacks that move [`CATALOG_GENERATION`].
fn watch_catalog() {
    if WATCHING.with(|w| w.replace(true)) {
        return;
    }
    // SAFETY: two of the process's syscache callback slots, registered once and for good.
    unsafe {
        for cache in [
            pg_sys::SysCacheIdentifier::RELNAMENSP,
            pg_sys::SysCacheIdentifier::NAMESPACENAME,
        ] {
            pg_sys::CacheRegisterSyscacheCallback(
                cache as i32,
                Some(catalog_changed),
                pg_sys::Datum::from(0usize),
            );
        }
    }
}

#[pg_guard]
unsafe extern "C-unwind" fn catalog_changed(_arg: pg_sys::Datum, _cache: i32, _hash: u32) {
    CATALOG_GENERATION.with(|g| g.set(g.get().wrapping_add(1)));
}

/// ERROR unless the library was preloaded, naming the fix.
pub(crate) fn require_preload(what: &str) {
    if !shared::available() || !hooks::installed() {
        fail(
            PgSqlErrorCode::ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE,
            format!(
                "{what}: ruvector_dag is not in shared_preload_libraries; add it \
                 (shared_preload_libraries = 'ruvector_dag' in postgresql.conf) and restart PostgreSQL"
            ),
        );
    }
}

/// ERROR on a standby for a function that writes the learned state or the settings tables.
pub(crate) fn require_primary(what: &str) {
    if guc::standby() {
        fail(
            PgSqlErrorCode::ERRCODE_READ_ONLY_SQL_TRANSACTION,
            format!(
                "{what}: this server is a standby (recovery in progress); run it on the primary, \
                 whose learned state and settings replicate here"
            ),
        );
    }
}

/// Run `f` (SPI reads of the extension's tables) in an internal subtransaction, as PL/pgSQL's
/// EXCEPTION blocks do: a PostgreSQL ERROR there (say, permission on the extension's tables
/// revoked from this user) is rolled back and becomes `Err`, so the statement falls back to the
/// default plan instead of failing.
pub(crate) fn guarded<R>(f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    guarded_coded(f).map_err(|(_, m)| m)
}

/// [`guarded`], with the SQLSTATE of an ERROR (`ERRCODE_INTERNAL_ERROR` for `f`'s own `Err`
/// and for a Rust panic).
pub(crate) fn guarded_coded<R>(
    f: impl FnOnce() -> Result<R, String>,
) -> Result<R, (PgSqlErrorCode, String)> {
    in_subtransaction(f, true)
}

/// Run `f` in a subtransaction that is rolled back whatever happens (what it changed is gone
/// afterwards, what it returns stays): `f`'s result, or the ERROR (with its SQLSTATE) or panic
/// that ended it.
pub(crate) fn rolled_back<R>(
    f: impl FnOnce() -> Result<R, String>,
) -> Result<R, (PgSqlErrorCode, String)> {
    in_subtransaction(f, false)
}

/// Run `f` in a subtransaction, released when `f` returns and `keep` (rolled back otherwise,
/// and on an ERROR or a panic).
fn in_subtransaction<R>(
    f: impl FnOnce() -> Result<R, String>,
    keep: bool,
) -> Result<R, (PgSqlErrorCode, String)> {
    // SAFETY: the subtransaction is begun here and released or rolled back on every path; the
    // memory context and resource owner are restored as PL/pgSQL does.
    unsafe {
        let context = pg_sys::CurrentMemoryContext;
        let owner = pg_sys::CurrentResourceOwner;
        pg_sys::BeginInternalSubTransaction(std::ptr::null());
        pg_sys::MemoryContextSwitchTo(context);
        PgTryBuilder::new(std::panic::AssertUnwindSafe(|| {
            let r = f();
            if keep {
                pg_sys::ReleaseCurrentSubTransaction();
            } else {
                pg_sys::MemoryContextSwitchTo(context);
                pg_sys::RollbackAndReleaseCurrentSubTransaction();
            }
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            r.map_err(|m| (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, m))
        }))
        .catch_others(|e| {
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::RollbackAndReleaseCurrentSubTransaction();
            pg_sys::MemoryContextSwitchTo(context);
            pg_sys::CurrentResourceOwner = owner;
            Err(match e {
                pg_sys::panic::CaughtError::PostgresError(r)
                | pg_sys::panic::CaughtError::ErrorReport(r) => {
                    (r.sql_error_code(), r.message().to_string())
                }
                other => (PgSqlErrorCode::ERRCODE_INTERNAL_ERROR, format!("{other:?}")),
            })
        })
        .execute()
    }
}

/// Raise an ERROR with `code` and `message`. Never returns.
pub(crate) fn fail(code: PgSqlErrorCode, message: impl AsRef<str>) -> ! {
    ereport!(ERROR, code, message.as_ref().to_string());
}

#[cfg(any(test, feature = "pg_test"))]
#[pg_schema]
mod tests {
    // Tests through SQL, as a user would call the functions (`cargo pgrx test pg15`).
    // `#[pg_schema]` needs an inline module; the tests live in files by subject.
    include!("tests/common.rs");
    include!("tests/explorer.rs");
    include!("tests/analysis.rs");
    include!("tests/settings.rs");
    include!("tests/learning.rs");
    include!("tests/advice.rs");
    include!("tests/admin.rs");
    include!("tests/plugins.rs");
    include!("tests/explain18.rs");
    include!("tests/security.rs");
}

/// Required by `cargo pgrx test`.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![
            "shared_preload_libraries = 'pg_stat_statements,ruvector_dag'",
            "ruvector.dag_background_interval_ms = 3600000",
            // The tests run learning cycles themselves (ruvector_dag_learn()), in transactions
            // a background learner would race.
            "ruvector.dag_database = '!pgrx_tests'",
            // Each test runs in one transaction, whose data no background explorer can see:
            // the tests exercise the policy in the user's statement (exploring there is off by
            // default); scripts/explorer.sh tests the explorer on a real server.
            "ruvector.dag_foreground_exploration = on",
        ]
    }
}
