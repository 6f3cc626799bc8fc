// End-to-end tests in Node against the real server (`herald serve --dev`
// built by npm test): publish/subscribe in both encodings, recovery over
// killed connections, terminal codes, token refresh, ping/pong and dead
// connections, drain and restart, and what the server API does to
// connections (subscribe, unsubscribe, send).

import { test, describe, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { TerminalError } from '../dist/index.js';
import { pubDataText } from '../dist/fossil.js';
import { applyDelta as refApplyDelta } from 'fossil-delta';
import WebSocket from 'ws';
import { startServer, startRedis, api, mintToken, newClient, collect, waitFor, sleep, recordingWebSocket, checkSequence, publishMarker, stopClients, publishWithKills } from './helpers.mjs';

describe('e2e: one dev server', () => {
  let srv;
  const clients = [];
  const track = (x) => (clients.push(x.client), x);
  before(async () => {
    // The server notifies 38 s before expiry (a refresh push) and closes
    // 1 s after it.
    srv = await startServer({ env: { HERALD_TOKEN_REFRESH_NOTICE: '38s', HERALD_TOKEN_EXPIRY_GRACE: '1s' } });
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    stopClients();
    await srv?.stop('SIGKILL');
  });

  test('filters: a filtered subscriber gets the matching publications, live and recovered, with no resubscribe; a bad filter gets 118', { timeout: 30000 }, async () => {
    const ch = 'filtered:1';
    const filter = 'kind == "a" and n >= 3 or kind in ("z")';
    const kind = (i) => (i === 10 ? 'z' : i % 3 === 0 ? 'a' : 'b');
    const want = [3, 6, 9, 10, 12];
    const { client: a } = track(newClient(srv));
    await a.connect();
    const sf = a.newSubscription(ch, { filter });
    const gf = collect(sf);
    await sf.subscribe();
    assert.equal(gf.subscribed[0].filtered, true);
    for (let i = 1; i <= 12; i++) {
      await api(srv, 'publish', { channel: ch, data: { n: i }, tags: { kind: kind(i), n: String(i) } });
    }
    await waitFor(() => gf.pubs.length >= want.length, { message: 'matching publications' });
    assert.deepEqual(gf.pubs.map((p) => p.data.n), want);
    assert.equal(gf.subscribed.length, 1, 'skipped offsets taken for a gap: the subscription resubscribed');

    // Recovery from offset 2 applies the filter.
    const { client: b } = track(newClient(srv));
    await b.connect();
    const sr = b.newSubscription(ch, { filter, since: { epoch: sf.position().epoch, offset: 2 } });
    const gr = collect(sr);
    await sr.subscribe();
    assert.equal(gr.subscribed[0].recovered, true);
    assert.deepEqual(gr.pubs.map((p) => p.data.n), want);

    const h = await b.history(ch, { limit: -1, filter });
    assert.deepEqual(h.publications.map((p) => p.data.n), want);

    const bad = b.newSubscription('filtered:2', { filter: 'kind ==' });
    await assert.rejects(bad.subscribe(), (e) => e.code === 118);
    a.disconnect();
    b.disconnect();
  });

  for (const codec of ['json', 'msgpack']) {
    test(`publish/subscribe, presence, history (${codec})`, { timeout: 30000 }, async () => {
      const ch = `pubsub:${codec}`;
      const { client: a } = track(newClient(srv, { codec, token: mintToken(srv.secret, { user: 'alice', info: { name: 'Alice' } }) }));
      const { client: b } = track(newClient(srv, { codec: 'json', token: mintToken(srv.secret, { user: 'bob' }) }));
      const sa = a.newSubscription(ch);
      const sb = b.newSubscription(ch);
      const ga = collect(sa);
      const gb = collect(sb);
      const joins = [];
      sa.on('join', (e) => joins.push(e.info.user));
      await Promise.all([a.connect(), b.connect()]);
      await sa.subscribe();
      await sb.subscribe();
      assert.equal(ga.subscribed[0].recoverable, true);
      await waitFor(() => joins.includes('bob'), { message: 'join of bob' });

      const pos = await a.publish(ch, { text: 'from alice' });
      assert.equal(pos.offset, 1);
      await api(srv, 'publish', { channel: ch, data: { text: 'from api' } });
      if (codec === 'msgpack') await a.publish(ch, new Uint8Array([0, 1, 255]));
      const want = codec === 'msgpack' ? 3 : 2;
      await waitFor(() => ga.pubs.length === want && gb.pubs.length === want, { message: 'publications' });
      assert.deepEqual(ga.pubs[0].data, { text: 'from alice' });
      assert.equal(ga.pubs[0].info.user, 'alice');
      assert.deepEqual(ga.pubs[0].info.connInfo, { name: 'Alice' });
      assert.deepEqual(gb.pubs[1].data, { text: 'from api' });
      assert.deepEqual(ga.pubs.map((p) => p.offset), want === 3 ? [1, 2, 3] : [1, 2]);
      if (codec === 'msgpack') {
        // Binary from a MessagePack publisher: bytes for both encodings.
        assert.deepEqual(ga.pubs[2].data, new Uint8Array([0, 1, 255]));
        assert.deepEqual(gb.pubs[2].data, new Uint8Array([0, 1, 255]));
      }

      const members = await a.presence(ch);
      assert.deepEqual(Object.values(members).map((m) => m.user).sort(), ['alice', 'bob']);
      assert.deepEqual(await sa.presenceStats(), { numClients: 2, numUsers: 2 });
      const h = await b.history(ch, { limit: -1 });
      assert.deepEqual(h.publications.map((p) => p.offset), ga.pubs.map((p) => p.offset));
      assert.equal(h.epoch, sa.position().epoch);
      const last = await b.history(ch, { limit: 1, reverse: true });
      assert.equal(last.publications[0].offset, want);
      await assert.rejects(a.rpc('nope'), (e) => e.code === 104);
      await a.ping();

      sb.unsubscribe();
      await waitFor(async () => (await a.presenceStats(ch)).numClients === 1, { message: 'leave' });
      a.disconnect();
      b.disconnect();
    });
  }

  test('deltas: both codecs decode the deltas the server encodes for a random sequence of 1 KiB documents; the application gets every document whole, across a cut connection', { timeout: 60000 }, async () => {
    const ch = 'deltadoc:1';
    const subs = [];
    for (const codec of ['json', 'msgpack', 'json']) {
      // The first one's connection is cut halfway (user dvictim).
      const opts = subs.length === 0 ? { codec, token: mintToken(srv.secret, { user: 'dvictim', ttlSec: 3600 }) } : { codec };
      const { client } = track(newClient(srv, opts));
      await client.connect();
      // The third subscriber does not ask: it gets every publication full.
      const sub = client.newSubscription(ch, { delta: subs.length < 2 });
      const got = collect(sub);
      await sub.subscribe();
      assert.equal(got.subscribed[0].delta, subs.length < 2, `${codec}: subscribed event delta`);
      subs.push({ codec, got });
    }
    // A hand-driven connection checks the server's deltas with an
    // independent Fossil decoder (npm fossil-delta).
    const raw = new WebSocket(srv.wsUrl, ['herald.json']);
    const frames = [];
    raw.on('message', (b) => frames.push(b.toString()));
    await new Promise((resolve, reject) => raw.once('open', resolve).once('error', reject));
    raw.send(JSON.stringify({ id: 1, connect: {} }));
    raw.send(JSON.stringify({ id: 2, subscribe: { channel: ch, delta: 'fossil' } }));
    await waitFor(() => frames.some((f) => JSON.parse(f).id === 2), { message: 'raw subscribe reply' });
    const before = await deltaMetrics(srv);
    const docs = randomDocs(80);
    for (const d of docs.slice(0, 40)) await api(srv, 'publish', { channel: ch, data: d });
    // Cut the first subscriber's connection; publish while it is away and
    // after it is back: it recovers the missed documents (full), then
    // gets deltas again.
    await waitFor(() => subs[0].got.pubs.length === 40, { message: 'the first 40 before the cut' });
    await api(srv, 'disconnect', { user: 'dvictim', code: 4000, reason: 'test cut' });
    for (const d of docs.slice(40, 50)) await api(srv, 'publish', { channel: ch, data: d });
    await waitFor(() => subs[0].got.subscribed.length === 2, { message: 'the cut subscriber back' });
    assert.equal(subs[0].got.subscribed[1].recovered, true);
    assert.equal(subs[0].got.subscribed[1].delta, true);
    for (const d of docs.slice(50)) await api(srv, 'publish', { channel: ch, data: d });
    for (const [k, { codec, got }] of subs.entries()) {
      await waitFor(() => got.pubs.length === docs.length, { message: `${codec}: ${docs.length} publications (have ${got.pubs.length})` });
      got.pubs.forEach((p, i) => assert.deepEqual(p.data, docs[i], `${codec}: document ${i + 1}`));
      assert.deepEqual(got.errors, [], `${codec}: errors`);
      assert.equal(got.subscribed.length, k === 0 ? 2 : 1, `${codec}: subscribes (a delta failed to apply?)`);
    }
    const pushes = () => frames.filter((f) => JSON.parse(f).pub);
    await waitFor(() => pushes().length === docs.length, { message: 'raw publications' });
    let prev = null;
    let deltas = 0;
    pushes().forEach((f, i) => {
      const p = JSON.parse(f).pub;
      // A delta comes as a string of its UTF-8 bytes (base64 with b64 if it is not UTF-8).
      const delta = p.delta && (p.b64 ? Buffer.from(p.data, 'base64') : new TextEncoder().encode(p.data));
      const bytes = p.delta ? Uint8Array.from(refApplyDelta(prev, delta)) : new TextEncoder().encode(pubDataText(f));
      if (p.delta) deltas++;
      assert.deepEqual(JSON.parse(new TextDecoder().decode(bytes)), docs[i], `raw: document ${i + 1}`);
      prev = bytes;
    });
    assert.equal(deltas, docs.length - 1, 'raw: every publication after the first came as a delta');
    raw.close();
    const after = await deltaMetrics(srv);
    // One delta per publication after the first, whatever the number of
    // delta subscribers; both delta subscribers got them.
    assert.equal(after.deltas - before.deltas, docs.length - 1);
    // The cut one got fewer: those it recovered, and the first live one
    // after its resubscription, went full.
    const frames3 = after.frames - before.frames;
    assert.ok(frames3 >= 3 * (docs.length - 1) - 20 && frames3 < 3 * (docs.length - 1), `delta frames ${frames3}`);
  });

  for (const codec of ['json', 'msgpack']) {
  test(`recovery (${codec}): 600 messages over repeatedly killed connections, 0 gaps, 0 duplicates`, { timeout: 90000 }, async () => {
    const ch = `seq:recovery-${codec}`;
    const user = `rec-${codec}`;
    const N = 600;
    const rec = recordingWebSocket();
    const { client, events } = track(newClient(srv, { codec, websocket: rec.ctor, token: mintToken(srv.secret, { user }) }));
    const sub = client.newSubscription(ch);
    const got = collect(sub);
    await client.connect();
    await sub.subscribe();

    // Publish through the API while the subscriber's connections are cut:
    // by the API (code 4000, reconnect) and by terminating the socket.
    const kills = await publishWithKills(srv, ch, {
      to: N, every: 100, at: 50, user, sockets: rec.sockets,
      ready: () => client.state === 'connected' && sub.state === 'subscribed',
    });
    await waitFor(() => got.pubs.length >= N && client.state === 'connected', { timeout: 30000, message: `${N} publications (have ${got.pubs.length})` });
    await publishMarker(srv, ch, got.pubs, N + 1);
    const r = checkSequence(got.pubs, N + 1);
    assert.deepEqual(r, { gaps: 0, dups: 0, ordered: true, received: N + 1 });
    assert.equal(kills, 6);
    assert.ok(events.disconnect.length >= kills, `disconnects ${events.disconnect.length}`);
    assert.ok(events.disconnect.some((d) => d.code === 4000 && d.reconnect), 'API disconnect 4000 seen');
    assert.ok(events.disconnect.some((d) => d.code === 1006), 'terminated socket seen');
    const recovering = got.subscribed.filter((s) => s.wasRecovering);
    assert.ok(recovering.length >= kills, `resubscribes ${recovering.length}`);
    assert.ok(recovering.every((s) => s.recovered), 'every resubscribe recovered');
    assert.ok(recovering.reduce((a, s) => a + s.recoveredCount, 0) > 0, 'some publications came through recovery');
    client.disconnect();
  });
  }

  test('HTTP streaming: 300 messages over repeatedly ended streams, 0 gaps, 0 duplicates', { timeout: 90000 }, async () => {
    const ch = 'seq:recovery-stream';
    const user = 'rec-stream';
    const N = 300;
    const { client, events } = track(newClient(srv, { transports: ['http-stream'], token: mintToken(srv.secret, { user }) }));
    const sub = client.newSubscription(ch);
    const got = collect(sub);
    await client.connect();
    await sub.subscribe();
    assert.equal(client.transport, 'http-stream');
    for (let n = 1; n <= N; n++) {
      await api(srv, 'publish', { channel: ch, data: { n } });
      if (n % 50 === 25) {
        await waitFor(() => client.state === 'connected' && sub.state === 'subscribed', { message: 'connected again before a cut' });
        await api(srv, 'disconnect', { user, code: 4000, reason: 'test kill' });
      }
    }
    await waitFor(() => got.pubs.length >= N && client.state === 'connected', { timeout: 30000, message: `${N} publications (have ${got.pubs.length})` });
    await publishMarker(srv, ch, got.pubs, N + 1);
    assert.deepEqual(checkSequence(got.pubs, N + 1), { gaps: 0, dups: 0, ordered: true, received: N + 1 });
    assert.ok(events.disconnect.filter((d) => d.code === 4000 && d.reconnect).length >= 6, 'API disconnects seen');
    const recovering = got.subscribed.filter((s) => s.wasRecovering);
    assert.ok(recovering.length >= 6 && recovering.every((s) => s.recovered), 'every resubscribe recovered');
    // Commands answered in order over POSTs.
    const offsets = [];
    for (let i = 0; i < 20; i++) offsets.push((await client.publish(ch, { n: N + 2 + i })).offset);
    assert.deepEqual(offsets, offsets.map((_, i) => N + 2 + i));
    client.disconnect();
  });

  test('fallback: a WebSocket that cannot connect gives way to HTTP streaming', { timeout: 30000 }, async () => {
    // Every WebSocket goes to a port where nothing listens: as when a proxy
    // refuses the upgrade, the attempt fails before any message.
    class Refused extends WebSocket {
      constructor(_url, protocols) {
        super('ws://127.0.0.1:1/ws', protocols);
      }
    }
    const { client } = track(newClient(srv, { websocket: Refused }));
    const sub = client.newSubscription('fallback:1');
    const got = collect(sub);
    await client.connect();
    await sub.subscribe();
    assert.equal(client.transport, 'http-stream');
    await api(srv, 'publish', { channel: 'fallback:1', data: { n: 1 } });
    await waitFor(() => got.pubs.length === 1, { message: 'publication over HTTP streaming' });
    client.disconnect();
  });

  test('disconnect() then connect() recovers; a saved position recovers in a new client', { timeout: 30000 }, async () => {
    const ch = 'seq:resume';
    const { client: a } = track(newClient(srv));
    const sa = a.newSubscription(ch);
    const ga = collect(sa);
    await a.connect();
    await sa.subscribe();
    for (let n = 1; n <= 3; n++) await api(srv, 'publish', { channel: ch, data: { n } });
    await waitFor(() => ga.pubs.length === 3);
    a.disconnect();
    assert.equal(sa.state, 'subscribing');
    const saved = sa.position();
    assert.equal(saved.offset, 3);
    for (let n = 4; n <= 6; n++) await api(srv, 'publish', { channel: ch, data: { n } });
    await a.connect();
    await waitFor(() => ga.pubs.length === 6, { message: 'recovered after connect()' });
    assert.deepEqual(checkSequence(ga.pubs, 6), { gaps: 0, dups: 0, ordered: true, received: 6 });
    assert.deepEqual(
      (({ wasRecovering, recovered, recoveredCount }) => ({ wasRecovering, recovered, recoveredCount }))(ga.subscribed.at(-1)),
      { wasRecovering: true, recovered: true, recoveredCount: 3 },
    );
    a.disconnect();

    const { client: b } = track(newClient(srv));
    const sb = b.newSubscription(ch, { since: saved });
    const gb = collect(sb);
    sb.subscribe();
    await b.connect();
    await waitFor(() => gb.pubs.length === 3, { message: 'recovered from a saved position' });
    assert.deepEqual(gb.pubs.map((p) => p.data.n), [4, 5, 6]);
    b.disconnect();
  });

  test('server-side subscriptions (token channels) recover across disconnect() and killed connections', { timeout: 60000 }, async () => {
    const ch = 'seq:server-side';
    const user = 'server-side-user';
    const rec = recordingWebSocket();
    const { client } = track(newClient(srv, { websocket: rec.ctor, token: mintToken(srv.secret, { user, channels: [ch] }) }));
    const pubs = [];
    const subscribed = [];
    client.on('publication', (p) => p.channel === ch && pubs.push(p));
    client.on('subscribed', (e) => e.channel === ch && subscribed.push(e));
    await client.connect();
    assert.equal(subscribed.length, 1);
    assert.equal(subscribed[0].wasRecovering, false);
    for (let n = 1; n <= 3; n++) await api(srv, 'publish', { channel: ch, data: { n } });
    await waitFor(() => pubs.length === 3, { message: 'live publications' });

    // Away on purpose: the next connect recovers what was published meanwhile.
    client.disconnect();
    for (let n = 4; n <= 6; n++) await api(srv, 'publish', { channel: ch, data: { n } });
    await client.connect();
    await waitFor(() => pubs.length === 6, { message: 'recovered after connect()' });
    assert.deepEqual(
      (({ wasRecovering, recovered, recoveredCount }) => ({ wasRecovering, recovered, recoveredCount }))(subscribed.at(-1)),
      { wasRecovering: true, recovered: true, recoveredCount: 3 },
    );

    // Connections cut while publishing: by the API and by killing the socket.
    const N = 300;
    const kills = await publishWithKills(srv, ch, {
      from: 7, to: N, every: 60, at: 30, user, sockets: rec.sockets,
      ready: () => client.state === 'connected',
    });
    await waitFor(() => pubs.length >= N && client.state === 'connected', { timeout: 30000, message: `${N} publications (have ${pubs.length})` });
    await publishMarker(srv, ch, pubs, N + 1);
    assert.deepEqual(checkSequence(pubs, N + 1), { gaps: 0, dups: 0, ordered: true, received: N + 1 });
    const recovering = subscribed.filter((e) => e.wasRecovering);
    // The first recovering subscribe is the connect() above; each cut adds one.
    assert.ok(recovering.length >= 1 + kills, `recovering subscribes ${recovering.length} after ${kills} cuts`);
    assert.ok(recovering.every((e) => e.recovered), 'every reconnect recovered');
    assert.ok(recovering.slice(1).reduce((a, e) => a + e.recoveredCount, 0) > 0, 'some publications came through recovery');
    client.disconnect();
  });

  test('subscription tokens: getToken mints one per connection (the client id changes)', { timeout: 30000 }, async () => {
    const ch = 'private:tokens';
    const user = 'sub-token-user';
    const asked = [];
    const { client } = track(newClient(srv, { token: mintToken(srv.secret, { user }) }));
    const sub = client.newSubscription(ch, {
      getToken: async (ctx) => {
        asked.push(ctx);
        return mintToken(srv.secret, { user, client: ctx.client, channel: ctx.channel, ttlSec: 60 });
      },
    });
    const got = collect(sub);
    await client.connect();
    // A static token is bound to this connection's client id.
    const staticSub = client.newSubscription(`${ch}-static`, { token: mintToken(srv.secret, { user, client: client.clientId, channel: `${ch}-static` }) });
    const gotStatic = collect(staticSub);
    await sub.subscribe();
    await staticSub.subscribe();
    assert.deepEqual(asked, [{ channel: ch, client: client.clientId }]);
    const first = client.clientId;
    await api(srv, 'disconnect', { user, code: 4000 });
    await waitFor(() => got.subscribed.length === 2 && client.clientId !== first, { message: 'resubscribed with a new token' });
    assert.equal(asked.length, 2);
    assert.equal(asked[1].client, client.clientId);
    await api(srv, 'publish', { channel: ch, data: { n: 1 } });
    await waitFor(() => got.pubs.length === 1);
    // The static token no longer matches: the server refuses it (103).
    await waitFor(() => gotStatic.unsubscribed.length === 1, { message: 'static token refused after reconnect' });
    assert.equal(gotStatic.unsubscribed[0].code, 103);
    assert.equal(staticSub.state, 'unsubscribed');
    client.disconnect();
  });

  test('terminal: API disconnect 4500 stops reconnecting', { timeout: 20000 }, async () => {
    const rec = recordingWebSocket();
    const { client, events } = track(newClient(srv, { websocket: rec.ctor, token: mintToken(srv.secret, { user: 'term-user' }) }));
    await client.connect();
    await api(srv, 'disconnect', { user: 'term-user', code: 4500, reason: 'banned' });
    await waitFor(() => client.state === 'disconnected', { message: 'disconnected' });
    assert.deepEqual(
      events.disconnect.map(({ code, reason, reconnect }) => ({ code, reason, reconnect })),
      [{ code: 4500, reason: 'banned', reconnect: false }],
    );
    await sleep(1500); // backoff here is at most 1 s: a reconnect would have happened
    assert.equal(rec.sockets.length, 1);
    assert.equal(client.state, 'disconnected');
  });

  test('terminal: invalid token gets 3500, connect() rejects, no retry', { timeout: 20000 }, async () => {
    const rec = recordingWebSocket();
    const { client, events } = track(newClient(srv, { websocket: rec.ctor, token: mintToken('wrong-secret', { user: 'mallory' }) }));
    await assert.rejects(client.connect(), (e) => e instanceof TerminalError && e.code === 3500);
    assert.equal(events.disconnect.at(-1).code, 3500);
    await sleep(1500);
    assert.equal(rec.sockets.length, 1);
  });

  test('token refresh: short-lived tokens are refreshed over the open connection', { timeout: 30000 }, async () => {
    let minted = 0;
    const getToken = async () => {
      minted++;
      return mintToken(srv.secret, { user: 'refresher', ttlSec: 3 });
    };
    // Start with an expired token: error 109 at connect -> getToken -> connect.
    const { client, events } = track(newClient(srv, { token: mintToken(srv.secret, { user: 'refresher', expSec: Math.floor(Date.now() / 1000) - 60 }), getToken }));
    await client.connect();
    assert.equal(minted, 1);
    assert.equal(events.connected[0].expires, true);
    const id = client.clientId;
    // Each token lives 3 s; 8 s need at least two refreshes without a drop.
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      await sleep(250);
      assert.equal(events.disconnect.length, 0, `dropped: ${JSON.stringify(events.disconnect)}`);
    }
    assert.ok(minted >= 3, `getToken called ${minted} times`);
    assert.equal(client.clientId, id, 'same connection');
    await client.publish('refresh:check', { ok: true });
    client.disconnect();
  });

  test("token refresh: the server's refresh push triggers it before the client's own timer", { timeout: 30000 }, async () => {
    let minted = 0;
    const getToken = async () => {
      minted++;
      return mintToken(srv.secret, { user: 'pushed', ttlSec: 40 });
    };
    const { client, events } = track(newClient(srv, { token: mintToken(srv.secret, { user: 'pushed', ttlSec: 40 }), getToken }));
    await client.connect();
    assert.ok(events.connected[0].ttl >= 38, `ttl ${events.connected[0].ttl}`);
    // The client's timer would refresh ~34 s in; the push comes ~2 s in.
    await waitFor(() => minted >= 1, { timeout: 10000, message: 'refresh after the push' });
    await sleep(500);
    assert.equal(minted, 1);
    assert.equal(events.disconnect.length, 0);
    client.disconnect();
  });

  test('without getToken an expiring connection ends with 3502 and stays down', { timeout: 20000 }, async () => {
    const { client, events } = track(newClient(srv, { token: mintToken(srv.secret, { user: 'shortlived', ttlSec: 2 }) }));
    await client.connect();
    await waitFor(() => events.disconnect.length > 0, { timeout: 8000, message: 'expiry disconnect' });
    assert.deepEqual(
      events.disconnect.map(({ code, reconnect }) => ({ code, reconnect })),
      [{ code: 3502, reconnect: false }],
    );
    assert.equal(client.state, 'disconnected');
  });
});

