// The web demo in headless Chromium (Debian's package), driven by playwright-core under
// `node --test`. Run by scripts/test.sh after web-demo/build.sh and after
// `cargo run -p ruvector-dag-web --example expected`, which writes the native core's numbers
// for the same plans to web-demo/dist/expected.json.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const dist = path.resolve(here, '../../dist');
const expected = JSON.parse(fs.readFileSync(path.join(dist, 'expected.json'), 'utf8'));
const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.wasm': 'application/wasm', '.json': 'application/json' };

let server, base, browser;
const requests = [];

before(async () => {
  server = http.createServer((req, res) => {
    const file = path.join(dist, decodeURIComponent(new URL(req.url, 'http://x').pathname));
    if (!file.startsWith(dist) || !fs.existsSync(file) || fs.statSync(file).isDirectory()) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { 'content-type': TYPES[path.extname(file)] || 'application/octet-stream' });
    fs.createReadStream(file).pipe(res);
  });
  await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${server.address().port}`;
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** A page on `url` with its console errors and every request it made recorded. */
async function open(url) {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 20000 });
  return { page, errors };
}

async function loadText(page, text) {
  return page.evaluate((t) => window.rvdagLoad(t), text);
}

test('the page loads offline with no console errors and draws the first example', async () => {
  const { page, errors } = await open(`${base}/index.html`);
  const nodes = await page.locator('#pane1 g.node').count();
  assert.equal(nodes, expected.plans['q05.analyze'].nodes.length);
  assert.deepEqual(errors, []);
  assert.ok(requests.every((u) => u.startsWith(base) || u.startsWith('data:') || u.startsWith('blob:')), `requests outside: ${requests.filter((u) => !u.startsWith(base))}`);
  await page.close();
});

test('a fixture renders every node and edge, coloured by the weights the native core computes', async () => {
  const { page, errors } = await open(`${base}/index.html`);
  for (const [name, plan] of Object.entries(expected.plans)) {
    assert.ok(await loadText(page, plan.text), name);
    assert.equal(await page.locator('#pane1 g.node').count(), plan.nodes.length, name);
    assert.equal(await page.locator('#pane1 path.edge').count(), plan.edges, name);
    for (const kind of ['critical_path', 'hierarchical_lorentz', 'ensemble']) {
      await page.selectOption('#kind', kind);
      const drawn = await page.$$eval('#pane1 g.node', (gs) => gs.map((g) => ({
        id: Number(g.dataset.id), w: Number(g.dataset.weight), fill: g.querySelector('rect').getAttribute('fill'),
      })));
      const native = plan.nodes.map((n) => n.weights[kind]);
      const max = Math.max(...native);
      for (const d of drawn) {
        assert.ok(Math.abs(d.w - native[d.id]) < 1e-6, `${name} ${kind} node ${d.id}: ${d.w} vs ${native[d.id]}`);
        assert.equal(d.fill, await page.evaluate(([w, m]) => window.rvdagColor(w, m), [native[d.id], max]));
      }
    }
  }
  // Switching the kind changes the colours.
  await loadText(page, expected.plans['q05.analyze'].text);
  await page.selectOption('#kind', 'topological');
  const a = await page.$$eval('#pane1 g.node rect', (rs) => rs.map((r) => r.getAttribute('fill')));
  await page.selectOption('#kind', 'critical_path');
  const b = await page.$$eval('#pane1 g.node rect', (rs) => rs.map((r) => r.getAttribute('fill')));
  assert.notDeepEqual(a, b);
  assert.deepEqual(errors, []);
  await page.close();
});

test('clicking a node shows its details; the URL fragment opens it again', async () => {
  const { page } = await open(`${base}/index.html`);
  const plan = expected.plans['q05.analyze'];
  const id = plan.nodes.findIndex((n) => n.label);
  await page.click(`#pane1 g.node[data-id="${id}"]`);
  const details = await page.textContent('#details');
  assert.ok(details.includes(plan.nodes[id].operator) && details.includes(plan.nodes[id].label), details);
  assert.equal(await page.locator('#weights-table tr').count(), 8);
  assert.ok(page.url().endsWith(`#node=${id}`));
  const again = await open(`${base}/index.html#node=${id}`);
  assert.ok((await again.page.textContent('#details')).includes(plan.nodes[id].operator));
  await again.page.close();
  await page.close();
});

test('two kinds side by side', async () => {
  const { page } = await open(`${base}/index.html`);
  await page.selectOption('#kind2', 'mincut_gated');
  assert.equal(await page.locator('#pane2 svg[data-kind="mincut_gated"]').count(), 1);
  assert.equal(await page.locator('#pane2 g.node').count(), await page.locator('#pane1 g.node').count());
  await page.close();
});

