#!/usr/bin/env bash
# The main job: the workload harness (tests/src/bin/harness). It builds and installs the
# extension, starts a throwaway PostgreSQL 15 with it preloaded and its shipped settings, loads
# TPC-H (generated in-process) and a workload with correlated columns, runs them in rounds with
# the extension off (stock), learning from a cold start, frozen, and the oracle (every arm, best
# kept), runs pgbench off / observe / learn / learn without enabled tables, interleaved,
# writes target/harness/report.html and report.json, prints a summary and removes the cluster. Options go to the harness (--scale 1 is the
# benchmark; --pg 18 runs it on PostgreSQL 18, unpacked into a directory of its own by
# scripts/setup-pg18.sh; --help lists them). Installs what is missing (PostgreSQL 15, clang,
# cargo-pgrx; PostgreSQL 18 with --pg 18).
# Safe to run twice. The single-query demo of earlier stages: scripts/demo.sh --release.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-pg.sh
cargo build -q --release --locked -p ruvector-dag-tests --bin harness
exec target/release/harness "$@"
