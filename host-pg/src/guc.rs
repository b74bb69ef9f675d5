//! The `ruvector.*` settings. PostgreSQL validates ranges and enum values itself, so a wrong
//! value is an ERROR naming the setting and the allowed values, and the old value stays.

use std::cell::RefCell;
use std::ffi::{CStr, CString};
use std::rc::Rc;

use pgrx::guc::{GucContext, GucFlags, GucRegistry, GucSetting};
use pgrx::prelude::*;
use ruvector_dag_core::learning::NeuralDagConfig;
use ruvector_dag_core::{AttentionConfig, AttentionKind};

/// `ruvector.dag_mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PostgresGucEnum)]
pub enum Mode {
    /// Do nothing.
    #[name = c"off"]
    Off,
    /// Record and show advice in EXPLAIN; change no plan.
    #[name = c"observe"]
    Observe,
    /// Record, apply, explore.
    #[name = c"learn"]
    Learn,
    /// Apply what was learned; record nothing.
    #[name = c"frozen"]
    Frozen,
}

impl Mode {
    /// The name PostgreSQL shows.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Observe => "observe",
            Mode::Learn => "learn",
            Mode::Frozen => "frozen",
        }
    }
}

/// What `ruvector.dag_attention_type` names: a built-in kind, or a registered plugin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttentionSetting {
    /// One of the core's kinds.
    Kind(AttentionKind),
    /// `plugin:<name>`: a plugin registered with `ruvector_dag_register_attention`.
    Plugin(String),
}

impl AttentionSetting {
    /// The built-in kind that keys patterns and BTSP memory under this setting: the kind
    /// itself, or topological (the default) for a plugin, which a key must never depend on
    /// (a plugin can fail, and a key that changes space when it does matches nothing).
    pub fn key_kind(&self) -> AttentionKind {
        match self {
            AttentionSetting::Kind(k) => *k,
            AttentionSetting::Plugin(_) => AttentionKind::Topological,
        }
    }
}

impl std::fmt::Display for AttentionSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AttentionSetting::Kind(k) => f.write_str(k.name()),
            AttentionSetting::Plugin(name) => write!(f, "{}{name}", crate::plugins::PREFIX),
        }
    }
}

/// Parse an attention kind as SQL spells it: a built-in name or `plugin:<name>`. The error
/// names the valid values.
pub fn parse_attention(text: &str) -> Result<AttentionSetting, String> {
    let text = text.trim();
    if let Some(name) = text.strip_prefix(crate::plugins::PREFIX) {
        let name = name.trim();
        return match crate::plugins::name_error(name) {
            None => Ok(AttentionSetting::Plugin(name.to_string())),
            Some(e) => Err(e),
        };
    }
    AttentionKind::from_name(text)
        .map(AttentionSetting::Kind)
        .map_err(|e| {
            let why = match e {
                ruvector_dag_core::NeuralDagError::InvalidConfig(m) => m,
                other => other.to_string(),
            };
            format!("{why}, or plugin:<name> for a registered attention plugin")
        })
}

thread_local! {
    /// The last `ruvector.dag_attention_type` text and what it parsed to: the planner hook asks
    /// for it on every in-scope statement, and it rarely changes.
    static ATTENTION_CACHE: RefCell<Option<(String, AttentionSetting)>> =
        const { RefCell::new(None) };
}

/// The current `ruvector.dag_attention_type` (checked when it was set; parsed once per text).
pub fn attention_setting() -> AttentionSetting {
    with_text(&ATTENTION_TYPE, |bytes| {
        ATTENTION_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            if c.as_ref().is_none_or(|(t, _)| t.as_bytes() != bytes) {
                let text = String::from_utf8_lossy(bytes).into_owned();
                let parsed = parse_attention(&text)
                    .unwrap_or(AttentionSetting::Kind(AttentionKind::Topological));
                *c = Some((text, parsed));
            }
            c.as_ref().expect("just set").1.clone()
        })
    })
}