test('two plans side by side: the changed operators are marked as the native engine marks them', async () => {
  const { page, errors } = await open(`${base}/index.html`);
  const pair = expected.pair;
  assert.ok(await page.evaluate(([a, b]) => window.rvdagLoad(a, b), [pair.first, pair.second]));
  for (const [pane, marks] of [['#pane1', pair.left], ['#pane2', pair.right]]) {
    const drawn = await page.$$eval(`${pane} g.node`, (gs) => gs.map((g) => ({
      id: Number(g.dataset.id), change: g.dataset.change, cls: g.getAttribute('class'),
    })));
    assert.equal(drawn.length, marks.length, pane);
    for (const d of drawn) {
      assert.equal(d.change, marks[d.id].status, `${pane} node ${d.id}`);
      assert.equal(d.cls.includes(`change-${d.change}`), d.change !== 'same', `${pane} node ${d.id}: ${d.cls}`);
    }
  }
  assert.ok(!pair.changes.identical && pair.changes.changed + pair.changes.new + pair.changes.removed > 0);
  const summary = await page.textContent('#summary');
  assert.ok(summary.includes(`${pair.changes.changed} changed, ${pair.changes.new} new, ${pair.changes.removed} removed`), summary);
  // No decision in two plain EXPLAIN documents of PostgreSQL 15: the box says so.
  assert.ok((await page.textContent('#decision')).includes('none'));
  // Clicking a changed operator names its counterpart and marks it in the other pane.
  const id = pair.right.findIndex((m) => m.status === 'changed');
  assert.ok(id >= 0);
  await page.click(`#pane2 g.node[data-id="${id}"]`);
  const details = await page.textContent('#details');
  assert.ok(details.includes('in the other plan'), details);
  assert.equal(await page.getAttribute(`#pane1 g.node[data-id="${pair.right[id].peer}"]`, 'class').then((c) => c.includes('peer')), true);
  assert.ok(page.url().endsWith(`#second=${id}`));
  // A comparison document carries both plans and the decision, shown above them.
  const doc = JSON.stringify({
    format: 'ruvector_dag/compare/1',
    decision: { arm: 'enable_seqscan=off', applied: 'applied', rule: 'verified', similarity: 0.991, reason: 'verified: faster' },
    default: JSON.parse(pair.first), learned: JSON.parse(pair.second),
  });
  assert.ok(await loadText(page, doc));
  const box = await page.textContent('#decision');
  assert.ok(box.includes('enable_seqscan=off') && box.includes('verified: faster') && box.includes('0.991'), box);
  assert.equal(await page.locator('#pane2 g.node').count(), pair.right.length);
  // The bundled comparison examples load from the list.
  const options = await page.$$eval('#example option', (os) => os.map((o) => [o.value, o.textContent]));
  const ex = options.find(([, t]) => t.includes('beside'));
  assert.ok(ex, JSON.stringify(options));
  await page.selectOption('#example', ex[0]);
  assert.equal(await page.isHidden('#pane2'), false);
  assert.ok(await page.locator('#pane2 g.node[data-change="same"]').count() > 0);
  // Back to one plan.
  assert.ok(await loadText(page, expected.plans['q02.plain'].text));
  assert.equal(await page.isHidden('#decision'), true);
  assert.deepEqual(errors, []);
  await page.close();
});

test('malformed JSON shows the core\'s error, and the page still works afterwards', async () => {
  const { page, errors } = await open(`${base}/index.html`);
  await page.fill('#plan', '[{"Plan": {"Node Type": "Sort", "Startup Cost": 0, "Total Cost": "lots", "Plan Rows": 1, "Plan Width": 4}}]');
  await page.click('#draw');
  const msg = await page.textContent('#error');
  assert.ok(msg.includes('[0].Plan."Total Cost": expected a number'), msg);
  await page.fill('#plan', '{not json');
  await page.click('#draw');
  assert.ok((await page.textContent('#error')).includes('not valid JSON'));
  await page.fill('#plan', expected.plans['q02.plain'].text);
  await page.click('#draw');
  assert.equal(await page.isHidden('#error'), true);
  assert.equal(await page.locator('#pane1 g.node').count(), expected.plans['q02.plain'].nodes.length);
  assert.deepEqual(errors, []);
  await page.close();
});

test('a 500-node plan renders within a second; a 5,000-node plan stays usable', async () => {
  const { page } = await open(`${base}/index.html`);
  const five = await page.evaluate(() => window.rvdagEngine.synthetic_explain(500, 3));
  const t0 = Date.now();
  await loadText(page, five);
  const ms = Date.now() - t0;
  assert.equal(await page.locator('#pane1 g.node').count(), 500);
  assert.ok(ms < 1000, `500 nodes took ${ms} ms`);
  const big = await page.evaluate(() => window.rvdagEngine.synthetic_explain(5000, 4));
  const t1 = Date.now();
  await loadText(page, big);
  const bigMs = Date.now() - t1;
  const shown = await page.locator('#pane1 g.node').count();
  assert.ok(shown > 0 && shown < 5000, `${shown} nodes shown of 5000`);
  assert.ok(bigMs < 10000, `5,000 nodes took ${bigMs} ms`);
  // Unfolding a folded node shows more.
  const folded = await page.$eval('#pane1 g.node', () => {
    const n = [...document.querySelectorAll('#pane1 g.node')].find((g) => g.textContent.includes('(+'));
    return n ? n.dataset.id : null;
  });
  assert.ok(folded !== null);
  await page.dblclick(`#pane1 g.node[data-id="${folded}"]`);
  assert.ok(await page.locator('#pane1 g.node').count() > shown);
  console.log(`# 500 nodes: ${ms} ms; 5,000 nodes: ${bigMs} ms (${shown} shown folded)`);
  await page.close();
});

test('the single file opens from disk, offline, and a screenshot is not blank', async () => {
  const { page, errors } = await open(`file://${path.join(dist, 'ruvector_dag.html')}`);
  assert.equal(await page.locator('#pane1 g.node').count(), expected.plans['q05.analyze'].nodes.length);
  assert.deepEqual(errors, []);
  const shot = path.join(dist, 'screenshot.png');
  await page.screenshot({ path: shot });
  const png = fs.readFileSync(shot);
  assert.ok(png.length > 20000, `screenshot of ${png.length} bytes`);
  // Non-blank: the rendered SVG has many distinct fills.
  const fills = new Set(await page.$$eval('#pane1 g.node rect', (rs) => rs.map((r) => r.getAttribute('fill'))));
  assert.ok(fills.size >= 3, `${fills.size} distinct colours`);
  await page.close();
});
