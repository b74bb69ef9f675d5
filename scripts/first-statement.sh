#!/usr/bin/env bash
# The planning overhead of a session's first in-scope statement against later ones, per mode
# (off, frozen, learn), on a real server: a throwaway cluster with ruvector_dag preloaded, a
# two-table join over perfectly correlated columns (cost above ruvector.dag_replan_min_cost),
# 12 runs and a training cycle to learn it, then for each mode SESSIONS new sessions (40 by
# default) that each run EXPLAIN (SUMMARY) of the join three times. Prints the median Planning
# Time of the first statement and of the later two, and (frozen, learn) the median time of each
# of the planner hook's phases in a first statement and in a later one, microseconds, with the
# page faults the hook took (`ruvector.dag_phase_timing`, `ruvector_dag_phases()`). A measurement tool (README: "Where a
# session's first statement goes"), not a test: it asserts nothing.
# Options: --no-install (use the installed extension).
set -euo pipefail
cd "$(dirname "$0")/.."
install=1
[[ ${1:-} == --no-install ]] && install=0
# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
((install)) && install_extension --release
start_cluster "ruvector.dag_mode = 'learn'"
trap stop_cluster EXIT
psql_ <<'SQL' >/dev/null
CREATE TABLE a (x int, y int);
INSERT INTO a SELECT g % 1000, g % 1000 FROM generate_series(1, 200000) g;
CREATE TABLE b (x int, y int);
INSERT INTO b SELECT g % 1000, g % 1000 FROM generate_series(1, 50000) g;
CREATE INDEX ON b (x);
VACUUM ANALYZE a, b;
CREATE EXTENSION ruvector_dag;
SELECT ruvector_dag.ruvector_enable_neural_dag('a'), ruvector_dag.ruvector_enable_neural_dag('b');
SQL
Q="SELECT count(*) FROM a JOIN b ON a.x = b.x WHERE a.x < 20 AND a.y < 20"
for _ in $(seq 1 12); do psql_ -c "$Q" >/dev/null; sleep 0.5; done
psql_ -c "SELECT ruvector_dag.ruvector_dag_learn()" >/dev/null
sleep 2
med() { printf '%s\n' "$@" | sort -g | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for mode in off frozen learn; do
  psql_ -c "ALTER SYSTEM SET ruvector.dag_mode = '$mode'" -c "SELECT pg_reload_conf()" >/dev/null
  sleep 1
  firsts=() laters=()
  : >"$dir/phases"
  P="SELECT 'phase@ ' || phase || ' ' || total_us || ' ' || coalesce(page_faults, 0) FROM ruvector_dag.ruvector_dag_phases()"
  for s in $(seq 1 "${SESSIONS:-40}"); do
    out=$(psql_ -At -c "SET ruvector.dag_phase_timing = on" -c "EXPLAIN (SUMMARY) $Q" -c "${P/@/1}" \
      -c "EXPLAIN (SUMMARY) $Q" -c "EXPLAIN (SUMMARY) $Q" -c "${P/@/2}")
    times=$(awk '/Planning Time/ {print $3}' <<<"$out")
    firsts+=("$(sed -n 1p <<<"$times")")
    mapfile -t -O "${#laters[@]}" laters < <(sed -n 2,3p <<<"$times")
    # Session, phase, microseconds after the first statement and after all three, page faults
    # after the first and after all three.
    awk -v s="$s" '/^phase1 / { a[$2] = $3; fa[$2] = $4 } /^phase2 / { b[$2] = $3; fb[$2] = $4 }
      END { n = split("total postgres scope key settled alone copy dag recall load restore book decide arm candidates after other", all, " ")
            # Every phase, 0 where a session had none of it (medians over all sessions).
            for (i = 1; i <= n; i++) { p = all[i]; print s, p, (p in a ? a[p] : 0), (p in b ? b[p] : 0), (p in a ? fa[p] : 0), (p in b ? fb[p] : 0) } }' \
      <<<"$out" >>"$dir/phases"
  done
  recalled=$(psql_ -At -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'recalled_decisions'")
  echo "$mode: a session's first statement $(med "${firsts[@]}") ms, later ones $(med "${laters[@]}") ms (median Planning Time, ${SESSIONS:-40} sessions; decisions on what another recalled, the server's count so far: $recalled)"
  [[ $mode == off ]] && continue
  for which in first later; do
    line=""
    for p in total postgres scope key settled alone copy dag recall load restore book decide arm candidates after other; do
      mapfile -t v < <(awk -v p="$p" -v w="$which" '$2 == p { print (w == "first" ? $3 : ($4 - $3) / 2) }' "$dir/phases")
      mapfile -t f < <(awk -v p="$p" -v w="$which" '$2 == p { print (w == "first" ? $5 : ($6 - $5) / 2) }' "$dir/phases")
      ((${#v[@]})) || continue
      if [[ $p == total ]]; then
        line+="total $(med "${v[@]}") ($(med "${f[@]}") page faults), "
      else
        line+="$p $(med "${v[@]}"), "
      fi
    done
    echo "  $which statement, median us per phase: ${line%, }"
  done
done
