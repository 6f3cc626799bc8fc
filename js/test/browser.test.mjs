// Browser tests: Debian's Chromium, headless, driven by playwright-core,
// against the demo page the Herald binary serves at / (web/static, with
// the SDK copy built by `npm run build:web`).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
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
