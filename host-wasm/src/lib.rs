//! `ruvector-dag-wasm`: runs user-supplied attention plugins in a wasmtime sandbox.
//!
//! A plugin is a wasm module speaking the ABI of [`ruvector_dag_core::plugin_abi`] (built with
//! `ruvector_dag_core::export_attention!`). Loading it ([`Sandbox::load`]) checks, before anything
//! runs: its size, that it is wasm, that it imports nothing (no WASI, no host functions), that it
//! exports exactly the ABI's functions with the ABI's types, and that it speaks this host's ABI
//! version. Modules are compiled once and cached by sha256.
//!
//! Every call ([`Sandbox::attend`]) runs under the [`Limits`], in the plugin's kept instance (a
//! fresh one after any failure): fuel (a deterministic bound on the instructions it may
//! execute), linear memory (a refused `memory.grow` is reported as the memory limit), wasm
//! stack, and output size. Nothing the
//! plugin returns is trusted: its output range must lie in its memory, decode, and carry one
//! finite, non-negative weight per node with a positive sum; the weights are renormalised.
//! Every failure is a [`PluginError`] that names the plugin and what went wrong; the host is
//! never harmed by it.
//!
//! The engine never uses signals: traps are explicit checks in the generated code
//! (`signals_based_traps(false)`), so the sandbox can live inside a PostgreSQL backend, whose
//! signal handlers it must not replace, and behaves the same in the `rvdag-plugin` command.
//! Compilation is single-threaded (the crate is built without wasmtime's parallel compilation).

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ruvector_dag_core::plugin_abi::{
    validate_weights, AttendRequest, AttendResponse, WeightError, ABI_VERSION,
};
use ruvector_dag_core::{AttentionConfig, AttentionContext, PlanDag};
use sha2::{Digest, Sha256};
use wasmtime::{
    Config, Engine, ExternType, InstancePre, Linker, Memory, Module, ResourceLimiter, Store, Trap,
    TypedFunc, ValType,
};

/// The resource bounds of every call. The defaults fit a plugin that attends over plans of up
/// to a few thousand nodes (the built-in ensemble, all seven mechanisms, uses about
/// 2.3 million units of fuel on a 100-node plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Fuel per call (about one unit per wasm instruction).
    pub fuel: u64,
    /// Largest linear memory, bytes (rounded down to 64 KiB pages).
    pub memory_bytes: usize,
    /// Largest wasm stack, bytes.
    pub stack_bytes: usize,
    /// Largest response, bytes.
    pub output_bytes: usize,
    /// Largest module, bytes.
    pub module_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            fuel: 50_000_000,
            memory_bytes: 64 << 20,
            stack_bytes: 512 << 10,
            output_bytes: 1 << 20,
            module_bytes: 16 << 20,
        }
    }
}

impl Limits {
    /// Refuse limits no plugin could run under (or that would let one hurt the host).
    pub fn validate(&self) -> Result<(), String> {
        let check = |name: &str, v: u64, lo: u64, hi: u64| {
            if (lo..=hi).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "plugin {name} limit {} is outside [{}, {}]",
                    group(v),
                    group(lo),
                    group(hi)
                ))
            }
        };
        check("fuel", self.fuel, 10_000, 10_000_000_000)?;
        check("memory", self.memory_bytes as u64, 1 << 16, 4 << 30)?;
        check("stack", self.stack_bytes as u64, 16 << 10, 8 << 20)?;
        check("output", self.output_bytes as u64, 1 << 10, 256 << 20)?;
        check("module size", self.module_bytes as u64, 1 << 10, 256 << 20)
    }
}

/// What went wrong with a plugin; its `Display` reads "plugin 'name' ...".
#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    /// The plugin's name.
    pub plugin: String,
    /// What happened.
    pub kind: ErrorKind,
}

