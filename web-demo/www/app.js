// The page only draws: every number (weights, critical path, min cut, misestimates, the
// layout's coordinates) comes from the core, compiled to WebAssembly (src/lib.rs).

const SVG = 'http://www.w3.org/2000/svg';
const $ = (id) => document.getElementById(id);
// Plans larger than this open folded a few levels down (double-click unfolds).
const FOLD_ABOVE = 800;
const FOLD_DEPTH = 6;

let engine = null;
// The input: one plan (text), or two plans (text and text2, or a comparison document in text).
let text = '';
let text2 = '';
let plan = null;   // one plan's analysis
let pair = null;   // two plans' analyses, their changes and the decision
let collapsed = [new Set(), new Set()];
let selected = null; // { side: 0 | 1, id }

async function loadEngine() {
  // The single-file build carries the glue and the module inline (see build.sh).
  if (window.RVDAG_INLINE) {
    const url = URL.createObjectURL(new Blob([window.RVDAG_INLINE.glue], { type: 'text/javascript' }));
    const m = await import(url);
    const bin = atob(window.RVDAG_INLINE.wasm);
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    await m.default({ module_or_path: bytes });
    return m;
  }
  const m = await import('./pkg/ruvector_dag_web.js');
  await m.default();
  return m;
}

// Weight -> colour: white-yellow (none) to dark red (the kind's largest weight in this plan).
export function color(w, max) {
  const t = max > 0 ? Math.min(1, Math.max(0, w / max)) : 0;
  const stops = [[255, 255, 229], [254, 217, 118], [253, 141, 60], [227, 26, 28], [128, 0, 38]];
  const x = t * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const c = stops[i].map((a, k) => Math.round(a + (stops[i + 1][k] - a) * f));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}
window.rvdagColor = color;

function el(name, attrs = {}, parent = null) {
  const e = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (parent) parent.appendChild(e);
  return e;
}

function fmt(x, digits = 1) {
  if (x === null || x === undefined) return '-';
  if (Math.abs(x) >= 1e6) return x.toExponential(2);
  return Number(x).toFixed(digits);
}

function showError(msg) {
  const e = $('error');
  e.textContent = msg;
  e.hidden = !msg;
}

// The analysis drawn on each side: one plan, or the two plans of a comparison.
function sides() {
  return pair ? [pair.left, pair.right] : [plan];
}

function analyze() {
  const t0 = performance.now();
  const c = collapsed.map((s) => Uint32Array.from(s));
  if (text2.trim() || engine.comparison(text)) {
    pair = JSON.parse(engine.analyze_pair(text, text2, c[0], c[1]));
    plan = null;
  } else {
    plan = JSON.parse(engine.analyze(text, c[0]));
    pair = null;
  }
  window.rvdagLastAnalyzeMs = performance.now() - t0;
}

function draw() {
  const t0 = performance.now();
  const k1 = $('kind').value;
  const k2 = $('kind2').value;
  // Two plans: both coloured by the first kind; one plan: a second kind beside it on request.
  $('kind2').disabled = Boolean(pair);
  if (pair) {
    renderPane($('pane1'), pair.left, k1, 0);
    renderPane($('pane2'), pair.right, k1, 1);
    $('pane2').hidden = false;
  } else {
    renderPane($('pane1'), plan, k1, 0);
    $('pane2').hidden = !k2;
    if (k2) renderPane($('pane2'), plan, k2, 0);
    else $('pane2').replaceChildren();
  }
  renderLegend(pair ? [k1] : [k1, k2].filter(Boolean));
  renderDecision();
  const a = sides()[0];
  const shown = a.nodes.filter((n) => n.x !== null).length;
  if (pair) {
    const c = pair.changes;
    $('summary').textContent = `${pair.left.nodes.length} and ${pair.right.nodes.length} operators; ` +
      (c.identical ? 'the two plans are the same' : `${c.changed} changed, ${c.new} new, ${c.removed} removed, ${c.same} the same`);
  } else {
    $('summary').textContent = `${a.nodes.length} operators (${shown} shown), ${a.edges.length} edges; ` +
      `${a.analyzed ? 'measured (ANALYZE)' : 'estimates only'}; min cut ${fmt(a.min_cut.rows, 0)} rows; read as ${a.source}`;
  }
  if (selected !== null) showDetails(selected.side, selected.id);
  window.rvdagLastDrawMs = performance.now() - t0;
}

