// Overview: the cluster's nodes, and live plots of the last 15 minutes
// (one sample a second per node, kept by every node: /admin/api/stats),
// filled from that history when the page opens and updated every second.
// uPlot is the global of vendor/uPlot.iife.min.js.

import { init, get, el, fill, notify, short, fmtInt, fmtRate, fmtBytes, fmtDuration, fmtTime, $ } from './common.js';

const WINDOW_SEC = 900;
const PALETTE = ['#2563eb', '#d97706', '#059669', '#db2777', '#7c3aed', '#0891b2', '#65a30d', '#dc2626'];
const CLUSTER_COLOR = '#111827';

// One plot per figure. per(sample) is a node's value; sum: also plot the
// sum over nodes. A plot with several values per node lists them in
// parts, each with its own dash.
const FIGURES = [
  { id: 'connections', title: 'Connections', fmt: fmtInt, parts: [{ key: 'connections', label: '' }], sum: true },
  { id: 'publications', title: 'Publications / s', fmt: fmtRate, parts: [{ key: 'publications', label: '' }], sum: true },
  { id: 'deliveries', title: 'Deliveries / s', fmt: fmtRate, parts: [{ key: 'deliveries', label: '' }], sum: true },
  {
    id: 'fanout',
    title: 'Fan-out latency (ms)',
    fmt: (v) => `${Number(v).toFixed(2)} ms`,
    parts: [
      { key: 'fanout_p50_ms', label: 'p50', dash: [6, 4] },
      { key: 'fanout_p99_ms', label: 'p99' },
    ],
    sum: false,
  },
  {
    id: 'backpressure',
    title: 'Slow disconnects and drops / s',
    fmt: fmtRate,
    parts: [
      { key: 'slow_disconnects', label: 'slow' },
      { key: 'dropped', label: 'dropped', dash: [6, 4] },
    ],
    sum: true,
  },
  { id: 'cpu', title: 'CPU (% of a core)', fmt: (v) => `${Number(v).toFixed(1)} %`, parts: [{ key: 'cpu', label: '', scale: 100 }], sum: true },
];

const samples = new Map(); // node -> Map(t ms -> sample)
let nodes = []; // node ids, sorted, as the plots were built for
const plots = {}; // figure id -> uPlot
let newest = 0; // newest sample time seen (ms)

window.heraldAdmin = Object.assign(window.heraldAdmin || {}, {
  plots,
  /** The plotted data of a figure: [xs, ...series], and the series labels. */
  plotData(id) {
    const u = plots[id];
    return u ? { labels: u.series.map((s) => s.label), data: u.data.map((a) => Array.from(a)) } : null;
  },
});

function addSamples(series) {
  for (const { node, samples: list } of series) {
    let m = samples.get(node);
    if (!m) samples.set(node, (m = new Map()));
    for (const x of list) {
      m.set(x.t, x);
      newest = Math.max(newest, x.t);
    }
  }
  const cut = newest - WINDOW_SEC * 1000;
  for (const [node, m] of samples) {
    for (const t of m.keys()) if (t <= cut) m.delete(t);
    if (m.size === 0) samples.delete(node);
  }
}

// The plots' columns: one a second. A node's sample goes to the second it
// was taken in; a sum carries each node's last value forward a few
// seconds, so that nodes sampling at different moments add up smoothly.
function columns() {
  const secs = new Set();
  for (const m of samples.values()) for (const t of m.keys()) secs.add(Math.floor(t / 1000));
  const xs = [...secs].sort((a, b) => a - b);
  const index = new Map(xs.map((s, i) => [s, i]));
  const bySec = new Map();
  for (const [node, m] of samples) {
    const row = new Array(xs.length).fill(null);
    for (const [t, x] of m) row[index.get(Math.floor(t / 1000))] = x;
    bySec.set(node, row);
  }
  return { xs, bySec };
}

function buildData(fig, { xs, bySec }) {
  const data = [xs];
  if (fig.sum) {
    for (const part of fig.parts) {
      const total = new Array(xs.length).fill(null);
      for (const node of nodes) {
        const row = bySec.get(node);
        if (!row) continue;
        let last = null;
        let age = 0;
        for (let i = 0; i < xs.length; i++) {
          if (row[i]) {
            last = (row[i][part.key] ?? 0) * (part.scale ?? 1);
            age = 0;
          } else age++;
          if (last !== null && age <= 3) total[i] = (total[i] ?? 0) + last;
        }
      }
      data.push(total);
    }
  }
  for (const node of nodes) {
    const row = bySec.get(node) || [];
    for (const part of fig.parts) data.push(xs.map((_, i) => (row[i] ? (row[i][part.key] ?? 0) * (part.scale ?? 1) : null)));
  }
  return data;
}

