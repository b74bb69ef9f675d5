#!/usr/bin/env bash
# Build every attention plugin (and every evil one, one per feature of crate `evil`) for
# wasm32-unknown-unknown into <repo>/target/plugins/*.wasm. Safe to run twice; the tests of
# host-wasm and host-pg read the modules from there.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$here/../../target/plugins"
export CARGO_TARGET_DIR="$here/../../target/plugins-build"
mkdir -p "$out"
rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown \
  || rustup target add wasm32-unknown-unknown
build() { # crate, output name, [feature]
  cargo build -q --locked --release --target wasm32-unknown-unknown \
    --manifest-path "$here/Cargo.toml" -p "rvdag-plugin-$1" ${3:+--features "$3"}
  cp "$CARGO_TARGET_DIR/wasm32-unknown-unknown/release/rvdag_plugin_${1//-/_}.wasm" "$out/$2.wasm"
}
build misestimate misestimate
build ensemble ensemble
for f in $(sed -n '/^\[features\]/,$p' "$here/evil/Cargo.toml" | sed -n 's/^\([a-z_]*\) = \[\]$/\1/p'); do
  build evil "evil_$f" "$f"
done
echo "plugins in $(cd "$out" && pwd): $(ls "$out" | wc -l) modules"
