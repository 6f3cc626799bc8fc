// Test helpers: a real Herald server per test file, tokens, the HTTP API,
// polling with deadlines. Every child process is killed when the test
// process exits.

import { spawn } from 'node:child_process';
import { createHmac, randomBytes } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
import WebSocket from 'ws';
import { Herald } from '../dist/index.js';

export { WebSocket };

const children = new Set();
process.on('exit', () => {
  for (const c of children) {
    try {
      c.kill('SIGKILL');
    } catch {
      // gone
    }
  }
});

export function heraldBin() {
  const bin = process.env.HERALD_BIN;
  if (!bin) throw new Error('HERALD_BIN is not set: run the tests with npm test');
  return bin;
}

// Ports handed out by freePort in this process.
const givenPorts = new Set();

function portIsFree(port) {
  return new Promise((resolve) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

function ephemeralLow() {
  try {
    const [low] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (low > 11000) return low;
  } catch {
    // not Linux
  }
  return 32768;
}

/**
 * Resolves to a loopback port nobody listens on, below the kernel's
 * ephemeral range: a port the kernel picked for a port-0 listener could be
 * given to an outgoing connection before the server binds it (or binds it
 * again, after a restart).
 */
export async function freePort() {
  const low = 10000;
  const top = ephemeralLow();
  for (let attempt = 0; attempt < 1000; attempt++) {
    const port = low + Math.floor(Math.random() * (top - low));
    if (givenPorts.has(port) || !(await portIsFree(port))) continue;
    givenPorts.add(port);
    return port;
  }
  throw new Error('no free loopback port');
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Polls fn until it returns a truthy value; throws after timeout ms. */
export async function waitFor(fn, { timeout = 10000, interval = 20, message = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${timeout} ms waiting for ${message}${last ? `: ${last.message}` : ''}`);
    }
    await sleep(interval);
  }
}

/**
 * Starts `herald serve --dev` on 127.0.0.1:port (a free one if not given),
 * with args added (e.g. --config FILE), and waits for /healthz.
 */
export async function startServer({ port, secret, apiKey, env = {}, args = [] } = {}) {
  port ??= await freePort();
  secret ??= randomBytes(12).toString('hex');
  apiKey ??= randomBytes(12).toString('hex');
  const proc = spawn(heraldBin(), ['serve', '--dev', '--listen', `127.0.0.1:${port}`, '--token-secret', secret, ...args], {
    env: { ...process.env, HERALD_API_KEY: apiKey, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(proc);
  let log = '';
  const onData = (d) => {
    log += d.toString();
    if (log.length > 20000) log = log.slice(-10000);
  };
  proc.stdout.on('data', onData);
  proc.stderr.on('data', onData);
  const exited = new Promise((resolve) => {
    proc.on('exit', (code, signal) => {
      children.delete(proc);
      resolve({ code, signal });
    });
  });
  const server = {
    port,
    secret,
    apiKey,
    proc,
    exited,
    base: `http://127.0.0.1:${port}`,
    wsUrl: `ws://127.0.0.1:${port}/ws`,
    log: () => log,
    /** Sends sig and waits for the process to exit. */
    async stop(sig = 'SIGTERM', timeout = 20000) {
      if (proc.exitCode !== null || proc.signalCode !== null) return exited;
      proc.kill(sig);
      const t = setTimeout(() => proc.kill('SIGKILL'), timeout);
      const r = await exited;
      clearTimeout(t);
      return r;
    },
  };
  let early = null;
  exited.then((r) => (early = r));
  await waitFor(
    async () => {
      if (early) throw new Error(`herald exited ${JSON.stringify(early)}: ${log}`);
      const res = await fetch(`${server.base}/healthz`);
      return res.ok;
    },
    { timeout: 15000, message: `herald on port ${port}` },
  );
  return server;
}

/** Calls the server HTTP API. */
export async function api(server, method, body) {
  const res = await fetch(`${server.base}/api/${method}`, {
    method: 'POST',
    headers: { Authorization: `apikey ${server.apiKey}`, 'Content-Type': 'application/json' },
    body: JSON.stringify(body),
  });
  const json = await res.json();
  if (!res.ok) throw new Error(`API ${method}: HTTP ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

const b64url = (b) => Buffer.from(b).toString('base64url');

/** Mints an HS256 connection token, as `herald token` does. */
export function mintToken(secret, { user, ttlSec, expSec, info, channels, client, channel } = {}) {
  const now = Math.floor(Date.now() / 1000);
  const claims = { sub: user ?? '', iat: now };
  if (client) claims.client = client; // subscription token
  if (channel) claims.channel = channel;
  if (expSec !== undefined) claims.exp = expSec;
  else if (ttlSec) claims.exp = now + ttlSec;
  if (info !== undefined) claims.info = info;
  if (channels) claims.channels = channels;
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/**
 * Publishes {n} for n from `from` to `to` on channel through the API and
 * cuts user's connection whenever n % every === at: alternately by the API
 * (disconnect 4000, which reconnects) and by terminating the newest of the
 * recorded sockets. With ready (a predicate), each cut waits until it
 * holds. Returns how many cuts it made.
 */
export async function publishWithKills(srv, channel, { from = 1, to, every, at, user, sockets, ready }) {
  let kills = 0;
  for (let n = from; n <= to; n++) {
    await api(srv, 'publish', { channel, data: { n } });
    if (n % every === at) {
      // Cut an established connection, not one still being made after
      // the previous cut (that would be no cut at all).
      if (ready) await waitFor(ready, { message: `connected again before cut ${kills + 1}` });
      if (kills % 2 === 0) await api(srv, 'disconnect', { user, code: 4000, reason: 'test kill' });
      else sockets.at(-1).terminate();
      kills++;
    }
  }
  return kills;
}

/**
 * A WebSocket constructor that records its sockets, so tests can count
 * connection attempts and cut one.
 */
export function recordingWebSocket() {
  const sockets = [];
  class Recorded extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      this.createdAt = Date.now();
      sockets.push(this);
    }
  }
  return { ctor: Recorded, sockets };
}

const liveClients = new Set();

/** Disconnects every client newClient made (for after hooks). */
export function stopClients() {
  for (const c of liveClients) c.disconnect();
  liveClients.clear();
}

/** A client of server with the ws package; events are recorded. */
export function newClient(server, opts = {}) {
  const c = new Herald(server.wsUrl, { websocket: WebSocket, reconnect: { baseMs: 50, maxMs: 1000 }, timeoutMs: 5000, ...opts });
  liveClients.add(c);
  const events = { disconnect: [], connected: [], state: [], error: [] };
  c.on('disconnect', (e) => events.disconnect.push({ ...e, at: Date.now() }));
  c.on('connected', (e) => events.connected.push({ ...e, at: Date.now() }));
  c.on('state', (e) => events.state.push(e.state));
  c.on('error', (e) => events.error.push(e));
  return { client: c, events };
}

/** Collects a subscription's publications and subscribed events. */
export function collect(sub) {
  const got = { pubs: [], subscribed: [], errors: [], unsubscribed: [] };
  sub.on('publication', (p) => got.pubs.push(p));
  sub.on('subscribed', (e) => got.subscribed.push(e));
  sub.on('error', (e) => got.errors.push(e));
  sub.on('unsubscribed', (e) => got.unsubscribed.push(e));
  return got;
}

/**
 * Publishes {n} on channel through the API and waits until it is in pubs
 * (the publications received so far). Publications of one channel arrive in
 * order, so once this marker is in, any duplicate or late delivery of an
 * earlier n is in pubs too: a check after it needs no sleep.
 */
export async function publishMarker(srv, channel, pubs, n) {
  await api(srv, 'publish', { channel, data: { n } });
  await waitFor(() => pubs.some((p) => p.data?.n === n), { message: `marker ${n} on ${channel} (have ${pubs.length})` });
}

/** Checks that pubs carry data.n = 1..count exactly once and in order. */
export function checkSequence(pubs, count) {
  const ns = pubs.map((p) => p.data.n);
  let gaps = 0;
  let dups = 0;
  const seen = new Set();
  for (const n of ns) {
    if (seen.has(n)) dups++;
    seen.add(n);
  }
  for (let i = 1; i <= count; i++) if (!seen.has(i)) gaps++;
  const ordered = ns.every((n, i) => i === 0 || n > ns[i - 1]);
  return { gaps, dups, ordered, received: ns.length };
}

/**
 * Starts redis-server without persistence on a free loopback port, or
 * returns null when there is none (the caller skips; with CI=true it
 * throws). kill() stops it with SIGKILL; start() starts it again on the
 * same port.
 */
export async function startRedis() {
  const bin = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => existsSync(p));
  if (!bin) {
    if (process.env.CI === 'true') throw new Error('redis-server not found (required when CI=true)');
    return null;
  }
  const port = await freePort();
  const r = { port, url: `redis://127.0.0.1:${port}`, proc: null };
  r.start = async () => {
    const proc = spawn(bin, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
    children.add(proc);
    proc.on('exit', () => children.delete(proc));
    r.proc = proc;
    await waitFor(
      () =>
        new Promise((resolve) => {
          const s = net.connect(port, '127.0.0.1', () => {
            s.end();
            resolve(true);
          });
          s.on('error', () => resolve(false));
        }),
      { timeout: 10000, message: `redis-server on port ${port}` },
    );
  };
  r.kill = async () => {
    const p = r.proc;
    if (!p || p.exitCode !== null || p.signalCode !== null) return;
    const gone = new Promise((resolve) => p.on('exit', resolve));
    p.kill('SIGKILL');
    await gone;
  };
  await r.start();
  return r;
}