/// The failures a plugin can cause (or the host can meet while running one).
#[derive(Debug, Clone, PartialEq)]
pub enum ErrorKind {
    /// The module is bigger than [`Limits::module_bytes`].
    ModuleTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// The bytes are not a valid wasm module.
    NotWasm(String),
    /// The module imports something; plugins may import nothing.
    ForbiddenImport {
        /// Import module.
        module: String,
        /// Import name.
        name: String,
    },
    /// An export the ABI requires is missing.
    MissingExport {
        /// Its name.
        name: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// An ABI export has the wrong type.
    WrongExportType {
        /// Its name.
        name: &'static str,
        /// The type it must have.
        expected: &'static str,
        /// The type it has.
        found: String,
    },
    /// The plugin speaks another ABI version.
    AbiVersion {
        /// What it said.
        found: i32,
    },
    /// The fuel ran out.
    OutOfFuel {
        /// The limit.
        limit: u64,
    },
    /// A `memory.grow` (or the initial memory) went past the limit.
    MemoryLimit {
        /// The limit, bytes.
        limit: usize,
        /// The size it asked for, bytes.
        requested: usize,
    },
    /// The wasm stack overflowed.
    StackOverflow {
        /// The limit, bytes.
        limit: usize,
    },
    /// Any other trap (`unreachable`, out-of-bounds access, division by zero, a panic, ...).
    Trap(String),
    /// A pointer or length it returned does not lie inside its memory.
    BadRange {
        /// Which value ("request buffer", "response").
        what: &'static str,
        /// Address.
        ptr: u64,
        /// Length.
        len: u64,
        /// Memory size, bytes.
        memory: usize,
    },
    /// The response is bigger than [`Limits::output_bytes`].
    OutputTooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit: usize,
    },
    /// The response does not decode as an `AttendResponse`.
    MalformedOutput(String),
    /// The plugin answered with an error of its own.
    Reported(String),
    /// The weights were refused.
    BadWeights(WeightError),
    /// The host could not prepare the call (engine, instantiation, request encoding).
    Host(String),
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::ModuleTooLarge { bytes, limit } => write!(
                f,
                "is {} bytes, over the module size limit of {} bytes",
                group(*bytes as u64),
                group(*limit as u64)
            ),
            ErrorKind::NotWasm(m) => write!(f, "is not a valid WebAssembly module: {m}"),
            ErrorKind::ForbiddenImport { module, name } if module.starts_with("wasi") => write!(
                f,
                "imports WASI ({module}::{name}); plugins get no WASI and may import nothing"
            ),
            ErrorKind::ForbiddenImport { module, name } => write!(
                f,
                "imports {module}::{name}; plugins may import nothing (the ABI grants no host functions)"
            ),
            ErrorKind::MissingExport { name, expected } => {
                write!(f, "does not export {name} ({expected}), which ABI version {ABI_VERSION} requires")
            }
            ErrorKind::WrongExportType {
                name,
                expected,
                found,
            } => write!(f, "exports {name} as {found}; ABI version {ABI_VERSION} requires {expected}"),
            ErrorKind::AbiVersion { found } => write!(
                f,
                "speaks plugin ABI version {found}; this host speaks version {ABI_VERSION} (rebuild it against this ruvector-dag-core)"
            ),
            ErrorKind::OutOfFuel { limit } => {
                write!(f, "ran out of fuel (limit {})", group(*limit))
            }
            ErrorKind::MemoryLimit { limit, requested } => write!(
                f,
                "hit its memory limit ({} bytes): growing its memory to {} bytes was refused",
                group(*limit as u64),
                group(*requested as u64)
            ),
            ErrorKind::StackOverflow { limit } => {
                write!(f, "overflowed its stack (limit {} bytes)", group(*limit as u64))
            }
            ErrorKind::Trap(m) => write!(f, "trapped: {m}"),
            ErrorKind::BadRange {
                what,
                ptr,
                len,
                memory,
            } => write!(
                f,
                "returned a {what} at {ptr:#x} of {} bytes, outside its {} bytes of memory",
                group(*len),
                group(*memory as u64)
            ),
            ErrorKind::OutputTooLarge { bytes, limit } => write!(
                f,
                "returned {} bytes of output, over the output limit of {} bytes",
                group(*bytes),
                group(*limit as u64)
            ),
            ErrorKind::MalformedOutput(m) => write!(f, "returned output that does not decode: {m}"),
            ErrorKind::Reported(m) => write!(f, "reported an error: {m}"),
            ErrorKind::BadWeights(w) => write!(f, "{w}"),
            ErrorKind::Host(m) => write!(f, "could not be run: {m}"),
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "plugin '{}' {}", self.plugin, self.kind)
    }
}

impl std::error::Error for PluginError {}

