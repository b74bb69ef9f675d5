#!/usr/bin/env bash
# TPC-H plan analysis (the main job before the extension learned): start a throwaway PostgreSQL 15, load
# TPC-H (scale factor ${SF:-0.1}), capture EXPLAIN (ANALYZE) of the 22 queries, and print each
# plan as the core sees it: every attention kind's weights, the critical path and the min cut.
# (scripts/run.sh is now the main job: the extension learning in a cluster.)
# Installs what is missing: postgresql-15 (apt), tpchgen-cli (cargo). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
sudo_if_needed() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if [ ! -x /usr/lib/postgresql/15/bin/initdb ]; then
  sudo_if_needed apt-get update
  sudo_if_needed apt-get install -y postgresql-15
fi
command -v tpchgen-cli >/dev/null || cargo install tpchgen-cli --locked

out=$(mktemp -d /tmp/ruvector-run.XXXXXX)
tests/fixtures/capture.sh "${SF:-0.1}" "$out"
cargo build -q -p ruvector-dag-core --example analyze
for plan in "$out"/q*.analyze.json; do
  printf '\n### %s\n' "$(basename "$plan" .analyze.json)"
  target/debug/examples/analyze "$plan"
done
echo
echo "plans kept in $out"
