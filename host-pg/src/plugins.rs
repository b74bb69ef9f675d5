//! Attention plugins inside PostgreSQL: the registry (`ruvector_dag.attention_plugins`), the
//! administrative functions that change it, `ruvector_dag_plugins()`, and running a plugin for
//! `ruvector_attention_scores(query, 'plugin:<name>')`.
//!
//! Each backend makes its sandbox (a wasmtime engine without signal handlers) the first time it
//! needs one, under the `ruvector.dag_plugin_*` limits; modules are compiled once per backend
//! and cached by sha256, so a plugin survives a restart by being compiled again from the stored
//! bytes. Nothing a plugin does can take the backend down: every failure is an ERROR naming the
//! plugin (counted, with its message, in `ruvector_dag_plugins()`), and the next statement runs.

use std::cell::RefCell;
use std::collections::HashMap;

use pgrx::prelude::*;
use ruvector_dag_core::{AttentionContext, PlanDag};
use ruvector_dag_wasm::{Limits, Plugin, Sandbox};

use crate::{fail, guc, scope, shared};

/// The prefix that names a plugin where an attention kind is expected.
pub const PREFIX: &str = "plugin:";

thread_local! {
    static SANDBOX: RefCell<Option<Sandbox>> = const { RefCell::new(None) };
    /// Plugins this backend compiled, by name (checked against the registry's sha256 per use).
    static LOADED: RefCell<HashMap<String, Plugin>> = RefCell::new(HashMap::new());
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

fn with_sandbox<R>(f: impl FnOnce(&mut Sandbox) -> R) -> R {
    let limits = limits();
    let ready = SANDBOX.with_borrow_mut(|slot| -> Result<(), String> {
        match slot {
            Some(sb) if sb.limits() == limits => Ok(()),
            Some(sb) => sb.set_limits(limits),
            None => {
                *slot = Some(Sandbox::new(limits)?);
                Ok(())
            }
        }
    });
    if let Err(e) = ready {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!("ruvector_dag: the plugin sandbox cannot start: {e}"),
        );
    }
    SANDBOX.with_borrow_mut(|slot| f(slot.as_mut().expect("made above")))
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

fn database() -> u32 {
    // SAFETY: MyDatabaseId is set for every backend connected to a database.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// Check a plugin name: lower-case letters, digits and `_`, starting with a letter, at most 63.
fn check_name(name: &str) {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        fail(
            PgSqlErrorCode::ERRCODE_INVALID_PARAMETER_VALUE,
            format!(
                "ruvector_dag: plugin name {name:?} is not valid: use lower-case letters, digits and _, starting with a letter, at most 63"
            ),
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
            shared::count_plugin_call(database(), name, Some(&msg));
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
            shared::count_plugin_call(database(), name, None);
            run.weights
        }
        Err(e) => {
            let msg = e.to_string();
            shared::count_plugin_call(database(), name, Some(&msg));
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
        shared::forget_plugin(database(), name);
        LOADED.with_borrow_mut(|m| m.insert(name.to_string(), plugin));
    }
    sha
}

/// Remove attention plugin `name`. Returns the sha256 of the module removed. Administrators
/// only.
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_unregister_attention(name: &str) -> String {
    scope::require_admin("ruvector_dag_unregister_attention");
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
    shared::forget_plugin(database(), name);
    LOADED.with_borrow_mut(|m| m.remove(name));
    sha
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
            let (calls, failures, last_error) = shared::plugin_stats(database(), &name);
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
