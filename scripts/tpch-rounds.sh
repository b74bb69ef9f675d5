#!/usr/bin/env bash
# TPC-H in rounds against the extension with its shipped defaults, in a throwaway PostgreSQL 15:
#   1. installs the extension (release) and starts a cluster (shared_buffers 2GB, work_mem 64MB,
#      2 parallel workers per gather); loads TPC-H generated in-process (tests' tpch_gen, the
#      tpchgen crate) into database postgres, keys and foreign keys indexed, ANALYZEd; enables
#      the 8 tables;
#   2. runs the 22 queries (tests/fixtures/tpch/queries: the specification's validation
#      parameters) round by round: stock (ruvector.dag_mode = off), learn in ONE session per
#      round, frozen, stock again; then the learned state is reset and learn runs again with ONE
#      SESSION PER QUERY (an application without a connection pool), then frozen. Nothing is
#      tuned: no exploration, threshold or sampling setting is touched, and no learning cycle
#      is forced: the background learner of database postgres learns on its own interval;
#   3. writes every query's time (planning + execution, from EXPLAIN ANALYZE with TIMING OFF),
#      arm and rule to rounds.tsv and prints a summary per round.
#   4. with --record DIR: afterwards, with the extension off, every query under every arm of
#      ruvector.dag_arms, twice: the second run's EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON)
#      goes to DIR/qNN.K.json and both times to DIR/times.tsv (the replay test's fixtures). An
#      arm is cut off at 4x the default plan's time (at least 2 s): its plan is then recorded
#      without ANALYZE and its time as the cut-off, flagged censored.
# Options: --sf N (scale factor, default 1), --rounds N (learn rounds per variant, default 10),
#          --record DIR (record per-arm traces after the rounds),
#          --out DIR (results, default a new temporary directory), --keep (leave the cluster).
# Installs what is missing (scripts/setup-pg.sh). Takes about 25 minutes at scale 1 here.
set -euo pipefail
cd "$(dirname "$0")/.."

sf=1 rounds=10 out="" keep=0 record=""
while (($#)); do
  case $1 in
    --sf) sf=$2; shift ;;
    --rounds) rounds=$2; shift ;;
    --out) out=$2; shift ;;
    --record) record=$2; shift ;;
    --keep) keep=1 ;;
    *) echo "unknown option $1 (want --sf N, --rounds N, --out DIR, --record DIR, --keep)" >&2; exit 2 ;;
  esac
  shift
done
[[ -n $out ]] || out=$(mktemp -d "${TMPDIR:-/tmp}/ruvector_dag-tpch.XXXXXX")
mkdir -p "$out"
chmod 777 "$out"

scripts/setup-pg.sh
cargo build -q --release --locked -p ruvector-dag-tests --bin tpch_gen
# shellcheck source=scripts/cluster.sh
source scripts/cluster.sh
install_extension --release
start_cluster "shared_buffers = 2GB" "work_mem = 64MB" "max_parallel_workers_per_gather = 2"
if ((keep)); then
  trap 'echo "cluster kept: psql -h $dir -p $port -U postgres postgres"' EXIT
else
  trap stop_cluster EXIT
fi

echo "==> TPC-H scale $sf: generating and loading"
psql_ -d postgres -f tests/fixtures/tpch/schema.sql
for t in region nation part supplier partsupp customer orders lineitem; do
  printf '    %s ' "$t"
  t0=$(date +%s)
  target/release/tpch_gen "$t" "$sf" | psql_ -d postgres -c "COPY $t FROM STDIN WITH (DELIMITER '|')"
  echo "$(($(date +%s) - t0)) s"
done
psql_ -d postgres -f tests/fixtures/tpch/indexes.sql
psql_ -d postgres -c "CREATE EXTENSION ruvector_dag" \
  -c "SELECT ruvector_dag.ruvector_enable_neural_dag(t::regclass) FROM unnest(array['region','nation','part','supplier','partsupp','customer','orders','lineitem']) t" >/dev/null

queries=(tests/fixtures/tpch/queries/q*.sql)
tsv="$out/rounds.tsv"
printf 'variant\tround\tquery\tms\tarm\trule\n' >"$tsv"

# The SQL of one query run: EXPLAIN ANALYZE (timing off) of the query, after the mode.
explain_sql() {
  echo "\\echo QUERY $(basename "$2" .sql)"
  echo "SET ruvector.dag_mode = '$1';"
  echo "SET statement_timeout = '60s';"
  echo "EXPLAIN (ANALYZE, TIMING OFF)"
  cat "$2"
}

