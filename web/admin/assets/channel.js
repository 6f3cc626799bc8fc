// One channel (?name=): its namespace's options, subscribers, presence,
// a history browser by offset, a publish form, and a live tail through
// the browser SDK on /admin/ws (the admin cookie authenticates it; the
// connection may read any channel and publish on none).

import { Herald } from '/admin/assets/herald-client/index.js';
import { init, get, post, el, fill, notify, dataText, fmtInt, fmtTime, clientLink, short, params, $ } from './common.js';

const TAIL_MAX = 200;
const PAGE = 20;
const channel = params().get('name') || '';
let info = null; // the last /admin/api/channel answer
let page = null; // the history page shown
let refreshTimer;

window.heraldAdmin = Object.assign(window.heraldAdmin || {}, { channel });
$('#channel-name').textContent = channel;
document.title = `${channel} · Herald admin`;

function fact(name, value) {
  return [el('dt', {}, name), el('dd', {}, value)];
}

function renderInfo() {
  const ns = info.namespace;
  const opts = [];
  if (ns.history) opts.push(`history: ${ns.history_size ? `${fmtInt(ns.history_size)} publications` : 'no size limit'}${ns.history_ttl_seconds ? `, ${ns.history_ttl_seconds} s` : ''}`);
  else opts.push('no history');
  opts.push(ns.presence ? 'presence' : 'no presence');
  if (ns.join_leave) opts.push('join/leave events');
  if (ns.delta) opts.push('deltas offered');
  opts.push(ns.allow_publish ? 'clients may publish' : 'clients may not publish');
  fill(
    '#namespace',
    fact('namespace', ns.name === '' ? '(default)' : ns.name),
    fact('options', opts.join(' · ')),
    fact('subscribers', `${fmtInt(info.subscribers)}${info.unreachable_nodes?.length ? ` (${info.unreachable_nodes.length} node(s) unreachable, not counted)` : ''}`),
    ns.history ? fact('position', el('span', { className: 'mono' }, `offset ${info.offset}, epoch ${info.epoch}`)) : null,
    fact('slow clients', ns.slow_policy),
  );
  $('#channel-summary').textContent = `${fmtInt(info.subscribers)} subscriber${info.subscribers === 1 ? '' : 's'}`;

  const note = $('#presence-note');
  if (!ns.presence) {
    fill('#presence tbody');
    $('#presence-stats').textContent = '';
    note.hidden = false;
    note.textContent = 'This namespace keeps no presence.';
    return;
  }
  const members = Object.values(info.presence || {}).sort((a, b) => (a.user || '').localeCompare(b.user || '') || a.client.localeCompare(b.client));
  fill(
    '#presence tbody',
    members.map((m) =>
      el(
        'tr',
        { dataset: { client: m.client } },
        el('td', { className: 'user' }, m.user || el('span', { className: 'muted' }, 'anonymous')),
        el('td', {}, clientLink(m.client)),
        el('td', { className: 'mono data' }, m.conn_info === undefined ? '' : dataText(m.conn_info)),
      ),
    ),
  );
  const st = info.presence_stats || {};
  $('#presence-stats').textContent = `${fmtInt(st.num_clients)} client${st.num_clients === 1 ? '' : 's'}, ${fmtInt(st.num_users)} user${st.num_users === 1 ? '' : 's'}`;
  note.hidden = members.length > 0;
  note.textContent = 'Nobody is here.';
}

async function loadInfo() {
  clearTimeout(refreshTimer);
  try {
    info = await get('channel', { name: channel });
    renderInfo();
    notify('', '');
  } catch (err) {
    notify(err.message);
    if (!info) return false; // not a channel (an invalid name): nothing to refresh
  }
  refreshTimer = setTimeout(loadInfo, 3000);
  return true;
}

// ---- history ----

function publisher(p) {
  if (p.info?.user) return p.info.user;
  if (p.info?.client) return el('span', { className: 'muted' }, `client ${short(p.info.client)}`);
  return el('span', { className: 'muted' }, 'server API');
}

