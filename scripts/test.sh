#!/usr/bin/env bash
# Every test of ruvector_dag, from a fresh machine. Installs what is missing (rustfmt, clippy,
# the wasm32 target), then: format check, clippy -D warnings (native and wasm32), all tests,
# the simulator's summary lines, the no_std core built for wasm32-unknown-unknown, and the
# analyze example on a fixture.
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

step "cargo fmt --check"
cargo fmt --all -- --check

step "clippy (native, all targets)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "clippy (no_std core on wasm32)"
cargo clippy -p ruvector-dag-core --target wasm32-unknown-unknown --no-default-features --locked -- -D warnings

step "tests"
cargo test --workspace --locked

step "simulator summary (issue 3's learning proof; asserted in the tests above)"
cargo test -q -p ruvector-dag-tests --test simulator --locked -- --nocapture --test-threads=1 2>&1 | grep -oE 'simulator.*|test result.*'

step "no_std core for wasm32-unknown-unknown (without and with explain-json)"
cargo build -p ruvector-dag-core --target wasm32-unknown-unknown --no-default-features --locked
cargo build -p ruvector-dag-core --target wasm32-unknown-unknown --locked

step "analyze example on a captured TPC-H plan"
cargo run -q -p ruvector-dag-core --example analyze --locked -- tests/fixtures/tpch/q15.analyze.json >/dev/null

step "all green"
