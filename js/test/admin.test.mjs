// Admin UI tests: Debian's Chromium, headless, driven by playwright-core,
// against the pages `herald serve --dev` serves at /admin/ (web/admin),
// with SDK clients (Node) and `herald sub` processes as the traffic the
// pages show. Screenshots of each page go to test-artifacts/admin-*.png.

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execSync, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { startServer, api, waitFor, heraldBin, newClient, stopClients, mintToken, sleep } from './helpers.mjs';

const artifacts = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'test-artifacts');
const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const PASSWORD = 'admin-ui-test-password';
const XSS_NAME = '<img src=x onerror=alert(1)>';
const XSS_DATA = '</script><script>alert(1)</script>';

function chromiumPath() {
  try {
    return execSync('command -v chromium', { shell: '/bin/sh', encoding: 'utf8' }).trim();
  } catch {
    return '';
  }
}

describe('admin UI in headless Chromium', () => {
  let srv;
  let browser;
  let context; // logged in
  let userDataDir;
  const problems = []; // page errors, dialogs, CSP violations
  const procs = [];

  before(async () => {
    const exe = chromiumPath();
    assert.ok(exe, 'chromium is not installed (apt-get install -y chromium)');
    srv = await startServer({ env: { HERALD_ADMIN_PASSWORD: PASSWORD, HERALD_DRAIN_TIMEOUT: '2s' } });
    userDataDir = mkdtempSync(path.join(tmpdir(), 'herald-admin-chromium-'));
    browser = await chromium.launch({ executablePath: exe, headless: true, args: ARGS, timeout: 60000 });
    context = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    mkdirSync(artifacts, { recursive: true });
  });

  after(async () => {
    stopClients();
    for (const p of procs) p.kill('SIGKILL');
    await context?.close().catch(() => {});
    await browser?.close().catch(() => {});
    await srv?.stop('SIGKILL');
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
  });

  /** A new page of ctx that records errors, dialogs and CSP violations. */
  async function newPage(ctx = context) {
    const page = await ctx.newPage();
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('dialog', async (d) => {
      problems.push(`dialog: ${d.type()} ${d.message()}`);
      await d.dismiss().catch(() => {});
    });
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    return page;
  }

  async function open(url) {
    const page = await newPage();
    await page.goto(`${srv.base}${url}`);
    return page;
  }

  const shot = (page, name) => page.screenshot({ path: path.join(artifacts, `admin-${name}.png`), fullPage: true });

  /** A Node SDK client of user, subscribed to channels. */
  async function member(user, channels, opts = {}) {
    const token = mintToken(srv.secret, { user, ...opts });
    const { client, events } = newClient(srv, { token });
    const subs = channels.map((ch) => client.newSubscription(ch));
    await client.connect();
    await Promise.all(subs.map((s) => s.subscribe()));
    return { client, events, subs };
  }

  test('login: a wrong password is refused, the right one opens the overview', { timeout: 60000 }, async () => {
    const page = await newPage();
    await page.goto(`${srv.base}/admin/channels`);
    await page.waitForURL(/\/admin\/login\?next=%2Fadmin%2Fchannels$/);
    await page.fill('#password', 'not-the-password');
    const [refused] = await Promise.all([page.waitForResponse((r) => r.url().endsWith('/admin/login') && r.request().method() === 'POST'), page.click('#login button')]);
    assert.equal(refused.status(), 401);
    await page.waitForSelector('#login-error:not([hidden])');
    assert.equal(await page.textContent('#login-error'), 'Wrong password.');
    await shot(page, 'login');
    // Nothing behind the login answers yet.
    const status = await page.evaluate(async () => (await fetch('/admin/api/info')).status);
    assert.equal(status, 401);

    await page.fill('#password', PASSWORD);
    await page.click('#login button');
    await page.waitForURL(`${srv.base}/admin/channels`); // back where it was sent from
    await page.waitForSelector('#node-label:not(:empty)');
    const cookies = await context.cookies();
    const c = cookies.find((x) => x.name === 'herald_admin');
    assert.ok(c && c.httpOnly && c.sameSite === 'Strict' && c.path === '/admin', JSON.stringify(cookies));
    await page.close();
  });

  test('overview: the nodes table, and plots that move while a load runs', { timeout: 90000 }, async () => {
    for (const user of ['load-1', 'load-2', 'load-3']) await member(user, ['load:1']);
    const page = await open('/admin/');
    await page.waitForSelector(`#nodes tbody tr[data-node]`);
    const nodeText = await page.textContent('#nodes tbody tr');
    assert.match(nodeText, /memory/);
    await waitFor(() => page.evaluate(() => !!window.heraldAdmin?.plotData('publications')?.data[0].length), { message: 'plots filled from the history' });
    const lastPubs = () =>
      page.evaluate(() => {
        const { labels, data } = window.heraldAdmin.plotData('publications');
        const i = labels.indexOf('cluster');
        return data[i].slice(-4).reduce((a, v) => a + (v || 0), 0);
      });
    const canvas = () => page.evaluate(() => document.querySelector('#plot-publications canvas').toDataURL());
    const before = await lastPubs();
    const canvasBefore = await canvas();
    assert.equal(before, 0, 'no publications before the load');

    // A load: publications through the API for a few seconds, in a loop.
    let stop = false;
    const load = (async () => {
      let n = 0;
      while (!stop && n < 4000) {
        await Promise.all([1, 2, 3, 4].map(() => api(srv, 'publish', { channel: 'load:1', data: { n: n++ } })));
        await sleep(5);
      }
    })();
    try {
      await waitFor(async () => (await lastPubs()) > 20, { timeout: 20000, message: 'publications/s plotted' });
      const lastDeliveries = () =>
        page.evaluate(() => {
          const { labels, data } = window.heraldAdmin.plotData('deliveries');
          return data[labels.indexOf('cluster')].slice(-4).reduce((a, v) => a + (v || 0), 0);
        });
      await waitFor(async () => (await lastDeliveries()) > 60, { timeout: 20000, message: 'deliveries/s plotted' });
      await waitFor(async () => (await canvas()) !== canvasBefore, { message: 'the canvas redrawn' });
      await waitFor(async () => Number((await page.textContent('#nodes tbody tr td:nth-child(12)')).replace(/,/g, '')) > 0, { message: 'publications/s in the nodes table' });
      await sleep(3000); // a few seconds of load in the screenshot
    } finally {
      stop = true;
      await load;
    }
    await shot(page, 'overview');
    await page.close();
  });

  test('channels: a search finds a channel; its page lists three users present', { timeout: 60000 }, async () => {
    for (const user of ['alice', 'bob', 'carol']) await member(user, ['chat:lobby']);
    await member('erin', ['news:1']);
    const page = await open('/admin/channels');
    await page.fill('#pattern', 'lobby');
    await page.click('#search button');
    await page.waitForSelector('#channels tbody tr[data-channel="chat:lobby"]');
    const rows = await page.$$eval('#channels tbody tr', (trs) => trs.map((tr) => [tr.cells[0].textContent, tr.cells[1].textContent]));
    assert.deepEqual(rows, [['chat:lobby', '3']]);
    await shot(page, 'channels');

    await page.click('a:text("chat:lobby")');
    await page.waitForURL(/\/admin\/channel\?name=chat%3Alobby$/);
    await waitFor(async () => (await page.$$('#presence tbody tr')).length === 3, { message: 'three members' });
    const users = await page.$$eval('#presence tbody td.user', (tds) => tds.map((td) => td.textContent));
    assert.deepEqual(users, ['alice', 'bob', 'carol']);
    assert.equal(await page.textContent('#presence-stats'), '3 clients, 3 users');
    await page.close();
  });

  test('channel: the publish form reaches a herald sub process, and the live tail', { timeout: 60000 }, async () => {
    await api(srv, 'publish', { channel: 'chat:pub', data: { text: 'earlier' } });
    const sub = spawn(heraldBin(), ['sub', '--url', srv.wsUrl, 'chat:pub'], { stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(sub);
    let out = '';
    sub.stdout.on('data', (d) => (out += d.toString()));
    const subscribers = async () => (await api(srv, 'channels', { pattern: 'chat:pub' })).channels['chat:pub']?.num_clients ?? 0;
    await waitFor(async () => (await subscribers()) === 1, { message: 'herald sub subscribed' });

    const page = await open('/admin/channel?name=chat%3Apub');
    await page.waitForSelector('#tail-state[data-state="connected"]');
    await waitFor(async () => (await subscribers()) === 2, { message: "the live tail's subscription" });
    await page.waitForSelector('#history tbody tr[data-offset="1"]');
    await page.fill('#publish-data', '{"text":"from the admin UI"}');
    await page.click('#publish button');
    await page.waitForSelector('#publish-result[data-kind="ok"]');
    assert.equal(await page.textContent('#publish-result'), 'Published at offset 2.');
    await waitFor(() => out.includes('from the admin UI'), { message: 'the publication at herald sub' });
    const line = JSON.parse(out.trim().split('\n').at(-1));
    assert.deepEqual([line.channel, line.offset, line.data], ['chat:pub', 2, { text: 'from the admin UI' }]);
    await page.waitForSelector('#tail li[data-offset="2"]');
    assert.equal(await page.textContent('#tail li[data-offset="2"] .data'), '{"text":"from the admin UI"}');
    await page.waitForSelector('#history tbody tr[data-offset="2"]');

    // The live tail is not a member, and may not publish itself.
    const refused = await page.evaluate(async () => {
      try {
        await window.heraldAdmin.tail.client.publish('chat:pub', { x: 1 });
        return 'published';
      } catch (err) {
        return String(err.code);
      }
    });
    assert.equal(refused, '103');
    const presence = await api(srv, 'presence', { channel: 'chat:pub' });
    assert.equal(Object.keys(presence.presence).length, 1, JSON.stringify(presence));
    await shot(page, 'channel');
    await page.close();
    sub.kill('SIGINT');
  });

  test('connections: search by user; the disconnect button disconnects a live connection', { timeout: 60000 }, async () => {
    const dave = await member('dave', ['chat:lobby', 'news:1']);
    const page = await open('/admin/connections');
    await page.fill('#q-user', 'dave');
    await page.click('#search button');
    const id = dave.client.clientId;
    await page.waitForSelector(`#connections tbody tr[data-client="${id}"]`);
    assert.equal((await page.$$('#connections tbody tr')).length, 1);
    await shot(page, 'connections');

    await page.click(`#connections tbody tr[data-client="${id}"] a`);
    await page.waitForSelector('#conn-state[data-state="connected"]');
    assert.deepEqual(await page.$$eval('#subscriptions li', (lis) => lis.map((li) => li.textContent).sort()), ['chat:lobby', 'news:1']);
    await shot(page, 'connection');
    await page.check('input[name="mode"][value="reconnect"]');
    await page.click('#disconnect button');
    await page.waitForSelector('#disconnect-result[data-kind="ok"]');
    await waitFor(() => dave.events.disconnect.length === 1, { message: 'the SDK client saw the disconnect' });
    assert.deepEqual([dave.events.disconnect[0].code, dave.events.disconnect[0].reconnect], [3007, true]);
    await page.waitForSelector('#conn-state[data-state="gone"]');

    // It reconnected with a new id; this time it stays away.
    await waitFor(() => dave.client.state === 'connected' && dave.client.clientId !== id, { message: 'reconnected' });
    await page.goto(`${srv.base}/admin/connection?client=${encodeURIComponent(dave.client.clientId)}`);
    await page.waitForSelector('#conn-state[data-state="connected"]');
    await page.check('input[name="mode"][value="stay"]');
    await page.click('#disconnect button');
    await waitFor(() => dave.events.disconnect.length === 2, { message: 'the second disconnect' });
    assert.deepEqual([dave.events.disconnect[1].code, dave.events.disconnect[1].reconnect], [3503, false]);
    await page.close();
  });

  test('user-controlled text renders as text: names, connection info, publication data', { timeout: 60000 }, async () => {
    await member(XSS_NAME, ['chat:xss'], { info: { note: XSS_DATA } });
    await api(srv, 'publish', { channel: 'chat:xss', data: { html: XSS_DATA } });
    const page = await open('/admin/channel?name=chat%3Axss');
    await page.waitForSelector('#presence tbody tr');
    assert.equal(await page.textContent('#presence tbody td.user'), XSS_NAME);
    assert.equal(await page.textContent('#presence tbody td.data'), JSON.stringify({ note: XSS_DATA }));
    await page.waitForSelector('#history tbody tr[data-offset="1"]');
    assert.equal(await page.textContent('#history tbody tr[data-offset="1"] td.data'), JSON.stringify({ html: XSS_DATA }));
    // Through the publish form as text, and into the live tail.
    await page.waitForSelector('#tail-state[data-state="connected"]');
    await page.check('input[name="kind"][value="text"]');
    await page.fill('#publish-data', XSS_DATA);
    await page.click('#publish button');
    await page.waitForSelector('#tail li[data-offset="2"]');
    assert.equal(await page.textContent('#tail li[data-offset="2"] .data'), JSON.stringify(XSS_DATA));
    await page.waitForSelector('#history tbody tr[data-offset="2"]');
    assert.equal(await page.textContent('#history tbody tr[data-offset="2"] td.data'), JSON.stringify(XSS_DATA));
    await shot(page, 'xss');
    assert.equal(await page.evaluate(() => document.querySelectorAll('img, script:not([src])').length), 0);

    // A channel name that is not one: shown as text, refused by the server.
    await page.goto(`${srv.base}/admin/channel?name=${encodeURIComponent(XSS_NAME)}`);
    await page.waitForSelector('#message:not([hidden])');
    assert.equal(await page.textContent('#channel-name'), XSS_NAME);
    assert.match(await page.textContent('#message'), /invalid channel name/);
    await page.goto(`${srv.base}/admin/channels?pattern=${encodeURIComponent(XSS_NAME)}`);
    await page.waitForSelector('#empty:not([hidden])');
    assert.equal(await page.textContent('#empty'), `No channel with subscribers matches “${XSS_NAME}”.`);
    await page.goto(`${srv.base}/admin/connections?user=${encodeURIComponent(XSS_NAME)}`);
    await page.waitForSelector('#connections tbody tr');
    assert.equal(await page.textContent('#connections tbody td.user'), XSS_NAME);
    assert.equal(await page.evaluate(() => document.querySelectorAll('img').length), 0);
    await page.close();
  });

  test('log out ends the session in the browser', { timeout: 30000 }, async () => {
    const page = await open('/admin/');
    await page.waitForSelector('#node-label:not(:empty)');
    await page.click('#logout');
    await page.waitForURL(/\/admin\/login/);
    await page.goto(`${srv.base}/admin/connections`);
    await page.waitForURL(/\/admin\/login\?next=/);
    await page.close();
  });

  test('no page error, dialog or Content-Security-Policy violation on any page', () => {
    // The 401 of the login test's fetch is logged by Chromium as a failed resource load.
    const real = problems.filter((p) => !/Failed to load resource: the server responded with a status of (401|400)/.test(p));
    assert.deepEqual(real, []);
  });
});
