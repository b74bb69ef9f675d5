#!/usr/bin/env bash
# The web demo: builds it (web-demo/build.sh: the core compiled to wasm, the page, the examples,
# and web-demo/dist/ruvector_dag.html, one self-contained file that opens from disk) and serves
# web-demo/dist on http://127.0.0.1:PORT/ (default 8080; localhost only) until interrupted.
# Options: --port N, --build-only. Installs what is missing (the wasm32 target,
# wasm-bindgen-cli 0.2.130). Safe to run twice.
set -euo pipefail
cd "$(dirname "$0")/.."
port=8080 serve=1
while (($#)); do
  case $1 in
    --port) port=${2:?--port needs a number}; shift ;;
    --build-only) serve=0 ;;
    *) echo "unknown option $1 (want --port N, --build-only)" >&2; exit 2 ;;
  esac
  shift
done
web-demo/build.sh
echo "one file to open from disk or attach to a bug report: web-demo/dist/ruvector_dag.html"
((serve)) || exit 0
echo "serving web-demo/dist on http://127.0.0.1:$port/ (Ctrl-C stops)"
exec python3 -m http.server "$port" --bind 127.0.0.1 --directory web-demo/dist