function seriesOf(fig) {
  const value = (u, v) => (v == null ? '–' : fig.fmt(v));
  const out = [{ label: 'time', value: (u, v) => (v == null ? '–' : fmtTime(v * 1000)) }];
  if (fig.sum) {
    for (const part of fig.parts) {
      out.push({ label: `cluster${part.label ? ` ${part.label}` : ''}`, stroke: CLUSTER_COLOR, width: 2, dash: part.dash, value, spanGaps: true, points: { show: false } });
    }
  }
  nodes.forEach((node, i) => {
    for (const part of fig.parts) {
      out.push({ label: `${short(node)}${part.label ? ` ${part.label}` : ''}`, stroke: PALETTE[i % PALETTE.length], width: 1.25, dash: part.dash, value, spanGaps: true, points: { show: false } });
    }
  });
  return out;
}

// tick labels a y axis value with as many decimals as its step needs.
function tick(v, incr) {
  let decimals = 0;
  while (decimals < 3 && Math.abs(Math.round(incr * 10 ** decimals) - incr * 10 ** decimals) > 1e-6) decimals++;
  return Number(v).toLocaleString('en-US', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

function plotWidth(container) {
  return Math.max(280, container.clientWidth - 2);
}

function buildPlots() {
  for (const u of Object.values(plots)) u.destroy();
  const root = $('#plots');
  root.replaceChildren();
  const cols = columns();
  for (const fig of FIGURES) {
    const box = el('div', { className: 'plot', id: `plot-${fig.id}`, dataset: { figure: fig.id } });
    root.append(box);
    plots[fig.id] = new window.uPlot(
      {
        title: fig.title,
        width: plotWidth(box),
        height: 220,
        scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max * 1.1, fig.id === 'connections' ? 1 : 0.1)] } },
        series: seriesOf(fig),
        axes: [{}, { size: 64, values: (u, vals, axis, space, incr) => vals.map((v) => tick(v, incr)) }],
        legend: { live: true },
        cursor: { drag: { x: true, y: false } },
      },
      buildData(fig, cols),
      box,
    );
  }
}

function redraw() {
  const known = [...samples.keys()].sort();
  if (known.join() !== nodes.join() || Object.keys(plots).length === 0) {
    nodes = known;
    buildPlots();
    return;
  }
  const cols = columns();
  for (const fig of FIGURES) plots[fig.id].setData(buildData(fig, cols));
}

async function pollStats() {
  try {
    // Nodes sample at different moments: ask again for the last few
    // seconds, so that a sample that reached this node late is not lost.
    const res = await get('stats', newest ? { since: Math.max(newest - 5000, 1) } : {});
    addSamples(res.nodes);
    redraw();
    notify('', '');
  } catch (err) {
    notify(`stats: ${err.message}`);
  }
  setTimeout(pollStats, 1000);
}

function nodeRow(n, i) {
  const color = PALETTE[nodes.indexOf(n.node) >= 0 ? nodes.indexOf(n.node) % PALETTE.length : i % PALETTE.length];
  const swatch = el('span', { className: 'swatch' });
  swatch.style.setProperty('--c', color); // CSSOM: the CSP allows no style attributes
  const id = el('td', { className: 'mono', title: n.node }, swatch, short(n.node, 12));
  if (n.unreachable) {
    const seen = n.last_seen ? `, last seen ${fmtTime(Date.parse(n.last_seen))}` : '';
    id.append(' ', el('span', { className: 'badge bad', title: `no answer within the query timeout${seen}` }, 'unreachable'));
  }
  const num = (v) => el('td', { className: 'num' }, v);
  return el(
    'tr',
    { className: n.unreachable ? 'unreachable' : '', dataset: { node: n.node } },
    id,
    el('td', {}, n.version || ''),
    el('td', { className: 'mono' }, n.address || ''),
    el('td', {}, n.broker || ''),
    el('td', {}, n.unreachable ? '–' : fmtDuration(n.uptime_seconds)),
    num(fmtInt(n.num_clients)),
    num(fmtInt(n.num_subscriptions)),
    num(fmtInt(n.num_channels)),
    num(fmtInt(n.goroutines)),
    num(fmtBytes(n.rss_bytes)),
    num(n.unreachable ? '–' : `${(n.cpu_cores * 100).toFixed(1)} %`),
    num(n.unreachable ? '–' : fmtRate(n.publications_per_second)),
    num(n.unreachable ? '–' : fmtRate(n.deliveries_per_second)),
  );
}

async function pollInfo() {
  try {
    const res = await get('info');
    fill('#nodes tbody', res.nodes.map(nodeRow));
    const down = res.nodes.filter((n) => n.unreachable).length;
    const conns = res.nodes.reduce((a, n) => a + (n.num_clients || 0), 0);
    $('#cluster-summary').textContent = `${res.nodes.length} node${res.nodes.length === 1 ? '' : 's'}${down ? `, ${down} unreachable` : ''}, ${fmtInt(conns)} connections`;
  } catch (err) {
    notify(`info: ${err.message}`);
  }
  setTimeout(pollInfo, 2000);
}

let resizeTimer;
window.addEventListener('resize', () => {
  clearTimeout(resizeTimer);
  resizeTimer = setTimeout(() => {
    for (const [id, u] of Object.entries(plots)) u.setSize({ width: plotWidth(document.getElementById(`plot-${id}`)), height: 220 });
  }, 100);
});

await init('overview');
pollInfo();
pollStats();
