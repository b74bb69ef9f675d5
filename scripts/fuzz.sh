#!/usr/bin/env bash
# Fuzz the inputs that come from outside: EXPLAIN JSON import, snapshot decode (what the learned-
# state table and ruvector_dag_import feed in), plugin responses and plugin modules.
#   scripts/fuzz.sh [SECONDS per target, default 30] [TARGET ...]
# The test command runs every target briefly; long runs use the same script with more seconds.
# Committed corpus: fuzz/corpus/<target> (read); new inputs go to target/fuzz-corpus/<target>;
# a crash is saved under fuzz/artifacts/<target> and fails the run. Installs cargo-fuzz when
# missing; needs the nightly toolchain (installed on these machines). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
[[ $# -gt 0 ]] && shift
targets=("$@")
((${#targets[@]})) || targets=(explain_json snapshot plugin_response plugin_module)
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
for t in "${targets[@]}"; do
  mkdir -p "target/fuzz-corpus/$t"
  echo "==> fuzz $t for ${secs} s"
  log="target/fuzz-$t.log"
  set +e
  cargo +nightly fuzz run --fuzz-dir fuzz "$t" "target/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(#[0-9]+ *DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY)' "$log" || true
  if ((rc)); then
    tail -40 "$log" >&2
    echo "fuzz $t failed (exit $rc); crash inputs, if any, are in fuzz/artifacts/$t" >&2
    exit 1
  fi
done
