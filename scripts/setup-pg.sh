#!/usr/bin/env bash
# Installs what the extension needs when missing: PostgreSQL 15 with its server headers and
# contrib (apt), libclang and clang (bindgen), sudo, cargo-pgrx 0.18.1 and its pg15
# registration. Safe to run twice. Used by scripts/test.sh and scripts/run.sh.
set -euo pipefail
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
need_apt=()
[[ -x $PG_CONFIG && -f /usr/include/postgresql/15/server/postgres.h ]] || need_apt+=(postgresql-15 postgresql-server-dev-15)
dpkg -s libclang-dev >/dev/null 2>&1 || need_apt+=(libclang-dev)
command -v clang >/dev/null || need_apt+=(clang)
command -v sudo >/dev/null || need_apt+=(sudo)
"$(dirname "$0")"/apt-install.sh "${need_apt[@]}"
if [[ "$(cargo pgrx --version 2>/dev/null)" != *"0.18.1"* ]]; then
  cargo install cargo-pgrx --version 0.18.1 --locked
fi
grep -qs '^pg15' "${PGRX_HOME:-$HOME/.pgrx}/config.toml" || cargo pgrx init --pg15 "$PG_CONFIG"
