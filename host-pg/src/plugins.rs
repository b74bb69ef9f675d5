//! Attention plugins inside PostgreSQL: the registry (`ruvector_dag.attention_plugins`), the
//! administrative functions that change it, `ruvector_dag_plugins()`, running a plugin for
//! `ruvector_attention_scores(query, 'plugin:<name>')`, and the plugin the planner path's
//! attention selector may pick (`ruvector.dag_attention_type = 'plugin:<name>'`).
//!
//! In the planner path nothing a plugin does is an ERROR: a plugin that cannot be read or
//! fails is counted, logged once per session, and the statement's decision uses the key's
//! built-in kind instead; this backend then leaves the plugin alone until its registration
//! changes (a plugin that runs out of fuel would otherwise cost every statement its fuel).
//!
//! Each backend makes its sandbox (a wasmtime engine without signal handlers) the first time it
//! needs one, under the `ruvector.dag_plugin_*` limits; modules are compiled once per backend
//! and cached by sha256, so a plugin survives a restart by being compiled again from the stored
//! bytes. Nothing a plugin does can take the backend down: every failure is an ERROR naming the
//! plugin (counted, with its message, in `ruvector_dag_plugins()`), and the next statement runs.

use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

use pgrx::prelude::*;
use pgrx::{register_xact_callback, PgXactCallbackEvent};
use ruvector_dag_core::{
    AttentionContext, AttentionKind, AttentionMap, DagAttention, NeuralDagError, PlanDag, PluginId,
};
use ruvector_dag_wasm::{Limits, Plugin, Sandbox};

use crate::{fail, guc, scope, shared};

/// The prefix that names a plugin where an attention kind is expected.
pub const PREFIX: &str = "plugin:";

thread_local! {
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
    /// Plugins this backend compiled, by name (checked against the registry's sha256 per use).
    static LOADED: RefCell<HashMap<String, Plugin>> = RefCell::new(HashMap::new());
    /// The plugin `ruvector.dag_attention_type` names, as the planner path holds it.
    static PLANNER: RefCell<Option<PlannerSlot>> = const { RefCell::new(None) };
}

/// A registered plugin as the planner path holds it: its bytes are read once per registry
/// change and compiled the first time the attention selector picks it.
struct PlannerPlugin {
    name: String,
    sha256: String,
    id: PluginId,
    wasm: Vec<u8>,
}

/// This backend's view of the planner's plugin.
struct PlannerSlot {
    name: String,
    /// [`shared::plugins_version`] when it was read.
    version: u64,
    /// The plugin, or why it cannot be used.
    plugin: Result<Arc<PlannerPlugin>, String>,
    /// Why it is not used again in this session (it failed).
    failed: Option<String>,
    /// Whether `failed` was handed to the caller to report.
    reported: bool,
}

/// The limits from the `ruvector.dag_plugin_*` settings.
pub fn limits() -> Limits {
    Limits {
        fuel: guc::PLUGIN_FUEL.get() as u64,
        memory_bytes: (guc::PLUGIN_MEMORY_MB.get().max(1) as usize) << 20,
        stack_bytes: (guc::PLUGIN_STACK_KB.get().max(16) as usize) << 10,
        output_bytes: (guc::PLUGIN_OUTPUT_KB.get().max(1) as usize) << 10,
        module_bytes: (guc::PLUGIN_MODULE_KB.get().max(1) as usize) << 10,
    }
}

/// Run `f` on this backend's sandbox, made (or given new limits) first; Err when it cannot
/// start under the current limits.
fn try_with_sandbox<R>(f: impl FnOnce(&mut Sandbox) -> R) -> Result<R, String> {
    let limits = limits();
    SANDBOX
        .with_borrow_mut(|slot| {
            match slot {
                Some(sb) if sb.limits() == limits => {}
                Some(sb) => sb.set_limits(limits)?,
                None => *slot = Some(Sandbox::new(limits)?),
            }
            Ok(f(slot.as_mut().expect("made above")))
        })
        .map_err(|e: String| format!("the plugin sandbox cannot start: {e}"))
}

fn with_sandbox<R>(f: impl FnOnce(&mut Sandbox) -> R) -> R {
    try_with_sandbox(f).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: {e}"),
        )
    })
}

/// The first column of the first row of `sql`, None when there is no row (or it is NULL).
fn first<T: FromDatum + IntoDatum>(
    sql: &str,
    args: &[pgrx::datum::DatumWithOid<'_>],
) -> Result<Option<T>, pgrx::spi::Error> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, Some(1), args)?;
        if table.is_empty() {
            Ok(None)
        } else {
            table.first().get_one()
        }
    })
}

/// Why `name` cannot name a plugin (None when it can): lower-case letters, digits and `_`,
/// starting with a letter, at most 63.
pub fn name_error(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    (!ok).then(|| format!(
        "plugin name {name:?} is not valid: use lower-case letters, digits and _, starting with a letter, at most 63"
    ))
}