/// `12345678` -> `"12,345,678"`.
pub fn group(v: u64) -> String {
    let s = v.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Lower-case hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Per-call state: the memory bound, and what it refused (so the trap that follows a refused
/// grow, typically a Rust allocator's abort, is reported as the memory limit).
struct CallState {
    memory_limit: usize,
    refused: Option<usize>,
}

impl ResourceLimiter for CallState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_limit {
            self.refused = Some(desired);
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // ABI plugins need a function table for indirect calls, never a large one.
        Ok(desired <= 100_000)
    }

    fn instances(&self) -> usize {
        1
    }
    fn tables(&self) -> usize {
        4
    }
    fn memories(&self) -> usize {
        1
    }
}

const SIG_VERSION: &str = "func() -> i32";
const SIG_ALLOC: &str = "func(i32) -> i32";
const SIG_ATTEND: &str = "func(i32, i32) -> i64";

struct Compiled {
    pre: InstancePre<CallState>,
    bytes: usize,
    /// An instance kept between calls (taken for a call, put back only after a clean one).
    warm: Mutex<Option<Warm>>,
}

/// A live instance with its store and the ABI's functions.
struct Warm {
    store: Store<CallState>,
    memory: Memory,
    version: TypedFunc<(), i32>,
    alloc: TypedFunc<i32, i32>,
    attend: TypedFunc<(i32, i32), i64>,
    /// The limits it was made under; other limits need a fresh instance.
    limits: Limits,
}

/// A kept instance whose memory grew past this is dropped after the call (its memory returned).
const KEEP_MEMORY_BYTES: usize = 16 << 20;

/// A validated, compiled plugin.
#[derive(Clone)]
pub struct Plugin {
    name: String,
    sha256: String,
    compiled: Arc<Compiled>,
}

impl Plugin {
    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Lower-case hex sha256 of its module.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }
    /// Size of its module, bytes.
    pub fn bytes(&self) -> usize {
        self.compiled.bytes
    }
}

impl fmt::Debug for Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("sha256", &self.sha256)
            .field("bytes", &self.compiled.bytes)
            .finish()
    }
}

/// The result of one call.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRun {
    /// One weight per node, summing to 1.
    pub weights: Vec<f32>,
    /// Fuel the call used.
    pub fuel_used: u64,
    /// Wall time of the call, instantiation included.
    pub elapsed: Duration,
}

/// Most compiled modules kept; loading another evicts the least recently loaded.
const CACHE_CAPACITY: usize = 64;

/// A wasmtime engine configured for plugins, with its compiled-module cache.
pub struct Sandbox {
    engine: Engine,
    limits: Limits,
    cache: HashMap<String, (u64, Arc<Compiled>)>,
    loads: u64,
}

