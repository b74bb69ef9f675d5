#!/usr/bin/env bash
# Re-record the replay test's correlated-columns fixtures (tests/fixtures/correlated): in a
# throwaway PostgreSQL 15 with the demo's settings (no parallel workers), the dataset of
# tests/fixtures/correlated/dataset.sql, then every query of tests/fixtures/correlated/queries
# under every arm of the shipped ruvector.dag_arms, extension off (scripts/record-arms.sh).
# Options: --out DIR (default tests/fixtures/correlated). About a minute here.
set -euo pipefail
cd "$(dirname "$0")/.."

out=tests/fixtures/correlated
while (($#)); do
  case $1 in
    --out) out=$2; shift ;;
    *) echo "unknown option $1 (want --out DIR)" >&2; exit 2 ;;
  esac
  shift
done

scripts/setup-pg.sh
# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
# shellcheck source=scripts/record-arms.sh
source scripts/record-arms.sh
install_extension
start_cluster "max_parallel_workers_per_gather = 0"
trap stop_cluster EXIT
psql_ -d postgres -c "CREATE DATABASE corr"
psql_ -d corr -f tests/fixtures/correlated/dataset.sql
psql_ -d corr -c "CREATE EXTENSION ruvector_dag"
echo "==> recording every query under every arm (extension off) into $out"
record_arms "$out" corr "correlated columns (tests/fixtures/correlated/dataset.sql); max_parallel_workers_per_gather 0" \
  tests/fixtures/correlated/queries/*.sql
