//! The attention plugin ABI, version [`ABI_VERSION`]: how a host hands a plan to a sandboxed
//! wasm module and gets per-node weights back.
//!
//! A plugin is a core wasm module (`wasm32-unknown-unknown`) that imports nothing and exports:
//!
//! | export | type | meaning |
//! |---|---|---|
//! | `memory` | memory | where requests and responses live |
//! | `rvdag_abi_version` | `() -> i32` | must return [`ABI_VERSION`] |
//! | `rvdag_alloc` | `(len: i32) -> i32` | a buffer of `len` bytes for the request |
//! | `rvdag_attend` | `(ptr: i32, len: i32) -> i64` | run on the request at `ptr..ptr+len`; returns the response's `(ptr << 32) \| len` |
//!
//! The request is an [`AttendRequest`] and the response an [`AttendResponse`], both encoded with
//! postcard. `rvdag_attend` owns the request buffer (it frees it), and its response stays valid
//! until the next call. The host may keep an instance for many calls or start a fresh one at any
//! time (it does after any failure), so a plugin must not rely on state kept between calls. The
//! host trusts nothing that comes back: the
//! response must lie inside the memory, decode, carry one finite non-negative weight per node
//! with a positive sum ([`validate_weights`]), or the call fails with an error naming the plugin.
//!
//! With feature `guest`, [`export_attention!`](crate::export_attention) turns any
//! [`DagAttention`] into such a module; the encoding and decoding here are safe code shared by
//! both sides.

use alloc::boxed::Box;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::attention::{AttentionConfig, AttentionContext, DagAttention};
use crate::dag::{PlanDag, PlanNode};
use crate::error::{NeuralDagError, Result};

/// Version of the ABI described in the module documentation. A plugin built for another version
/// is refused when it is registered.
pub const ABI_VERSION: i32 = 1;

/// What the host sends: the plan, the context a mechanism may use, and the host's attention
/// configuration (so a built-in kind compiled as a guest computes exactly what the host would).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttendRequest {
    /// Plan operators, in the host's node order.
    pub nodes: Vec<PlanNode>,
    /// `(child, parent)` edges, as in [`PlanDag::edges`].
    pub edges: Vec<(u32, u32)>,
    /// Recent executions of this plan shape ([`AttentionContext::history`]).
    pub history: Vec<Vec<f32>>,
    /// Ensemble mixing weights ([`AttentionContext::ensemble_weights`]).
    pub ensemble_weights: Option<[f32; 7]>,
    /// The host's attention configuration.
    pub config: AttentionConfig,
}

/// What a plugin returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum AttendResponse {
    /// One weight per node, in request order (the host renormalises them).
    Weights(Vec<f32>),
    /// The plugin could not attend; the message is shown to the user.
    Error(String),
}

impl AttendRequest {
    /// The request for `dag` under `ctx` and `config`.
    pub fn new(dag: &PlanDag, ctx: &AttentionContext<'_>, config: &AttentionConfig) -> Self {
        AttendRequest {
            nodes: dag.nodes().to_vec(),
            edges: dag.edges().to_vec(),
            history: ctx.history.to_vec(),
            ensemble_weights: ctx.ensemble_weights,
            config: config.clone(),
        }
    }

    /// Postcard bytes.
    pub fn encode(&self) -> Result<Vec<u8>> {
        postcard::to_allocvec(self)
            .map_err(|e| NeuralDagError::InvalidConfig(format!("cannot encode a request: {e}")))
    }

    /// From postcard bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        postcard::from_bytes(bytes)
            .map_err(|e| NeuralDagError::InvalidConfig(format!("malformed request: {e}")))
    }
}

impl AttendResponse {
    /// Postcard bytes.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding a Vec<f32> or a String into a Vec cannot fail; keep the guest panic-free anyway.
        postcard::to_allocvec(self).unwrap_or_default()
    }

    /// From postcard bytes; `Err` carries the decoder's message.
    pub fn decode(bytes: &[u8]) -> core::result::Result<Self, String> {
        postcard::from_bytes(bytes).map_err(|e| format!("{e}"))
    }
}

