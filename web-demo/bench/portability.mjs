// The wasm half of the portability figure: the same workloads as examples/portability.rs, timed
// the same way, as WebAssembly in node (the module web-demo/build.sh built). With the native
// JSON as argument it prints the table of both and the ratio (README, "web demo").
//   cargo run -q --release -p ruvector-dag-web --example portability > /tmp/native.json
//   node web-demo/bench/portability.mjs /tmp/native.json
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const pkg = path.resolve(here, '../dist/pkg');
const m = await import(path.join(pkg, 'ruvector_dag_web.js'));
await m.default({ module_or_path: fs.readFileSync(path.join(pkg, 'ruvector_dag_web_bg.wasm')) });

function perCallUs(workload, nodes) {
  m.run_workload(workload, nodes, 3);
  let t = performance.now();
  m.run_workload(workload, nodes, 1);
  const one = Math.max((performance.now() - t) / 1000, 1e-7);
  const batch = Math.min(100000, Math.max(1, Math.floor(0.01 / one)));
  const samples = [];
  const start = performance.now();
  while (samples.length < 5 || ((performance.now() - start) < 300 && samples.length < 200)) {
    t = performance.now();
    m.run_workload(workload, nodes, batch);
    samples.push((performance.now() - t) * 1000 / batch);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(samples.length / 2)];
}

const native = process.argv[2] ? JSON.parse(fs.readFileSync(process.argv[2], 'utf8')) : [];
const rows = [];
for (const nodes of [100, 1000]) {
  for (const w of JSON.parse(m.workloads())) {
    const wasm = perCallUs(w, nodes);
    const nat = native.find((r) => r.workload === w && r.nodes === nodes)?.us;
    rows.push({ w, nodes, wasm, nat });
  }
}
console.log('| workload | nodes | native us | wasm (node) us | wasm / native |');
console.log('|---|---|---|---|---|');
for (const r of rows) {
  console.log(`| ${r.w} | ${r.nodes} | ${r.nat === undefined ? '-' : r.nat.toFixed(1)} | ${r.wasm.toFixed(1)} | ${r.nat ? (r.wasm / r.nat).toFixed(2) + 'x' : '-'} |`);
}