fn check_name(name: &str) {
    if let Some(e) = name_error(name) {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: {e}"),
        );
    }
}

fn registered_names() -> Vec<String> {
    Spi::connect(|client| {
        let rows = client.select(
            "SELECT name FROM ruvector_dag.attention_plugins ORDER BY name",
            None,
            &[],
        )?;
        let mut names = Vec::new();
        for row in rows {
            if let Some(n) = row.get::<String>(1)? {
                names.push(n);
            }
        }
        Ok::<_, pgrx::spi::Error>(names)
    })
    .unwrap_or_default()
}

fn not_registered(name: &str) -> ! {
    let names = registered_names();
    let known = if names.is_empty() {
        "none is registered".to_string()
    } else {
        format!("registered: {}", names.join(", "))
    };
    fail(
        PgSqlErrorCode::ERRCODE_UNDEFINED_OBJECT,
        format!("ruvector_dag: no attention plugin named '{name}' ({known}); ruvector_dag_register_attention(name, wasm) adds one"),
    )
}

/// The plugin registered as `name`, compiled (from this backend's cache when its bytes did not
/// change).
pub fn plugin(name: &str) -> Plugin {
    check_name(name);
    let sha: Option<String> = first(
        "SELECT sha256 FROM ruvector_dag.attention_plugins WHERE name = $1",
        &[name.into()],
    )
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag: {e}"),
        )
    });
    let Some(sha) = sha else { not_registered(name) };
    if let Some(p) = LOADED.with_borrow(|m| m.get(name).filter(|p| p.sha256() == sha).cloned()) {
        return p;
    }
    let wasm: Option<Vec<u8>> = first(
        "SELECT wasm FROM ruvector_dag.attention_plugins WHERE name = $1",
        &[name.into()],
    )
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag: {e}"),
        )
    });
    let Some(wasm) = wasm else {
        not_registered(name)
    };
    let loaded = with_sandbox(|sb| sb.load(name, &wasm));
    match loaded {
        Ok(p) => {
            LOADED.with_borrow_mut(|m| m.insert(name.to_string(), p.clone()));
            p
        }
        Err(e) => {
            let msg = e.to_string();
            shared::count_plugin_call(crate::database(), name, Some(&msg));
            fail(
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                format!("ruvector_dag: {msg}"),
            )
        }
    }
}

/// Weights of plugin `name` over `dag` (validated, summing to 1). A failure is counted and
/// raised as an ERROR naming the plugin.
pub fn attend(name: &str, dag: &PlanDag) -> Vec<f32> {
    let plugin = plugin(name);
    let cfg = guc::attention_config();
    let result = with_sandbox(|sb| sb.attend(&plugin, dag, &AttentionContext::default(), &cfg));
    match result {
        Ok(run) => {
            shared::count_plugin_call(crate::database(), name, None);
            run.weights
        }
        Err(e) => {
            let msg = e.to_string();
            shared::count_plugin_call(crate::database(), name, Some(&msg));
            fail(
                PgSqlErrorCode::ERRCODE_EXTERNAL_ROUTINE_EXCEPTION,
                format!("ruvector_dag: {msg}"),
            )
        }
    }
}

/// Register (or replace) attention plugin `name` from the bytes of its wasm module. The module
/// is checked first (size, imports, exports, ABI version) under the current limits; a module
/// that fails is not stored and the ERROR says why. Registering the same bytes again changes
/// nothing. Returns the module's sha256. Administrators only.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_register_attention(name: &str, wasm: &[u8]) -> String {
    scope::require_admin("ruvector_dag_register_attention");
    crate::require_primary("ruvector_dag_register_attention");
    check_name(name);
    let plugin = with_sandbox(|sb| sb.load(name, wasm)).unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag_register_attention: {e}"),
        )
    });
    let sha = plugin.sha256().to_string();
    let changed: Option<String> = first(
        "INSERT INTO ruvector_dag.attention_plugins AS p (name, wasm, sha256, bytes)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (name) DO UPDATE
            SET wasm = excluded.wasm, sha256 = excluded.sha256, bytes = excluded.bytes,
                registered_at = now(), registered_by = current_user
          WHERE p.sha256 IS DISTINCT FROM excluded.sha256
         RETURNING name",
        &[
            name.into(),
            wasm.into(),
            sha.clone().into(),
            (wasm.len() as i32).into(),
        ],
    )
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_register_attention: {e}"),
        )
    });
    if changed.is_some() {
        shared::forget_plugin(crate::database(), name);
        LOADED.with_borrow_mut(|m| m.insert(name.to_string(), plugin));
        registry_changed();
    }
    sha
}

