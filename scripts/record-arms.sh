# Sourced by scripts/tpch-rounds.sh and scripts/record-correlated.sh (after scripts/cluster.sh
# started a cluster: $dir, $port, psql_).
#
# record_arms OUT DB NOTE QUERY.sql...: with the extension off, every query under every arm of
# ruvector.dag_arms (as ruvector_dag_arms() parses it), twice: the second run's EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) goes to
# OUT/<query>.<arm>.json and both execution times to OUT/times.tsv (the replay test's
# fixtures); OUT/VERSION holds the server version and NOTE. An arm is cut off at 4x the default
# plan's time (at least 2 s): its plan is then recorded without ANALYZE and its time as the
# cut-off, flagged censored.
record_arms() {
  local out=$1 db=$2 note=$3
  shift 3
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  chmod 777 "$out"
  # The arm list as the extension parses it (ruvector_dag_arms(): one row per setting).
  local -a arm_list arm_sets
  local k name sets
  while IFS=$'\t' read -r k name sets; do
    arm_list[k]=$name
    arm_sets[k]=$sets
  done < <(psql_ -d "$db" -At -F $'\t' -c "SELECT arm, name, coalesce(string_agg(format('SET %s = %L;', setting, value), ' ') FILTER (WHERE setting IS NOT NULL), '') FROM ruvector_dag.ruvector_dag_arms() GROUP BY arm, name ORDER BY arm")
  ((${#arm_list[@]} > 0)) || { echo "record_arms: ruvector_dag_arms() gave no arms" >&2; return 1; }
  printf 'query\tarm\tname\tms1\tms2\tcensored\n' >"$out/times.tsv"
  local q limit_ms arm f times censored rep
  for q in "$@"; do
    name=$(basename "$q" .sql)
    limit_ms=60000
    for k in "${!arm_list[@]}"; do
      arm=${arm_list[$k]}
      sets=${arm_sets[$k]}
      f="$out/$name.$k.json"
      times=() censored=0
      for rep in 1 2; do
        if ! { echo "SET ruvector.dag_mode = 'off'; SET statement_timeout = '${limit_ms}ms';"; echo "$sets"
               echo "EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON)"; cat "$q"; } |
             psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$db" -t -A -o "$f" 2>/dev/null; then
          censored=1
          break
        fi
        times+=("$(grep -oE '"Execution Time": [0-9.]+' "$f" | awk '{print $3}')")
      done
      if ((censored)); then
        { echo "SET ruvector.dag_mode = 'off';"; echo "$sets"; echo "EXPLAIN (FORMAT JSON)"; cat "$q"; } |
          psql -X -q -h "$dir" -p "$port" -U postgres -d "$db" -t -A -o "$f"
        times=("$limit_ms" "$limit_ms")
      fi
      printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$k" "$arm" "${times[0]}" "${times[1]}" "$censored" >>"$out/times.tsv"
      if ((k == 0)); then
        limit_ms=$(awk -v a="${times[0]}" -v b="${times[1]}" 'BEGIN { m = (a < b ? a : b) * 4; print int(m < 2000 ? 2000 : m) }')
      fi
    done
    echo "    $name recorded"
  done
  psql_ -d "$db" -At -c "SELECT version()" >"$out/VERSION"
  echo "$note" >>"$out/VERSION"
}
