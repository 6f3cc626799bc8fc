// Connections: search the cluster's client connections by user, client
// id, channel and address, page by page (the search is in the address).

import { init, get, el, fill, notify, clientLink, fmtInt, fmtBytes, fmtTime, short, params, $ } from './common.js';

const FIELDS = ['user', 'client', 'channel', 'remote'];

function row(c) {
  return el(
    'tr',
    { dataset: { client: c.client } },
    el('td', {}, clientLink(c.client), c.admin ? [' ', el('span', { className: 'badge' }, 'admin')] : null),
    el('td', { className: 'user' }, c.user || el('span', { className: 'muted' }, 'anonymous')),
    el('td', { className: 'mono' }, c.remote_addr),
    el('td', { className: 'mono', title: c.node }, short(c.node)),
    el('td', {}, c.codec),
    el('td', {}, fmtTime(Date.parse(c.connected_at))),
    el('td', { className: 'num' }, fmtInt(c.subscriptions.length)),
    el('td', { className: 'num' }, `${fmtInt(c.queue_frames)} / ${fmtBytes(c.queue_bytes)}`),
  );
}

async function load() {
  const p = params();
  const q = { cursor: p.get('cursor') || '', limit: 100 };
  for (const f of FIELDS) {
    q[f] = p.get(f) || '';
    $(`#q-${f}`).value = q[f];
  }
  try {
    const page = await get('connections', q);
    fill('#connections tbody', page.connections.map(row));
    const empty = $('#empty');
    empty.hidden = page.connections.length > 0;
    empty.textContent = FIELDS.some((f) => q[f]) ? 'No connection matches.' : 'No connections.';
    $('#next').disabled = !page.cursor;
    $('#next').dataset.cursor = page.cursor || '';
    $('#first').disabled = !q.cursor;
    const un = $('#unreachable');
    un.hidden = !page.unreachable_nodes?.length;
    un.textContent = un.hidden ? '' : `Not listed: the connections of ${page.unreachable_nodes.length} unreachable node(s).`;
    notify('', '');
  } catch (err) {
    fill('#connections tbody');
    notify(err.message);
  }
}

function go(change) {
  const p = params();
  for (const [k, v] of Object.entries(change)) {
    if (v) p.set(k, v);
    else p.delete(k);
  }
  history.pushState(null, '', `?${p}`);
  load();
}

$('#search').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const change = { cursor: '' };
  for (const f of FIELDS) change[f] = $(`#q-${f}`).value.trim();
  go(change);
});
$('#next').addEventListener('click', () => go({ cursor: $('#next').dataset.cursor }));
$('#first').addEventListener('click', () => go({ cursor: '' }));
window.addEventListener('popstate', load);

await init('connections');
await load();
