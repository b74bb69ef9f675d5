//! Deliberately hostile plugins, one per cargo feature (build.sh builds each), in the spirit of
//! datafusion-udf-wasm's evil guests. The sandbox must turn every one into a clear error naming
//! the plugin and what it did, and keep serving.
#![allow(unreachable_code, dead_code, unused_imports, unconditional_recursion)]

use ruvector_dag_core::attention::{AttentionContext, AttentionKind, AttentionMap, DagAttention};
use ruvector_dag_core::{AttentionConfig, PlanDag, Result};

/// Misbehaves inside `attend` (for the features that use the real ABI exports).
pub struct Evil;

fn map(alpha: Vec<f32>) -> Result<AttentionMap> {
    Ok(AttentionMap {
        kind: AttentionKind::Ensemble,
        alpha,
        pairwise: None,
    })
}

/// Recursion the optimiser cannot turn into a loop, with frames on the wasm stack (no local
/// has its address taken, so nothing goes to the linear-memory shadow stack).
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    if depth == u64::MAX {
        return 1;
    }
    recurse(depth + 1).wrapping_mul(depth | 1).rotate_left(7) ^ depth
}

impl DagAttention for Evil {
    fn kind(&self) -> AttentionKind {
        AttentionKind::Ensemble
    }

    fn attend(&self, dag: &PlanDag, _ctx: &AttentionContext<'_>) -> Result<AttentionMap> {
        let n = dag.len();
        let _ = n;
        #[cfg(feature = "spin")]
        {
            let mut x = 0u64;
            loop {
                x = core::hint::black_box(x.wrapping_add(1));
            }
        }
        #[cfg(feature = "memory_bomb")]
        {
            // Reserve (without touching) a megabyte at a time until the allocator is refused.
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                let mut chunk = Vec::<u8>::with_capacity(1 << 20);
                chunk.push(1);
                hoard.push(core::hint::black_box(chunk));
            }
        }
        #[cfg(feature = "recursion")]
        {
            let r = recurse(n as u64);
            return map(vec![r as f32; n]);
        }
        #[cfg(feature = "unreachable")]
        {
            core::arch::wasm32::unreachable();
        }
        #[cfg(feature = "panic")]
        {
            panic!("evil plugin panics on a plan of {n} nodes");
        }
        #[cfg(feature = "wrong_length")]
        {
            return map(vec![1.0; n.saturating_sub(2)]);
        }
        #[cfg(feature = "nan")]
        {
            let mut w = vec![1.0; n];
            w[n / 2] = f32::NAN;
            return map(w);
        }
        #[cfg(feature = "negative")]
        {
            let mut w = vec![1.0; n];
            w[0] = -0.5;
            return map(w);
        }
        #[cfg(feature = "zeros")]
        {
            return map(vec![0.0; n]);
        }
        map(vec![1.0; n])
    }
}

#[cfg(any(
    feature = "spin",
    feature = "memory_bomb",
    feature = "recursion",
    feature = "unreachable",
    feature = "panic",
    feature = "wrong_length",
    feature = "nan",
    feature = "negative",
    feature = "zeros",
))]
ruvector_dag_core::export_attention!(|_cfg: &AttentionConfig| Evil);

/// The ABI exports written by hand, for the features that break the ABI itself.
#[cfg(any(
    feature = "huge_output",
    feature = "bad_pointer",
    feature = "bad_alloc",
    feature = "garbage_output",
    feature = "wasi",
    feature = "unknown_import",
    feature = "wrong_abi",
    feature = "missing_export",
    feature = "wrong_type",
))]
mod by_hand {
    use ruvector_dag_core::plugin_abi::{guest_alloc, guest_pack, ABI_VERSION};

    #[cfg(feature = "wasi")]
    #[link(wasm_import_module = "wasi_snapshot_preview1")]
    extern "C" {
        fn fd_write(fd: i32, iovs: i32, iovs_len: i32, written: i32) -> i32;
    }

    #[cfg(feature = "unknown_import")]
    #[link(wasm_import_module = "env")]
    extern "C" {
        fn read_host_secret(buf: i32, len: i32) -> i32;
    }

    #[no_mangle]
    pub extern "C" fn rvdag_abi_version() -> i32 {
        if cfg!(feature = "wrong_abi") {
            999
        } else {
            ABI_VERSION
        }
    }

    #[no_mangle]
    pub extern "C" fn rvdag_alloc(len: i32) -> i32 {
        if cfg!(feature = "bad_alloc") {
            // Near the top of the 4 GiB address space, far outside the memory.
            return 0xFFFF_FF00u32 as i32;
        }
        guest_alloc(len)
    }

    #[cfg(not(any(feature = "missing_export", feature = "wrong_type")))]
    #[no_mangle]
    pub extern "C" fn rvdag_attend(_ptr: i32, _len: i32) -> i64 {
        #[cfg(feature = "wasi")]
        unsafe {
            fd_write(1, 0, 0, 0);
        }
        #[cfg(feature = "unknown_import")]
        unsafe {
            read_host_secret(0, 64);
        }
        if cfg!(feature = "huge_output") {
            // 8 MiB of output, inside the memory limit but over the output limit.
            return guest_pack(vec![7u8; 8 << 20]);
        }
        if cfg!(feature = "bad_pointer") {
            return ((0xFFFF_0000u64 << 32) | 4096) as i64;
        }
        // garbage_output, or the import features: bytes that are not a response.
        guest_pack(vec![0xFF, 0xFF, 0xFF, 0xFF, 0x0F, 0x42])
    }

    #[cfg(feature = "wrong_type")]
    #[no_mangle]
    pub extern "C" fn rvdag_attend(ptr: i32) -> i32 {
        ptr
    }
}
