//! EXPLAIN JSON import: any text is a PlanDag or an InvalidExplain error, never a panic; what
//! imports is a valid DAG every mechanism can attend over.
#![no_main]
use libfuzzer_sys::fuzz_target;
use ruvector_dag_core::attention::{mechanism, AttentionKind};
use ruvector_dag_core::explain::parse_explain_full;
use ruvector_dag_core::{AttentionConfig, AttentionContext};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(plan) = parse_explain_full(text) else {
        return;
    };
    let dag = plan.dag;
    assert!(!dag.is_empty());
    let cfg = AttentionConfig::default();
    for kind in [
        AttentionKind::Topological,
        AttentionKind::CriticalPath,
        AttentionKind::Ensemble,
    ] {
        if let Ok(map) =
            mechanism(kind, &cfg).and_then(|m| m.attend(&dag, &AttentionContext::default()))
        {
            assert_eq!(map.alpha.len(), dag.len());
            let sum: f32 = map.alpha.iter().sum();
            assert!((sum - 1.0).abs() < 1e-3, "{kind:?} sums to {sum}");
        }
    }
});
