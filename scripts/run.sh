#!/usr/bin/env bash
# The main job: a throwaway PostgreSQL 15 with ruvector_dag preloaded learns a query over
# correlated columns (the default plan is tens of times slower than a hash join), prints each
# run's decision and time, then restarts the server and shows the learned state survived.
# Installs what is missing (PostgreSQL 15, clang, cargo-pgrx 0.18.1). Safe to run twice.
# (The TPC-H plan analysis of earlier stages: scripts/tpch-analyze.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-pg.sh
scripts/demo.sh --release --check