/// The default arm list: each arm is a `;`-separated set of `name=value` planner settings,
/// arms separated by `|`; the first arm is the default (no change).
pub const DEFAULT_ARMS: &CStr = c"default|enable_nestloop=off|enable_hashjoin=off|enable_mergejoin=off|enable_seqscan=off|enable_indexscan=off;enable_bitmapscan=off|enable_nestloop=off;enable_mergejoin=off|max_parallel_workers_per_gather=0";

pub static NEURAL_DAG_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static MODE: GucSetting<Mode> = GucSetting::<Mode>::new(Mode::Observe);
pub static LEARNING_RATE: GucSetting<f64> = GucSetting::<f64>::new(0.002);
pub static PATTERN_CLUSTERS: GucSetting<i32> = GucSetting::<i32>::new(100);
pub static QUALITY_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.3);
pub static ATTENTION_TYPE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"topological"));
pub static ATTENTION_EXPLORATION: GucSetting<f64> = GucSetting::<f64>::new(0.1);
pub static EWC_LAMBDA: GucSetting<f64> = GucSetting::<f64>::new(2000.0);
pub static MINCUT_ENABLED: GucSetting<bool> = GucSetting::<bool>::new(true);
pub static MINCUT_THRESHOLD: GucSetting<f64> = GucSetting::<f64>::new(0.5);
pub static ARMS: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(DEFAULT_ARMS));
pub static SAMPLE_RATE: GucSetting<f64> = GucSetting::<f64>::new(1.0);
pub static NODE_TIMING_RATE: GucSetting<f64> = GucSetting::<f64>::new(0.1);
pub static REPLAN_MIN_COST: GucSetting<f64> = GucSetting::<f64>::new(1000.0);
pub static EXPLORE_MIN_MS: GucSetting<f64> = GucSetting::<f64>::new(10.0);
pub static EXPLORE_SHARE: GucSetting<f64> = GucSetting::<f64>::new(0.25);
/// 0: the explorer competes for the CPU as a user's backend does (see `explorer::priority`).
pub static EXPLORER_NICE: GucSetting<i32> = GucSetting::<i32>::new(0);
pub static FOREGROUND_EXPLORATION: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Off: the planner hook's phases are not timed (see `hooks::phases`).
pub static PHASE_TIMING: GucSetting<bool> = GucSetting::<bool>::new(false);
pub static HEALING_REPAIR: GucSetting<bool> = GucSetting::<bool>::new(false);
/// Empty: every database that uses the extension learns (see `worker`).
pub static DATABASE: GucSetting<Option<CString>> = GucSetting::<Option<CString>>::new(Some(c""));
pub static BACKGROUND_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(60_000);
pub static RING_SIZE_MB: GucSetting<i32> = GucSetting::<i32>::new(4);
pub static MODEL_CACHE_MB: GucSetting<i32> = GucSetting::<i32>::new(8);
pub static SHARED_SHAPES: GucSetting<i32> = GucSetting::<i32>::new(10_240);
/// `ruvector.dag_work_mem_max`, kB: memory that arms raising `work_mem` may add at once, over
/// the whole server ([`crate::hooks::memory`]).
pub static WORK_MEM_MAX: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
// The plugin sandbox's limits (defaults: ruvector_dag_wasm::Limits::default()).
pub static PLUGIN_FUEL: GucSetting<f64> = GucSetting::<f64>::new(50_000_000.0);
pub static PLUGIN_MEMORY_MB: GucSetting<i32> = GucSetting::<i32>::new(64);
pub static PLUGIN_STACK_KB: GucSetting<i32> = GucSetting::<i32>::new(512);
pub static PLUGIN_OUTPUT_KB: GucSetting<i32> = GucSetting::<i32>::new(1024);
pub static PLUGIN_MODULE_KB: GucSetting<i32> = GucSetting::<i32>::new(16 * 1024);

/// Fewest shape slots of the shared evidence book (one per partition).
const PARTITIONS_MIN: i32 = crate::book::PARTITIONS as i32;

