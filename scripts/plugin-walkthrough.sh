#!/usr/bin/env bash
# Follow README's "Write your own attention plugin" as a new user would: `cargo new` beside a
# copy of this checkout, the README's Cargo.toml and src/lib.rs (taken from the README itself,
# so the two cannot drift), the README's build command, then rvdag-plugin on a fixture; checks
# the plugin's weights are printed for every node. Part of scripts/test.sh.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
ln -s "$repo" "$work/ruvector_dag"
# A README block: the fenced block right after the line `<!-- walkthrough: NAME -->`.
block() {
  awk -v name="$1" '
    $0 == "<!-- walkthrough: " name " -->" { armed = 1; next }
    armed && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }
  ' "$repo/README.md"
}
cd "$work"
cargo new -q --lib my-attention
cd my-attention
block Cargo.toml > Cargo.toml
block src/lib.rs > src/lib.rs
[[ -s Cargo.toml && -s src/lib.rs ]] || { echo "README lacks the walkthrough blocks" >&2; exit 1; }
eval "$(block build)"
wasm=target/wasm32-unknown-unknown/release/my_attention.wasm
[[ -f $wasm ]] || { echo "the README's build command did not produce $wasm" >&2; exit 1; }
out="$(cd "$repo" && cargo run -q --locked -p ruvector-dag-wasm --bin rvdag-plugin -- \
  run "$work/my-attention/$wasm" tests/fixtures/tpch/q05.analyze.json)"
echo "$out"
nodes=$(grep -c '^ *[0-9]\+  ' <<<"$out")
grep -q "^$nodes nodes; fuel used" <<<"$out" || { echo "rvdag-plugin did not report every node" >&2; exit 1; }
echo "walkthrough: the README's plugin builds and attends over all $nodes nodes"