describe('e2e: acknowledgements', () => {
  let srv;
  let dir;
  before(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'herald-ack-'));
    const file = path.join(dir, 'herald.yaml');
    writeFileSync(
      file,
      [
        'namespaces:',
        '  - name: acked',
        '    history_size: 1000',
        '    history_ttl: 1h',
        '    allow_subscribe: true',
        '    allow_anonymous_subscribe: true',
        '    allow_publish: true',
        '    ack: true',
        '    ack_timeout: 100ms',
        '',
      ].join('\n'),
    );
    srv = await startServer({ args: ['--config', file] });
  });
  after(async () => {
    stopClients();
    await srv?.stop('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
  });

  for (const codec of ['json', 'msgpack']) {
    test(`auto-ack and redelivery (${codec}): publications lost on a live connection come again, each handed over once, in order`, { timeout: 30000 }, async () => {
      const ch = `acked:loss-${codec}`;
      const { ctor, lossy } = lossyWebSocket();
      const { client } = newClient(srv, { codec, websocket: ctor });
      await client.connect();
      const sub = client.newSubscription(ch);
      const got = collect(sub);
      await sub.subscribe();
      assert.equal(got.subscribed[0].ack, true, 'subscribed event ack');
      for (let n = 1; n <= 5; n++) await api(srv, 'publish', { channel: ch, data: { n } });
      await waitFor(() => sub.acked() === 5, { message: `5 acknowledged (acked ${sub.acked()})` });
      lossy.drop = true;
      for (let n = 6; n <= 20; n++) await api(srv, 'publish', { channel: ch, data: { n } });
      const r0 = await redelivered(srv);
      await waitFor(async () => (await redelivered(srv)) >= r0 + 15, { message: 'redeliveries while frames are lost' });
      assert.equal(got.pubs.length, 5, 'nothing handed over while frames were lost');
      lossy.drop = false;
      await waitFor(() => got.pubs.length >= 20, { message: `20 publications (have ${got.pubs.length})` });
      await publishMarker(srv, ch, got.pubs, 21);
      assert.deepEqual(
        got.pubs.map((p) => p.data.n),
        Array.from({ length: 21 }, (_, i) => i + 1),
        'every publication once, in order',
      );
      assert.ok(got.pubs.some((p) => p.redelivered), 'some came by redelivery');
      assert.equal(got.subscribed.length, 1, 'healed on the live connection, no resubscribe');
      await waitFor(() => sub.acked() === 21, { message: 'all acknowledged' });
      client.disconnect();
    });
  }

  test('manual ack: a reconnect resumes from the acknowledged offset; what was received and not acknowledged is not handed over twice', { timeout: 30000 }, async () => {
    const ch = 'acked:manual';
    const { ctor, sockets } = recordingWebSocket();
    const { client } = newClient(srv, { websocket: ctor });
    await client.connect();
    const sub = client.newSubscription(ch, { manualAck: true });
    const got = collect(sub);
    await sub.subscribe();
    for (let n = 1; n <= 10; n++) await api(srv, 'publish', { channel: ch, data: { n } });
    await waitFor(() => got.pubs.length === 10, { message: '10 publications' });
    sub.ack(4);
    assert.equal(sub.acked(), 4);
    const r0 = await redelivered(srv);
    await waitFor(async () => (await redelivered(srv)) >= r0 + 6, { message: 'the 6 unacknowledged sent again' });
    sockets.at(-1).terminate();
    await waitFor(() => got.subscribed.length === 2, { message: 'resubscribed' });
    const ev = got.subscribed[1];
    assert.ok(ev.wasRecovering && ev.recovered && ev.ack, `resubscription ${JSON.stringify(ev)}`);
    await publishMarker(srv, ch, got.pubs, 11);
    sub.ack(11);
    assert.deepEqual(
      got.pubs.map((p) => p.data.n),
      Array.from({ length: 11 }, (_, i) => i + 1),
      'every publication once, in order',
    );
    client.disconnect();
  });
});