// The extension's decision above the two plans (or why there is none).
function renderDecision() {
  const box = $('decision');
  box.replaceChildren();
  box.hidden = !pair;
  if (!pair) return;
  const h = document.createElement('strong');
  h.textContent = 'ruvector_dag decision: ';
  box.appendChild(h);
  const d = pair.decision;
  if (!d) {
    box.append(pair.note ? `none (${pair.note})` : 'none in these documents (ruvector_dag_compare_json or PostgreSQL 18\'s EXPLAIN carries it)');
    return;
  }
  const keys = [...pair.decision_fields, ...Object.keys(d).filter((k) => !pair.decision_fields.includes(k))];
  const dl = document.createElement('dl');
  for (const k of keys) {
    if (d[k] === undefined || d[k] === null) continue;
    const dt = document.createElement('dt');
    dt.textContent = k.replace('_ms', ' (ms)').replace('_', ' ');
    const dd = document.createElement('dd');
    dd.textContent = Array.isArray(d[k]) ? d[k].join('; ') : typeof d[k] === 'number' ? fmt(d[k], 3) : String(d[k]);
    dd.dataset.key = k;
    dl.append(dt, dd);
  }
  box.appendChild(dl);
  if (pair.note) {
    const p = document.createElement('p');
    p.className = 'note';
    p.textContent = pair.note;
    box.appendChild(p);
  }
}

const CHANGE_TAG = { changed: 'changed', new: 'new', removed: 'removed' };

function renderPane(pane, plan, kind, side) {
  const range = plan.weight_ranges[kind];
  const L = plan.layout;
  const svg = el('svg', { viewBox: `0 -20 ${L.width} ${L.height + 20}`, 'data-kind': kind, 'data-side': side });
  if ($('fit').checked) {
    // Scaled to the pane's width (the height follows the drawing's proportions).
    svg.setAttribute('width', '100%');
  } else {
    svg.setAttribute('width', L.width);
    svg.setAttribute('height', L.height + 20);
  }
  const title = el('text', { x: 6, y: -6 }, svg);
  title.textContent = `${plan.title ? plan.title + ', ' : ''}attention: ${kind}`;
  const showCrit = $('show-critical').checked;
  const showCut = $('show-cut').checked;
  const edges = el('g', {}, svg);
  const maxRows = Math.max(1, ...plan.edges.map((e) => e.rows));
  for (const e of plan.edges) {
    const a = plan.nodes[e.from], b = plan.nodes[e.to];
    if (a.x === null || b.x === null) continue;
    const x1 = a.x + L.node_width / 2, y1 = a.y, x2 = b.x + L.node_width / 2, y2 = b.y + L.node_height;
    const width = 1 + 7 * Math.log10(1 + e.rows) / Math.log10(1 + maxRows);
    const cls = ['edge'];
    if (showCrit && a.critical && b.critical) cls.push('critical');
    if (showCut && e.cut) cls.push('cut');
    const p = el('path', {
      d: `M${x1},${y1} C${x1},${(y1 + y2) / 2} ${x2},${(y1 + y2) / 2} ${x2},${y2}`,
      class: cls.join(' '), 'stroke-width': width.toFixed(2), 'data-from': e.from, 'data-to': e.to,
    }, edges);
    const tip = el('title', {}, p);
    tip.textContent = `${fmt(e.rows, 0)} rows${e.actual ? ' (measured)' : ' (estimated)'}${e.cut ? ', on the min cut' : ''}`;
  }
  const nodes = el('g', {}, svg);
  for (const n of plan.nodes) {
    if (n.x === null) continue;
    const w = n.weights[kind];
    const cls = ['node'];
    if (showCrit && n.critical) cls.push('critical');
    if (selected && selected.side === side && selected.id === n.id) cls.push('selected');
    const change = n.change ? n.change.status : null;
    if (change && change !== 'same') cls.push(`change-${change}`);
    const g = el('g', { class: cls.join(' '), transform: `translate(${n.x},${n.y})`, 'data-id': n.id, 'data-weight': w }, nodes);
    if (change) g.dataset.change = change;
    el('rect', { width: L.node_width, height: L.node_height, fill: color(w, range.max) }, g);
    const dark = range.max > 0 && w / range.max > 0.6;
    const t1 = el('text', { x: 6, y: 16, fill: dark ? '#fff' : '#1d2330' }, g);
    t1.textContent = `${n.operator}${n.collapsed ? ` (+${n.hidden_below})` : ''}`;
    const t2 = el('text', { x: 6, y: 32, fill: dark ? '#eee' : '#5b6475' }, g);
    t2.textContent = `${n.label ? n.label.slice(0, 16) + ' ' : ''}w ${w.toFixed(3)}`;
    if (n.misestimate_flag > 0) {
      const f = el('text', { x: 120, y: 16, class: 'flag' }, g);
      f.textContent = `${n.misestimate_flag}x`;
      const tip = el('title', {}, f);
      tip.textContent = `rows misestimated ${fmt(n.misestimate, 0)}x`;
    }
    if (CHANGE_TAG[change]) {
      const t = el('text', { x: L.node_width - 4, y: L.node_height - 5, class: `tag ${change}`, 'text-anchor': 'end' }, g);
      t.textContent = CHANGE_TAG[change];
    }
    g.addEventListener('click', () => select(side, n.id));
    g.addEventListener('dblclick', () => fold(side, n.id));
  }
  pane.replaceChildren(svg);
}

