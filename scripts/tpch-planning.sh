#!/usr/bin/env bash
# The extension's planning overhead on TPC-H plans, per query, on a real server: a throwaway
# cluster with ruvector_dag preloaded (learn mode, shipped settings otherwise), TPC-H at a small
# scale (tests' tpch_gen) with the 22 queries of tests/fixtures/tpch/queries run 3 times each,
# the background explorer's queue emptied (it verifies plans for some of them), 2 more runs each
# and a learning cycle; then the
# explorer is paused and the queries are EXPLAINed (SUMMARY) PASSES times two ways: in ONE
# session, the modes off / frozen / learn interleaved statement by statement (so machine noise
# hits them alike: a statement repeated in a session), and in a new session per mode per pass
# that EXPLAINs every query once (what the harness's sessions meet). Prints for each way per
# query the median Planning Time in mode off and what frozen and learn add to it, with the
# decision's reason, and the sums. A measurement tool (README: "The extension's cost"), not a
# test: it asserts nothing.
# Options: --sf F (scale factor, default 0.1), --passes N (default 6), --no-install, --keep
# (leave the cluster running afterwards and print how to reach it), --cold (in the new
# sessions, a scan of lineitem before each EXPLAIN, which leaves the CPU's caches cold as the
# harness's executions do).
set -euo pipefail
cd "$(dirname "$0")/.."
sf=0.1 passes=6 install=1 keep=0 cold=0
while (($#)); do
  case $1 in
    --sf) sf=$2; shift ;;
    --passes) passes=$2; shift ;;
    --no-install) install=0 ;;
    --keep) keep=1 ;;
    --cold) cold=1 ;;
    *) echo "unknown option $1 (--sf F, --passes N, --no-install, --keep, --cold)" >&2; exit 2 ;;
  esac
  shift
done
scripts/setup-pg.sh >/dev/null
cargo build -q --release --locked -p ruvector-dag-tests --bin tpch_gen
# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
((install)) && install_extension --release
start_cluster "shared_buffers = 512MB" "max_parallel_workers_per_gather = 2" "ruvector.dag_mode = 'learn'"
trap stop_cluster EXIT
echo "==> TPC-H scale $sf: loading, then the 22 queries 3 times in learn mode"
psql_ -d postgres -q -f tests/fixtures/tpch/schema.sql >/dev/null
for t in region nation part supplier partsupp customer orders lineitem; do
  target/release/tpch_gen "$t" "$sf" | psql_ -d postgres -c "COPY $t FROM STDIN WITH (DELIMITER '|')" >/dev/null
done
psql_ -d postgres -q -f tests/fixtures/tpch/indexes.sql >/dev/null
psql_ -d postgres -c "VACUUM ANALYZE" -c "CREATE EXTENSION ruvector_dag" \
  -c "SELECT ruvector_dag.ruvector_enable_neural_dag(t::regclass) FROM unnest(array['region','nation','part','supplier','partsupp','customer','orders','lineitem']) t" >/dev/null
queries=(tests/fixtures/tpch/queries/q*.sql)
run_all() { for q in "${queries[@]}"; do psql_ -d postgres -q -o /dev/null -f "$q"; done; }
for _ in 1 2 3; do run_all; done
# The explorer verifies what it can (up to 5 minutes), then two more rounds use what it found.
for _ in $(seq 1 60); do
  queued=$(psql_ -d postgres -At -c "SELECT value FROM ruvector_dag.ruvector_dag_status() WHERE key = 'explorer_queued'")
  [[ $queued == 0 ]] && break
  sleep 5
