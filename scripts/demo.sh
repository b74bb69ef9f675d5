#!/usr/bin/env bash
# A throwaway PostgreSQL (15; --pg 18 for 18) with ruvector_dag preloaded, learning on a
# dataset with correlated columns where the default plan is tens of times slower than a hash
# join:
#   1. installs the extension (cargo pgrx install) into the system PostgreSQL 15 (or the
#      PostgreSQL 18 of scripts/setup-pg18.sh, in a directory of its own);
#   2. starts a cluster in a temporary directory (as user postgres when run as root);
#   3. runs the query in learn mode, printing each run's decision and time, with a learning
#      cycle every 4 runs (the background worker also learns on its own interval);
#   4. restarts the server and shows the learned state survived (same version, same patterns,
#      the same arm applied in frozen mode).
# Options: --check (exit non-zero unless it learned, got faster and survived the restart),
#          --release (release build), --keep (leave the cluster running; prints how to stop it),
#          --pg 15|18 (the PostgreSQL major; 15 by default).
# Called by scripts/run.sh (the main job) and scripts/test.sh (--check).
set -euo pipefail
cd "$(dirname "$0")/.."

check=0 keep=0 profile=()
PG_MAJOR=15
while (($#)); do
  case $1 in
    --check) check=1 ;;
    --release) profile=(--release) ;;
    --keep) keep=1 ;;
    --pg) PG_MAJOR=${2:-}; shift ;;
    --pg=*) PG_MAJOR=${1#--pg=} ;;
    *) echo "unknown option $1 (want --check, --release, --keep, --pg 15|18)" >&2; exit 2 ;;
  esac
  shift
done

# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
install_extension "${profile[@]}"
# No ruvector.dag_database: the launcher finds the database that uses the extension itself.
start_cluster "ruvector.dag_background_interval_ms = 5000" "max_parallel_workers_per_gather = 0"
if ((keep)); then
  trap 'echo "cluster kept: psql -h $dir -p $port -U postgres demo; stop: runuser -u postgres -- $PG_BIN/pg_ctl -D $dir/data stop"' EXIT
else
  trap stop_cluster EXIT
fi
psql_ -d postgres -c "CREATE DATABASE demo"
q() { psql_ -d demo -At "$@"; }

echo "==> dataset: 100,000 orders whose region, country and city always agree; 40,000 items"
q -f tests/fixtures/correlated/dataset.sql
q -c "CREATE EXTENSION ruvector_dag" -c "SELECT ruvector_dag.ruvector_enable_neural_dag('orders')" >/dev/null
QUERY=$(cat tests/fixtures/correlated/queries/c01.sql)

# One EXPLAIN ANALYZE in a session with the given settings: "<arm>|<ms>".
run_once() {
  local settings=$1
  q -c "$settings" -c "EXPLAIN (ANALYZE, TIMING OFF) $QUERY" |
    awk -F"'" '/^ruvector_dag: arm/ {arm=$2} /^Execution Time/ {split($0, t, " "); ms=t[3]} END {print arm "|" ms}'
}

echo "==> the default plan (mode off), 3 runs"
default_ms=()
for _ in 1 2 3; do
  r=$(run_once "SET ruvector.dag_mode = 'off'")
  default_ms+=("${r#*|}")
done
echo "default: ${default_ms[*]} ms"

echo "==> learn mode: each run's decision and time; a learning cycle every 4 runs"
LEARN="SET ruvector.dag_mode = 'learn'"
# One session for all runs, so the backend's own observations count at once (as in production).
script="$dir/learn.sql"
{
  echo "$LEARN;"
  for i in $(seq 1 24); do
    echo "\\echo run $i"
    echo "EXPLAIN (ANALYZE, TIMING OFF) $QUERY;"
    ((i % 4 == 0)) && echo "SELECT 'cycle: ' || trajectories || ' trajectories, ' || patterns || ' patterns, state v' || state_version FROM ruvector_dag.ruvector_dag_learn();"
  done
} >"$script"
chmod 644 "$script"
# EXPLAIN prints the execution time first, then the decision and its reason.
q -f "$script" | awk '
  /^run / {run=$2}
  /^Execution Time/ {ms=$3}
  /^ruvector_dag: arm/ {split($0, p, "\x27"); arm=p[2]; rule=$0; sub(/.*rule /, "", rule); sub(/\).*/, "", rule)}
  /^ruvector_dag reason/ {printf "run %2d  %-45s %-8s %9.1f ms\n", run, arm, rule, ms}
  /^cycle: / {print "        " $0}'

echo "==> what was learned"
q -c "SELECT pattern, members, best_arm, round(confidence::numeric, 3), round(best_mean_ms::numeric, 1) AS best_ms, round(default_mean_ms::numeric, 1) AS default_ms FROM ruvector_dag.ruvector_dag_patterns()" | head -5
FROZEN="SET ruvector.dag_mode = 'frozen'"
learned_ms=()
for _ in 1 2 3; do
  r=$(run_once "$FROZEN")
  learned_arm=${r%|*}
  learned_ms+=("${r#*|}")
