// Shared by the admin pages: the JSON API with the session's CSRF token,
// the header (navigation, node, log out), DOM building and formatting.
//
// Every value that comes from users or clients (channel names, user ids,
// connection info, publication data) goes into the page as text: through
// el(), textContent or attributes set with setAttribute, never as HTML.

let csrf = '';

/** Thrown for API answers that are not 2xx. */
export class APIError extends Error {
  constructor(status, body) {
    super(body?.error?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.error?.code;
  }
}

function toLogin() {
  location.href = `/admin/login?next=${encodeURIComponent(location.pathname + location.search)}`;
}

async function answer(res) {
  let body = null;
  try {
    body = await res.json();
  } catch {
    // not JSON
  }
  if (res.status === 401) {
    toLogin();
    throw new APIError(401, body);
  }
  if (!res.ok) throw new APIError(res.status, body);
  return body;
}

/** GET /admin/api/NAME with query parameters (empty ones left out). */
export async function get(name, params = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  const qs = q.toString();
  return answer(await fetch(`/admin/api/${name}${qs ? `?${qs}` : ''}`, { credentials: 'same-origin', cache: 'no-store' }));
}

/** POST /admin/api/NAME (or another admin path) with a JSON body and the CSRF token. */
export async function post(path, body = {}) {
  const url = path.startsWith('/') ? path : `/admin/api/${path}`;
  return answer(
    await fetch(url, {
      method: 'POST',
      credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json', 'X-Herald-CSRF': csrf },
      body: JSON.stringify(body),
    }),
  );
}

/**
 * Builds an element. attrs: properties for className, dataset (an object),
 * on* handlers (functions) and anything else as attributes; children:
 * nodes, or strings and numbers as text.
 */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'className') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Replaces the children of node (a selector or element). */
export function fill(node, ...children) {
  const n = typeof node === 'string' ? document.querySelector(node) : node;
  n.replaceChildren(...children.flat().filter((c) => c !== undefined && c !== null && c !== false).map((c) => (c instanceof Node ? c : document.createTextNode(String(c)))));
  return n;
}

export const $ = (sel) => document.querySelector(sel);

/** Shows msg in the page's message line (kind: error, ok or ''). */
export function notify(msg, kind = 'error', where = '#message') {
  const n = $(where);
  if (!n) return;
  n.textContent = msg;
  n.dataset.kind = kind;
  n.hidden = !msg;
}

/** Publication or connection data as one line of text. */
export function dataText(v) {
  if (v === undefined) return '';
  if (typeof v === 'string') return JSON.stringify(v);
  try {
    return JSON.stringify(v);
  } catch {
    return String(v);
  }
}

export function fmtInt(n) {
  return Number(n || 0).toLocaleString('en-US');
}

export function fmtRate(n) {
  const v = Number(n || 0);
  if (v >= 100) return Math.round(v).toLocaleString('en-US');
  if (v >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

export function fmtBytes(n) {
  let v = Number(n || 0);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v >= 10 || i === 0 ? Math.round(v) : v.toFixed(1)} ${units[i]}`;
}

export function fmtDuration(sec) {
  let s = Math.max(0, Math.floor(Number(sec || 0)));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

export function fmtTime(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return d.toLocaleString('en-GB', { hour12: false });
}

export const short = (id, n = 8) => (id && id.length > n ? id.slice(0, n) : id || '');

export function channelLink(name) {
  return el('a', { href: `/admin/channel?name=${encodeURIComponent(name)}`, className: 'mono' }, name);
}

export function clientLink(id) {
  return el('a', { href: `/admin/connection?client=${encodeURIComponent(id)}`, className: 'mono' }, id);
}

/** The page's query parameters. */
export const params = () => new URLSearchParams(location.search);

/**
 * Prepares the page: fetches the session's CSRF token (a page without a
 * session goes to the login), marks the current navigation entry and
 * wires the log-out button. Resolves to the session.
 */
export async function init(page) {
  for (const a of document.querySelectorAll('nav a')) if (a.dataset.nav === page) a.setAttribute('aria-current', 'page');
  const sess = await get('session');
  csrf = sess.csrf;
  $('#node-label').textContent = `served by node ${short(sess.node)}`;
  $('#node-label').title = sess.node;
  $('#logout').addEventListener('click', async () => {
    try {
      await post('/admin/logout');
    } finally {
      location.href = '/admin/login';
    }
  });
  window.heraldAdmin = Object.assign(window.heraldAdmin || {}, { session: sess, page });
  return sess;
}