function renderLegend(kinds) {
  const box = $('legend');
  box.replaceChildren();
  for (const k of kinds) {
    const r = sides()[0].weight_ranges[k];
    const span = document.createElement('span');
    const ramp = document.createElement('span');
    ramp.className = 'ramp';
    ramp.style.background = `linear-gradient(to right, ${[0, 0.25, 0.5, 0.75, 1].map((t) => color(t, 1)).join(',')})`;
    span.append(`${k}: 0`, ramp, `${r.max.toFixed(3)} (weights sum to 1)`);
    box.appendChild(span);
  }
  const marks = document.createElement('span');
  marks.textContent = 'purple: critical path; red dashes: min cut; edge width: rows; 10x / 100x / 1000x: row misestimate';
  box.appendChild(marks);
  if (pair) {
    const ch = document.createElement('span');
    ch.textContent = 'orange: changed operator (another method, or inputs swapped); green: new in the second plan; grey: not in the second plan';
    box.appendChild(ch);
  }
}

function select(side, id) {
  selected = { side, id };
  history.replaceState(null, '', side === 0 ? `#node=${id}` : `#second=${id}`);
  const peer = pair ? sides()[side].nodes[id].change.peer : null;
  for (const svg of document.querySelectorAll('#panes svg')) {
    const s = Number(svg.dataset.side);
    for (const g of svg.querySelectorAll('g.node')) {
      const gid = Number(g.dataset.id);
      g.classList.toggle('selected', s === side && gid === id);
      g.classList.toggle('peer', pair !== null && s !== side && gid === peer);
    }
  }
  showDetails(side, id);
}

function fold(side, id) {
  const c = collapsed[side];
  if (c.has(id)) c.delete(id); else c.add(id);
  analyze();
  draw();
}