done
echo "frozen mode now applies '$learned_arm': ${learned_ms[*]} ms (default was ${default_ms[*]} ms)"
# The background explorer would go on verifying the query's other candidates meanwhile: pause
# it (the pause waits for a run in progress), then run a learning cycle here: it takes every
# run recorded so far and trains on it, so the background learner has nothing left to store
# and the state read here is the one the restart must keep. (Waiting for the background
# learner instead raced with its next training, which stores a new version.)
q -c "SELECT ruvector_dag.ruvector_dag_explorer_pause()" >/dev/null
q -c "SELECT state_version FROM ruvector_dag.ruvector_dag_learn()" >/dev/null
version_before=$(q -c "SELECT version FROM ruvector_dag.learned_state")
patterns_before=$(q -c "SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()")
bytes=$(q -c "SELECT octet_length(snapshot) FROM ruvector_dag.learned_state")
echo "learned state: version $version_before, $patterns_before patterns, $bytes bytes"

# An attention plugin (host-wasm/plugins/build.sh builds it) registered before the restart must
# work after it: each backend compiles it again from the bytes stored in the registry.
plugin=target/plugins/misestimate.wasm
plugin_scores() {
  q -c "SELECT string_agg(round(weight::numeric, 6)::text, ',' ORDER BY node)
          FROM ruvector_dag.ruvector_attention_scores(\$q\$$QUERY\$q\$, 'plugin:misestimate')"
}
plugin_before="" plugin_after=""
if [[ -f $plugin ]]; then
  printf "SELECT ruvector_dag.ruvector_dag_register_attention('misestimate', decode('%s', 'hex'))" \
    "$(od -An -v -tx1 "$plugin" | tr -d ' \n')" | q >/dev/null
  plugin_before=$(plugin_scores)
  echo "attention plugin 'misestimate' registered: weights $plugin_before"
fi

echo "==> restart"
restart_cluster
[[ -f $plugin ]] && plugin_after=$(plugin_scores) && echo "after restart, plugin 'misestimate': weights $plugin_after"
version_after=$(q -c "SELECT version FROM ruvector_dag.learned_state")
patterns_after=$(q -c "SELECT count(*) FROM ruvector_dag.ruvector_dag_patterns()")
r=$(run_once "$FROZEN")
echo "after restart: version $version_after, $patterns_after patterns, frozen mode applies '${r%|*}' (${r#*|} ms)"
# Nothing configured: the first in-scope statement after the restart asks for this database's
# learner, and the launcher starts it at its next check (every 10 s).
for _ in $(seq 60); do
  learner=$(q -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'learner_pid'")
  [[ $learner != 0 ]] && break
  sleep 0.5
done
q -c "SELECT key || ' = ' || value FROM ruvector_dag.ruvector_dag_status() WHERE key IN ('preloaded', 'learner_pid', 'learned_version', 'learned_state_bytes', 'model_cache')"
# Nothing was written since the restart: the session that read the learned state from its table
# put it into the shared model cache, and later sessions copy it from there.
cached=$(q -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'model_cache'")

if ((check)); then
  median() { printf '%s\n' "$@" | sort -g | sed -n 2p; }
  d=$(median "${default_ms[@]}") l=$(median "${learned_ms[@]}")
  fail() { echo "demo check failed: $*" >&2; tail -20 "$dir/server.log" >&2; exit 1; }
  [[ $learned_arm != default && -n $learned_arm ]] || fail "no arm learned (got '$learned_arm')"
  awk -v d="$d" -v l="$l" 'BEGIN { exit !(l * 2.5 < d) }' || fail "learned plan $l ms is not clearly faster than the default $d ms"
  [[ $version_after == "$version_before" && $patterns_after == "$patterns_before" ]] ||
    fail "state changed over the restart: v$version_before/$patterns_before patterns -> v$version_after/$patterns_after"
  [[ ${r%|*} == "$learned_arm" ]] || fail "after restart the arm is '${r%|*}', before '$learned_arm'"
  [[ $learner != 0 ]] || fail "no background learner for database demo after the restart"
  # (The learner may have written a newer version since: that one is published at its commit.)
  cached_version=$(sed -n 's/^version \([0-9]*\), .*/\1/p' <<<"$cached")
  [[ -n $cached_version ]] && ((cached_version >= version_after)) ||
    fail "after the restart the model cache does not hold version $version_after: $cached"
  [[ -f $plugin ]] || fail "$plugin is missing (host-wasm/plugins/build.sh builds it)"
  [[ -n $plugin_before && $plugin_after == "$plugin_before" ]] ||
    fail "the plugin's weights changed over the restart: '$plugin_before' -> '$plugin_after'"
  echo "demo check: learned '$learned_arm' (${d} ms -> ${l} ms), state and the registered plugin survived the restart"
fi
