//! Shared helpers of the cross-crate tests: the captured PostgreSQL 15 EXPLAIN fixtures.
//!
//! The fixtures are re-captured with `tests/fixtures/capture.sh` (needs PostgreSQL 15 and
//! tpchgen-cli); the tests only read them.

use std::path::{Path, PathBuf};

use ruvector_dag_core::explain::parse_explain;
use ruvector_dag_core::PlanDag;

/// Directory of the TPC-H EXPLAIN fixtures.
pub fn tpch_fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("tpch")
}

/// Every captured plan as `(file name, raw JSON)`, sorted by name.
pub fn tpch_fixtures() -> Vec<(String, String)> {
    let dir = tpch_fixture_dir();
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let text = std::fs::read_to_string(&p)
                .unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()));
            (name, text)
        })
        .collect();
    out.sort();
    out
}

/// Every captured plan, parsed.
pub fn tpch_plans() -> Vec<(String, PlanDag)> {
    tpch_fixtures()
        .into_iter()
        .map(|(name, text)| {
            let dag = parse_explain(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name, dag)
        })
        .collect()
}

/// One fixture's raw JSON, by file name (e.g. `q15.analyze.json`).
pub fn tpch_fixture(name: &str) -> String {
    let p = tpch_fixture_dir().join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

pub mod replay;
pub mod sim;
