#!/usr/bin/env bash
# Fuzz the inputs that come from outside: EXPLAIN JSON import, snapshot decode (what the learned-
# state table and ruvector_dag_import feed in), plugin responses and plugin modules.
#   scripts/fuzz.sh [SECONDS per target, default 30] [TARGET ...]
#   scripts/fuzz.sh --merge [--max-bytes N] [TARGET ...]   minimise what long runs grew into
#     fuzz/corpus/<target> (only grown inputs of at most N bytes, when given: plugin modules
#     grow to tens of MB of mutated copies of the largest seed, too large to commit and slow to
#     load in the test command's short runs)
# The test command runs every target briefly; long runs use the same script with more seconds,
# then --merge keeps the smallest set of inputs that covers what both corpora cover.
# Committed corpus: fuzz/corpus/<target> (read); new inputs go to target/fuzz-corpus/<target>;
# a crash is saved under fuzz/artifacts/<target> and fails the run. Installs cargo-fuzz when
# missing; needs the nightly toolchain (installed on these machines). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
merge=0
max_bytes=""
if [[ ${1:-} == --merge ]]; then
  merge=1
  shift
  secs=0
  if [[ ${1:-} == --max-bytes ]]; then
    max_bytes=${2:-}
    [[ $max_bytes =~ ^[1-9][0-9]*$ ]] || { echo "--max-bytes wants a positive whole number, not '$max_bytes'" >&2; exit 2; }
    shift 2
  fi
else
  secs=${1:-30}
  [[ $# -gt 0 ]] && shift
  [[ $secs =~ ^[1-9][0-9]*$ ]] || { echo "seconds must be a positive whole number, not '$secs'" >&2; exit 2; }
fi
targets=("$@")
((${#targets[@]})) || targets=(explain_json snapshot plugin_response plugin_module)
for t in "${targets[@]}"; do
  [[ -f fuzz/fuzz_targets/$t.rs ]] || { echo "no fuzz target '$t' (see fuzz/fuzz_targets)" >&2; exit 2; }
done
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --version 0.13.2 --locked
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
if ((merge)); then
  for t in "${targets[@]}"; do
    mkdir -p "target/fuzz-corpus/$t"
    fresh="target/fuzz-merge/$t"
    rm -rf "$fresh"
    mkdir -p "$(dirname "$fresh")"
    # The committed inputs stay (seeds keep their names); of the grown ones, those that add
    # coverage to them are added.
    cp -r "fuzz/corpus/$t" "$fresh"
    grown="target/fuzz-corpus/$t"
    if [[ -n $max_bytes ]]; then
      grown="target/fuzz-merge/$t.small"
      rm -rf "$grown"
      mkdir -p "$grown"
      find "target/fuzz-corpus/$t" -type f -size -"$((max_bytes + 1))"c -exec cp {} "$grown/" \;
    fi
    echo "==> merge $grown ($(find "$grown" -type f | wc -l) inputs) into fuzz/corpus/$t"
    cargo +nightly fuzz run --fuzz-dir fuzz "$t" "$fresh" "$grown" -- \
      -merge=1 -rss_limit_mb=4096 >"target/fuzz-merge-$t.log" 2>&1 ||
      { tail -20 "target/fuzz-merge-$t.log" >&2; exit 1; }
    before="$(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
    rm -rf "fuzz/corpus/$t"
    mv "$fresh" "fuzz/corpus/$t"
    echo "    fuzz/corpus/$t: $before -> $(find "fuzz/corpus/$t" -type f | wc -l) files, $(du -sh "fuzz/corpus/$t" | cut -f1)"
  done
  exit 0
fi
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