/**
 * A WebSocket class whose sockets drop the server's publication frames
 * while lossy.drop is set: messages silently lost on a live connection.
 */
function lossyWebSocket() {
  const lossy = { drop: false };
  class Lossy extends WebSocket {
    set onmessage(f) {
      super.onmessage = f && ((ev) => {
        if (lossy.drop && isPublicationFrame(ev.data)) return;
        f(ev);
      });
    }
    get onmessage() {
      return super.onmessage;
    }
  }
  return { ctor: Lossy, lossy };
}

function isPublicationFrame(data) {
  if (typeof data === 'string') return data.startsWith('{"pub":');
  // MessagePack: a map whose first key is "pub" (fixstr of length 3).
  const b = Buffer.isBuffer(data) ? data : Buffer.from(data);
  return b.length > 5 && b[1] === 0xa3 && b.subarray(2, 5).toString() === 'pub';
}

async function redelivered(srv) {
  const text = await (await fetch(`${srv.base}/metrics`)).text();
  const m = text.match(/^herald_redelivered_total (\S+)$/m);
  return m ? Number(m[1]) : 0;
}

describe('e2e: pings', () => {
  let srv;
  before(async () => {
    srv = await startServer({ env: { HERALD_PING_INTERVAL: '1s', HERALD_PONG_TIMEOUT: '1s' } });
  });
  after(async () => {
    stopClients();
    srv?.proc.kill('SIGCONT');
    await srv?.stop('SIGKILL');
  });

  test('pongs keep the connection; a frozen server is detected dead and left', { timeout: 40000 }, async () => {
    const { client, events } = newClient(srv, { pingMarginMs: 1000, timeoutMs: 1500 });
    const sub = client.newSubscription('ping:1');
    const got = collect(sub);
    await client.connect();
    await sub.subscribe();
    // Pings every second with a 1 s pong timeout: without pongs the server
    // would close with 3004 within 2 s.
    await sleep(4000);
    assert.equal(events.disconnect.length, 0, JSON.stringify(events.disconnect));
    await api(srv, 'publish', { channel: 'ping:1', data: { n: 1 } });
    await waitFor(() => got.pubs.length === 1);

    srv.proc.kill('SIGSTOP');
    await waitFor(() => events.disconnect.length === 1, { timeout: 10000, message: 'dead connection detected' });
    assert.equal(events.disconnect[0].code, 1006);
    assert.match(events.disconnect[0].reason, /no ping/);
    assert.equal(client.state, 'connecting');
    srv.proc.kill('SIGCONT');
    await waitFor(() => client.state === 'connected' && sub.state === 'subscribed', { timeout: 20000, message: 'reconnected' });
    await api(srv, 'publish', { channel: 'ping:1', data: { n: 2 } });
    await waitFor(() => got.pubs.length === 2);
    assert.deepEqual(checkSequence(got.pubs, 2), { gaps: 0, dups: 0, ordered: true, received: 2 });
    client.disconnect();
  });
});

