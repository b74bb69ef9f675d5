#!/usr/bin/env bash
# Builds the web demo into web-demo/dist/: the crate for wasm32 (release), its JavaScript glue
# (wasm-bindgen --target web; no bundler, nothing fetched at run time), the page, the bundled
# examples (real PostgreSQL 15 plans from tests/fixtures/tpch, and the captured correlated
# workload's when present), and ruvector_dag.html: the same page as one self-contained file
# (wasm inlined) that opens from disk. Installs what is missing: the wasm32 target and
# wasm-bindgen-cli 0.2.130. Safe to run twice. Prints the size of the .wasm (raw and gzip).
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown || rustup target add wasm32-unknown-unknown
if [[ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen 0.2.130" ]]; then
  # Not --locked: its lock file names a crate version the registry no longer has.
  cargo install wasm-bindgen-cli --version 0.2.130
fi
# WebAssembly SIMD (simd128: every current browser, node >= 16): the attention kernels'
# float loops vectorise as they do natively (README: portability). Its own target directory, so
# that the other wasm32 builds (no_std core, plugins) keep theirs.
CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="-C target-feature=+simd128" \
  cargo build -q -p ruvector-dag-web --target wasm32-unknown-unknown --release --locked \
  --target-dir target/web-demo
out=web-demo/dist
rm -rf "$out"
mkdir -p "$out/pkg"
wasm-bindgen --target web --no-typescript --out-dir "$out/pkg" \
  target/web-demo/wasm32-unknown-unknown/release/ruvector_dag_web.wasm
cp web-demo/www/index.html web-demo/www/app.js web-demo/www/style.css "$out/"
python3 - "$out" <<'PY'
import base64, glob, gzip, json, os, re, sys
out = sys.argv[1]
examples = []
for name, path in [
    ("TPC-H Q5 at scale 0.1, EXPLAIN ANALYZE (PostgreSQL 15)", "tests/fixtures/tpch/q05.analyze.json"),
    ("TPC-H Q15, a CTE read twice: a DAG (ANALYZE)", "tests/fixtures/tpch/q15.analyze.json"),
    ("TPC-H Q2, estimates only", "tests/fixtures/tpch/q02.plain.json"),
    ("TPC-H Q18, EXPLAIN ANALYZE", "tests/fixtures/tpch/q18.analyze.json"),
    ("TPC-H Q9, EXPLAIN ANALYZE", "tests/fixtures/tpch/q09.analyze.json"),
]:
    with open(path) as f:
        examples.append({"name": name, "text": f.read()})
# Two plans of one query: the default and another arm's, recorded at scale 1 (times.tsv).
times = {}
with open("tests/fixtures/tpch-sf1/times.tsv") as f:
    next(f)
    for line in f:
        q, arm, setting, ms1, ms2, _ = line.rstrip("\n").split("\t")
        times[(q, int(arm))] = (setting, float(ms2))
for q, arm in [("q18", 4), ("q05", 3)]:
    (setting, ms), (_, ms0) = times[(q, arm)], times[(q, 0)]
    with open(f"tests/fixtures/tpch-sf1/{q}.0.json") as a, open(f"tests/fixtures/tpch-sf1/{q}.{arm}.json") as b:
        examples.append({
            "name": f"TPC-H {q.upper()} at scale 1: the default plan ({ms0:,.0f} ms) beside {setting} ({ms:,.0f} ms)",
            "text": a.read(), "second": b.read(),
        })
with open(f"{out}/examples.js", "w") as f:
    f.write("// Real PostgreSQL plans, from tests/fixtures (written by web-demo/build.sh).\n")
    f.write("window.RVDAG_EXAMPLES = " + json.dumps(examples) + ";\n")
wasm = open(f"{out}/pkg/ruvector_dag_web_bg.wasm", "rb").read()
glue = open(f"{out}/pkg/ruvector_dag_web.js").read()
page = open(f"{out}/index.html").read()
css = open(f"{out}/style.css").read()
app = open(f"{out}/app.js").read()
ex = open(f"{out}/examples.js").read()
inline = "window.RVDAG_INLINE = " + json.dumps({"glue": glue, "wasm": base64.b64encode(wasm).decode()}) + ";"
def script(body, module=False):
    # "</script" inside a script would end it early.
    body = body.replace("</script", "<\\/script")
    kind = ' type="module"' if module else ""
    return "<script" + kind + ">\n" + body + "\n</script>"
page = page.replace('<link rel="stylesheet" href="style.css">', f"<style>\n{css}\n</style>")
page = page.replace('<script src="examples.js"></script>', script(ex) + "\n" + script(inline))
page = page.replace('<script type="module" src="app.js"></script>', script(app, module=True))
assert not re.search(r'(src|href)="(?!data:)', page), "the single file still links something"
with open(f"{out}/ruvector_dag.html", "w") as f:
    f.write(page)
print(f"web-demo/dist: ruvector_dag_web_bg.wasm {len(wasm):,} bytes ({len(gzip.compress(wasm, 9)):,} gzip), "
      f"ruvector_dag.html {len(page.encode()):,} bytes (self-contained)")
PY
