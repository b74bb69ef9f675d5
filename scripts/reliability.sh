#!/usr/bin/env bash
# Reliability on a real server (issue 14), in a throwaway PostgreSQL with ruvector_dag
# preloaded, learning (mode learn, every statement in scope, learning cycles every second):
#   1. concurrency: pgbench -c 8 -j 2 (TPC-B plus a join on enabled tables) with the simple and
#      the prepared protocol: no failed transaction, no crash, no wait on the extension's
#      tables, trajectories observed from both protocols, drops counted;
#   2. crash safety: kill -9 of a backend in the middle of a query, of the learner in the middle
#      of its cycles, and pg_ctl stop -m immediate while a cycle runs: after each restart the
#      learned state is a complete snapshot (it loads, no older than before the crash) and the
#      status says since when the trajectory ring holds what it holds;
#   3. a streaming standby (pg_basebackup): uses the primary's learned state, frozen, never
#      errors because it cannot write, and its sessions pick up new versions as they replicate;
#   4. DROP EXTENSION leaves nothing behind (no schema, function, table, type or setting
#      written) and queries go on; CREATE EXTENSION works again and learns again;
#   5. many distinct query shapes (joins of three of 64 enabled tables, three forms each) from two
#      sessions: every store of the learned state stays within its capacity, the learned state
#      within DESIGN's budget, and the private memory of the backends and the learner is
#      measured (bounded) while it grows and after a new session loads it.
# Every check prints what it measured; the script exits non-zero at the first failed check.
# Options: --seconds N (each pgbench run; default 10, README's figures: 60), --shapes N (step 5;
# default 3000, README's figures: 100000, at most 124992), --release (install a release build,
# as README's figures are measured; default: a debug build, quicker to compile), --no-install
# (use the installed extension), --keep (leave the cluster; prints where), --pg 15|18.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=10 shapes=3000 install=1 keep=0 release=()
PG_MAJOR=15
while (($#)); do
  case $1 in
    --seconds) seconds=${2:?}; shift ;;
    --shapes) shapes=${2:?}; shift ;;
    --no-install) install=0 ;;
    --release) release=(--release) ;;
    --keep) keep=1 ;;
    --pg) PG_MAJOR=${2:?}; shift ;;
    *) echo "unknown option $1 (want --seconds N, --shapes N, --release, --no-install, --keep, --pg 15|18)" >&2; exit 2 ;;
  esac
  shift
done
[[ $seconds =~ ^[1-9][0-9]*$ ]] || { echo "--seconds wants a positive whole number, not '$seconds'" >&2; exit 2; }
[[ $shapes =~ ^[1-9][0-9]*$ && $shapes -le 124992 ]] || { echo "--shapes wants a whole number from 1 to 124992, not '$shapes'" >&2; exit 2; }

# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
((install)) && install_extension "${release[@]}"
start_cluster "ruvector.dag_database = 'rel'" "ruvector.dag_background_interval_ms = 1000" \
  "ruvector.dag_mode = 'learn'" "ruvector.dag_replan_min_cost = 0" "max_connections = 40" \
  "wal_level = replica" "max_wal_senders = 4" "hot_standby = on" "restart_after_crash = on" \
  "log_min_messages = warning"
standby=""
cleanup() {
  if ((keep)); then
    echo "cluster kept in $dir (port $port${standby:+, standby port $((port + 1))})"
    return
  fi
  [[ -n $standby ]] && as_pg "$PG_BIN/pg_ctl" -D "$standby" -m immediate stop >/dev/null 2>&1
  stop_cluster
}
trap cleanup EXIT