describe('e2e: drain', () => {
  let srv;
  after(async () => {
    stopClients();
    await srv?.stop('SIGKILL');
  });

  test('SIGTERM: 3000 with reconnect_after, reconnect to a new server on the same port, recover', { timeout: 60000 }, async () => {
    srv = await startServer({ env: { HERALD_DRAIN_TIMEOUT: '3s' } });
    const { port, secret, apiKey } = srv;
    const rec = recordingWebSocket();
    const { client, events } = newClient(srv, { websocket: rec.ctor });
    const sub = client.newSubscription('drain:1');
    const got = collect(sub);
    await client.connect();
    await sub.subscribe();
    for (let n = 1; n <= 5; n++) await api(srv, 'publish', { channel: 'drain:1', data: { n } });
    await waitFor(() => got.pubs.length === 5);

    const old = srv;
    await old.stop('SIGTERM');
    assert.equal(events.disconnect.length, 1);
    const d = events.disconnect[0];
    assert.equal(d.code, 3000);
    assert.equal(d.reconnect, true);
    assert.ok(typeof d.reconnectAfter === 'number' && d.reconnectAfter >= 0 && d.reconnectAfter < 3000, `reconnect_after ${d.reconnectAfter}`);
    // The old process exits once its clients left (no later than the window).
    srv = await startServer({ port, secret, apiKey, env: { HERALD_DRAIN_TIMEOUT: '3s' } });
    // Published to the new server, maybe before the client is back.
    for (let n = 6; n <= 10; n++) await api(srv, 'publish', { channel: 'drain:1', data: { n } });
    const wasDown = client.state !== 'connected'; // usually still waiting out the hint
    await waitFor(() => got.pubs.length >= 10, { timeout: 20000, message: `10 publications (have ${got.pubs.length})` });
    for (let n = 11; n <= 12; n++) await api(srv, 'publish', { channel: 'drain:1', data: { n } });
    await waitFor(() => got.pubs.length >= 12);
    await publishMarker(srv, 'drain:1', got.pubs, 13);
    assert.deepEqual(checkSequence(got.pubs, 13), { gaps: 0, dups: 0, ordered: true, received: 13 });
    // It waited for the hint before the next attempt.
    assert.ok(rec.sockets.length >= 2);
    assert.ok(rec.sockets[1].createdAt - d.at >= d.reconnectAfter - 5, `waited ${rec.sockets[1].createdAt - d.at} ms, hint ${d.reconnectAfter} ms`);
    // The memory broker's stream restarted: a new epoch, caught up from its start.
    const re = got.subscribed.at(-1);
    assert.equal(re.wasRecovering, true);
    assert.equal(re.streamReset, true);
    assert.notEqual(re.position.epoch, got.subscribed[0].position.epoch);
    if (wasDown) assert.equal(re.recoveredCount, 5, 'the five publications made while down came through recovery');
    assert.equal(events.connected.length, 2);
    client.disconnect();
  });
});

