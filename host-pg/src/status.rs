//! `ruvector_dag_status()`: what the extension is doing, as key / value rows.

use pgrx::prelude::*;

use crate::{guc, scope};

/// One row per fact: mode, whether it is enabled, the enabled tables, the arms, the attention
/// kind, and the core configuration the settings imply (validated by the core).
#[pg_extern(volatile, parallel_unsafe)]
fn ruvector_dag_status() -> TableIterator<'static, (name!(key, String), name!(value, String))> {
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut put = |k: &str, v: String| rows.push((k.to_string(), v));
    put("mode", guc::MODE.get().name().to_string());
    put(
        "neural_dag_enabled",
        guc::NEURAL_DAG_ENABLED.get().to_string(),
    );
    put("enabled_tables", scope::enabled_count().to_string());
    match guc::arms() {
        Ok(arms) => {
            put("arms", arms.len().to_string());
            put(
                "arm_names",
                arms.iter()
                    .map(|a| a.0.as_str())
                    .collect::<Vec<_>>()
                    .join(" | "),
            );
        }
        Err(e) => put("arms", format!("invalid: {e}")),
    }
    put(
        "attention_type",
        guc::ATTENTION_TYPE.get().kind().name().to_string(),
    );
    put(
        "config",
        match guc::core_config().validate() {
            Ok(()) => "valid".to_string(),
            Err(e) => format!("invalid: {e}"),
        },
    );
    put("is_admin", scope::is_admin().to_string());
    put("version", env!("CARGO_PKG_VERSION").to_string());
    TableIterator::new(rows)
}