/// Remove attention plugin `name`. Returns the sha256 of the module removed. Administrators
/// only.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_unregister_attention(name: &str) -> String {
    scope::require_admin("ruvector_dag_unregister_attention");
    crate::require_primary("ruvector_dag_unregister_attention");
    check_name(name);
    let removed: Option<String> = first(
        "DELETE FROM ruvector_dag.attention_plugins WHERE name = $1 RETURNING sha256",
        &[name.into()],
    )
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_unregister_attention: {e}"),
        )
    });
    let Some(sha) = removed else {
        not_registered(name)
    };
    shared::forget_plugin(crate::database(), name);
    LOADED.with_borrow_mut(|m| m.remove(name));
    registry_changed();
    sha
}

/// The registry changed in this transaction: this backend reads it again at once, the others
/// after commit.
fn registry_changed() {
    PLANNER.with_borrow_mut(|p| *p = None);
    register_xact_callback(PgXactCallbackEvent::Commit, shared::bump_plugins);
    register_xact_callback(PgXactCallbackEvent::Abort, || {
        PLANNER.with_borrow_mut(|p| *p = None)
    });
}

/// What the planner path should do with the plugin `ruvector.dag_attention_type` names.
pub enum ForPlanner {
    /// Attach it to the optimizer: the attention selector may pick it.
    Attach(PluginId, Box<dyn DagAttention + Send + Sync>),
    /// It cannot be used: why (to report, once per registry change).
    Failed(String),
    /// It failed before in this session (already reported): leave it alone.
    Off,
}

/// The plugin `name` for the planner path. Its registration is read (in a subtransaction: an
/// ERROR there becomes `Failed`) when this backend has not read it since the registry last
/// changed.
pub fn for_planner(name: &str) -> ForPlanner {
    let version = shared::plugins_version();
    let fresh = PLANNER.with_borrow(|p| {
        p.as_ref()
            .is_some_and(|p| p.name == name && p.version == version)
    });
    if !fresh {
        let read = {
            let _busy = crate::hooks::Busy::enter();
            crate::guarded(|| registration(name))
        };
        let plugin = read.and_then(|(sha256, wasm)| {
            let id = PluginId::from_sha256_hex(&sha256).ok_or_else(|| {
                format!("attention plugin '{name}': stored sha256 {sha256:?} is not one")
            })?;
            Ok(Arc::new(PlannerPlugin {
                name: name.to_string(),
                sha256,
                id,
                wasm,
            }))
        });
        let failed = plugin.as_ref().err().cloned();
        PLANNER.with_borrow_mut(|p| {
            *p = Some(PlannerSlot {
                name: name.to_string(),
                version,
                plugin,
                failed: failed.clone(),
                reported: true,
            })
        });
        if let Some(e) = failed {
            return ForPlanner::Failed(e);
        }
    }
    // Another backend saw it fail while planning: leave it alone here too (shown in status).
    if shared::plugin_planner_off(crate::database(), name) {
        PLANNER.with_borrow_mut(|p| {
            if let Some(p) = p.as_mut().filter(|p| p.failed.is_none()) {
                let (_, _, last) = shared::plugin_stats(crate::database(), name);
                p.failed = Some(format!(
                    "it failed while planning in another session{}; register it again to retry",
                    last.map_or_else(String::new, |e| format!(" ({e})"))
                ));
                p.reported = true;
            }
        });
    }
    PLANNER.with_borrow(|p| match p.as_ref() {
        Some(PlannerSlot {
            failed: None,
            plugin: Ok(pp),
            ..
        }) => ForPlanner::Attach(pp.id, Box::new(PlannerAttention(pp.clone()))),
        _ => ForPlanner::Off,
    })
}

/// `(sha256, wasm)` of plugin `name` from the registry; Err when it is not registered.
fn registration(name: &str) -> Result<(String, Vec<u8>), String> {
    let row = Spi::connect(|client| {
        let rows = client.select(
            "SELECT sha256, wasm FROM ruvector_dag.attention_plugins WHERE name = $1",
            Some(1),
            &[name.into()],
        )?;
        match rows.into_iter().next() {
            Some(row) => Ok::<_, pgrx::spi::Error>(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                row.get::<Vec<u8>>(2)?.unwrap_or_default(),
            ))),
            None => Ok(None),
        }
    })
    .map_err(|e| format!("attention plugin '{name}': reading the registry: {e}"))?;
    row.ok_or_else(|| {
        format!("no attention plugin named '{name}' is registered (ruvector.dag_attention_type names it)")
    })
}

/// The name of the planner's plugin `id` (for EXPLAIN), when this backend holds it.
pub fn planner_name(id: PluginId) -> Option<String> {
    PLANNER.with_borrow(|p| {
        p.as_ref()
            .and_then(|p| p.plugin.as_ref().ok())
            .filter(|pp| pp.id == id)
            .map(|pp| pp.name.clone())
    })
}