/// Register every setting (called from `_PG_init`).
pub fn register() {
    register_scope();
    register_learning();
    register_server();
    register_plugins();
}

fn user() -> GucContext {
    GucContext::Userset
}

fn suset() -> GucContext {
    GucContext::Suset
}

fn none() -> GucFlags {
    GucFlags::default()
}

/// What the planner path does, and to which statements: mode, arms, sampling, thresholds.
fn register_scope() {
    GucRegistry::define_bool_guc(
        c"ruvector.neural_dag_enabled",
        c"Whether ruvector_dag looks at queries at all.",
        c"Off: the planner hook passes every query straight through.",
        &NEURAL_DAG_ENABLED,
        user(),
        none(),
    );
    GucRegistry::define_enum_guc(
        c"ruvector.dag_mode",
        c"off | observe (record, advise in EXPLAIN) | learn (record, apply, explore) | frozen (apply only).",
        c"Only statements on tables enabled with ruvector_enable_neural_dag are in scope.",
        &MODE,
        user(),
        none(),
    );
    // SAFETY: the check hook is #[pg_guard]ed.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
        c"ruvector.dag_arms",
        c"Planner configurations the optimizer chooses among: arms separated by |, settings by ;.",
        c"The first arm must be 'default'. Example: default|enable_nestloop=off|max_parallel_workers_per_gather=0",
        &ARMS,
        suset(),
        none(),
        Some(check_arms),
        None,
        None,
    );
    }
    GucRegistry::define_float_guc(
        c"ruvector.dag_sample_rate",
        c"Share of in-scope statements whose execution is timed and learned from.",
        c"The others are decided on but not observed.",
        &SAMPLE_RATE,
        0.0,
        1.0,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_node_timing_rate",
        c"Share of observed statements executed with per-node timing.",
        c"Per-node timing reads the clock for every row of every plan node (up to 30% on TPC-H q17); the others are timed as a whole. Runs that explore or trial a plan are never timed per node.",
        &NODE_TIMING_RATE,
        0.0,
        1.0,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_replan_min_cost",
        c"Least estimated cost of the default plan for a statement to be considered.",
        c"Cheaper statements are left alone (neither decided on, re-planned nor observed): re-planning them costs more than it can save.",
        &REPLAN_MIN_COST,
        0.0,
        1e12,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_explore_min_ms",
        c"Least measured time of a query shape's default plan for its candidate plans to be explored (ms).",
        c"Faster statements keep verified choices but are never explored: planning their candidates costs more than a plan could save.",
        &EXPLORE_MIN_MS,
        0.0,
        3.6e6,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_explore_share",
        c"Share of one core the background explorer may use to verify candidate plans off the users' path (0 turns it off).",
        c"After a run of t ms it waits t x (1 - share) / share; it also waits while as many client backends are active as there are cores, and while ruvector_dag_explorer_pause() holds.",
        &EXPLORE_SHARE,
        0.0,
        1.0,
        GucContext::Sighup,
        none(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_explorer_nice",
        c"Scheduling priority (nice, 0-19) of the background explorer and the parallel workers of its statements; 0, the default, is a user's.",
        c"Above 0 the explorer also sets its autogroup's nice, so it takes only the CPU users leave: on a busy server its runs then wait for a CPU more often, are not evidence, and it verifies more slowly. A change restarts the explorer.",
        &EXPLORER_NICE,
        0,
        19,
        GucContext::Sighup,
        none(),
    );
    GucRegistry::define_bool_guc(
        c"ruvector.dag_foreground_exploration",
        c"Whether a statement the background explorer cannot run (not a plain read-only SELECT, a volatile function, a generic plan) may explore untried plans in the user's own statement, within ruvector.dag_attention_exploration's budget.",
        c"Off (the default): such statements get verified plans and the default plan only, and no user's statement runs an untried plan. With ruvector.dag_explore_share = 0 (no explorer) this decides whether learn mode explores at all.",
        &FOREGROUND_EXPLORATION,
        suset(),
        none(),
    );
    GucRegistry::define_bool_guc(
        c"ruvector.dag_phase_timing",
        c"Whether the planner hook times its phases in this session (ruvector_dag_status(): backend_phase_us).",
        c"Off (the default): nothing is timed. On: two clock reads per phase and two getrusage calls per in-scope planning, for measuring where the hook's time goes.",
        &PHASE_TIMING,
        user(),
        none(),
    );
}

