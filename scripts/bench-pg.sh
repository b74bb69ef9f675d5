#!/usr/bin/env bash
# The extension's cost, measured (README figures): pgbench select-only TPS with ruvector_dag
# off / observe / learn on pgbench_accounts (enabled for learning), the per-statement planning
# overhead in observe and learn mode (EXPLAIN's Planning Time of an in-scope join, median of
# 200), and the learned state's size after the runs. Release build, throwaway cluster.
# Options via environment: SCALE (pgbench scale, default 10), SECONDS_PER_RUN (default 20),
# CLIENTS (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-pg.sh
# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
install_extension --release
start_cluster "ruvector.dag_database = 'bench'" "ruvector.dag_background_interval_ms = 10000" \
  "shared_buffers = '256MB'"
trap stop_cluster EXIT
SCALE=${SCALE:-10} SECS=${SECONDS_PER_RUN:-20} CLIENTS=${CLIENTS:-2}
psql_ -d postgres -c "CREATE DATABASE bench"
pgbench_() { as_pg env PGOPTIONS="$1" "$PG_BIN/pgbench" -h "$dir" -p "$port" -U postgres "${@:2}" bench; }
pgbench_ "" -i -q -s "$SCALE" >/dev/null 2>&1
psql_ -d bench -c "CREATE EXTENSION ruvector_dag" \
  -c "SELECT ruvector_dag.ruvector_enable_neural_dag('pgbench_accounts')" \
  -c "SELECT ruvector_dag.ruvector_enable_neural_dag('pgbench_branches')" >/dev/null

echo "==> pgbench -S (select only), scale $SCALE, $CLIENTS clients, ${SECS}s per mode, this machine ($(nproc) cores)"
# The select is far below ruvector.dag_replan_min_cost (1000), so by default it is left alone;
# the "all" rows set the threshold to 0, so every statement is decided on and observed.
for run in off observe learn "observe all" "learn all"; do
  opts="-c ruvector.dag_mode=${run% all}"
  [[ $run == *all ]] && opts+=" -c ruvector.dag_replan_min_cost=0"
  pgbench_ "$opts" -S -T 3 -c "$CLIENTS" -j "$CLIENTS" >/dev/null 2>&1 # warm-up
  tps=$(pgbench_ "$opts" -S -T "$SECS" -c "$CLIENTS" -j "$CLIENTS" 2>/dev/null |
    awk '/^tps/ {print $3; exit}')
  lat=$(awk -v t="$tps" -v c="$CLIENTS" 'BEGIN { printf "%.1f", 1e6 * c / t }')
  printf '%-12s %10.0f TPS  (%s us per transaction per client)\n' "$run" "$tps" "$lat"
done

echo "==> planning time of an in-scope join, every statement considered (EXPLAIN's Planning Time, median of 200)"
JOIN="SELECT b.bid, count(*) FROM pgbench_accounts a JOIN pgbench_branches b ON b.bid = a.bid WHERE a.aid < 1000 GROUP BY b.bid"
for mode in off observe learn; do
  ms=$(for _ in $(seq 200); do echo "EXPLAIN (SUMMARY ON) $JOIN;"; done |
    PGOPTIONS="-c ruvector.dag_mode=$mode -c ruvector.dag_replan_min_cost=0" psql_ -d bench -At |
    awk '/^Planning Time/ {print $3}' | sort -g | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
  printf '%-8s %8.3f ms\n' "$mode" "$ms"
done

psql_ -d bench -At -c "SELECT * FROM ruvector_dag.ruvector_dag_learn()" >/dev/null
echo "==> learned state after the runs"
psql_ -d bench -At -F ' = ' -c "SELECT key, value FROM ruvector_dag.ruvector_dag_status()
  WHERE key IN ('enabled_tables', 'learned_version', 'learned_state_bytes', 'ring_pushed', 'ring_dropped', 'worker_cycles')"
psql_ -d bench -At -c "SELECT 'patterns = ' || count(*) FROM ruvector_dag.ruvector_dag_patterns()"