done
run_all
run_all
psql_ -d postgres -c "SELECT ruvector_dag.ruvector_dag_learn()" -c "SELECT ruvector_dag.ruvector_dag_explorer_pause()" >/dev/null
# One EXPLAIN (SUMMARY) of query $1 under mode $2, marked for the parser.
explain_() {
  echo "SET ruvector.dag_mode = '$2';"
  echo "\\echo MODE $2 $(basename "$1" .sql)"
  printf 'EXPLAIN (SUMMARY) '
  cat "$1"
  echo
  # The planner hook's phases so far in this session (ruvector.dag_phase_timing).
  echo "SELECT 'PHASE ' || phase || ' ' || total_us FROM ruvector_dag.ruvector_dag_phases();"
}
# The median Planning Time per query and mode in the output file $1, what frozen and learn add
# to off, with frozen's reason, and the sums; then, per mode, the median time of each of the
# planner hook's phases in a statement (what the session's totals grew by; `total` the whole
# hook, `other` what no phase names), microseconds.
summarize() {
  python3 - "$1" <<'PY'
import collections, statistics, sys
times, reasons, mode = collections.defaultdict(list), {}, None
# Phases: the session's totals as last seen, what each statement added, per mode and phase.
seen, grew = {}, collections.defaultdict(list)
for line in open(sys.argv[1]):
    if line.startswith("SESSION"):
        seen = {}
    elif line.startswith("MODE "):
        _, mode, query = line.split()
    elif line.startswith("PHASE "):
        _, phase, us = line.split()
        us = float(us)
        if mode in ("frozen", "learn"):
            grew[(mode, phase)].append(us - seen.get(phase, 0.0))
        seen[phase] = us
    elif line.startswith("Planning Time:"):
        times[(mode, query)].append(float(line.split()[2]))
    elif line.startswith("ruvector_dag reason:") and mode == "frozen":
        reasons[query] = line[len("ruvector_dag reason: "):].strip()
total = collections.Counter()
print(f"{'query':6} {'off us':>7} {'frozen +us':>10} {'learn +us':>9}  frozen decision")
for q in sorted({q for _, q in times}):
    med = {m: 1000 * statistics.median(times[(m, q)]) for m in ("off", "frozen", "learn")}
    total.update(med)
    print(f"{q:6} {med['off']:7.0f} {med['frozen'] - med['off']:+10.0f} {med['learn'] - med['off']:+9.0f}  {reasons.get(q, '')[:90]}")
print(f"sum of medians: off {total['off'] / 1000:.2f} ms, frozen {total['frozen'] / 1000:.2f} ms, learn {total['learn'] / 1000:.2f} ms")
phases = ["total", "other", "postgres", "scope", "key", "settled", "alone", "copy", "dag", "load",
          "restore", "book", "decide", "arm", "candidates", "after"]
for m in ("frozen", "learn"):
    per = [f"{p} {statistics.median(grew[(m, p)]):.1f}" for p in phases if grew[(m, p)]]
    if per:
        print(f"{m}: median us per statement and phase: " + ", ".join(per))
PY
}
out=$(mktemp)
done_() {
  rm -f "$out"
  if ((keep)); then
    echo "==> the cluster is left running: psql -h $dir -p $port -U postgres postgres"
  else
    stop_cluster
  fi
}
trap done_ EXIT
echo "==> $passes passes, off / frozen / learn interleaved per statement, one session"
for _ in $(seq 1 "$passes"); do
  echo "SET ruvector.dag_phase_timing = on;"
  for q in "${queries[@]}"; do
    for m in off frozen learn; do explain_ "$q" "$m"; done
  done
done | psql_ -d postgres -At >"$out"
summarize "$out"
# What the harness's sessions meet: a new session for each mode in each pass, every query once
# in it (no statement repeated in a session). Its first statement, q01, also loads the state.
echo "==> $passes passes, a new session per mode per pass, each query once in it (q01 first)$( ((cold)) && echo ', each after a scan of lineitem')"
: >"$out"
for _ in $(seq 1 "$passes"); do
  for m in off frozen learn; do
    {
      echo "\\echo SESSION"
      for q in "${queries[@]}"; do
        ((cold)) && echo "SELECT count(*) FROM lineitem WHERE l_comment <> 'x';"
        explain_ "$q" "$m"
      done
    } | PGOPTIONS="-c ruvector.dag_phase_timing=on" psql_ -d postgres -At >>"$out"
  done
done
summarize "$out"
