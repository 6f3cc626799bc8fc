// Channels: search the cluster's channels by pattern, page by page. The
// search is in the address (?pattern=&limit=&cursor=), so a page can be
// linked and the browser's back button works.

import { init, get, el, fill, notify, channelLink, fmtInt, params, $ } from './common.js';

const GLOB = /[*?[\\]/;

/** The pattern sent: a glob as typed, other text matched anywhere. */
export function toPattern(text) {
  const t = text.trim();
  if (t === '' || GLOB.test(t)) return t;
  return `*${t}*`;
}

async function load() {
  const p = params();
  const text = p.get('pattern') || '';
  const limit = p.get('limit') || '50';
  const cursor = p.get('cursor') || '';
  $('#pattern').value = text;
  $('#limit').value = limit;
  try {
    const page = await get('channels', { pattern: toPattern(text), limit, cursor });
    fill(
      '#channels tbody',
      page.channels.map((c) => el('tr', { dataset: { channel: c.channel } }, el('td', {}, channelLink(c.channel)), el('td', { className: 'num' }, fmtInt(c.num_clients)))),
    );
    const empty = $('#empty');
    empty.hidden = page.channels.length > 0;
    empty.textContent = text ? `No channel with subscribers matches “${text}”.` : 'No channel has subscribers.';
    $('#next').disabled = !page.cursor;
    $('#next').dataset.cursor = page.cursor || '';
    $('#first').disabled = !cursor;
    const un = $('#unreachable');
    un.hidden = !page.unreachable_nodes?.length;
    un.textContent = un.hidden ? '' : `Not counted: ${page.unreachable_nodes.length} unreachable node(s).`;
    notify('', '');
  } catch (err) {
    fill('#channels tbody');
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
  go({ pattern: $('#pattern').value.trim(), limit: $('#limit').value, cursor: '' });
});
$('#next').addEventListener('click', () => go({ cursor: $('#next').dataset.cursor }));
$('#first').addEventListener('click', () => go({ cursor: '' }));
window.addEventListener('popstate', load);

await init('channels');
await load();
