// One connection (?client=): its details and subscriptions, and the
// disconnect form: reconnect (3007), stay away (3503) or a custom code.

import { init, get, post, el, fill, notify, channelLink, fmtInt, fmtBytes, fmtTime, params, $ } from './common.js';

const client = params().get('client') || '';
$('#client-id').textContent = client;
document.title = `Connection ${client} · Herald admin`;
let gone = false;

function fact(name, value) {
  return [el('dt', {}, name), el('dd', {}, value)];
}

async function load() {
  let page;
  try {
    page = await get('connections', { client, limit: 1 });
  } catch (err) {
    notify(err.message);
    return;
  }
  const c = page.connections[0];
  const state = $('#conn-state');
  if (!c) {
    gone = true;
    state.textContent = 'not connected';
    state.dataset.state = 'gone';
    fill('#details', fact('state', page.unreachable_nodes?.length ? 'not found (some nodes did not answer)' : 'not connected (closed, or never was)'));
    fill('#subscriptions');
    $('#disconnect button').disabled = true;
    return;
  }
  state.textContent = 'connected';
  state.dataset.state = 'connected';
  fill(
    '#details',
    fact('user', c.user || el('span', { className: 'muted' }, 'anonymous')),
    fact('address', el('span', { className: 'mono' }, c.remote_addr)),
    fact('node', el('span', { className: 'mono' }, c.node)),
    fact('transport', `${c.transport}, ${c.codec}`),
    fact('connected at', fmtTime(Date.parse(c.connected_at))),
    fact('outbound queue', `${fmtInt(c.queue_frames)} frames, ${fmtBytes(c.queue_bytes)}`),
    c.admin ? fact('kind', 'admin UI live tail (read-only)') : null,
  );
  fill('#subscriptions', c.subscriptions.length ? c.subscriptions.map((ch) => el('li', {}, channelLink(ch))) : [el('li', { className: 'muted' }, 'none')]);
}

$('#disconnect').addEventListener('submit', async (ev) => {
  ev.preventDefault();
  const out = $('#disconnect-result');
  const mode = new FormData(ev.target).get('mode');
  const body = { client, reconnect: mode === 'reconnect', reason: $('#reason').value.trim() };
  if (mode === 'custom') body.code = Number($('#custom-code').value);
  try {
    const res = await post('disconnect', body);
    out.textContent = `Disconnected with code ${res.code}.`;
    out.dataset.kind = 'ok';
  } catch (err) {
    out.textContent = `Not disconnected: ${err.message}`;
    out.dataset.kind = 'error';
  }
  setTimeout(load, 300);
});

await init('connections');
await load();
setInterval(() => gone || load(), 3000);
