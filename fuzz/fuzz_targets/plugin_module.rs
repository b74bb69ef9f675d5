//! A plugin module: any bytes are refused with a PluginError naming the plugin, or load and
//! then run to weights or a PluginError, never a panic of the host.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::{AttentionConfig, AttentionContext};
use std::sync::{Mutex, OnceLock};

use ruvector_dag_wasm::{Limits, Sandbox};

/// One engine for the whole run, as in a backend (creating one per input would be most of the
/// time); its module cache is bounded.
static SANDBOX: OnceLock<Mutex<Sandbox>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let mut sandbox = SANDBOX
        .get_or_init(|| {
            let limits = Limits {
                fuel: 1_000_000,
                memory_bytes: 16 << 20,
                ..Limits::default()
            };
            Mutex::new(Sandbox::new(limits).expect("valid limits"))
        })
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match sandbox.load("fuzz", data) {
        Err(e) => assert!(e.to_string().starts_with("plugin 'fuzz' ")),
        Ok(plugin) => {
            let dag = random_plan(3, 9, SynthOptions::default());
            match sandbox.attend(
                &plugin,
                &dag,
                &AttentionContext::default(),
                &AttentionConfig::default(),
            ) {
                Ok(run) => assert_eq!(run.weights.len(), dag.len()),
                Err(e) => assert!(e.to_string().starts_with("plugin 'fuzz' ")),
            }
        }
    }
});
