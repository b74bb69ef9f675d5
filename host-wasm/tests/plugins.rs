//! The sandbox against real plugins: the useful ones give the weights they should, every evil
//! one gets a clear error naming it and the limit it hit, and the sandbox keeps serving.
//!
//! The modules come from crate `ruvector-dag-plugin-modules` (its build script compiles them).

use std::path::PathBuf;

use ruvector_dag_core::attention::{mechanism, AttentionKind};
use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::synth::{random_plan, SynthOptions};
use ruvector_dag_core::{AttentionConfig, AttentionContext, PlanDag};
use ruvector_dag_wasm::{ErrorKind, Limits, PluginError, Sandbox};

fn module(name: &str) -> Vec<u8> {
    ruvector_dag_plugin_modules::expect(name).to_vec()
}

fn fixture(name: &str) -> PlanDag {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/tpch")
        .join(name);
    parse_explain(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn plan() -> PlanDag {
    fixture("q05.analyze.json")
}

fn run(sb: &mut Sandbox, name: &str) -> Result<Vec<f32>, PluginError> {
    let plugin = sb.load(name, &module(name))?;
    let dag = plan();
    sb.attend(
        &plugin,
        &dag,
        &AttentionContext::default(),
        &AttentionConfig::default(),
    )
    .map(|r| r.weights)
}

/// The sandbox still works: a good plugin runs and returns a full set of weights.
fn still_serves(sb: &mut Sandbox) {
    let w = run(sb, "misestimate").expect("the sandbox keeps serving after an evil plugin");
    assert_eq!(w.len(), plan().len());
}

#[test]
fn the_ensemble_as_a_guest_equals_native_on_every_tpch_fixture() {
    let mut sb = Sandbox::new(Limits::default()).unwrap();
    let plugin = sb.load("ensemble", &module("ensemble")).unwrap();
    let cfg = AttentionConfig::default();
    let native = mechanism(AttentionKind::Ensemble, &cfg).unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/tpch");
    let mut checked = 0;
    let mut fuel = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for name in names {
        let dag = fixture(&name);
        let history = vec![dag
            .measured_shares()
            .unwrap_or_else(|| vec![1.0 / dag.len() as f32; dag.len()])];
        for weights in [None, Some([1.0, 0.5, 2.0, 1.0, 0.25, 1.0, 3.0])] {
            let ctx = AttentionContext {
                history: &history,
                ensemble_weights: weights,
                want_pairwise: false,
            };
            let want = native.attend(&dag, &ctx).unwrap().alpha;
            let got = sb.attend(&plugin, &dag, &ctx, &cfg).unwrap();
            for (v, (g, w)) in got.weights.iter().zip(&want).enumerate() {
                assert!(
                    (g - w).abs() <= 1e-5,
                    "{name} node {v}: guest {g}, native {w}"
                );
            }
            fuel.push(got.fuel_used);
            checked += 1;
        }
    }
    assert!(checked >= 44, "only {checked} fixtures");
    assert!(fuel.iter().all(|&f| f > 0 && f < Limits::default().fuel));
}

#[test]
fn misestimate_weighs_the_worst_estimate_highest() {
    let mut sb = Sandbox::new(Limits::default()).unwrap();
    let plugin = sb.load("misestimate", &module("misestimate")).unwrap();
    let dag = plan();
    assert!(dag.has_actuals());
    let run = sb
        .attend(
            &plugin,
            &dag,
            &AttentionContext::default(),
            &AttentionConfig::default(),
        )
        .unwrap();
    let ratio = |v: usize| {
        let n = dag.node(v);
        let a = n.actual.unwrap();
        ((a.rows + 1.0) / (n.est_rows * n.loops.max(1.0) + 1.0))
            .ln()
            .abs()
    };
    let worst = (0..dag.len())
        .max_by(|&a, &b| ratio(a).total_cmp(&ratio(b)))
        .unwrap();
    let top = (0..dag.len())
        .max_by(|&a, &b| run.weights[a].total_cmp(&run.weights[b]))
        .unwrap();
    assert!(ratio(worst) > 0.5, "the fixture has a real misestimate");
    assert_eq!(top, worst);
    let sum: f32 = run.weights.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5);
    // Without actuals: joins compound uncertainty, so the root of a join tree outweighs a scan.
    let plain = fixture("q05.plain.json");
    let w = sb
        .attend(
            &plugin,
            &plain,
            &AttentionContext::default(),
            &AttentionConfig::default(),
        )
        .unwrap()
        .weights;
    let scan = (0..plain.len())
        .find(|&v| plain.node(v).op.is_scan())
        .unwrap();
    let join = (0..plain.len())
        .filter(|&v| plain.node(v).op.is_join())
        .max_by(|&a, &b| w[a].total_cmp(&w[b]))
        .unwrap();
    assert!(w[join] > w[scan]);
}

#[test]
fn modules_are_cached_by_content() {
    let mut sb = Sandbox::new(Limits::default()).unwrap();
    let a = sb.load("a", &module("misestimate")).unwrap();
    let b = sb.load("b", &module("misestimate")).unwrap();
    assert_eq!(a.sha256(), b.sha256());
    assert_eq!(sb.cached(), 1);
    sb.load("c", &module("ensemble")).unwrap();
    assert_eq!(sb.cached(), 2);
    // A new stack limit needs a new engine: the cache starts again.
    let limits = Limits {
        stack_bytes: 256 << 10,
        ..sb.limits()
    };
    sb.set_limits(limits).unwrap();
    assert_eq!(sb.cached(), 0);
    still_serves(&mut sb);
    // A plugin loaded before the change keeps the engine it was compiled by, and still runs.
    let dag = plan();
    let w = sb
        .attend(
            &a,
            &dag,
            &AttentionContext::default(),
            &AttentionConfig::default(),
        )
        .unwrap();
    assert_eq!(w.weights.len(), dag.len());
}

#[test]
fn a_kept_instance_does_not_grow_and_a_failure_drops_it() {
    let mut sb = Sandbox::new(Limits::default()).unwrap();
    let plugin = sb.load("ensemble", &module("ensemble")).unwrap();
    let dag = plan();
    let (ctx, cfg) = (AttentionContext::default(), AttentionConfig::default());
    let first = sb.attend(&plugin, &dag, &ctx, &cfg).unwrap();
    let after_one = sb
        .kept_instance_memory(&plugin)
        .expect("an instance is kept");
    for _ in 0..2000 {
        let again = sb.attend(&plugin, &dag, &ctx, &cfg).unwrap();
        assert_eq!(
            again.weights, first.weights,
            "a kept instance answers the same"
        );
    }
    assert_eq!(
        sb.kept_instance_memory(&plugin),
        Some(after_one),
        "requests and responses are freed"
    );
    // Out of fuel mid-call: the instance is dropped, and the next call (fresh) works.
    sb.set_limits(Limits {
        fuel: 10_000,
        ..Limits::default()
    })
    .unwrap();
    assert!(matches!(
        sb.attend(&plugin, &dag, &ctx, &cfg).unwrap_err().kind,
        ErrorKind::OutOfFuel { .. }
    ));
    assert_eq!(sb.kept_instance_memory(&plugin), None);
    sb.set_limits(Limits::default()).unwrap();
    assert_eq!(
        sb.attend(&plugin, &dag, &ctx, &cfg).unwrap().weights,
        first.weights
    );
}

/// Each evil plugin, the error it must get, and a word its message must carry.
fn expect_evil(sb: &mut Sandbox, name: &str, check: impl Fn(&ErrorKind) -> bool, words: &[&str]) {
    let e = run(sb, name).expect_err(name);
    assert_eq!(e.plugin, name);
    let msg = e.to_string();
    println!("{msg}");
    assert!(msg.starts_with(&format!("plugin '{name}' ")), "{msg}");
    assert!(check(&e.kind), "{name}: unexpected {:?}", e.kind);
    for w in words {
        assert!(msg.contains(w), "{name}: {msg:?} lacks {w:?}");
    }
    still_serves(sb);
}

#[test]
fn every_evil_plugin_gets_a_clear_error_and_the_sandbox_keeps_serving() {
    let limits = Limits::default();
    let mut sb = Sandbox::new(limits).unwrap();
    expect_evil(
        &mut sb,
        "evil_spin",
        |k| matches!(k, ErrorKind::OutOfFuel { limit } if *limit == limits.fuel),
        &["ran out of fuel", "50,000,000"],
    );
    expect_evil(
        &mut sb,
        "evil_memory_bomb",
        |k| matches!(k, ErrorKind::MemoryLimit { limit, requested } if *limit == limits.memory_bytes && *requested > *limit),
        &["memory limit", "67,108,864"],
    );
    expect_evil(
        &mut sb,
        "evil_recursion",
        |k| matches!(k, ErrorKind::StackOverflow { .. }),
        &["overflowed its stack", "524,288"],
    );
    expect_evil(
        &mut sb,
        "evil_unreachable",
        |k| matches!(k, ErrorKind::Trap(_)),
        &["unreachable"],
    );
    expect_evil(
        &mut sb,
        "evil_panic",
        |k| matches!(k, ErrorKind::Trap(_)),
        &["trapped"],
    );
    let n = plan().len();
    expect_evil(
        &mut sb,
        "evil_wrong_length",
        |k| matches!(k, ErrorKind::BadWeights(_)),
        &[&format!("returned {} weights for {n} nodes", n - 2)],
    );
    expect_evil(
        &mut sb,
        "evil_nan",
        |k| matches!(k, ErrorKind::BadWeights(_)),
        &["NaN", &format!("node {}", n / 2)],
    );
    expect_evil(
        &mut sb,
        "evil_negative",
        |k| matches!(k, ErrorKind::BadWeights(_)),
        &["-0.5", "node 0"],
    );
    expect_evil(
        &mut sb,
        "evil_zeros",
        |k| matches!(k, ErrorKind::BadWeights(_)),
        &["sum to zero"],
    );
    expect_evil(
        &mut sb,
        "evil_huge_output",
        |k| matches!(k, ErrorKind::OutputTooLarge { bytes, .. } if *bytes == 8 << 20),
        &["8,388,608 bytes of output", "1,048,576"],
    );
    expect_evil(
        &mut sb,
        "evil_bad_pointer",
        |k| {
            matches!(
                k,
                ErrorKind::BadRange {
                    what: "response",
                    ..
                }
            )
        },
        &["0xffff0000", "outside its"],
    );
    expect_evil(
        &mut sb,
        "evil_bad_alloc",
        |k| {
            matches!(
                k,
                ErrorKind::BadRange {
                    what: "request buffer",
                    ..
                }
            )
        },
        &["request buffer"],
    );
    expect_evil(
        &mut sb,
        "evil_garbage_output",
        |k| matches!(k, ErrorKind::MalformedOutput(_)),
        &["does not decode"],
    );
    expect_evil(
        &mut sb,
        "evil_wasi",
        |k| matches!(k, ErrorKind::ForbiddenImport { .. }),
        &["WASI", "wasi_snapshot_preview1::fd_write"],
    );
    expect_evil(
        &mut sb,
        "evil_unknown_import",
        |k| matches!(k, ErrorKind::ForbiddenImport { .. }),
        &["env::read_host_secret", "import nothing"],
    );
    expect_evil(
        &mut sb,
        "evil_wrong_abi",
        |k| matches!(k, ErrorKind::AbiVersion { found: 999 }),
        &["version 999", "version 1"],
    );
    expect_evil(
        &mut sb,
        "evil_missing_export",
        |k| {
            matches!(
                k,
                ErrorKind::MissingExport {
                    name: "rvdag_attend",
                    ..
                }
            )
        },
        &["does not export rvdag_attend"],
    );
    expect_evil(
        &mut sb,
        "evil_wrong_type",
        |k| {
            matches!(
                k,
                ErrorKind::WrongExportType {
                    name: "rvdag_attend",
                    ..
                }
            )
        },
        &["func(i32) -> i32", "func(i32, i32) -> i64"],
    );
}

#[test]
fn limits_from_configuration_are_the_ones_enforced() {
    // A tight fuel limit stops even a good plugin on a big plan, and says so with that limit.
    let mut sb = Sandbox::new(Limits {
        fuel: 100_000,
        ..Limits::default()
    })
    .unwrap();
    let plugin = sb.load("ensemble", &module("ensemble")).unwrap();
    let big = random_plan(3, 400, SynthOptions::default());
    let e = sb
        .attend(
            &plugin,
            &big,
            &AttentionContext::default(),
            &AttentionConfig::default(),
        )
        .unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::OutOfFuel { limit: 100_000 }),
        "{e}"
    );
    assert!(e.to_string().contains("100,000"));
    // A memory limit below the module's own initial memory refuses it when it is loaded.
    let mut sb = Sandbox::new(Limits {
        memory_bytes: 1 << 16,
        ..Limits::default()
    })
    .unwrap();
    let e = sb.load("misestimate", &module("misestimate")).unwrap_err();
    assert!(
        matches!(e.kind, ErrorKind::MemoryLimit { limit: 65_536, .. }),
        "{e}"
    );
}

#[test]
fn a_module_over_the_size_limit_is_refused_before_compiling() {
    // A valid module padded with a custom section past the limit.
    let mut wasm = module("misestimate");
    let limit = wasm.len() + 1000;
    let payload = vec![0u8; 2000];
    wasm.push(0); // custom section id
    let mut size = payload.len() as u32 + 2; // name length byte + name "x"
    loop {
        let byte = (size & 0x7f) as u8;
        size >>= 7;
        wasm.push(if size == 0 { byte } else { byte | 0x80 });
        if size == 0 {
            break;
        }
    }
    wasm.extend_from_slice(&[1, b'x']);
    wasm.extend_from_slice(&payload);
    let mut sb = Sandbox::new(Limits {
        module_bytes: limit,
        ..Limits::default()
    })
    .unwrap();
    let e = sb.load("padded", &wasm).unwrap_err();
    assert!(matches!(e.kind, ErrorKind::ModuleTooLarge { .. }), "{e}");
    // The same bytes under a larger limit are a valid plugin: the check was the size alone.
    sb.set_limits(Limits {
        module_bytes: wasm.len(),
        ..Limits::default()
    })
    .unwrap();
    sb.load("padded", &wasm).unwrap();
}