describe('e2e: server API on connections', () => {
  let srv;
  let dir;
  const clients = [];
  const track = (x) => (clients.push(x.client), x);
  before(async () => {
    // "private:" channels: clients may not subscribe by themselves; only
    // the server API subscribes them. Everything else is --dev's.
    dir = mkdtempSync(path.join(tmpdir(), 'herald-e2e-'));
    const config = path.join(dir, 'herald.yaml');
    writeFileSync(config, 'namespaces:\n  - name: private\n    history_size: 1000\n    history_ttl: 1h\n');
    srv = await startServer({ args: ['--config', config] });
  });
  after(async () => {
    for (const c of clients) c.disconnect();
    stopClients();
    await srv?.stop('SIGKILL');
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** Records what a client gets outside its own subscriptions. */
  function serverSide(client) {
    const got = { pubs: {}, subscribed: [], unsubscribed: [], messages: [] };
    client.on('publication', (p) => (got.pubs[p.channel] ??= []).push(p));
    client.on('subscribed', (e) => got.subscribed.push(e));
    client.on('unsubscribed', (e) => got.unsubscribed.push(e));
    client.on('message', (e) => got.messages.push(e.data));
    return got;
  }

  /** Sends data to user and waits for it: anything sent before is in by then. */
  async function messageMarker(user, got, text) {
    await api(srv, 'send', { user, data: text });
    await waitFor(() => got.messages.includes(text), { message: `message ${text}` });
  }

  for (const codec of ['json', 'msgpack']) {
    test(`API subscribe: reported, recovered over killed connections; unsubscribe 2000: reported, not asked for again (${codec})`, { timeout: 60000 }, async () => {
      const user = `api-sub-${codec}`;
      const ch = `private:feed-${codec}`;
      const open = `api-open-${codec}`;
      const rec = recordingWebSocket();
      const { client } = track(newClient(srv, { codec, websocket: rec.ctor, token: mintToken(srv.secret, { user }) }));
      const got = serverSide(client);
      await client.connect();
      // Refused, and kept: the channel is still the server's to subscribe.
      await assert.rejects(client.newSubscription(ch).subscribe(), (e) => e.code === 103);

      await api(srv, 'subscribe', { user, channel: ch });
      await waitFor(() => got.subscribed.some((e) => e.channel === ch), { message: 'subscribe push' });
      const first = got.subscribed.find((e) => e.channel === ch);
      assert.deepEqual([first.recoverable, first.wasRecovering, first.position.offset], [true, false, 0]);
      const N = 150;
      const kills = await publishWithKills(srv, ch, {
        from: 1, to: N, every: 50, at: 25, user, sockets: rec.sockets,
        ready: () => client.state === 'connected',
      });
      await waitFor(() => (got.pubs[ch]?.length ?? 0) >= N && client.state === 'connected', { timeout: 30000, message: `${N} publications` });
      await publishMarker(srv, ch, got.pubs[ch], N + 1);
      assert.deepEqual(checkSequence(got.pubs[ch], N + 1), { gaps: 0, dups: 0, ordered: true, received: N + 1 });
      const recovering = got.subscribed.filter((e) => e.channel === ch && e.wasRecovering);
      assert.equal(kills, 3);
      assert.ok(recovering.length >= kills && recovering.every((e) => e.recovered), JSON.stringify(recovering));

      // A channel the client could subscribe to by itself: were it asked
      // for at the reconnect, the server would subscribe it again.
      await api(srv, 'subscribe', { user, channel: open });
      await waitFor(() => got.subscribed.some((e) => e.channel === open), { message: 'subscribe push' });
      await api(srv, 'publish', { channel: open, data: { n: 1 } });
      await waitFor(() => got.pubs[open]?.length === 1, { message: 'publication' });
      await api(srv, 'unsubscribe', { user, channel: open, reason: 'bye' });
      await waitFor(() => got.unsubscribed.length === 1, { message: 'unsubscribe push' });
      const epoch = got.subscribed.find((e) => e.channel === open).position.epoch;
      assert.deepEqual(got.unsubscribed[0], { channel: open, code: 2000, reason: 'bye', resubscribe: false, position: { epoch, offset: 1 } });
      await api(srv, 'publish', { channel: open, data: { n: 2 } });
      const before = got.subscribed.length;
      await api(srv, 'disconnect', { user, code: 4000 });
      await waitFor(() => got.subscribed.length > before && client.state === 'connected', { message: 'reconnected' });
      await api(srv, 'publish', { channel: open, data: { n: 3 } });
      await api(srv, 'publish', { channel: ch, data: { n: N + 2 } });
      await messageMarker(user, got, 'after');
      assert.equal(got.pubs[open].length, 1, 'no publication after the unsubscribe');
      assert.deepEqual(got.subscribed.slice(before).map((e) => [e.channel, e.recovered]), [[ch, true]], 'only the private channel came back');
      assert.equal(got.pubs[ch].at(-1).data.n, N + 2);
      client.disconnect();
    });

    test(`API unsubscribe 2500 of a client subscription: resubscribed, recovered (${codec})`, { timeout: 30000 }, async () => {
      const user = `api-resub-${codec}`;
      const ch = `api-resub-${codec}`;
      const { client } = track(newClient(srv, { codec, token: mintToken(srv.secret, { user }) }));
      const serverGot = serverSide(client);
      // The resubscription waits for getToken: the test publishes while it
      // is held, so the subscribe must recover those publications.
      let hold = null;
      const sub = client.newSubscription(ch, {
        getToken: async (ctx) => {
          await hold;
          return mintToken(srv.secret, { user, client: ctx.client, channel: ctx.channel, ttlSec: 60 });
        },
      });
      const got = collect(sub);
      const subscribing = [];
      sub.on('subscribing', (e) => subscribing.push(e));
      await client.connect();
      await sub.subscribe();
      await api(srv, 'publish', { channel: ch, data: { n: 1 } });
      await waitFor(() => got.pubs.length === 1, { message: 'publication' });
      let release;
      hold = new Promise((r) => (release = r));
      await api(srv, 'unsubscribe', { user, channel: ch, code: 2500, reason: 'move' });
      await waitFor(() => subscribing.length === 1, { message: 'subscribing after 2500' });
      assert.deepEqual(subscribing[0], { channel: ch, code: 2500, reason: 'move' });
      assert.equal(sub.state, 'subscribing');
      for (let n = 2; n <= 4; n++) await api(srv, 'publish', { channel: ch, data: { n } });
      release();
      await waitFor(() => sub.state === 'subscribed', { message: 'resubscribed' });
      await publishMarker(srv, ch, got.pubs, 5);
      assert.deepEqual(checkSequence(got.pubs, 5), { gaps: 0, dups: 0, ordered: true, received: 5 });
      const last = got.subscribed.at(-1);
      assert.deepEqual([last.wasRecovering, last.recovered, last.recoveredCount], [true, true, 3]);
      assert.deepEqual(got.unsubscribed, []);

      // 2000 ends it for good.
      await api(srv, 'unsubscribe', { user, channel: ch, code: 2000, reason: 'over' });
      await waitFor(() => got.unsubscribed.length === 1, { message: 'unsubscribed' });
      assert.deepEqual(got.unsubscribed[0], { channel: ch, code: 2000, reason: 'over' });
      assert.equal(sub.state, 'unsubscribed');
      await api(srv, 'publish', { channel: ch, data: { n: 6 } });
      await messageMarker(user, serverGot, 'after');
      assert.equal(got.pubs.length, 5);
      assert.deepEqual(serverGot.unsubscribed, []);
      assert.equal(serverGot.pubs[ch], undefined);
      client.disconnect();
    });

    test(`API send: JSON and binary data (${codec})`, { timeout: 20000 }, async () => {
      const user = `api-send-${codec}`;
      const { client } = track(newClient(srv, { codec, token: mintToken(srv.secret, { user }) }));
      const got = serverSide(client);
      await client.connect();
      await api(srv, 'send', { user, data: { k: [1, 'v'] } });
      await api(srv, 'send', { user, b64data: 'AAEC/yJ7' });
      await api(srv, 'send', { user, data: 'text' });
      await waitFor(() => got.messages.length === 3, { message: 'messages' });
      assert.deepEqual(got.messages, [{ k: [1, 'v'] }, new Uint8Array([0, 1, 2, 255, 34, 123]), 'text']);
      client.disconnect();
    });
  }
});

describe('e2e: presence across a broker outage', () => {
  let redis;
  let srv;
  before(async () => {
    redis = await startRedis();
    if (redis) srv = await startServer({ args: ['--broker', `${redis.url}?prefix=e2e`] });
  });
  after(async () => {
    stopClients();
    await srv?.stop('SIGKILL');
    await redis?.kill();
  });

  test('presence_stale when the node loses Redis, presence_sync once it is back', { timeout: 60000 }, async (t) => {
    if (!redis) {
      t.skip('redis-server not found');
      return;
    }
    const ch = 'room:outage';
    const { client: a } = newClient(srv, { token: mintToken(srv.secret, { user: 'alice' }) });
    const { client: b } = newClient(srv, { token: mintToken(srv.secret, { user: 'bob' }) });
    const sa = a.newSubscription(ch);
    const events = [];
    let synced = null;
    sa.on('join', (e) => events.push(`join ${e.info.user}`));
    sa.on('presence_stale', (e) => {
      assert.equal(e.channel, ch);
      events.push('stale');
    });
    sa.on('presence_sync', (e) => {
      assert.equal(e.channel, ch);
      synced = e.presence;
      events.push('sync');
    });
    await a.connect();
    await sa.subscribe();
    await b.connect();
    await b.newSubscription(ch).subscribe();
    await waitFor(() => events.includes('join bob'), { message: 'join of bob' });

    await redis.kill();
    await waitFor(() => events.includes('stale'), { timeout: 20000, message: 'presence_stale' });
    await redis.start();
    await waitFor(() => events.includes('sync'), { timeout: 30000, message: 'presence_sync' });
    assert.ok(events.indexOf('stale') < events.indexOf('sync'), `events ${events}`);
    const users = Object.values(synced).map((i) => i.user).sort();
    assert.deepEqual(users, ['alice', 'bob']);
    for (const [id, info] of Object.entries(synced)) assert.equal(id, info.client);
    a.disconnect();
    b.disconnect();
  });
});

/** Reads herald_deltas_total and herald_delta_frames_total from /metrics. */
async function deltaMetrics(srv) {
  const text = await (await fetch(`${srv.base}/metrics`)).text();
  const value = (name) => Number(text.match(new RegExp(`^${name} (\\S+)$`, 'm'))?.[1] ?? NaN);
  return { deltas: value('herald_deltas_total'), frames: value('herald_delta_frames_total') };
}

/**
 * n documents of about 1 KiB, each the previous one with a few fields
 * changed (prices, quantities, now and then the status or a string with
 * characters JSON escapes).
 */
function randomDocs(n) {
  let seed = 42;
  const rnd = (k) => {
    seed = (seed * 1103515245 + 12345) % 2147483648;
    return seed % k;
  };
  const doc = {
    seq: 0,
    status: 'open',
    items: Array.from({ length: 12 }, (_, i) => ({ id: i, name: `item-${i}`, price: rnd(10000) / 100, qty: rnd(100) })),
    note: 'unchanged text, "quoted" and ünïcödé ✓ '.repeat(4),
  };
  const out = [];
  for (let i = 0; i < n; i++) {
    doc.seq = i + 1;
    for (let k = rnd(3) + 1; k > 0; k--) {
      const it = doc.items[rnd(doc.items.length)];
      it.price = rnd(10000) / 100;
      it.qty = rnd(100);
    }
    if (rnd(10) === 0) doc.status = ['open', 'held', 'closed', 'a "quoted" \\ state'][rnd(4)];
    out.push(structuredClone(doc));
  }
  return out;
}