/// Why a plugin's weights were refused.
#[derive(Debug, Clone, PartialEq)]
pub enum WeightError {
    /// Not one weight per node.
    WrongLength {
        /// Weights returned.
        got: usize,
        /// Nodes in the plan.
        expected: usize,
    },
    /// A weight that is NaN, infinite or negative.
    BadWeight {
        /// Node index.
        node: usize,
        /// The value.
        value: f32,
    },
    /// Every weight is zero (or the sum overflows).
    NoMass,
}

impl core::fmt::Display for WeightError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            WeightError::WrongLength { got, expected } => {
                write!(f, "returned {got} weights for {expected} nodes")
            }
            WeightError::BadWeight { node, value } => write!(
                f,
                "returned weight {value} for node {node} (weights must be finite and non-negative)"
            ),
            WeightError::NoMass => {
                f.write_str("returned weights that sum to zero (or overflow); nothing to normalise")
            }
        }
    }
}

/// Check a plugin's weights and renormalise them to sum 1: one finite, non-negative weight per
/// node with a positive, finite sum; anything else is refused.
pub fn validate_weights(
    mut w: Vec<f32>,
    nodes: usize,
) -> core::result::Result<Vec<f32>, WeightError> {
    if w.len() != nodes {
        return Err(WeightError::WrongLength {
            got: w.len(),
            expected: nodes,
        });
    }
    let mut sum = 0.0f64;
    for (node, &value) in w.iter().enumerate() {
        if !value.is_finite() || value < 0.0 {
            return Err(WeightError::BadWeight { node, value });
        }
        sum += f64::from(value);
    }
    if !(sum > 0.0 && sum.is_finite()) {
        return Err(WeightError::NoMass);
    }
    for a in &mut w {
        *a = (f64::from(*a) / sum) as f32;
    }
    Ok(w)
}

/// The mechanism a guest built, kept between calls for the configuration it was built from
/// (building one draws its random projections, which can cost more than attending).
pub struct GuestCache {
    built: Option<(AttentionConfig, Box<dyn DagAttention>)>,
}

impl GuestCache {
    /// Nothing built yet.
    pub const fn new() -> Self {
        GuestCache { built: None }
    }
}

impl Default for GuestCache {
    fn default() -> Self {
        Self::new()
    }
}

/// Guest side of `rvdag_attend`, minus the raw-pointer work the macro does: decode the request,
/// build the DAG, build the mechanism from the host's configuration (or reuse the one `cache`
/// holds for that configuration), attend, encode the response. Every failure becomes
/// [`AttendResponse::Error`].
pub fn guest_respond<A, F>(input: &[u8], cache: &mut GuestCache, make: F) -> Vec<u8>
where
    A: DagAttention + 'static,
    F: FnOnce(&AttentionConfig) -> A,
{
    let run = || -> Result<Vec<f32>> {
        let req = AttendRequest::decode(input)?;
        let dag = PlanDag::new(req.nodes, req.edges)?;
        let ctx = AttentionContext {
            history: &req.history,
            ensemble_weights: req.ensemble_weights,
            want_pairwise: false,
        };
        let mechanism = match &cache.built {
            Some((cfg, m)) if *cfg == req.config => m,
            _ => {
                req.config.validate()?;
                let m: Box<dyn DagAttention> = Box::new(make(&req.config));
                &cache.built.insert((req.config.clone(), m)).1
            }
        };
        Ok(mechanism.attend(&dag, &ctx)?.alpha)
    };
    match run() {
        Ok(w) => AttendResponse::Weights(w),
        Err(e) => AttendResponse::Error(format!("{e}")),
    }
    .encode()
}

/// Guest side of `rvdag_alloc`: a buffer of `len` bytes (a leaked `Box<[u8]>`, which
/// `rvdag_attend` takes back and frees), as a wasm32 address; 0 when `len` is not positive.
pub fn guest_alloc(len: i32) -> i32 {
    let Ok(len) = usize::try_from(len) else {
        return 0;
    };
    if len == 0 {
        return 0;
    }
    let buf: &'static mut [u8] = alloc::boxed::Box::leak(alloc::vec![0u8; len].into_boxed_slice());
    buf.as_mut_ptr() as usize as i32
}