impl Sandbox {
    /// An engine for `limits` (validated first).
    pub fn new(limits: Limits) -> Result<Sandbox, String> {
        limits.validate()?;
        Ok(Sandbox {
            engine: engine(&limits)?,
            limits,
            cache: HashMap::new(),
            loads: 0,
        })
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Change the limits. A new stack limit needs a new engine, which empties the cache (the
    /// plugins loaded so far must be loaded again); the other limits apply from the next call.
    pub fn set_limits(&mut self, limits: Limits) -> Result<(), String> {
        limits.validate()?;
        if limits.stack_bytes != self.limits.stack_bytes {
            self.engine = engine(&limits)?;
            self.cache.clear();
        }
        self.limits = limits;
        Ok(())
    }

    /// Linear memory of the instance kept for `plugin` between calls, bytes (None: none kept).
    pub fn kept_instance_memory(&self, plugin: &Plugin) -> Option<usize> {
        let slot = plugin
            .compiled
            .warm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        slot.as_ref().map(|w| w.memory.data_size(&w.store))
    }

    /// Compiled modules in the cache.
    pub fn cached(&self) -> usize {
        self.cache.len()
    }

    /// Validate and compile `wasm` as plugin `name` (from the cache when these bytes were
    /// compiled before), and check the ABI version it speaks.
    pub fn load(&mut self, name: &str, wasm: &[u8]) -> Result<Plugin, PluginError> {
        let err = |kind| PluginError {
            plugin: name.to_string(),
            kind,
        };
        if wasm.len() > self.limits.module_bytes {
            return Err(err(ErrorKind::ModuleTooLarge {
                bytes: wasm.len(),
                limit: self.limits.module_bytes,
            }));
        }
        let sha256 = sha256_hex(wasm);
        self.loads += 1;
        if let Some((used, compiled)) = self.cache.get_mut(&sha256) {
            *used = self.loads;
            return Ok(Plugin {
                name: name.to_string(),
                sha256,
                compiled: compiled.clone(),
            });
        }
        let compiled = Arc::new(self.compile(wasm).map_err(err)?);
        let plugin = Plugin {
            name: name.to_string(),
            sha256: sha256.clone(),
            compiled: compiled.clone(),
        };
        let version = self.call_version(&plugin)?;
        if version != ABI_VERSION {
            return Err(err(ErrorKind::AbiVersion { found: version }));
        }
        if self.cache.len() >= CACHE_CAPACITY {
            if let Some(oldest) = self
                .cache
                .iter()
                .min_by_key(|(_, (used, _))| *used)
                .map(|(k, _)| k.clone())
            {
                self.cache.remove(&oldest);
            }
        }
        self.cache.insert(sha256, (self.loads, compiled));
        Ok(plugin)
    }

    fn compile(&self, wasm: &[u8]) -> Result<Compiled, ErrorKind> {
        if !wasm.starts_with(b"\0asm") {
            return Err(ErrorKind::NotWasm(
                "it does not start with the wasm magic bytes \\0asm".into(),
            ));
        }
        let module =
            Module::new(&self.engine, wasm).map_err(|e| ErrorKind::NotWasm(format!("{e:#}")))?;
        if let Some(import) = module.imports().next() {
            return Err(ErrorKind::ForbiddenImport {
                module: import.module().to_string(),
                name: import.name().to_string(),
            });
        }
        match module.get_export("memory") {
            None => {
                return Err(ErrorKind::MissingExport {
                    name: "memory",
                    expected: "a 32-bit memory",
                })
            }
            Some(ExternType::Memory(m)) if !m.is_64() && !m.is_shared() => {}
            Some(other) => {
                return Err(ErrorKind::WrongExportType {
                    name: "memory",
                    expected: "a 32-bit memory",
                    found: describe(&other),
                })
            }
        }
        for (name, params, results, expected) in [
            (
                "rvdag_abi_version",
                &[][..],
                &[ValType::I32][..],
                SIG_VERSION,
            ),
            (
                "rvdag_alloc",
                &[ValType::I32][..],
                &[ValType::I32][..],
                SIG_ALLOC,
            ),
            (
                "rvdag_attend",
                &[ValType::I32, ValType::I32][..],
                &[ValType::I64][..],
                SIG_ATTEND,
            ),
        ] {
            match module.get_export(name) {
                None => return Err(ErrorKind::MissingExport { name, expected }),
                Some(ExternType::Func(f))
                    if f.params()
                        .map(|p| p.to_string())
                        .eq(params.iter().map(|p| p.to_string()))
                        && f.results()
                            .map(|p| p.to_string())
                            .eq(results.iter().map(|p| p.to_string())) => {}
                Some(other) => {
                    return Err(ErrorKind::WrongExportType {
                        name,
                        expected,
                        found: describe(&other),
                    })
                }
            }
        }
        let linker = Linker::new(&self.engine);
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| ErrorKind::Host(format!("{e:#}")))?;
        Ok(Compiled {
            pre,
            bytes: wasm.len(),
            warm: Mutex::new(None),
        })
    }

    /// A fresh instance of `plugin` under the current limits, in a store of the engine it was
    /// compiled by (a plugin loaded before a stack-limit change keeps its engine).
    fn instantiate(&self, plugin: &Plugin) -> Result<Warm, ErrorKind> {
        let pre = &plugin.compiled.pre;
        let mut store = Store::new(
            pre.module().engine(),
            CallState {
                memory_limit: self.limits.memory_bytes,
                refused: None,
            },
        );
        store.limiter(|s| s);
        store
            .set_fuel(self.limits.fuel)
            .map_err(|e| ErrorKind::Host(format!("{e:#}")))?;
        let instance = pre
            .instantiate(&mut store)
            .map_err(|e| self.classify(&store, e))?;
        let host = |e: wasmtime::Error| ErrorKind::Host(format!("{e:#}"));
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| ErrorKind::Host("the instance has no memory export".into()))?;
        let version = instance
            .get_typed_func(&mut store, "rvdag_abi_version")
            .map_err(host)?;
        let alloc = instance
            .get_typed_func(&mut store, "rvdag_alloc")
            .map_err(host)?;
        let attend = instance
            .get_typed_func(&mut store, "rvdag_attend")
            .map_err(host)?;
        Ok(Warm {
            store,
            memory,
            version,
            alloc,
            attend,
            limits: self.limits,
        })
    }

