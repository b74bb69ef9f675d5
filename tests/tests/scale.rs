//! Many distinct query shapes: everything the optimizer keeps per shape stays at its
//! configured capacity (the oldest or least useful is evicted), so the learned state stops
//! growing. Small capacities keep the test quick; `examples/scale.rs` runs 100,000 shapes with
//! the shipped ones.

use ruvector_dag_core::learning::{NeuralDagConfig, Optimizer};
use ruvector_dag_tests::sim::{arm_names, distinct_shapes, ScalePoint};

#[test]
fn distinct_shapes_stay_at_capacity_and_the_state_stops_growing() {
    let cfg = NeuralDagConfig {
        max_trajectories: 1_500,
        pattern_capacity: 120,
        pattern_clusters: 40,
        btsp_capacity: 100,
        explore_min_ms: 0.0,
        ..NeuralDagConfig::default()
    };
    let (shapes_cap, patterns_cap, engrams_cap) = (
        cfg.max_trajectories,
        cfg.pattern_capacity,
        cfg.btsp_capacity,
    );
    let opt = Optimizer::new(cfg, arm_names()).unwrap();
    let mut points: Vec<ScalePoint> = Vec::new();
    distinct_shapes(opt, 12_000, 3, 1_000, 11, |p, _| points.push(*p));
    assert_eq!(points.len(), 12);
    for p in &points {
        assert!(p.shapes <= shapes_cap, "{p:?}");
        assert!(p.patterns <= patterns_cap, "{p:?}");
        assert!(p.engrams <= engrams_cap, "{p:?}");
    }
    // Full: eviction ran (more shapes were seen than are kept).
    let last = points.last().unwrap();
    assert_eq!(last.shapes, shapes_cap, "{last:?}");
    assert!(last.engrams > 0 && last.patterns > 0, "{last:?}");
    // Once full, the snapshot stays within 10% (the size of what is kept varies a little).
    let full: Vec<usize> = points
        .iter()
        .filter(|p| p.queries >= 6_000)
        .map(|p| p.snapshot_bytes)
        .collect();
    let (lo, hi) = (
        *full.iter().min().unwrap() as f64,
        *full.iter().max().unwrap() as f64,
    );
    assert!(hi <= lo * 1.1, "snapshot bytes once full: {full:?}");
    // Growth before it was full: the first point holds less than the last.
    assert!(points[0].snapshot_bytes < last.snapshot_bytes, "{points:?}");
}