/// Guest side of the return value of `rvdag_attend`: leak the response as a `Box<[u8]>` and
/// pack its address and length as `(ptr << 32) | len`. The macro frees it at the next call.
pub fn guest_pack(response: Vec<u8>) -> i64 {
    let len = response.len() as u64;
    let buf: &'static mut [u8] = alloc::boxed::Box::leak(response.into_boxed_slice());
    let ptr = buf.as_mut_ptr() as usize as u64;
    ((ptr << 32) | (len & 0xFFFF_FFFF)) as i64
}

/// Export a [`DagAttention`] as an attention plugin (feature `guest`; the crate is a `cdylib`
/// built for `wasm32-unknown-unknown`). The argument builds the mechanism from the host's
/// [`AttentionConfig`]:
///
/// ```ignore
/// ruvector_dag_core::export_attention!(|cfg: &ruvector_dag_core::AttentionConfig| MyAttention::new(cfg));
/// ```
///
/// Memory: `rvdag_attend` takes back (and frees) the request buffer `rvdag_alloc` gave out, and
/// frees its previous response when it is called again, so an instance the host keeps between
/// calls does not grow.
#[cfg(feature = "guest")]
#[macro_export]
macro_rules! export_attention {
    ($make:expr) => {
        /// The mechanism built for the host's configuration, kept between calls.
        static mut RVDAG_MECHANISM: $crate::plugin_abi::GuestCache =
            $crate::plugin_abi::GuestCache::new();
        /// The response of the previous call, packed; freed at the next call.
        static RVDAG_LAST_RESPONSE: ::core::sync::atomic::AtomicU64 =
            ::core::sync::atomic::AtomicU64::new(0);

        #[no_mangle]
        pub extern "C" fn rvdag_abi_version() -> i32 {
            $crate::plugin_abi::ABI_VERSION
        }

        #[no_mangle]
        pub extern "C" fn rvdag_alloc(len: i32) -> i32 {
            $crate::plugin_abi::guest_alloc(len)
        }

        /// # Safety
        /// Called by the host with `ptr`/`len` as returned by and given to `rvdag_alloc`, the
        /// request written into it; the previous response has been copied out.
        #[no_mangle]
        pub unsafe extern "C" fn rvdag_attend(ptr: i32, len: i32) -> i64 {
            extern crate alloc as rvdag_alloc_crate;
            use rvdag_alloc_crate::boxed::Box;
            let last = RVDAG_LAST_RESPONSE.swap(0, ::core::sync::atomic::Ordering::Relaxed);
            let (last_ptr, last_len) = ((last >> 32) as usize, (last & 0xFFFF_FFFF) as usize);
            if last_len > 0 {
                // SAFETY: guest_pack leaked exactly this Box<[u8]> at the previous call.
                drop(unsafe {
                    Box::from_raw(::core::ptr::slice_from_raw_parts_mut(
                        last_ptr as *mut u8,
                        last_len,
                    ))
                });
            }
            let input: Box<[u8]> = if ptr == 0 || len <= 0 {
                Box::new([])
            } else {
                // SAFETY: rvdag_alloc(len) leaked exactly this Box<[u8]>; the host filled it.
                unsafe {
                    Box::from_raw(::core::ptr::slice_from_raw_parts_mut(
                        ptr as usize as *mut u8,
                        len as usize,
                    ))
                }
            };
            // SAFETY: wasm32-unknown-unknown runs one thread; nothing else touches the cache.
            let cache = unsafe { &mut *::core::ptr::addr_of_mut!(RVDAG_MECHANISM) };
            let response = $crate::plugin_abi::guest_respond(&input, cache, $make);
            drop(input);
            let packed = $crate::plugin_abi::guest_pack(response);
            RVDAG_LAST_RESPONSE.store(packed as u64, ::core::sync::atomic::Ordering::Relaxed);
            packed
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attention::{mechanism, AttentionKind};
    use crate::synth::{random_plan, SynthOptions};

    #[test]
    fn request_round_trips_and_guest_matches_native() {
        let dag = random_plan(7, 40, SynthOptions::default());
        let cfg = AttentionConfig::default();
        let history = alloc::vec![alloc::vec![1.0 / dag.len() as f32; dag.len()]];
        let ctx = AttentionContext {
            history: &history,
            ensemble_weights: Some([1.0, 2.0, 0.5, 1.0, 1.0, 1.0, 3.0]),
            want_pairwise: false,
        };
        let req = AttendRequest::new(&dag, &ctx, &cfg);
        let bytes = req.encode().unwrap();
        assert_eq!(AttendRequest::decode(&bytes).unwrap(), req);
        for kind in AttentionKind::ALL {
            let out = guest_respond(&bytes, &mut GuestCache::new(), |c| {
                mechanism(kind, c).unwrap()
            });
            let AttendResponse::Weights(w) = AttendResponse::decode(&out).unwrap() else {
                panic!("{kind:?} answered with an error");
            };
            let native = mechanism(kind, &cfg).unwrap().attend(&dag, &ctx).unwrap();
            assert_eq!(w, native.alpha, "{kind:?}");
        }
    }

    #[test]
    fn the_guest_builds_its_mechanism_once_per_configuration() {
        let dag = random_plan(3, 20, SynthOptions::default());
        let cfg = AttentionConfig::default();
        let req = AttendRequest::new(&dag, &AttentionContext::default(), &cfg);
        let mut cache = GuestCache::new();
        let mut built = 0;
        let mut call = |req: &AttendRequest, built: &mut i32| {
            guest_respond(&req.encode().unwrap(), &mut cache, |c| {
                *built += 1;
                mechanism(AttentionKind::CausalCone, c).unwrap()
            })
        };
        let first = call(&req, &mut built);
        assert_eq!(call(&req, &mut built), first);
        assert_eq!(built, 1);
        let mut other = req.clone();
        other.config.cone_depth = 1;
        let changed = call(&other, &mut built);
        assert_eq!(built, 2);
        assert_ne!(changed, first, "a new configuration is honoured");
    }

    #[test]
    fn guest_reports_bad_requests_as_errors() {
        let out = guest_respond(b"\xff\xff\xff", &mut GuestCache::new(), |c| {
            mechanism(AttentionKind::Topological, c).unwrap()
        });
        match AttendResponse::decode(&out).unwrap() {
            AttendResponse::Error(m) => assert!(m.contains("malformed request"), "{m}"),
            other => panic!("expected an error, got {other:?}"),
        }
        // A request whose DAG is invalid (an edge out of range) is refused by PlanDag::new.
        let dag = random_plan(1, 12, SynthOptions::default());
        let mut req = AttendRequest::new(
            &dag,
            &AttentionContext::default(),
            &AttentionConfig::default(),
        );
        req.edges.push((0, 10_000));
        let out = guest_respond(&req.encode().unwrap(), &mut GuestCache::new(), |c| {
            mechanism(AttentionKind::Topological, c).unwrap()
        });
        assert!(
            matches!(AttendResponse::decode(&out).unwrap(), AttendResponse::Error(m) if m.contains("invalid plan DAG"))
        );
    }

    #[test]
    fn weights_are_validated_and_renormalised() {
        assert_eq!(
            validate_weights(alloc::vec![1.0, 3.0], 2).unwrap(),
            alloc::vec![0.25, 0.75]
        );
        assert_eq!(
            validate_weights(alloc::vec![1.0], 2),
            Err(WeightError::WrongLength {
                got: 1,
                expected: 2
            })
        );
        assert!(matches!(
            validate_weights(alloc::vec![1.0, f32::NAN], 2),
            Err(WeightError::BadWeight { node: 1, .. })
        ));
        assert!(matches!(
            validate_weights(alloc::vec![-0.5, 1.0], 2),
            Err(WeightError::BadWeight { node: 0, .. })
        ));
        assert_eq!(
            validate_weights(alloc::vec![0.0, 0.0], 2),
            Err(WeightError::NoMass)
        );
        assert_eq!(
            validate_weights(alloc::vec![f32::MAX, f32::MAX], 2).unwrap(),
            alloc::vec![0.5, 0.5]
        );
    }
}