    /// Turn a wasmtime error of a call into what the plugin did.
    fn classify(&self, store: &Store<CallState>, e: wasmtime::Error) -> ErrorKind {
        if let Some(requested) = store.data().refused {
            return ErrorKind::MemoryLimit {
                limit: store.data().memory_limit,
                requested,
            };
        }
        match e.downcast_ref::<Trap>() {
            Some(Trap::OutOfFuel) => ErrorKind::OutOfFuel {
                limit: self.limits.fuel,
            },
            Some(Trap::StackOverflow) => ErrorKind::StackOverflow {
                limit: self.limits.stack_bytes,
            },
            Some(Trap::UnreachableCodeReached) => ErrorKind::Trap(
                "wasm `unreachable` instruction executed (how a Rust panic or abort ends)".into(),
            ),
            Some(t) => ErrorKind::Trap(t.to_string()),
            None => ErrorKind::Trap(format!("{e:#}")),
        }
    }

    /// Check the ABI version on a fresh instance, and keep the instance for the first call.
    fn call_version(&self, plugin: &Plugin) -> Result<i32, PluginError> {
        let err = |kind| PluginError {
            plugin: plugin.name.clone(),
            kind,
        };
        let mut warm = self.instantiate(plugin).map_err(err)?;
        let version = warm
            .version
            .call(&mut warm.store, ())
            .map_err(|e| err(self.classify(&warm.store, e)))?;
        if version == ABI_VERSION {
            *plugin
                .compiled
                .warm
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(warm);
        }
        Ok(version)
    }

    /// Run `plugin` on `dag`: weights for every node (validated, summing to 1), the fuel used and
    /// the time taken. The plugin's kept instance serves the call when there is one made under
    /// the current limits; any failure drops it, so the next call starts afresh.
    pub fn attend(
        &self,
        plugin: &Plugin,
        dag: &PlanDag,
        ctx: &AttentionContext<'_>,
        config: &AttentionConfig,
    ) -> Result<PluginRun, PluginError> {
        let err = |kind| PluginError {
            plugin: plugin.name.clone(),
            kind,
        };
        let request = AttendRequest::new(dag, ctx, config)
            .encode()
            .map_err(|e| err(ErrorKind::Host(e.to_string())))?;
        let started = Instant::now();
        let mut slot = plugin
            .compiled
            .warm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut warm = match slot.take() {
            Some(w) if w.limits == self.limits => w,
            _ => self.instantiate(plugin).map_err(err)?,
        };
        warm.store.data_mut().refused = None;
        warm.store
            .set_fuel(self.limits.fuel)
            .map_err(|e| err(ErrorKind::Host(format!("{e:#}"))))?;
        let raw = self.call_attend(&mut warm, &request).map_err(err)?;
        let fuel_used = self.limits.fuel - warm.store.get_fuel().unwrap_or(0);
        let weights = match AttendResponse::decode(&raw) {
            Err(m) => {
                return Err(err(ErrorKind::MalformedOutput(format!(
                    "{} bytes, postcard says: {m}",
                    group(raw.len() as u64)
                ))))
            }
            Ok(AttendResponse::Error(m)) => return Err(err(ErrorKind::Reported(m))),
            Ok(AttendResponse::Weights(w)) => {
                validate_weights(w, dag.len()).map_err(|w| err(ErrorKind::BadWeights(w)))?
            }
        };
        if warm.memory.data_size(&warm.store) <= KEEP_MEMORY_BYTES {
            *slot = Some(warm);
        }
        Ok(PluginRun {
            weights,
            fuel_used,
            elapsed: started.elapsed(),
        })
    }