fail() { echo "FAILED: $*" >&2; echo "--- server log (last 40 lines)" >&2; tail -40 "$dir/server.log" >&2; exit 1; }
ok() { echo "    ok: $*"; }
q() { psql_ -d rel -At "$@"; }
status() { q -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = '$1'"; }
wait_ready() {
  local p=${1:-$port}
  for _ in $(seq 1 120); do
    "$PG_BIN/pg_isready" -q -h "$dir" -p "$p" && psql -X -q -h "$dir" -p "$p" -U postgres -d rel -c "SELECT 1" >/dev/null 2>&1 && return 0
    sleep 0.5
  done
  fail "the server on port $p did not come back"
}
# Server log lines since byte offset $1 that report a crash or one of our errors.
bad_log_lines() {
  tail -c +"$(($1 + 1))" "$dir/server.log" |
    grep -E 'PANIC|was terminated by signal|ERROR:.*ruvector_dag|ruvector_dag.*(panic|failed)' || true
}
log_at() { stat -c %s "$dir/server.log"; }
# The largest private resident memory (KiB) among the server's processes whose title matches.
private_kib() {
  local pid kib max=0
  for pid in $(ps -u "$(stat -c %U "$dir/data")" -o pid=,args= | awk -v t="$1" 'index($0, t) {print $1}'); do
    kib=$(awk '/^Private_(Clean|Dirty):/ {s += $2} END {print s + 0}' "/proc/$pid/smaps_rollup" 2>/dev/null || echo 0)
    ((kib > max)) && max=$kib
  done
  echo "$max"
}
# The learned state loads: a new session plans an in-scope statement with it.
state_loads() {
  local out
  out=$(q -c "EXPLAIN SELECT count(*) FROM pgbench_accounts a JOIN pgbench_branches b ON a.bid = b.bid" \
          -c "SELECT key || '=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key IN ('backend_fallbacks', 'backend_last_error', 'backend_state_version', 'learned_version')")
  grep -q '^backend_fallbacks=0$' <<<"$out" || fail "the learned state did not load: $out"
  grep -q '^backend_last_error=none$' <<<"$out" || fail "an error in the learning path: $out"
  local bv lv
  bv=$(sed -n 's/^backend_state_version=//p' <<<"$out")
  lv=$(sed -n 's/^learned_version=//p' <<<"$out")
  [[ $bv == "$lv" ]] || fail "the session holds version $bv, the table $lv"
  echo "$lv"
}

echo "==> PostgreSQL $PG_MAJOR; pgbench scale 5; TPC-B and a join, every table enabled, mode learn"
psql_ -d postgres -c "CREATE DATABASE rel"
"$PG_BIN/pgbench" -q -i -s 5 -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1
q -c "CREATE EXTENSION ruvector_dag" \
  -c "SELECT ruvector_dag.ruvector_enable_neural_dag(t) FROM unnest(ARRAY['pgbench_accounts', 'pgbench_branches', 'pgbench_tellers', 'pgbench_history']) t" >/dev/null
cat >"$dir/join.sql" <<'SQL'
\set aid random(1, 100000 * :scale)
\set bid random(1, :scale)
SELECT b.bbalance, count(*), sum(a.abalance) FROM pgbench_branches b JOIN pgbench_accounts a ON a.bid = b.bid WHERE b.bid = :bid AND a.aid BETWEEN :aid AND :aid + 500 GROUP BY b.bbalance;
SELECT t.tbalance, a.abalance FROM pgbench_tellers t JOIN pgbench_accounts a ON a.bid = t.bid WHERE a.aid = :aid ORDER BY t.tid LIMIT 3;
SQL

# The launcher starts the learner of a database created after the server within its period.
for _ in $(seq 1 60); do
  [[ $(status learner_pid) =~ ^[1-9] ]] && break
  sleep 0.5
done
[[ $(status learner_pid) =~ ^[1-9] ]] || fail "no learner started for database rel"
echo "==> 1. concurrency: pgbench -c 8 -j 2 -T $seconds, simple and prepared"
for protocol in simple prepared; do
  at=$(log_at)
  # Trajectories: the ring's records less those of statistics advice (misestimated scans).
  pushed0=$(($(status ring_pushed) - $(status ring_advice_pushed)))
  dropped0=$(status ring_dropped)
  cycles0=$(status worker_cycles)
  # Waits on the extension's own tables or its LWLock, sampled every 100 ms.
  (
    while :; do
      q -c "SELECT (SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation
                    JOIN pg_namespace n ON n.oid = c.relnamespace
                    WHERE NOT l.granted AND n.nspname = 'ruvector_dag') || ' ' ||
                   (SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'ruvector_dag')" 2>/dev/null || true
      # Private memory (KiB: resident, not shared buffers) of the largest pgbench backend and
      # of the learner.
      echo "rss $(private_kib 'postgres: postgres rel') $(private_kib 'ruvector_dag learner')"
      sleep 0.1
    done
  ) >"$dir/waits.$protocol" &
  sampler=$!
  out=$("$PG_BIN/pgbench" -n -c 8 -j 2 -T "$seconds" -M "$protocol" -b tpcb-like@1 -f "$dir/join.sql@2" \
        -h "$dir" -p "$port" -U postgres rel 2>&1) || fail "pgbench ($protocol) exited with an error: $out"
  kill "$sampler"; wait "$sampler" 2>/dev/null || true
  tx=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' <<<"$out")
  failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' <<<"$out")
  tps=$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | tail -1)
  [[ -n $tx && $tx -gt 0 ]] || fail "pgbench ($protocol) processed nothing: $out"
  [[ ${failed:-0} == 0 ]] || fail "pgbench ($protocol): $failed failed transactions"
  rel_waits=$(awk '$1 != "rss" {s += $1} END {print s + 0}' "$dir/waits.$protocol")
  lw_waits=$(awk '$1 != "rss" {s += $2} END {print s + 0}' "$dir/waits.$protocol")
  samples=$(awk '$1 != "rss"' "$dir/waits.$protocol" | wc -l)
  rss=$(awk '$1 == "rss" {if ($2 > b) b = $2; if ($3 > l) l = $3} END {printf "private memory at most %.0f MB per backend, %.0f MB for the learner", b / 1024, l / 1024}' "$dir/waits.$protocol")
  # Per script (TPC-B: 5 statements, all on enabled tables; the joins: 2), in order.
  mapfile -t per_script < <(sed -n 's/^ - \([0-9]*\) transactions (.*/\1/p' <<<"$out")
  [[ ${#per_script[@]} == 2 ]] || fail "pgbench's per-script counts not found: $out"
  [[ $rel_waits == 0 ]] || fail "$rel_waits lock waits on the extension's tables"
  bad=$(bad_log_lines "$at")
  [[ -z $bad ]] || fail "server log: $bad"
  sleep 2 # one more learning cycle
  pushed=$(($(status ring_pushed) - $(status ring_advice_pushed) - pushed0))
  cycles=$(($(status worker_cycles) - cycles0))
  dropped=$(($(status ring_dropped) - dropped0))
  # Every in-scope statement of every completed transaction is observed (the statements of the
  # transactions cut off at the end, at most 8 x 5, may add to it).
  expected=$((5 * per_script[0] + 2 * per_script[1]))
  [[ $pushed -ge $expected && $pushed -le $((expected + 40)) ]] ||
    fail "$pushed trajectories recorded with the $protocol protocol for $expected in-scope statements"
  [[ $cycles -gt 0 ]] || fail "no learning cycle ran during the $protocol run"
  ok "$protocol: $tx transactions ($tps tps), 0 failed; $pushed trajectories recorded for $expected in-scope statements, $dropped of them dropped by the full ring (it drops its oldest records; no backend waits for space), $cycles learning cycles; lock waits on the extension's tables: 0 of $samples samples; on its LWLock: $lw_waits backend-samples; $rss"
done
version=$(state_loads)
ok "learned state version $version loads in a new session"

echo "==> 2. crash safety"
# a. kill -9 of a backend in the middle of an in-scope query: the postmaster restarts everything.
at=$(log_at)
before=$(status learned_version)
q -c "SELECT pg_sleep(30), count(*) FROM pgbench_accounts" >/dev/null 2>&1 &
sleep 1
victim=$(q -c "SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%' AND pid <> pg_backend_pid()")
[[ -n $victim ]] || fail "the long query is not running"
kill -9 "$victim"
wait 2>/dev/null || true
wait_ready
after=$(state_loads)
[[ $after -ge $before ]] || fail "after kill -9 of a backend: version $after, older than $before"
grep -q "terminated by signal 9" <(tail -c +"$((at + 1))" "$dir/server.log") || fail "the kill did not reach the server"
started=$(status ring_started_at)
ok "backend killed mid-query: restarted, state version $after (was $before) loads; ring restarted at $started, ring_pushed $(status ring_pushed)"

# b. kill -9 of the learner, again and again, while trajectories stream in.
for round in 1 2 3; do
  before=$(status learned_version)
  "$PG_BIN/pgbench" -n -c 4 -j 2 -T 4 -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1 &
  bench=$!
  learner=""
  for _ in $(seq 1 40); do
    learner=$(status learner_pid)
    [[ -n $learner && $learner != 0 ]] && break
    sleep 0.5
  done
  [[ -n $learner && $learner != 0 ]] || fail "no learner running"
  sleep "0.$((RANDOM % 9 + 1))"
  kill -9 "$learner" 2>/dev/null || true
  wait "$bench" 2>/dev/null || true # its connections are cut by the crash restart: expected
  wait_ready
  after=$(state_loads)
  [[ $after -ge $before ]] || fail "after kill -9 of the learner: version $after, older than $before"
  ok "learner (pid $learner) killed mid-cycle, round $round: state version $after (was $before) loads"
done

# c. pg_ctl stop -m immediate while a learning cycle runs, then start.
before=$(status learned_version)
"$PG_BIN/pgbench" -n -c 4 -j 2 -T 3 -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1 || true
q -c "SELECT * FROM ruvector_dag.ruvector_dag_learn()" >/dev/null 2>&1 &
sleep 0.2
as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null
wait 2>/dev/null || true
as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
wait_ready
after=$(state_loads)
[[ $after -ge $before ]] || fail "after an immediate stop: version $after, older than $before"
ok "immediate stop during a learning cycle: state version $after (was $before) loads; ring restarted at $(status ring_started_at)"
# The learner learns again after all that.
before=$after
"$PG_BIN/pgbench" -n -c 4 -j 2 -T 3 -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1
sleep 3
after=$(status learned_version)
[[ $after -gt $before ]] || fail "no learning after the crashes (version $after)"
ok "learning goes on after the crashes: version $before -> $after"

echo "==> 3. a streaming standby"
standby="$dir/standby"
as_pg "$PG_BIN/pg_basebackup" -h "$dir" -p "$port" -U postgres -D "$standby" -R -X stream --checkpoint=fast >/dev/null
{
  echo "port = $((port + 1))"
  echo "hot_standby = on"
} >>"$standby/postgresql.conf"
as_pg "$PG_BIN/pg_ctl" -D "$standby" -l "$dir/standby.log" -w start >/dev/null
wait_ready $((port + 1))
qs() { psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $((port + 1)) -U postgres -d rel -At "$@"; }
JOIN="SELECT b.bbalance, count(*) FROM pgbench_branches b JOIN pgbench_accounts a ON a.bid = b.bid WHERE a.aid < 1000 GROUP BY b.bbalance"
primary_version=$(status learned_version)
for _ in $(seq 1 40); do
  [[ $(qs -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'learned_version'") == "$primary_version" ]] && break
  sleep 0.5
done
# A long session on the standby: it runs an in-scope query, waits while the primary learns a
# new version, and runs it again.
sv="SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key"
qs -c "SELECT count(*) FROM ($JOIN) x" \
   -c "SELECT 'mode=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'mode'" \
   -c "SELECT 'held=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_state_version'" \
   -c "SELECT 'error=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_last_error'" \
   -c "SELECT pg_sleep(15)" \
   -c "SELECT count(*) FROM ($JOIN) x" \
   -c "SELECT 'picked=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_state_version'" \
   -c "SELECT 'error2=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'backend_last_error'" \
   >"$dir/standby.out" 2>&1 &
session=$!
sleep 2
# The primary learns a new version meanwhile.
"$PG_BIN/pgbench" -n -c 4 -j 2 -T 3 -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1
q -c "SELECT * FROM ruvector_dag.ruvector_dag_learn()" >/dev/null
new_version=$(status learned_version)
[[ $new_version -gt $primary_version ]] || fail "the primary did not learn a new version"
wait "$session" || fail "the standby session failed: $(cat "$dir/standby.out")"
field() { sed -n "s/^$1=//p" "$dir/standby.out"; }
mode=$(field mode)
[[ $(field held) == "$primary_version" ]] || fail "the standby session held version '$(field held)', the primary wrote $primary_version"
[[ $(field error) == none && $(field error2) == none ]] || fail "the standby session: $(cat "$dir/standby.out")"
[[ $mode == *frozen* ]] || fail "the standby's mode is '$mode', want frozen (it cannot learn)"
ok "standby: mode '$mode', held the primary's version $primary_version, no error"
# Replay may wait for the standby's own queries (a long one holds back the cleanup of
# learned_state's old row versions), so the session holds a newer version, not necessarily the
# newest; a new session catches up.
picked=$(field picked)
[[ $picked =~ ^[0-9]+$ && $picked -gt $primary_version ]] || fail "the standby session still holds version '$picked' (it held $primary_version; the primary is at $new_version)"
caught=""
for _ in $(seq 1 60); do
  caught=$(qs -c "SELECT count(*) FROM ($JOIN) x" -c "$sv = 'backend_state_version'" | tail -1)
  [[ $caught -ge $new_version ]] && break
  sleep 0.5
done
[[ $caught -ge $new_version ]] || fail "a new standby session holds version $caught; the primary is at $new_version"
learn_err=$(qs -c "SELECT ruvector_dag.ruvector_dag_learn()" 2>&1 || true)
[[ $learn_err == *standby* || $learn_err == *recovery* ]] || fail "ruvector_dag_learn() on the standby: $learn_err"
# A standby never explores: its in-scope statements are never offered to an explorer.
offered=$(qs -c "SELECT count(*) FROM ($JOIN) x" -c "$sv = 'explorer_offered'" | tail -1)
[[ $offered == 0 ]] || fail "the standby offered $offered statements to a background explorer"
bad=$(grep -E 'PANIC|ERROR:.*ruvector_dag|ruvector_dag.*(panic|failed)' "$dir/standby.log" | grep -v 'ruvector_dag_learn' || true)
[[ -z $bad ]] || fail "standby log: $bad"
ok "standby: the open session moved from version $primary_version to $picked as it replicated, a new one holds $caught (primary: $new_version); learning there is refused by name (${learn_err%%$'\n'*}); nothing offered to an explorer"
as_pg "$PG_BIN/pg_ctl" -D "$standby" -m fast stop >/dev/null
standby=""

echo "==> 4. DROP EXTENSION leaves no object behind; CREATE EXTENSION works again"
at=$(log_at)
q -c "DROP EXTENSION ruvector_dag CASCADE" >/dev/null 2>&1
left=$(q -c "SELECT string_agg(x, ', ') FROM (
  SELECT 'object ' || objid::regclass::text AS x FROM pg_depend
    WHERE refclassid = 'pg_namespace'::regclass AND refobjid = (SELECT oid FROM pg_namespace WHERE nspname = 'ruvector_dag')
  UNION ALL SELECT 'function ' || proname FROM pg_proc WHERE proname LIKE 'ruvector%'
  UNION ALL SELECT 'relation ' || relname FROM pg_class WHERE relname LIKE 'ruvector%'
  UNION ALL SELECT 'type ' || typname FROM pg_type WHERE typname LIKE 'ruvector%'
  UNION ALL SELECT 'role setting ' || s FROM pg_db_role_setting, unnest(setconfig) s WHERE s LIKE 'ruvector%') o")
[[ -z $left ]] || fail "left behind by DROP EXTENSION: $left"
# Sessions go on: queries on formerly enabled tables plan and run, old sessions and new.
out=$("$PG_BIN/pgbench" -n -c 4 -j 2 -T 3 -M prepared -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel 2>&1) ||
  fail "queries after DROP EXTENSION: $out"
explain=$(q -c "EXPLAIN $JOIN")
grep -q ruvector_dag <<<"$explain" && fail "a decision after DROP EXTENSION: $explain"
sleep 2
bad=$(bad_log_lines "$at")
[[ -z $bad ]] || fail "server log after DROP EXTENSION: $bad"
kept=$(q -c "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'ruvector_dag') || ' ' || (SELECT count(*) FROM pg_roles WHERE rolname = 'ruvector_dag_admin')")
ok "no object of the extension left (kept, as PostgreSQL does: the empty schema CREATE EXTENSION made from the control file, and role ruvector_dag_admin: $kept); queries run, no decision, no error in the log"
q -c "CREATE EXTENSION ruvector_dag" -c "SELECT ruvector_dag.ruvector_enable_neural_dag('pgbench_accounts')" >/dev/null
v0=$(status learned_version)
"$PG_BIN/pgbench" -n -c 4 -j 2 -T 3 -f "$dir/join.sql" -h "$dir" -p "$port" -U postgres rel >/dev/null 2>&1
q -c "SELECT * FROM ruvector_dag.ruvector_dag_learn()" >/dev/null
v1=$(status learned_version)
[[ $v0 == "0 (nothing learned yet)" ]] || fail "a new extension's status says '$v0'"
[[ $v1 =~ ^[0-9]+$ ]] || fail "nothing learned after CREATE EXTENSION: $v1"
explain=$(q -c "EXPLAIN $JOIN")
grep -q "ruvector_dag: arm" <<<"$explain" || fail "no decision after CREATE EXTENSION: $explain"
ok "CREATE EXTENSION again: learns (version '$v0' -> $v1) and decides"

echo "==> 5. $shapes distinct query shapes from two sessions"
# 64 small enabled tables; query i joins three of them (a distinct set for each i) in one of
# three forms (count; GROUP BY; ORDER BY .. LIMIT), so every query is a plan shape never seen.
{
  for t in $(seq 1 64); do
    echo "CREATE TABLE s$t (id int PRIMARY KEY, a int, b int);"
    echo "INSERT INTO s$t SELECT g, g % 7, g % 11 FROM generate_series(1, 40) g;"
    echo "SELECT ruvector_dag.ruvector_enable_neural_dag('s$t');"
  done
  echo "ANALYZE;"
} >"$dir/shapes-setup.sql"
q -f "$dir/shapes-setup.sql" >/dev/null
awk -v n="$shapes" -v dir="$dir" 'BEGIN {
  c = 0
  for (f = 0; f < 3; f++) for (i = 1; i <= 64; i++) for (j = i + 1; j <= 64; j++) for (k = j + 1; k <= 64; k++) {
    if (c >= n) exit
    from = "s" i " JOIN s" j " USING (id) JOIN s" k " USING (id)"
    if (f == 0) sql = "SELECT count(*) FROM " from ";"
    else if (f == 1) sql = "SELECT s" i ".a, count(*) FROM " from " GROUP BY s" i ".a;"
    else sql = "SELECT id FROM " from " ORDER BY s" k ".b, id LIMIT 3;"
    print sql > (dir "/shapes." (c % 2) ".sql")
    c++
  }
}'
at=$(log_at)
pushed0=$(($(status ring_pushed) - $(status ring_advice_pushed)))
dropped0=$(status ring_dropped)
cycles0=$(status learned_cycles)
wal0=$(q -c "SELECT pg_current_wal_lsn()")
: >"$dir/shapes.rss"
(
  while :; do
    echo "$(private_kib 'postgres: postgres rel') $(private_kib 'ruvector_dag learner')"
    sleep 0.5
  done
) >>"$dir/shapes.rss" & # appending: the sessions append their own lines
sampler=$!
t0=$(date +%s)
# Each session also reports its backend's private memory (KiB) at its end: a short run can end
# before the sampler sees it.
for s in 0 1; do
  [[ -s $dir/shapes.$s.sql ]] || continue
  cat >>"$dir/shapes.$s.sql" <<SQL
SELECT pg_backend_pid() AS pid \\gset
\\setenv BACKEND_PID :pid
\\! awk '/^Private_(Clean|Dirty):/ {s += \$2} END {print s + 0, 0}' "/proc/\$BACKEND_PID/smaps_rollup" >>"$dir/shapes.rss"
SQL
done
sessions=()
for s in 0 1; do
  [[ -s $dir/shapes.$s.sql ]] || continue
  psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d rel -o /dev/null -f "$dir/shapes.$s.sql" &
  sessions+=($!)
done
for pid in "${sessions[@]}"; do
  wait "$pid" || { kill "$sampler"; fail "a session running the distinct shapes failed"; }
done
elapsed=$(($(date +%s) - t0))
for _ in $(seq 1 60); do
  [[ $(status ring_pending) == 0 ]] && break
  sleep 1
done
sleep 2 # the cycle that took the last trajectories commits its state
kill "$sampler"; wait "$sampler" 2>/dev/null || true
wal_mb=$(q -c "SELECT round(pg_wal_lsn_diff(pg_current_wal_lsn(), '$wal0') / 1048576)")
cycles=$(($(status learned_cycles) - cycles0))
bad=$(bad_log_lines "$at")
[[ -z $bad ]] || fail "server log during the distinct shapes: $bad"
# A new session loads the learned state; its backend's private memory, and what the state holds.
cat >"$dir/load.sql" <<'SQL'
SELECT count(*) FROM s1 JOIN s2 USING (id) JOIN s3 USING (id);
SELECT pg_backend_pid() AS pid \gset
SELECT key || '=' || value FROM ruvector_dag.ruvector_dag_status() WHERE key IN ('query_shapes', 'patterns', 'btsp_engrams', 'capacities', 'learned_state_bytes', 'learned_version', 'backend_state_version', 'backend_fallbacks', 'backend_last_error');
\setenv BACKEND_PID :pid
\! awk '/^Private_(Clean|Dirty):/ {s += $2} END {print "private_kib=" s}' "/proc/$BACKEND_PID/smaps_rollup"
SQL
out=$(q -f "$dir/load.sql")
field() { sed -n "s/^$1=//p" <<<"$out"; }
cap() { sed -n "s/.*$1 \([0-9]*\).*/\1/p" <<<"$(field capacities)"; }
held_shapes=$(field query_shapes) patterns=$(field patterns) engrams=$(field btsp_engrams)
state_bytes=$(field learned_state_bytes) fresh_kib=$(field private_kib)
[[ $(field backend_fallbacks) == 0 && $(field backend_last_error) == none ]] || fail "the learned state after $shapes shapes: $out"
[[ $(field backend_state_version) == "$(field learned_version)" ]] || fail "a new session does not hold the newest state: $out"
[[ $held_shapes =~ ^[0-9]+$ && $held_shapes -gt 0 ]] || fail "no query shape learned: $out"
for s in query_shapes patterns btsp_engrams; do
  v=$(field $s) c=$(cap $s)
  [[ -n $c && $v -le $c ]] || fail "$s: $v held, capacity ${c:-unknown}"
done
pushed=$(($(status ring_pushed) - $(status ring_advice_pushed) - pushed0))
dropped=$(($(status ring_dropped) - dropped0))
# Each query ran once, so every trajectory the learner took is a shape of its own: with more
# taken than the shape store holds, it is full, not larger.
if ((pushed - dropped > $(cap query_shapes))); then
  [[ $held_shapes == "$(cap query_shapes)" ]] || fail "$held_shapes query shapes held after $((pushed - dropped)) learned from (capacity $(cap query_shapes))"
fi
budget=$((100 * 1024 * 1024)) # DESIGN: the whole learned state <= 100 MB per enabled table
((state_bytes <= budget)) || fail "the learned state is $state_bytes bytes, over DESIGN's 100 MB"
rss=$(awk '{if ($1 > b) b = $1; if ($2 > l) l = $2} END {printf "%.0f %.0f", b / 1024, l / 1024}' "$dir/shapes.rss")
read -r backend_mb learner_mb <<<"$rss"
fresh_mb=$((fresh_kib / 1024))
# A bound against runaway growth only, far above what 100,000 shapes take (README: 12, 76 and
# 4 MB); the figures printed are what to compare between runs.
for m in "$backend_mb" "$learner_mb" "$fresh_mb"; do
  ((m <= 400)) || fail "private memory $m MB (backends during the run $backend_mb, learner $learner_mb, a new session $fresh_mb)"
done
ok "$shapes distinct shapes in $elapsed s: $pushed trajectories recorded ($dropped dropped by the full ring); held: query shapes $held_shapes, patterns $patterns, BTSP engrams $engrams ($(field capacities)); learned state $state_bytes bytes, written $cycles time(s) ($wal_mb MB of WAL in all, the tables included); private memory at most $backend_mb MB per session backend, $learner_mb MB for the learner, $fresh_mb MB for a new session after loading the state"
echo "==> reliability: all checks passed"
