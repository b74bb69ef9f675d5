# Sourced by scripts/demo.sh and scripts/bench-pg.sh: install the extension into PostgreSQL
# $PG_MAJOR (15, the default: the system's; 18: the one scripts/setup-pg18.sh unpacks into a
# directory of its own) and start a throwaway cluster with it preloaded.
#   install_extension [--release]   cargo pgrx install (with --sudo when not root)
#   start_cluster [extra conf lines...]   sets $dir, $port; psql_ runs psql against it
#   stop_cluster                    stops it and removes $dir
PG_MAJOR=${PG_MAJOR:-15}
case $PG_MAJOR in
  15) PG_BIN=/usr/lib/postgresql/15/bin ;;
  18) PG_BIN=$(dirname "$(scripts/setup-pg18.sh)") ;;
  *) echo "PostgreSQL $PG_MAJOR is not supported here (want 15 or 18)" >&2; exit 2 ;;
esac
export USER="${USER:-$(id -un)}"
as_pg() { if [[ $EUID -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }

install_extension() {
  local sudo_flag=()
  [[ $EUID -eq 0 ]] || sudo_flag=(--sudo)
  echo "==> installing the extension into PostgreSQL $PG_MAJOR (cargo pgrx install $*)"
  (cd host-pg && cargo pgrx install "$@" "${sudo_flag[@]}" --pg-config "$PG_BIN/pg_config" >/dev/null)
}

start_cluster() {
  dir=$(mktemp -d "${TMPDIR:-/tmp}/ruvector_dag-cluster.XXXXXX")
  chmod 755 "$dir"
  [[ $EUID -eq 0 ]] && chown postgres "$dir"
  port=$((54300 + RANDOM % 500))
  as_pg "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  {
    echo "port = $port"
    echo "listen_addresses = ''"
    echo "unix_socket_directories = '$dir'"
    echo "shared_preload_libraries = 'ruvector_dag'"
    printf '%s\n' "$@"
  } >>"$dir/data/postgresql.conf"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

restart_cluster() {
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -m fast -w restart >/dev/null
}

stop_cluster() {
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
  rm -rf "$dir"
}

psql_() { psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres "$@"; }