function rawNode(side, path) {
  if (!path) return null;
  try {
    let v = JSON.parse(pair ? sides()[side].text : text);
    for (const part of path.split('.')) {
      const m = part.match(/^([^[]*)((?:\[\d+\])*)$/);
      if (m[1]) v = v[m[1]];
      for (const i of m[2].matchAll(/\[(\d+)\]/g)) v = v[Number(i[1])];
    }
    if (v && typeof v === 'object') {
      const copy = { ...v };
      delete copy.Plans;
      return copy;
    }
  } catch (_) { /* the raw view is a convenience only */ }
  return null;
}

function showDetails(side, id) {
  const plan = sides()[side];
  const n = plan && plan.nodes[id];
  if (!n) return;
  const rows = [
    ['operator', n.operator], ['relation / label', n.label || '-'], ['node', `${n.id} (${n.path || 'no path'})`],
    ['estimated rows', `${fmt(n.est_rows, 0)} x ${fmt(n.loops, 0)} loops`],
    ['actual rows', n.actual_rows === null ? '- (no ANALYZE)' : fmt(n.actual_rows, 0)],
    ['misestimate', n.misestimate === null ? '-' : `${fmt(n.misestimate, 1)}x`],
    ['self time', n.self_ms === null ? '-' : `${fmt(n.self_ms, 3)} ms`],
    ['total cost', fmt(n.total_cost, 2)], ['self cost', fmt(n.self_cost, 2)],
    ['critical path', n.critical ? 'yes' : `no (slack ${fmt(n.slack, 2)})`],
    ['inputs', n.inputs.join(', ') || '-'], ['consumers', n.consumers.join(', ') || '- (root)'],
  ];
  if (pair) {
    const other = sides()[1 - side];
    const peer = n.change.peer === null ? null : other.nodes[n.change.peer];
    const where = `${other.title} (node ${n.change.peer})`;
    const said = {
      same: () => `the same in ${where}`,
      changed: () => peer.operator === n.operator ? `inputs in another order in ${where}` : `${peer.operator} in ${where}`,
      new: () => `only in ${plan.title}`,
      removed: () => `only in ${plan.title}`,
    }[n.change.status]();
    rows.unshift(['plan', plan.title], ['in the other plan', said]);
  }
  const box = $('details');
  box.replaceChildren();
  const h = document.createElement('h3');
  h.textContent = `${n.operator}${n.label ? ' on ' + n.label : ''}`;
  box.appendChild(h);
  const table = document.createElement('table');
  table.id = 'detail-table';
  for (const [k, v] of rows) table.insertRow().append(cell(k), cell(v));
  box.appendChild(table);
  const h2 = document.createElement('h4');
  h2.textContent = 'weight under every kind';
  box.appendChild(h2);
  const wt = document.createElement('table');
  wt.id = 'weights-table';
  for (const k of plan.kinds) wt.insertRow().append(cell(k), cell(n.weights[k].toFixed(4)));
  box.appendChild(wt);
  const raw = rawNode(side, n.path);
  if (raw) {
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(raw, null, 1);
    box.appendChild(pre);
  }
}

function cell(text) {
  const td = document.createElement('td');
  td.textContent = text;
  return td;
}

function load(newText, newText2 = '') {
  text = newText;
  text2 = newText2;
  collapsed = [new Set(), new Set()];
  selected = null;
  try {
    analyze();
    let refold = false;
    sides().forEach((a, side) => {
      if (a.nodes.length <= FOLD_ABOVE) return;
      // Fold a large plan a few levels down so that the first picture stays light.
      const ys = [...new Set(a.nodes.map((n) => n.y))].sort((p, q) => p - q);
      const cutY = ys[Math.min(FOLD_DEPTH, ys.length - 1)];
      for (const n of a.nodes) if (n.y === cutY && n.inputs.length > 0) collapsed[side].add(n.id);
      refold ||= collapsed[side].size > 0;
    });
    if (refold) analyze();
  } catch (e) {
    plan = null;
    pair = null;
    $('decision').hidden = true;
    showError(String(e.message || e));
    return false;
  }
  showError('');
  // Small plans fit the pane; large ones keep their size and scroll.
  $('fit').checked = sides().every((a) => a.nodes.filter((n) => n.x !== null).length <= 60);
  const raw = pair && !text2.trim() ? text : [text, text2].filter((t) => t.trim()).join('\n\n-- second plan --\n\n');
  $('raw').textContent = raw.length > 200000 ? raw.slice(0, 200000) + '\n...' : raw;
  draw();
  const m = location.hash.match(/^#(node|second)=(\d+)$/);
  const side = m && m[1] === 'second' ? 1 : 0;
  if (m && sides()[side] && sides()[side].nodes[Number(m[2])]) select(side, Number(m[2]));
  return true;
}
window.rvdagLoad = (t, t2 = '') => load(t, t2);

async function main() {
  engine = await loadEngine();
  window.rvdagEngine = engine;
  $('version').textContent = `core ${engine.core_version()} (wasm)`;
  for (const sel of [$('kind'), $('kind2')]) {
    for (const k of JSON.parse(engine.kinds())) {
      const o = document.createElement('option');
      o.value = o.textContent = k;
      sel.appendChild(o);
    }
  }
  $('kind').value = 'critical_path';
  const examples = window.RVDAG_EXAMPLES || [];
  examples.forEach((ex, i) => {
    const o = document.createElement('option');
    o.value = String(i);
    o.textContent = ex.name;
    $('example').appendChild(o);
  });
  $('example').addEventListener('change', () => {
    const ex = examples[Number($('example').value)];
    if (!ex) return;
    $('plan').value = ex.text;
    $('plan2').value = ex.second || '';
    $('second-box').open = Boolean(ex.second);
    load(ex.text, ex.second || '');
  });
  $('draw').addEventListener('click', () => load($('plan').value, $('plan2').value));
  for (const id of ['kind', 'kind2', 'show-critical', 'show-cut', 'fit']) $(id).addEventListener('change', () => plan && draw());
  if (examples.length) {
    $('example').value = '0';
    $('plan').value = examples[0].text;
    load(examples[0].text);
  }
  document.body.dataset.ready = 'true';
}

main().catch((e) => showError(`the engine did not start: ${e.message || e}`));
