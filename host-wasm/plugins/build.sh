#!/usr/bin/env bash
# Build every attention plugin (and every evil one, one per feature of crate `evil`) for
# wasm32-unknown-unknown into <repo>/target/plugins/*.wasm, for the scripts and the README's
# commands that take a module file. The build itself is crate ruvector-dag-plugin-modules's
# build script (what `cargo test` uses); this writes its modules out. Safe to run twice.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cd "$here/../.."
cargo run -q --locked -p ruvector-dag-plugin-modules -- target/plugins