    /// Copy the request in, call `rvdag_attend`, copy the response out.
    fn call_attend(&self, warm: &mut Warm, request: &[u8]) -> Result<Vec<u8>, ErrorKind> {
        let len = i32::try_from(request.len())
            .map_err(|_| ErrorKind::Host(format!("the request is {} bytes", request.len())))?;
        let trap = |warm: &Warm, e| {
            // A trap right after a refused grow is the memory limit, whatever the trap says.
            self.classify(&warm.store, e)
        };
        let ptr = warm
            .alloc
            .call(&mut warm.store, len)
            .map_err(|e| trap(warm, e))?;
        let mem_size = warm.memory.data_size(&warm.store);
        let start = ptr as u32 as usize;
        if ptr == 0
            || start
                .checked_add(request.len())
                .is_none_or(|end| end > mem_size)
        {
            return Err(ErrorKind::BadRange {
                what: "request buffer",
                ptr: u64::from(ptr as u32),
                len: request.len() as u64,
                memory: mem_size,
            });
        }
        warm.memory.data_mut(&mut warm.store)[start..start + request.len()]
            .copy_from_slice(request);
        let packed = warm
            .attend
            .call(&mut warm.store, (ptr, len))
            .map_err(|e| trap(warm, e))? as u64;
        let (out_ptr, out_len) = (packed >> 32, packed & 0xFFFF_FFFF);
        if out_len > self.limits.output_bytes as u64 {
            return Err(ErrorKind::OutputTooLarge {
                bytes: out_len,
                limit: self.limits.output_bytes,
            });
        }
        let data = warm.memory.data(&warm.store);
        let end = out_ptr + out_len;
        if end > data.len() as u64 {
            return Err(ErrorKind::BadRange {
                what: "response",
                ptr: out_ptr,
                len: out_len,
                memory: data.len(),
            });
        }
        Ok(data[out_ptr as usize..end as usize].to_vec())
    }
}

fn describe(t: &ExternType) -> String {
    match t {
        ExternType::Func(f) => {
            let p: Vec<String> = f.params().map(|v| v.to_string()).collect();
            let r: Vec<String> = f.results().map(|v| v.to_string()).collect();
            format!("func({}) -> {}", p.join(", "), r.join(", "))
        }
        ExternType::Memory(m) if m.is_64() => "a 64-bit memory".into(),
        ExternType::Memory(m) if m.is_shared() => "a shared memory".into(),
        ExternType::Memory(_) => "a memory".into(),
        ExternType::Global(_) => "a global".into(),
        ExternType::Table(_) => "a table".into(),
        ExternType::Tag(_) => "a tag".into(),
    }
}

fn engine(limits: &Limits) -> Result<Engine, String> {
    let mut config = Config::new();
    config
        .consume_fuel(true)
        .signals_based_traps(false)
        .max_wasm_stack(limits.stack_bytes);
    // SAFETY: without signals-based traps wasmtime requires both mitigations off (they rely on
    // faulting loads); bounds are checked explicitly instead.
    unsafe {
        config.cranelift_flag_set("enable_heap_access_spectre_mitigation", "false");
        config.cranelift_flag_set("enable_table_access_spectre_mitigation", "false");
    }
    Engine::new(&config).map_err(|e| format!("cannot create the wasm engine: {e:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(10_000_000), "10,000,000");
    }

    #[test]
    fn sha256_matches_the_standard_vector() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn limits_are_checked() {
        assert!(Limits::default().validate().is_ok());
        let bad = Limits {
            fuel: 1,
            ..Limits::default()
        };
        let e = Sandbox::new(bad).err().unwrap();
        assert!(e.contains("fuel") && e.contains("10,000"), "{e}");
    }

    #[test]
    fn non_wasm_and_oversized_modules_are_refused_by_name() {
        let mut sb = Sandbox::new(Limits {
            module_bytes: 1 << 10,
            ..Limits::default()
        })
        .unwrap();
        let e = sb.load("text", b"hello, I am not wasm").unwrap_err();
        assert_eq!(e.plugin, "text");
        assert!(
            e.to_string()
                .starts_with("plugin 'text' is not a valid WebAssembly module"),
            "{e}"
        );
        let e = sb.load("big", &vec![0u8; 2048]).unwrap_err();
        assert!(
            matches!(
                e.kind,
                ErrorKind::ModuleTooLarge {
                    bytes: 2048,
                    limit: 1024
                }
            ),
            "{e}"
        );
        // Magic and version, then a truncated section.
        let e = sb
            .load("truncated", b"\0asm\x01\0\0\0\x01\x05")
            .unwrap_err();
        assert!(matches!(e.kind, ErrorKind::NotWasm(_)), "{e}");
    }
}