/// The planner's plugin in this backend, for `ruvector_dag_status()`: `name (sha256 prefix)`
/// and why it is not used, if it is not; None when none was asked for.
pub fn planner_status() -> Option<(String, Option<String>)> {
    PLANNER.with_borrow(|p| {
        p.as_ref().map(|p| {
            let what = match &p.plugin {
                Ok(pp) => format!(
                    "{} (sha256 {}...)",
                    pp.name,
                    &pp.sha256[..16.min(pp.sha256.len())]
                ),
                Err(_) => p.name.clone(),
            };
            (what, p.failed.clone())
        })
    })
}

/// Stop using the planner's plugin, in this backend and (through shared memory) in every
/// other, until it is registered again (it failed: `why`).
fn planner_failed(why: &str) {
    PLANNER.with_borrow_mut(|p| {
        if let Some(p) = p.as_mut() {
            shared::set_plugin_planner_off(crate::database(), &p.name);
            if p.failed.is_none() {
                p.failed = Some(why.to_string());
                p.reported = false;
            }
        }
    });
}

/// The planner's plugin failure not yet reported (once: later calls return None).
pub fn unreported_failure() -> Option<String> {
    PLANNER.with_borrow_mut(|p| {
        let p = p.as_mut()?;
        if p.reported {
            return None;
        }
        p.reported = true;
        p.failed.clone()
    })
}

/// The planner's plugin as an attention mechanism the optimizer runs.
struct PlannerAttention(Arc<PlannerPlugin>);

impl PlannerAttention {
    fn weights(&self, dag: &PlanDag, ctx: &AttentionContext<'_>) -> Result<Vec<f32>, String> {
        let p = &self.0;
        let cfg = guc::attention_config();
        try_with_sandbox(|sb| {
            let cached =
                LOADED.with_borrow(|m| m.get(&p.name).filter(|l| l.sha256() == p.sha256).cloned());
            let plugin = match cached {
                Some(l) => l,
                None => {
                    let l = sb.load(&p.name, &p.wasm).map_err(|e| e.to_string())?;
                    LOADED.with_borrow_mut(|m| m.insert(p.name.clone(), l.clone()));
                    l
                }
            };
            sb.attend(&plugin, dag, ctx, &cfg)
                .map(|run| run.weights)
                .map_err(|e| e.to_string())
        })?
    }
}

impl DagAttention for PlannerAttention {
    fn kind(&self) -> AttentionKind {
        AttentionKind::Plugin(self.0.id)
    }

    fn attend(
        &self,
        dag: &PlanDag,
        ctx: &AttentionContext<'_>,
    ) -> ruvector_dag_core::Result<AttentionMap> {
        let result = self
            .weights(dag, ctx)
            .and_then(|w| AttentionMap::from_weights(self.kind(), w).map_err(|e| e.to_string()));
        match &result {
            Ok(_) => shared::count_plugin_call(crate::database(), &self.0.name, None),
            Err(e) => {
                shared::count_plugin_call(crate::database(), &self.0.name, Some(e));
                planner_failed(e);
            }
        }
        result.map_err(NeuralDagError::AttentionComputationFailed)
    }
}

/// The registered attention plugins, with their calls, failures and last error since the
/// server started (counted across backends; without `shared_preload_libraries` they stay 0).
#[pg_extern(volatile, parallel_safe)]
fn ruvector_dag_plugins() -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(sha256, String),
        name!(bytes, i32),
        name!(registered_at, pgrx::datum::TimestampWithTimeZone),
        name!(registered_by, String),
        name!(calls, i64),
        name!(failures, i64),
        name!(last_error, Option<String>),
    ),
> {
    let rows = Spi::connect(|client| {
        let rows = client.select(
            "SELECT name, sha256, bytes, registered_at, registered_by::text
               FROM ruvector_dag.attention_plugins ORDER BY name",
            None,
            &[],
        )?;
        let mut out = Vec::new();
        for row in rows {
            let name: String = row.get(1)?.unwrap_or_default();
            let (calls, failures, last_error) = shared::plugin_stats(crate::database(), &name);
            out.push((
                name,
                row.get::<String>(2)?.unwrap_or_default(),
                row.get::<i32>(3)?.unwrap_or_default(),
                row.get::<pgrx::datum::TimestampWithTimeZone>(4)?
                    .expect("registered_at is NOT NULL"),
                row.get::<String>(5)?.unwrap_or_default(),
                calls,
                failures,
                last_error,
            ));
        }
        Ok::<_, pgrx::spi::Error>(out)
    })
    .unwrap_or_else(|e| {
        fail(
            PgSqlErrorCode::ERRCODE_INTERNAL_ERROR,
            format!("ruvector_dag_plugins: {e}"),
        )
    });
    TableIterator::new(rows)
}
