// Herald demo chat: rooms, presence, history on join, a connection-state
// indicator and visible recovery after the network drops. Plain ES modules
// on top of the SDK (herald-client.js, built by `npm run build:web` in js/).

import { Herald } from './herald-client.js';

const params = new URLSearchParams(location.search);
const $ = (sel) => document.querySelector(sel);
const HISTORY_ON_JOIN = 50;

// ---- identity ----
const nameInput = $('#name');
let myName = params.get('name') || localStorage.getItem('herald-demo-name') || `guest-${Math.random().toString(16).slice(2, 6)}`;
nameInput.value = myName;
nameInput.addEventListener('change', () => {
  myName = nameInput.value.trim() || myName;
  nameInput.value = myName;
  localStorage.setItem('herald-demo-name', myName);
});

// ---- client ----
const wsUrl = `${location.protocol === 'https:' ? 'wss:' : 'ws:'}//${location.host}/ws`;
const client = new Herald(wsUrl, { token: params.get('token') || undefined, name: 'herald-demo' });
const rooms = new Map(); // room name -> room state
const names = new Map(); // client id -> display name learned from messages
let current = null;
let everConnected = false;
window.heraldDemo = { client, rooms };

const connEl = $('#conn');
client.on('state', ({ state }) => {
  connEl.dataset.state = state;
  $('#state').textContent = state === 'connecting' && everConnected ? 'reconnecting…' : state;
});
client.on('connected', (e) => {
  everConnected = true;
  $('#client-id').textContent = `client ${e.client.slice(0, 8)} · ${client.transport}`;
});
client.on('disconnect', (e) => {
  const what = e.reconnect ? 'reconnecting…' : 'not reconnecting';
  for (const r of rooms.values()) sysLine(r, `connection lost (${e.code} ${e.reason}); ${what}`, 'warn');
});

// ---- rooms ----
function label(info, data) {
  if (data && typeof data.name === 'string' && data.name) return data.name;
  if (info?.user) return info.user;
  if (info?.client && names.has(info.client)) return names.get(info.client);
  return info?.client ? `guest·${info.client.slice(0, 6)}` : 'server';
}

function joinRoom(name) {
  if (rooms.has(name)) {
    showRoom(name);
    return;
  }
  const list = document.createElement('ol');
  list.className = 'messages';
  list.dataset.room = name;
  $('#logs').append(list);
  const room = { name, list, keys: new Set(), members: new Map(), unread: 0, historyLoaded: false, startLine: null };
  rooms.set(name, room);
  room.startLine = sysLine(room, `you joined #${name}`);

  const sub = client.newSubscription(`chat:${name}`);
  room.sub = sub;
  sub.on('publication', (p) => addMessage(room, p));
  sub.on('subscribed', (e) => onSubscribed(room, e));
  sub.on('join', ({ info }) => {
    room.members.set(info.client, info);
    renderPresence();
  });
  sub.on('leave', ({ info }) => {
    room.members.delete(info.client);
    renderPresence();
  });
  sub.on('error', ({ error }) => sysLine(room, `subscription error: ${error.message}`, 'warn'));
  sub.on('unsubscribed', (e) => {
    if (e.code) sysLine(room, `unsubscribed by the server: ${e.code} ${e.reason}`, 'warn');
  });
  sub.subscribe().catch(() => {});
  renderRooms();
  showRoom(name);
}

function leaveRoom(name) {
  const room = rooms.get(name);
  if (!room || rooms.size === 1) return;
  client.removeSubscription(room.sub);
  room.list.remove();
  rooms.delete(name);
  if (current === name) showRoom(rooms.keys().next().value);
  renderRooms();
}

function onSubscribed(room, e) {
  refreshPresence(room);
  if (!room.historyLoaded) {
    room.historyLoaded = true;
    loadHistory(room, e.position);
    return;
  }
  if (!e.wasRecovering) return;
  const n = e.recoveredCount;
  const s = n === 1 ? '' : 's';
  if (e.streamReset) {
    sysLine(room, `reconnected; the server restarted with a new message stream: recovered ${n} message${s} published since`, 'ok');
  } else if (e.recovered) {
    sysLine(room, `reconnected, recovered ${n} missed message${s}`, 'ok');
  } else {
    sysLine(room, 'reconnected, but missed messages are beyond the history window; loading recent history', 'warn');
    loadHistory(room, e.position, true);
  }
}

// History on join: the publications before the subscribe position, read
// backwards, so they never overlap the live ones that follow it.
async function loadHistory(room, pos, append = false) {
  if (!pos) return;
  try {
    const h = await room.sub.history({ since: { epoch: pos.epoch, offset: pos.offset + 1 }, reverse: true, limit: HISTORY_ON_JOIN });
    const pubs = h.publications.reverse();
    let anchor = room.startLine;
    for (const p of pubs) {
      const li = messageItem(room, p, h.epoch);
      if (!li) continue;
      if (append) room.list.append(li);
      else {
        anchor.after(li);
        anchor = li;
      }
    }
    if (pubs.length && !append) anchor.after(sysEl(`${pubs.length} earlier message${pubs.length === 1 ? '' : 's'} from history`));
    scrollDown(room);
  } catch (err) {
    sysLine(room, `history: ${err.message}`, 'warn');
  }
}

