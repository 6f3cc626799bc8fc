// Browser tests: Debian's Chromium, headless, driven by playwright-core,
// against the demo page the Herald binary serves at / (web/static, with
// the SDK copy built by `npm run build:web`).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import http from 'node:http';
import { chromium } from 'playwright-core';
import { startServer, api, waitFor } from './helpers.mjs';

const artifacts = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test-artifacts');

function chromiumPath() {
  try {
    return execSync('command -v chromium', { shell: '/bin/sh', encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];

describe('browser: demo page in headless Chromium', () => {
  let srv;
  let context;
  let userDataDir;
  const errors = [];

  before(async () => {
    const exe = chromiumPath();
    assert.ok(exe, 'chromium is not installed (apt-get install -y chromium)');
    srv = await startServer({ env: { HERALD_DRAIN_TIMEOUT: '3s' } });
    userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: exe, headless: true, args: ARGS, timeout: 60000 });
    mkdirSync(artifacts, { recursive: true });
  });

  after(async () => {
    await context?.close().catch(() => {});
    await srv?.stop('SIGKILL');
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  async function openDemo(query) {
    const page = await context.newPage();
    page.on('pageerror', (err) => errors.push(`${query}: ${err.message}`));
    await page.goto(`${srv.base}/?${query}`);
    await page.waitForSelector('#conn[data-state="connected"]', { timeout: 15000 });
    return page;
  }

  const texts = (page, room) => page.$$eval(`ol.messages[data-room="${room}"] li.msg .text`, (els) => els.map((e) => e.textContent));
  const sysLines = (page, room) => page.$$eval(`ol.messages[data-room="${room}"] li.sys`, (els) => els.map((e) => e.textContent));

  test('the demo page loads the SDK and connects', { timeout: 30000 }, async () => {
    const page = await openDemo('name=solo&rooms=lobby');
    assert.equal(await page.textContent('#state'), 'connected');
    assert.equal(await page.textContent('#room-title'), '#lobby');
    assert.ok(await page.evaluate(() => window.heraldDemo.client.clientId.length > 0));
    await page.close();
    assert.deepEqual(errors, []);
  });

  test('a page subscribes and receives a publication sent through the HTTP API', { timeout: 30000 }, async () => {
    const page = await context.newPage();
    await page.goto(`${srv.base}/herald-client.js`); // any same-origin document
    await page.evaluate(async () => {
      const { Herald } = await import('/herald-client.js');
      const c = new Herald(`ws://${location.host}/ws`);
      window.got = [];
      const sub = c.newSubscription('browser:minimal');
      sub.on('publication', (p) => window.got.push(p.data));
      c.connect();
      await sub.subscribe();
    });
    await api(srv, 'publish', { channel: 'browser:minimal', data: { hello: 'browser' } });
    await waitFor(() => page.evaluate(() => window.got.length === 1), { message: 'publication in the page' });
    assert.deepEqual(await page.evaluate(() => window.got), [{ hello: 'browser' }]);
    await page.close();
  });

  test("two pages see each other's messages and presence", { timeout: 40000 }, async () => {
    await api(srv, 'publish', { channel: 'chat:duo', data: { name: 'api', text: 'earlier message' } });
    const a = await openDemo('name=alice&rooms=duo');
    const b = await openDemo('name=bob&rooms=duo');
    const idA = await a.evaluate(() => window.heraldDemo.client.clientId);
    const idB = await b.evaluate(() => window.heraldDemo.client.clientId);
    // History on join.
    await waitFor(async () => (await texts(b, 'duo')).includes('earlier message'), { message: 'history on join' });
    // Presence: each sees both.
    await waitFor(async () => (await a.$(`#presence li[data-client="${idB}"]`)) && (await b.$(`#presence li[data-client="${idA}"]`)), { message: 'presence of the other page' });
    assert.equal(await a.textContent('#presence-count'), '2');

    await a.fill('#text', 'hello from alice');
    await a.press('#text', 'Enter');
    await waitFor(async () => (await texts(b, 'duo')).includes('hello from alice'), { message: "alice's message at bob" });
    await b.fill('#text', 'hi alice, bob here');
    await b.click('#send-form button');
    await waitFor(async () => (await texts(a, 'duo')).includes('hi alice, bob here'), { message: "bob's message at alice" });
    assert.deepEqual(await texts(a, 'duo'), ['earlier message', 'hello from alice', 'hi alice, bob here']);
    assert.deepEqual(await texts(b, 'duo'), ['earlier message', 'hello from alice', 'hi alice, bob here']);
    // Bob learned alice's name from her message.
    await waitFor(async () => (await b.textContent(`#presence li[data-client="${idA}"]`)) === 'alice');
    await a.screenshot({ path: path.join(artifacts, 'demo.png'), fullPage: true });

    await b.close();
    await waitFor(async () => !(await a.$(`#presence li[data-client="${idB}"]`)), { message: 'leave of bob' });
    await a.close();
  });

  test('network drop (offline): the page recovers the messages it missed', { timeout: 40000 }, async () => {
    const page = await openDemo('name=carol&rooms=net');
    await api(srv, 'publish', { channel: 'chat:net', data: { name: 'api', text: 'net 1' } });
    await waitFor(async () => (await texts(page, 'net')).includes('net 1'));
    await context.setOffline(true);
    await page.waitForSelector('#conn[data-state="connecting"]', { timeout: 10000 });
    for (let i = 2; i <= 4; i++) await api(srv, 'publish', { channel: 'chat:net', data: { name: 'api', text: `net ${i}` } });
    await context.setOffline(false);
    await waitFor(async () => (await texts(page, 'net')).length === 4, { timeout: 15000, message: 'missed messages' });
    assert.deepEqual(await texts(page, 'net'), ['net 1', 'net 2', 'net 3', 'net 4']);
    const sys = await sysLines(page, 'net');
    assert.ok(sys.some((l) => l === 'reconnected, recovered 3 missed messages'), sys.join(' | '));
    await page.close();
  });

  test('server restarted mid-session: the page reconnects and recovers, no duplicates', { timeout: 60000 }, async () => {
    const page = await openDemo('name=dave&rooms=restart');
    for (let i = 1; i <= 3; i++) await api(srv, 'publish', { channel: 'chat:restart', data: { name: 'api', text: `before ${i}` } });
    await waitFor(async () => (await texts(page, 'restart')).length === 3, { message: 'messages before the restart' });

    const { port, secret, apiKey } = srv;
    await srv.stop('SIGTERM'); // drain: 3000 with reconnect_after
    await page.waitForSelector('#conn[data-state="connecting"]', { timeout: 10000 });
    srv = await startServer({ port, secret, apiKey, env: { HERALD_DRAIN_TIMEOUT: '3s' } });
    for (let i = 1; i <= 3; i++) await api(srv, 'publish', { channel: 'chat:restart', data: { name: 'api', text: `after ${i}` } });
    // Usually the page still waits out its reconnect_after hint here.
    const wasDown = (await page.getAttribute('#conn', 'data-state')) !== 'connected';
    await page.waitForSelector('#conn[data-state="connected"]', { timeout: 20000 });
    await waitFor(async () => (await texts(page, 'restart')).length >= 6, { timeout: 20000, message: 'messages published while down' });
    await api(srv, 'publish', { channel: 'chat:restart', data: { name: 'api', text: 'live again' } });
    await waitFor(async () => (await texts(page, 'restart')).includes('live again'));
    assert.deepEqual(await texts(page, 'restart'), ['before 1', 'before 2', 'before 3', 'after 1', 'after 2', 'after 3', 'live again']);
    const sys = await sysLines(page, 'restart');
    assert.ok(sys.some((l) => /connection lost \(3000 shutdown\)/.test(l)), sys.join(' | '));
    const want = wasDown ? /^reconnected; the server restarted .*recovered 3 messages/ : /^reconnected; the server restarted .*recovered \d+ messages?/;
    assert.ok(sys.some((l) => want.test(l)), sys.join(' | '));
    await page.screenshot({ path: path.join(artifacts, 'demo-recovered.png'), fullPage: true });
    await page.close();
    assert.deepEqual(errors, []);
  });
});

// A reverse proxy in front of the server that refuses every WebSocket
// upgrade, as some corporate proxies do, and passes other requests on
// without buffering (streams included).
function startNoWebSocketProxy(upstream) {
  const target = new URL(upstream);
  const server = http.createServer((req, res) => {
    const up = http.request(
      { host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers, agent: false },
      (upRes) => {
        const headers = { ...upRes.headers };
        delete headers['transfer-encoding'];
        delete headers.connection;
        res.writeHead(upRes.statusCode, headers);
        res.flushHeaders();
        upRes.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    res.on('close', () => up.destroy());
    req.pipe(up);
  });
  server.on('upgrade', (_req, socket) => {
    socket.end('HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n');
  });
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve({ server, base: `http://127.0.0.1:${server.address().port}` }));
  });
}

describe('browser: HTTP fallbacks in headless Chromium', () => {
  let srv;
  let proxy;
  let context;
  let userDataDir;
  const errors = [];

  before(async () => {
    const exe = chromiumPath();
    assert.ok(exe, 'chromium is not installed (apt-get install -y chromium)');
    srv = await startServer({});
    proxy = await startNoWebSocketProxy(srv.base);
    userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath: exe, headless: true, args: ARGS, timeout: 60000 });
    mkdirSync(artifacts, { recursive: true });
  });

  after(async () => {
    await context?.close().catch(() => {});
    proxy?.server.closeAllConnections();
    await new Promise((r) => (proxy ? proxy.server.close(r) : r()));
    await srv?.stop('SIGKILL');
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  async function openDemo(base, query) {
    const page = await context.newPage();
    page.on('pageerror', (err) => errors.push(`${query}: ${err.message}`));
    await page.goto(`${base}/?${query}`);
    await page.waitForSelector('#conn[data-state="connected"]', { timeout: 30000 });
    return page;
  }

  const texts = (page, room) => page.$$eval(`ol.messages[data-room="${room}"] li.msg .text`, (els) => els.map((e) => e.textContent));

  test('behind a proxy that refuses WebSocket, two demo pages chat over HTTP streaming and recover an offline period', { timeout: 90000 }, async () => {
    const a = await openDemo(proxy.base, 'name=erin&rooms=fallback');
    const b = await openDemo(proxy.base, 'name=frank&rooms=fallback');
    assert.equal(await a.evaluate(() => window.heraldDemo.client.transport), 'http-stream');
    assert.equal(await b.evaluate(() => window.heraldDemo.client.transport), 'http-stream');
    await a.fill('#text', 'hello over http streaming');
    await a.press('#text', 'Enter');
    await waitFor(async () => (await texts(b, 'fallback')).includes('hello over http streaming'), { message: "erin's message at frank" });
    await b.fill('#text', 'and back');
    await b.press('#text', 'Enter');
    await waitFor(async () => (await texts(a, 'fallback')).includes('and back'), { message: "frank's message at erin" });
    await a.screenshot({ path: path.join(artifacts, 'fallback-http-stream.png'), fullPage: true });

    // Offline: every message published meanwhile is recovered.
    await context.setOffline(true);
    await a.waitForSelector('#conn[data-state="connecting"]', { timeout: 20000 });
    for (let i = 1; i <= 3; i++) await api(srv, 'publish', { channel: 'chat:fallback', data: { name: 'api', text: `offline ${i}` } });
    await context.setOffline(false);
    const want = ['hello over http streaming', 'and back', 'offline 1', 'offline 2', 'offline 3'];
    await waitFor(async () => (await texts(a, 'fallback')).length === 5 && (await texts(b, 'fallback')).length === 5, { timeout: 40000, message: 'messages of the offline period' });
    assert.deepEqual(await texts(a, 'fallback'), want);
    assert.deepEqual(await texts(b, 'fallback'), want);
    assert.equal(await a.evaluate(() => window.heraldDemo.client.transport), 'http-stream');
    await a.screenshot({ path: path.join(artifacts, 'fallback-http-stream-recovered.png'), fullPage: true });
    await a.close();
    await b.close();
    assert.deepEqual(errors, []);
  });

  test('the same page without the proxy uses WebSocket', { timeout: 30000 }, async () => {
    const page = await openDemo(srv.base, 'name=gina&rooms=fallback');
    assert.equal(await page.evaluate(() => window.heraldDemo.client.transport), 'websocket');
    await page.close();
    assert.deepEqual(errors, []);
  });

  test('acknowledgements: publications lost on a live connection come again, each handed to the page once, in order (auto-ack)', { timeout: 60000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'herald-ack-'));
    const file = path.join(dir, 'herald.yaml');
    writeFileSync(file, 'namespaces:\n  - name: acked\n    history_size: 1000\n    history_ttl: 1h\n    allow_subscribe: true\n    allow_anonymous_subscribe: true\n    ack: true\n    ack_timeout: 100ms\n');
    const asrv = await startServer({ args: ['--config', file] });
    try {
      const page = await context.newPage();
      page.on('pageerror', (err) => errors.push(`ack: ${err.message}`));
      await page.goto(`${asrv.base}/herald-client.js`);
      await page.evaluate(async () => {
        const { Herald } = await import('/herald-client.js');
        // A WebSocket that silently drops the server's publication frames
        // while window.drop is set.
        window.drop = false;
        class Lossy extends WebSocket {
          set onmessage(f) {
            super.onmessage = f && ((ev) => {
              if (window.drop && typeof ev.data === 'string' && ev.data.startsWith('{"pub":')) return;
              f(ev);
            });
          }
          get onmessage() {
            return super.onmessage;
          }
        }
        const c = new Herald(`ws://${location.host}/ws`, { websocket: Lossy });
        window.got = [];
        window.subscribed = [];
        const sub = c.newSubscription('acked:browser');
        sub.on('publication', (p) => window.got.push({ n: p.data.n, redelivered: !!p.redelivered }));
        sub.on('subscribed', (e) => window.subscribed.push(e));
        c.connect();
        await sub.subscribe();
        window.sub = sub;
      });
      assert.equal(await page.evaluate(() => window.subscribed[0].ack), true);
      for (let n = 1; n <= 5; n++) await api(asrv, 'publish', { channel: 'acked:browser', data: { n } });
      await waitFor(() => page.evaluate(() => window.sub.acked() === 5), { message: '5 acknowledged' });
      await page.evaluate(() => (window.drop = true));
      for (let n = 6; n <= 15; n++) await api(asrv, 'publish', { channel: 'acked:browser', data: { n } });
      const redelivered = async () => Number((await (await fetch(`${asrv.base}/metrics`)).text()).match(/^herald_redelivered_total (\S+)$/m)?.[1] ?? 0);
      const r0 = await redelivered();
      await waitFor(async () => (await redelivered()) >= r0 + 10, { message: 'redeliveries while frames are lost' });
      assert.equal(await page.evaluate(() => window.got.length), 5, 'nothing handed over while frames were lost');
      await page.evaluate(() => (window.drop = false));
      await waitFor(() => page.evaluate(() => window.got.length >= 15), { message: '15 publications in the page' });
      await api(asrv, 'publish', { channel: 'acked:browser', data: { n: 16 } });
      await waitFor(() => page.evaluate(() => window.got.length >= 16), { message: '16 publications in the page' });
      const got = await page.evaluate(() => window.got);
      assert.deepEqual(got.map((p) => p.n), Array.from({ length: 16 }, (_, i) => i + 1), 'every publication once, in order');
      assert.ok(got.some((p) => p.redelivered), 'some came by redelivery');
      assert.equal(await page.evaluate(() => window.subscribed.length), 1, 'healed on the live connection');
      await waitFor(() => page.evaluate(() => window.sub.acked() === 16), { message: 'all acknowledged' });
      await page.close();
      assert.deepEqual(errors, []);
    } finally {
      await asrv.stop('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('a bare EventSource page recovers what was published while the server restarted its stream', { timeout: 60000 }, async () => {
    const page = await context.newPage();
    page.on('pageerror', (err) => errors.push(`sse: ${err.message}`));
    await page.goto(`${srv.base}/herald-client.js`); // any same-origin document
    await page.evaluate(() => {
      window.got = [];
      window.ids = [];
      window.clients = [];
      const es = new EventSource('/sse?channel=sse:a&channel=sse:b');
      es.onmessage = (e) => {
        const m = JSON.parse(e.data);
        if (m.connect) window.clients.push(m.connect.client);
        if (m.pub) {
          window.got.push(`${m.pub.channel}/${m.pub.data.n}`);
          window.ids.push(e.lastEventId);
        }
      };
    });
    await waitFor(() => page.evaluate(() => window.clients.length === 1), { message: 'the SSE connect reply' });
    for (let n = 1; n <= 2; n++) {
      await api(srv, 'publish', { channel: 'sse:a', data: { n } });
      await api(srv, 'publish', { channel: 'sse:b', data: { n } });
    }
    await waitFor(() => page.evaluate(() => window.got.length === 4), { message: 'live publications' });
    // The server ends the stream; the browser reconnects by itself (after
    // its retry delay) with Last-Event-ID.
    const [client] = await page.evaluate(() => window.clients);
    await api(srv, 'disconnect', { client, code: 3007, reason: 'test restart' });
    for (let n = 3; n <= 5; n++) await api(srv, 'publish', { channel: 'sse:a', data: { n } });
    await api(srv, 'publish', { channel: 'sse:b', data: { n: 3 } });
    await waitFor(() => page.evaluate(() => window.clients.length === 2), { timeout: 20000, message: 'the EventSource reconnected' });
    await api(srv, 'publish', { channel: 'sse:b', data: { n: 4 } });
    await waitFor(() => page.evaluate(() => window.got.length === 9), { timeout: 20000, message: 'missed and live publications' });
    const got = await page.evaluate(() => window.got);
    const of = (ch) => got.filter((g) => g.startsWith(ch + '/'));
    assert.deepEqual(of('sse:a'), ['sse:a/1', 'sse:a/2', 'sse:a/3', 'sse:a/4', 'sse:a/5']);
    assert.deepEqual(of('sse:b'), ['sse:b/1', 'sse:b/2', 'sse:b/3', 'sse:b/4']);
    await page.evaluate((got) => {
      document.body.innerHTML = `<pre style="font: 14px monospace">EventSource /sse?channel=sse:a&amp;channel=sse:b\n\n${got.map((g, i) => `${g}  id ${window.ids[i]}`).join('\n')}</pre>`;
    }, got);
    await page.screenshot({ path: path.join(artifacts, 'sse-recovered.png'), fullPage: true });
    await page.close();
    assert.deepEqual(errors, []);
  });
});

describe('browser: permessage-deflate with Chromium', () => {
  let srv;
  let browser;

  before(async () => {
    const exe = chromiumPath();
    assert.ok(exe, 'chromium is not installed (apt-get install -y chromium)');
    // --dev with compression on: the dev namespace compresses its
    // publications for the connections that negotiated permessage-deflate.
    srv = await startServer({ env: { HERALD_COMPRESSION: 'true' } });
    browser = await chromium.launch({ executablePath: exe, headless: true, args: ARGS, timeout: 60000 });
  });

  after(async () => {
    await browser?.close().catch(() => {});
    await srv?.stop('SIGKILL');
  });

  const compressedFrames = async () => {
    const text = await (await fetch(`${srv.base}/metrics`)).text();
    const m = /^herald_compressed_frames_total (\S+)$/m.exec(text);
    assert.ok(m, 'herald_compressed_frames_total in /metrics');
    return Number(m[1]);
  };

  test('Chromium negotiates it; compressed commands are inflated and publications arrive compressed', { timeout: 60000 }, async () => {
    const page = await browser.newPage();
    await page.goto(`${srv.base}/herald-client.js`); // any same-origin document
    const before = await compressedFrames();
    const big = 'the same words again and again, '.repeat(100);
    // A raw WebSocket: its extensions attribute tells what was negotiated.
    const ext = await page.evaluate(async (big) => {
      const ws = new WebSocket(`ws://${location.host}/ws`, 'herald.json');
      window.msgs = [];
      ws.onmessage = (e) => window.msgs.push(JSON.parse(e.data));
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      // Chromium compresses what it sends once the extension is on: a
      // publish command of several KiB goes in a few hundred bytes.
      ws.send(JSON.stringify({ id: 1, connect: {} }));
      ws.send(JSON.stringify({ id: 2, subscribe: { channel: 'deflate:raw' } }));
      ws.send(JSON.stringify({ id: 3, publish: { channel: 'deflate:raw', data: { from: 'page', big } } }));
      window.ws = ws;
      // The subscription is in place once its reply is in: only then may
      // the API publish (the channel has history, but this subscribe asks
      // for no recovery).
      const deadline = Date.now() + 20000;
      while (!window.msgs.some((m) => m.id === 3) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      return ws.extensions;
    }, big);
    assert.match(ext, /^permessage-deflate/);
    assert.match(ext, /server_no_context_takeover/);
    assert.match(ext, /client_no_context_takeover/);
    await api(srv, 'publish', { channel: 'deflate:raw', data: { from: 'api', big } });
    await waitFor(() => page.evaluate(() => window.msgs.filter((m) => m.pub).length === 2), { timeout: 20000, message: 'both publications in the page' });
    const pubs = await page.evaluate(() => window.msgs.filter((m) => m.pub).map((m) => m.pub.data));
    assert.deepEqual(pubs, [{ from: 'page', big }, { from: 'api', big }]);
    const replies = await page.evaluate(() => window.msgs.filter((m) => m.id).map((m) => [m.id, !!m.error]));
    assert.deepEqual(replies, [[1, false], [2, false], [3, false]]);
    assert.ok((await compressedFrames()) >= before + 2, 'the publications went compressed');
    await page.close();
  });

  test('the SDK works over a compressed connection', { timeout: 30000 }, async () => {
    const page = await browser.newPage();
    await page.goto(`${srv.base}/herald-client.js`);
    await page.evaluate(async () => {
      const { Herald } = await import('/herald-client.js');
      const c = new Herald(`ws://${location.host}/ws`);
      window.got = [];
      const sub = c.newSubscription('deflate:sdk');
      sub.on('publication', (p) => window.got.push(p.data));
      c.connect();
      await sub.subscribe();
      window.c = c;
    });
    const data = { rows: Array.from({ length: 50 }, (_, i) => ({ id: i, name: `row ${i}`, ok: i % 2 === 0 })) };
    await api(srv, 'publish', { channel: 'deflate:sdk', data });
    await waitFor(() => page.evaluate(() => window.got.length === 1), { message: 'publication in the page' });
    assert.deepEqual(await page.evaluate(() => window.got[0]), data);
    await page.close();
  });

  test('the SDK applies deltas in Chromium (over a compressed connection): the page gets every document whole', { timeout: 30000 }, async () => {
    const page = await browser.newPage();
    await page.goto(`${srv.base}/herald-client.js`);
    const granted = await page.evaluate(async () => {
      const { Herald } = await import('/herald-client.js');
      const c = new Herald(`ws://${location.host}/ws`);
      window.got = [];
      window.errors = [];
      const sub = c.newSubscription('deflate:delta', { delta: true });
      let delta = null;
      sub.on('subscribed', (e) => (delta = e.delta));
      sub.on('publication', (p) => window.got.push(p.data));
      sub.on('error', (e) => window.errors.push(String(e.error)));
      c.connect();
      await sub.subscribe();
      window.c = c;
      return delta;
    });
    assert.equal(granted, true, 'the dev namespace grants deltas');
    const deltaFrames = async () => Number(/^herald_delta_frames_total (\S+)$/m.exec(await (await fetch(`${srv.base}/metrics`)).text())?.[1]);
    const before = await deltaFrames();
    const doc = { title: 'board "1" – état', cells: Array.from({ length: 40 }, (_, i) => ({ id: i, v: i * 3, label: `cell ${i}` })) };
    const docs = [];
    for (let i = 0; i < 30; i++) {
      doc.cells[(i * 7) % 40].v += i + 1;
      docs.push(structuredClone(doc));
      await api(srv, 'publish', { channel: 'deflate:delta', data: doc });
    }
    await waitFor(() => page.evaluate((n) => window.got.length === n, docs.length), { message: 'documents in the page' });
    assert.deepEqual(await page.evaluate(() => window.got), docs);
    assert.deepEqual(await page.evaluate(() => window.errors), []);
    assert.equal((await deltaFrames()) - before, docs.length - 1, 'all but the first came as deltas');
    await page.close();
  });
});