/// The learning engine's tunables (the seed's settings): rates, patterns, attention, EWC++, min cut.
fn register_learning() {
    GucRegistry::define_float_guc(
        c"ruvector.dag_learning_rate",
        c"MicroLoRA learning rate of the cost model (one step per observed query).",
        c"The background BaseLoRA rate is half of it, as in the seed's defaults.",
        &LEARNING_RATE,
        0.0,
        1.0,
        suset(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_pattern_clusters",
        c"Most patterns K-means++ extracts per background cycle.",
        c"",
        &PATTERN_CLUSTERS,
        1,
        100,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_quality_threshold",
        c"Least quality (best latency / this latency) a trajectory needs to found a pattern.",
        c"",
        &QUALITY_THRESHOLD,
        0.0,
        1.0,
        suset(),
        none(),
    );
    // SAFETY: the check hook is #[pg_guard]ed.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"ruvector.dag_attention_type",
            c"Attention kind of the analysis functions and of the learned state's key; plugin:<name> also lets the attention selector pick that plugin.",
            c"topological, causal_cone, critical_path, mincut_gated, hierarchical_lorentz, parallel_branch, temporal_btsp, ensemble, or plugin:<name> (the key then stays topological).",
            &ATTENTION_TYPE,
            user(),
            none(),
            Some(check_attention_type),
            None,
            None,
        );
    }
    GucRegistry::define_float_guc(
        c"ruvector.dag_attention_exploration",
        c"Exploration budget in learn mode: the share of the default plans' time that trying untried candidate plans may cost on top.",
        c"0.1: learning costs at most about 10% over stock PostgreSQL, plus half of what verified plans save; 0: apply only verified plans, never explore.",
        &ATTENTION_EXPLORATION,
        0.0,
        1.0,
        suset(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_ewc_lambda",
        c"EWC++ penalty strength protecting what the cost model learned before.",
        c"Raised by half at each detected task boundary, up to 7.5 times this value.",
        &EWC_LAMBDA,
        0.0,
        1e6,
        suset(),
        none(),
    );
    GucRegistry::define_bool_guc(
        c"ruvector.dag_mincut_enabled",
        c"Whether the attention selector may use the min-cut gated mechanism for the cost model's input.",
        c"",
        &MINCUT_ENABLED,
        user(),
        none(),
    );
    GucRegistry::define_float_guc(
        c"ruvector.dag_mincut_threshold",
        c"Share of the min-cut flow above which an operator counts as a bottleneck.",
        c"",
        &MINCUT_THRESHOLD,
        0.0,
        1.0,
        user(),
        none(),
    );
}

