//! What a plugin returns: any bytes decode to a response or an error, and any weights are
//! accepted only when they are one finite, non-negative weight per node with a positive sum.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ruvector_dag_core::plugin_abi::{validate_weights, AttendResponse};

fuzz_target!(|data: &[u8]| {
    let Some((&nodes, bytes)) = data.split_first() else {
        return;
    };
    if let Ok(AttendResponse::Weights(w)) = AttendResponse::decode(bytes) {
        let n = usize::from(nodes);
        if let Ok(v) = validate_weights(w, n) {
            assert_eq!(v.len(), n);
            assert!(v.iter().all(|x| x.is_finite() && *x >= 0.0));
            let sum: f32 = v.iter().sum();
            assert!((sum - 1.0).abs() < 1e-3, "sum {sum}");
        }
    }
});