function messageItem(room, p, epoch) {
  const key = p.offset ? `${epoch}:${p.offset}` : '';
  if (key && room.keys.has(key)) return null; // already shown
  if (key) room.keys.add(key);
  const data = p.data && typeof p.data === 'object' && !(p.data instanceof Uint8Array) ? p.data : { text: String(p.data) };
  if (p.info?.client && typeof data.name === 'string') names.set(p.info.client, data.name);
  const li = document.createElement('li');
  li.className = 'msg';
  if (p.info?.client && p.info.client === client.clientId) li.classList.add('mine');
  if (key) li.dataset.key = key;
  const t = document.createElement('time');
  t.textContent = new Date(p.time || Date.now()).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', second: '2-digit' });
  const who = document.createElement('b');
  who.className = 'who';
  who.textContent = label(p.info, data);
  const text = document.createElement('span');
  text.className = 'text';
  text.textContent = typeof data.text === 'string' ? data.text : JSON.stringify(data);
  li.append(t, who, text);
  return li;
}

function addMessage(room, p) {
  const li = messageItem(room, p, room.sub.position()?.epoch ?? '');
  if (!li) return;
  room.list.append(li);
  if (room.name !== current) {
    room.unread++;
    renderRooms();
  }
  scrollDown(room);
  renderPresence();
}

function sysEl(text, kind = '') {
  const li = document.createElement('li');
  li.className = `sys ${kind}`.trim();
  li.textContent = text;
  return li;
}

function sysLine(room, text, kind) {
  const li = sysEl(text, kind);
  room.list.append(li);
  scrollDown(room);
  return li;
}

function scrollDown(room) {
  if (room.name === current) room.list.scrollTop = room.list.scrollHeight;
}

// ---- presence ----
async function refreshPresence(room) {
  try {
    const members = await room.sub.presence();
    room.members = new Map(Object.entries(members));
    renderPresence();
  } catch {
    // presence is off or the connection dropped: the next subscribe retries
  }
}

function renderPresence() {
  const room = rooms.get(current);
  const ul = $('#presence');
  ul.replaceChildren();
  if (!room) return;
  const items = [...room.members.values()].map((info) => {
    const li = document.createElement('li');
    li.dataset.client = info.client;
    const me = info.client === client.clientId;
    li.textContent = me ? `${myName} (you)` : label(info);
    if (me) li.classList.add('me');
    return li;
  });
  items.sort((a, b) => a.textContent.localeCompare(b.textContent));
  ul.append(...items);
  $('#presence-count').textContent = String(items.length);
}

// ---- layout ----
function renderRooms() {
  const ul = $('#rooms');
  ul.replaceChildren();
  for (const room of rooms.values()) {
    const li = document.createElement('li');
    li.dataset.room = room.name;
    if (room.name === current) li.classList.add('current');
    const a = document.createElement('button');
    a.type = 'button';
    a.className = 'room';
    a.textContent = `#${room.name}`;
    a.addEventListener('click', () => showRoom(room.name));
    li.append(a);
    if (room.unread) {
      const badge = document.createElement('span');
      badge.className = 'badge';
      badge.textContent = String(room.unread);
      li.append(badge);
    }
    if (rooms.size > 1) {
      const x = document.createElement('button');
      x.type = 'button';
      x.className = 'leave';
      x.title = `leave #${room.name}`;
      x.textContent = '×';
      x.addEventListener('click', () => leaveRoom(room.name));
      li.append(x);
    }
    ul.append(li);
  }
}

function showRoom(name) {
  current = name;
  const room = rooms.get(name);
  room.unread = 0;
  for (const r of rooms.values()) r.list.hidden = r.name !== name;
  $('#room-title').textContent = `#${name}`;
  renderRooms();
  renderPresence();
  scrollDown(room);
  $('#text').focus();
}

$('#join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#join-input');
  const name = input.value.trim();
  if (!/^[A-Za-z0-9_.-]{1,40}$/.test(name)) return;
  input.value = '';
  joinRoom(name);
});

$('#send-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const input = $('#text');
  const text = input.value.trim();
  if (!text || !current) return;
  input.value = '';
  const room = rooms.get(current);
  room.sub.publish({ name: myName, text }).catch((err) => sysLine(room, `not sent (${err.message}): ${text}`, 'warn'));
});

// ---- start ----
const initial = (params.get('rooms') || 'lobby,random').split(',').filter((r) => /^[A-Za-z0-9_.-]{1,40}$/.test(r));
for (const r of initial) joinRoom(r);
showRoom(params.get('room') && rooms.has(params.get('room')) ? params.get('room') : initial[0]);
client.connect().catch((err) => {
  for (const r of rooms.values()) sysLine(r, `cannot connect: ${err.message}`, 'warn');
});