/// Server-wide: the background learner, the shared ring, self-healing repair.
fn register_server() {
    GucRegistry::define_bool_guc(
        c"ruvector.dag_healing_repair",
        c"Whether self-healing may REINDEX invalid indexes of enabled tables and create the extended statistics the background explorer verified (ruvector_dag_advice()).",
        c"Off: they are only reported by ruvector_dag_health() and ruvector_dag_advice().",
        &HEALING_REPAIR,
        suset(),
        none(),
    );
    GucRegistry::define_string_guc(
        c"ruvector.dag_database",
        c"Empty (the default): every database where ruvector_dag is used learns in the background, one learner worker each (at most 16). A list (comma-separated) restricts it to those databases; !name excludes one.",
        c"A database asks for its learner when a table is enabled there or an in-scope statement is planned (after a restart: the first one); the launcher starts it within 10 s, within max_worker_processes, and says in the log when it cannot.",
        &DATABASE,
        GucContext::Sighup,
        none(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_ring_size",
        c"Shared memory for trajectories waiting for the learner, in MiB (about 230 per MiB).",
        c"When it is full the oldest trajectories are dropped and counted (ruvector_dag_status: ring_dropped).",
        &RING_SIZE_MB,
        1,
        1024,
        GucContext::Postmaster,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_work_mem_max",
        c"Memory that plans under an arm raising work_mem or hash_mem_multiplier may add at once, over the whole server (0: such arms never raise it when they run).",
        c"A statement under such an arm takes its share when it starts (the raise times its sorts and hashes, times its parallel processes) and gives it back when it ends; when the rest is not enough it runs with the session's work_mem and its time is not taken as evidence (ruvector_dag_status: work_mem_*).",
        &WORK_MEM_MAX,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_model_cache",
        c"Shared memory for the learned model's snapshot, in MiB, split between 2 databases (0: off).",
        c"A session loads the model from here instead of reading ruvector_dag.learned_state; a model larger than its half is read from the table (ruvector_dag_status: model_cache).",
        &MODEL_CACHE_MB,
        0,
        1024,
        GucContext::Postmaster,
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_shared_shapes",
        c"Query shapes whose measured evidence every backend shares, in shared memory (about 1 KiB each, all databases).",
        c"At capacity the least recently used shape of a partition is dropped (ruvector_dag_status: shared_book_evicted); its evidence is measured again when it runs.",
        &SHARED_SHAPES,
        PARTITIONS_MIN,
        1 << 20,
        GucContext::Postmaster,
        GucFlags::empty(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_background_interval_ms",
        c"Period of the background worker's learning cycle, in milliseconds.",
        c"A cycle also starts early when a quarter of the trajectory ring is waiting.",
        &BACKGROUND_INTERVAL_MS,
        100,
        86_400_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
}

/// The plugin sandbox's limits (defaults: `ruvector_dag_wasm::Limits::default()`).
fn register_plugins() {
    GucRegistry::define_float_guc(
        c"ruvector.dag_plugin_fuel",
        c"Fuel per attention plugin call: about one unit per wasm instruction executed.",
        c"A plugin that runs out gets an ERROR naming it and this limit.",
        &PLUGIN_FUEL,
        1e4,
        1e10,
        suset(),
        none(),
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_plugin_memory",
        c"Largest linear memory of an attention plugin.",
        c"A memory.grow past it is refused and reported as the memory limit.",
        &PLUGIN_MEMORY_MB,
        1,
        4096,
        suset(),
        GucFlags::UNIT_MB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_plugin_stack",
        c"Largest wasm stack of an attention plugin.",
        c"Applies to plugins compiled after the change (each backend compiles again).",
        &PLUGIN_STACK_KB,
        16,
        8192,
        suset(),
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_plugin_output",
        c"Largest response of an attention plugin.",
        c"",
        &PLUGIN_OUTPUT_KB,
        1,
        262_144,
        suset(),
        GucFlags::UNIT_KB,
    );
    GucRegistry::define_int_guc(
        c"ruvector.dag_plugin_module_size",
        c"Largest attention plugin module ruvector_dag_register_attention accepts.",
        c"",
        &PLUGIN_MODULE_KB,
        1,
        262_144,
        suset(),
        GucFlags::UNIT_KB,
    );
}

/// A string setting's check hook body: `check` the new value; on `Err` the ERROR's detail
/// says why and the old value stays.
///
/// # Safety
/// `newval` is what PostgreSQL passes a string check hook.
unsafe fn check_string(
    newval: *mut *mut std::ffi::c_char,
    check: impl FnOnce(&str) -> Result<(), String>,
) -> bool {
    let text = if newval.is_null() || (*newval).is_null() {
        String::new()
    } else {
        CStr::from_ptr(*newval).to_string_lossy().into_owned()
    };
    match check(&text) {
        Ok(()) => true,
        Err(e) => {
            let detail = CString::new(e).unwrap_or_default();
            pg_sys::GUC_check_errdetail_string = pg_sys::pstrdup(detail.as_ptr());
            false
        }
    }
}

/// Refuse an unknown `ruvector.dag_attention_type` when it is set (the detail lists the valid
/// values). Whether a plugin of that name is registered is checked where it is used: settings
/// are read before any database is.
#[pg_guard]
unsafe extern "C-unwind" fn check_attention_type(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| parse_attention(text).map(|_| ()))
}

/// Refuse a malformed `ruvector.dag_arms` when it is set (the detail names the problem).
#[pg_guard]
unsafe extern "C-unwind" fn check_arms(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pg_sys::GucSource::Type,
) -> bool {
    check_string(newval, |text| {
        parse_arms(text).and_then(|arms| unknown_setting(&arms))
    })
}

/// `Err` names the first setting of an arm PostgreSQL does not know. Names with a dot belong to
/// extensions that may load later, so they are not checked here (a refusal when an arm is
/// applied falls back to the default plan).
fn unknown_setting(arms: &[Arm]) -> Result<(), String> {
    for (i, (name, settings)) in arms.iter().enumerate() {
        for (k, _) in settings.iter().filter(|(k, _)| !k.contains('.')) {
            let c = CString::new(k.as_str()).map_err(|e| e.to_string())?;
            // SAFETY: a catalog lookup by name; missing_ok returns NULL instead of raising.
            if unsafe { pg_sys::GetConfigOption(c.as_ptr(), true, false) }.is_null() {
                return Err(format!(
                    "ruvector.dag_arms: arm {i} '{name}': unknown setting '{k}'"
                ));
            }
        }
    }
    Ok(())
}

/// The attention parameters the settings imply.
pub fn attention_config() -> AttentionConfig {
    AttentionConfig {
        mincut_threshold: MINCUT_THRESHOLD.get() as f32,
        ..AttentionConfig::default()
    }
}

/// Whether this server is a standby (recovery in progress): nothing can be written, so
/// nothing is learned here.
pub fn standby() -> bool {
    // SAFETY: reads shared recovery state (a local flag once recovery has ended).
    unsafe { pg_sys::RecoveryInProgress() }
}

/// The mode in effect: `ruvector.dag_mode`, except on a standby, where learn works as frozen
/// (the primary's verified plans apply; nothing is explored). See also [`records`].
pub fn mode() -> Mode {
    match MODE.get() {
        Mode::Learn if standby() => Mode::Frozen,
        m => m,
    }
}

/// Whether executed statements become trajectories: in observe and learn mode, never on a
/// standby (no learner runs there and nothing could be written).
pub fn records() -> bool {
    matches!(MODE.get(), Mode::Observe | Mode::Learn) && !standby()
}

/// `ruvector.dag_mode` as the status shows it: with what a standby makes of it.
pub fn mode_shown() -> String {
    let set = MODE.get();
    if standby() && matches!(set, Mode::Learn | Mode::Observe) {
        format!(
            "{} (standby: ruvector.dag_mode is {}; nothing is recorded or learned here)",
            mode().name(),
            set.name()
        )
    } else {
        set.name().to_string()
    }
}

/// The core configuration the settings imply.
pub fn core_config() -> NeuralDagConfig {
    let lambda = EWC_LAMBDA.get() as f32;
    NeuralDagConfig {
        pattern_clusters: PATTERN_CLUSTERS.get() as usize,
        quality_threshold: QUALITY_THRESHOLD.get() as f32,
        default_attention: attention_setting().key_kind(),
        // Frozen applies verified plans only: no budget, so nothing is explored or tried.
        attention_exploration: if mode() == Mode::Frozen {
            0.0
        } else {
            ATTENTION_EXPLORATION.get() as f32
        },
        explore_min_ms: EXPLORE_MIN_MS.get() as f32,
        micro_lora_lr: LEARNING_RATE.get() as f32,
        base_lora_lr: LEARNING_RATE.get() as f32 / 2.0,
        ewc_lambda: lambda,
        ewc_max_lambda: lambda * 7.5,
        mincut_enabled: MINCUT_ENABLED.get(),
        background_interval_ms: BACKGROUND_INTERVAL_MS.get().max(100) as u64,
        attention: attention_config(),
        ..NeuralDagConfig::default()
    }
}

/// The arm list: `(name, [(setting, value)])`, the first being the default.
pub fn arms() -> Result<Vec<Arm>, String> {
    Ok(arms_shared()?.0.as_ref().clone())
}

/// One arm: its name and its `(setting, value)` pairs.
pub type Arm = (String, Vec<(String, String)>);

/// Parsed arms and their names joined by `|`, shared.
pub type ParsedArms = (Rc<Vec<Arm>>, Rc<str>);

thread_local! {
    /// The last `ruvector.dag_arms` text and what it parsed to: the planner hook asks for the
    /// arms on every in-scope statement, and the text rarely changes.
    static ARMS_CACHE: RefCell<Option<(String, Result<ParsedArms, String>)>> =
        const { RefCell::new(None) };
}

/// `f` of a string setting's current text, read in place (`GucSetting::get` copies it): the
/// planner hook reads some on every statement in scope.
fn with_text<R>(setting: &GucSetting<Option<CString>>, f: impl FnOnce(&[u8]) -> R) -> R {
    // SAFETY: the backend's current value of the setting, a NUL-terminated string or null; it
    // is only replaced by an assignment of the setting, which nothing in `f` makes.
    let raw = unsafe { *setting.as_ptr() };
    if raw.is_null() {
        f(b"")
    } else {
        f(unsafe { CStr::from_ptr(raw) }.to_bytes())
    }
}

/// The arm list (parsed once per distinct setting text) and its names joined by `|`.
pub fn arms_shared() -> Result<ParsedArms, String> {
    with_text(&ARMS, |bytes| {
        ARMS_CACHE.with(|c| {
            let mut c = c.borrow_mut();
            // Compared as bytes: no copy of the text on the statements' path.
            if c.as_ref().is_none_or(|(t, _)| t.as_bytes() != bytes) {
                let text = String::from_utf8_lossy(bytes).into_owned();
                let parsed = parse_arms(&text).map(|arms| {
                    let key: Rc<str> = arms
                        .iter()
                        .map(|a| a.0.as_str())
                        .collect::<Vec<_>>()
                        .join("|")
                        .into();
                    (Rc::new(arms), key)
                });
                *c = Some((text, parsed));
            }
            c.as_ref().expect("just set").1.clone()
        })
    })
}

/// Parse `ruvector.dag_arms`; the error names what is wrong.
pub fn parse_arms(text: &str) -> Result<Vec<Arm>, String> {
    let mut out = Vec::new();
    for (i, arm) in text.split('|').map(str::trim).enumerate() {
        if i == 0 {
            if arm != "default" {
                return Err(format!(
                    "ruvector.dag_arms: the first arm must be 'default', not '{arm}'"
                ));
            }
            out.push(("default".to_string(), Vec::new()));
            continue;
        }
        let mut settings = Vec::new();
        for kv in arm.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let Some((k, v)) = kv.split_once('=') else {
                return Err(format!(
                    "ruvector.dag_arms: arm {i} '{arm}': '{kv}' is not setting=value"
                ));
            };
            let (k, v) = (k.trim(), v.trim());
            if k.is_empty()
                || !k
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
                || v.is_empty()
            {
                return Err(format!(
                    "ruvector.dag_arms: arm {i} '{arm}': '{kv}' is not a valid setting=value"
                ));
            }
            settings.push((k.to_string(), v.to_string()));
        }
        if settings.is_empty() {
            return Err(format!("ruvector.dag_arms: arm {i} is empty"));
        }
        out.push((arm.to_string(), settings));
    }
    if out.len() > ruvector_dag_core::learning::reasoning_bank::MAX_ARMS {
        return Err(format!(
            "ruvector.dag_arms: {} arms, at most {}",
            out.len(),
            ruvector_dag_core::learning::reasoning_bank::MAX_ARMS
        ));
    }
    Ok(out)
}