# Parse psql output of explain_sql runs into "query ms arm rule" lines (a statement that timed
# out counts 60,000 ms).
parse() {
  awk '
    function flush() { if (q != "") { if (ms == "") ms = 60000; print q "\t" ms "\t" arm "\t" rule } }
    /^QUERY / { flush(); q = $2; ms = ""; plan = 0; arm = "-"; rule = "-" }
    /Planning Time:/ { plan = $3 }
    /Execution Time:/ { ms = plan + $3 }
    /ruvector_dag: arm/ { split($0, p, "\x27"); arm = p[2]; r = $0; sub(/.*rule /, "", r); sub(/\).*/, "", r); rule = r }
    END { flush() }'
}

# One round: variant label, round number, mode, and whether every query gets its own session.
run_round() {
  local variant=$1 n=$2 mode=$3 per_query=$4 script="$dir/round.sql"
  if ((per_query)); then
    for q in "${queries[@]}"; do
      explain_sql "$mode" "$q" >"$script"
      chmod 644 "$script"
      psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -f "$script" 2>&1 | parse
    done
  else
    : >"$script"
    for q in "${queries[@]}"; do explain_sql "$mode" "$q" >>"$script"; done
    chmod 644 "$script"
    psql -X -q -h "$dir" -p "$port" -U postgres -d postgres -f "$script" 2>&1 | parse
  fi | awk -v v="$variant" -v n="$n" '{ print v "\t" n "\t" $0 }' >>"$tsv"
  awk -F'\t' -v v="$variant" -v n="$n" '$1 == v && $2 == n { s += $4; if ($5 != "default" && $5 != "-") a++ }
    END { printf "    %-16s round %2d: %8.1f s, %d of 22 with a non-default arm\n", v, n, s / 1000, a }' "$tsv"
}

echo "==> rounds (learn: shipped defaults, the background learner on its own interval)"
run_round stock 1 off 0
run_round stock 2 off 0
for n in $(seq 1 "$rounds"); do run_round learn-session "$n" learn 0; done
run_round frozen-session 1 frozen 0
run_round stock 3 off 0
psql_ -d postgres -c "SELECT ruvector_dag.ruvector_dag_reset()" >/dev/null
for n in $(seq 1 "$rounds"); do run_round learn-per-query "$n" learn 1; done
run_round frozen-per-query 1 frozen 0
run_round stock 4 off 0
psql_ -d postgres -At -c "SELECT key || ' = ' || value FROM ruvector_dag.ruvector_dag_status()
  WHERE key IN ('learned_version', 'learned_state_bytes', 'query_shapes', 'shapes_with_verified_plan', 'plans_explored', 'plans_refuted', 'verified_plans_reverted', 'exploration_budget_ms', 'exploration_spent_ms', 'verified_saved_ms')" || true

echo "==> summary (stock = the median of the stock rounds' totals, per query the median of its stock times)"
python3 - "$tsv" <<'PY' | tee "$out/summary.txt"
import csv, statistics, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
rounds, per_query = {}, {}
for r in rows:
    key = (r["variant"], int(r["round"]))
    rounds.setdefault(key, []).append(float(r["ms"]))
    if r["variant"] == "stock":
        per_query.setdefault(r["query"], []).append(float(r["ms"]))
stock = statistics.median(sum(v) for (k, _), v in rounds.items() if k == "stock")
print(f"stock round (median of the stock rounds): {stock / 1000:.1f} s")
for (variant, n), v in rounds.items():
    arms = sum(1 for r in rows if (r["variant"], int(r["round"])) == (variant, n) and r["arm"] not in ("default", "-"))
    print(f"  {variant:<17} {n:>2}  {sum(v) / 1000:7.1f} s  {sum(v) / stock:.3f}x stock  ({arms} non-default arms)")
for variant in sorted({r["variant"] for r in rows if r["variant"].startswith(("frozen", "learn"))}):
    last = max(int(r["round"]) for r in rows if r["variant"] == variant)
    worse = [(r["query"], float(r["ms"]) / statistics.median(per_query[r["query"]]))
             for r in rows if r["variant"] == variant and int(r["round"]) == last]
    worse = [f"{q} {x:.2f}x" for q, x in worse if x > 1.1]
    print(f"{variant} (round {last}): {len(worse)} queries above 1.1x their stock median: {', '.join(worse) or 'none'}")
PY
echo "results: $tsv"

if [[ -n $record ]]; then
  echo "==> recording every query under every arm (extension off) into $record"
  # shellcheck source=scripts/record-arms.sh
  source scripts/record-arms.sh
  record_arms "$record" postgres \
    "scale factor $sf; shared_buffers 2GB, work_mem 64MB, max_parallel_workers_per_gather 2" "${queries[@]}"
fi