async function loadHistory(since) {
  const card = $('#history-card');
  if (!info?.namespace.history) {
    card.hidden = true;
    return;
  }
  card.hidden = false;
  try {
    page = await get('history', { channel, since, limit: PAGE });
  } catch (err) {
    notify(`history: ${err.message}`);
    return;
  }
  const pubs = page.publications;
  fill(
    '#history tbody',
    pubs.map((p) =>
      el('tr', { dataset: { offset: p.offset } }, el('td', { className: 'num mono' }, p.offset), el('td', {}, fmtTime(p.time)), el('td', {}, publisher(p)), el('td', { className: 'mono data' }, dataText(p.data))),
    ),
  );
  const first = pubs.length ? pubs[0].offset : 0;
  const last = pubs.length ? pubs[pubs.length - 1].offset : 0;
  $('#history-range').textContent = pubs.length ? `offsets ${first}–${last} of ${page.offset}, epoch ${page.epoch}` : `no publications after offset ${page.since} (the stream is at ${page.offset})`;
  const note = $('#history-note');
  note.hidden = pubs.length > 0;
  note.textContent = page.offset === 0 ? 'Nothing was published on this channel yet.' : 'Nothing retained in this range (history is bounded by size and age).';
  $('#h-older').disabled = !pubs.length || first <= 1;
  $('#h-oldest').disabled = !pubs.length || first <= 1;
  $('#h-newer').disabled = last >= page.offset;
  $('#h-latest').disabled = last >= page.offset;
}

$('#h-oldest').addEventListener('click', () => loadHistory(0));
$('#h-older').addEventListener('click', () => {
  const first = page.publications[0].offset;
  loadHistory(Math.max(first - 1 - PAGE, 0));
});
$('#h-newer').addEventListener('click', () => loadHistory(page.publications.length ? page.publications[page.publications.length - 1].offset : page.since));
$('#h-latest').addEventListener('click', () => loadHistory());

// ---- publish ----

$('#publish').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('#publish-result');
  const raw = $('#publish-data').value;
  const kind = new FormData(ev.target).get('kind');
  const body = { channel };
  if (kind === 'json') {
    try {
      body.data = JSON.parse(raw);
    } catch (err) {
      out.textContent = `Not JSON: ${err.message}. Choose “text” to send it as a string.`;
      out.dataset.kind = 'error';
      return;
    }
  } else body.text = raw;
  try {
    const res = await post('publish', body);
    out.textContent = res.offset ? `Published at offset ${res.offset}.` : 'Published.';
    out.dataset.kind = 'ok';
    if (page && $('#h-latest').disabled) loadHistory(); // showing the newest: show this one too
  } catch (err) {
    out.textContent = `Not published: ${err.message}`;
    out.dataset.kind = 'error';
  }
});

// ---- live tail ----

const tailState = $('#tail-state');
let client = null;
let sub = null;

function addTail(p) {
  const list = $('#tail');
  const who = p.info?.user || (p.info?.client ? `client ${short(p.info.client)}` : 'server API');
  list.prepend(
    el(
      'li',
      { dataset: { offset: p.offset ?? '' } },
      el('span', { className: 'mono muted' }, p.offset ? `#${p.offset}` : '•'),
      el('span', { className: 'muted' }, new Date().toLocaleTimeString('en-GB', { hour12: false })),
      el('span', { className: 'who' }, who),
      el('span', { className: 'mono data' }, dataText(p.data)),
    ),
  );
  while (list.children.length > TAIL_MAX) list.lastElementChild.remove();
}

function startTail() {
  const url = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/admin/ws`;
  client = new Herald(url, { name: 'herald-admin' });
  client.on('state', ({ state }) => {
    tailState.dataset.state = state;
    tailState.textContent = state;
  });
  client.on('disconnect', (e) => {
    if (!e.reconnect && e.code) notify(`live tail stopped: ${e.code} ${e.reason}`);
  });
  sub = client.newSubscription(channel, { recover: false });
  sub.on('publication', addTail);
  sub.on('error', ({ error }) => notify(`live tail: ${error.message}`));
  client.connect();
  sub.subscribe();
  window.heraldAdmin.tail = { client, sub };
  $('#tail-toggle').textContent = 'Pause';
}

function stopTail() {
  client?.disconnect();
  client = null;
  $('#tail-toggle').textContent = 'Resume';
}

$('#tail-toggle').addEventListener('click', () => (client ? stopTail() : startTail()));

// ---- start ----

await init('channels');
if (await loadInfo()) {
  await loadHistory();
  startTail();
} else {
  for (const id of ['#presence-card', '#history-card']) $(id).hidden = true;
  $('#publish button').disabled = true;
  $('#tail-toggle').disabled = true;
}
