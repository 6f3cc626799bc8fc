// Unit tests: backoff and jitter bounds, close-code classification, gap
// detection, codecs, and the client state machine against an in-memory
// WebSocket (the test plays the server).

import { test, describe, afterEach } from 'node:test';
import assert from 'node:assert/strict';
import { encode as mpEncode, decode as mpDecode } from '@msgpack/msgpack';
import { Herald, streamUrls, backoff, reconnectDelay, reconnects, classifyOffset, jsonCodec, msgpackCodec, DisconnectedError, TerminalError, TimeoutError, UnauthorizedError } from '../dist/index.js';
import { base64ToBytes, bytesToBase64 } from '../dist/codec.js';
import { applyDelta, fossilChecksum, pubDataText, DeltaError } from '../dist/fossil.js';
import { createDelta as refCreateDelta, applyDelta as refApplyDelta } from 'fossil-delta';
import { fakeWebSocket, acceptConnect } from './fake-ws.mjs';
import { waitFor, sleep } from './helpers.mjs';

describe('backoff', { timeout: 15000 }, () => {
  test('full jitter stays within [0, min(max, base*2^n))', () => {
    for (let n = 0; n < 20; n++) {
      const bound = Math.min(20000, 200 * 2 ** n);
      for (let i = 0; i < 500; i++) {
        const d = backoff(n, 200, 20000);
        assert.ok(d >= 0 && d < bound, `attempt ${n}: ${d} not in [0, ${bound})`);
      }
      assert.equal(backoff(n, 200, 20000, () => 0), 0);
      assert.equal(backoff(n, 200, 20000, () => 0.999999), Math.floor(0.999999 * bound));
    }
  });

  test('jitter spreads clients over the whole window', () => {
    // Not a timing test: the distribution of 2000 draws for attempt 5
    // (bound 6400 ms) covers every tenth of the window.
    const buckets = new Array(10).fill(0);
    for (let i = 0; i < 2000; i++) buckets[Math.floor(backoff(5, 200, 20000) / 640)]++;
    assert.ok(buckets.every((b) => b > 0), `buckets ${buckets}`);
  });

  test('large attempts are capped at max and never overflow', () => {
    assert.equal(backoff(1000, 200, 20000, () => 0.5), 10000);
    assert.equal(backoff(-3, 200, 20000, () => 0.5), 100);
  });

  test('reconnectDelay honours reconnect_after as a lower bound', () => {
    assert.equal(reconnectDelay(0, 200, 20000, 5000, () => 0.9), 5000);
    assert.equal(reconnectDelay(10, 200, 20000, 5000, () => 0.9), 18000);
    assert.equal(reconnectDelay(0, 200, 20000, 0, () => 0.5), 100);
  });

  test('close codes: reconnect vs terminal', () => {
    const cases = {
      1000: true, 1001: true, 1006: true, 1011: true,
      1002: false, 1003: false, 1007: false, 1008: false, 1009: false, 1010: false,
      3000: true, 3001: true, 3004: true, 3499: true,
      3500: false, 3502: false, 3505: false, 3999: false,
      4000: true, 4499: true, 4500: false, 4999: false,
    };
    for (const [code, want] of Object.entries(cases)) assert.equal(reconnects(Number(code)), want, `code ${code}`);
  });
});

describe('gap detection', { timeout: 15000 }, () => {
  test('classifyOffset', () => {
    assert.equal(classifyOffset(5, 6), 'next');
    assert.equal(classifyOffset(0, 1), 'next');
    assert.equal(classifyOffset(5, 5), 'duplicate');
    assert.equal(classifyOffset(5, 2), 'duplicate');
    assert.equal(classifyOffset(5, 7), 'gap');
    assert.equal(classifyOffset(0, 3), 'gap');
  });
});

describe('codecs', { timeout: 15000 }, () => {
  test('JSON commands and publications', () => {
    assert.equal(jsonCodec.encode({ id: 1, subscribe: { channel: 'a', recover: true, epoch: 'E', offset: 3 } }), '{"id":1,"subscribe":{"channel":"a","recover":true,"epoch":"E","offset":3}}');
    const m = jsonCodec.decode('{"pub":{"channel":"c","offset":2,"data":"AP8=","b64":true}}');
    assert.deepEqual(jsonCodec.decodeData(m.pub.data, m.pub.b64), new Uint8Array([0, 255]));
    assert.deepEqual(jsonCodec.decodeData({ text: 'hi' }), { text: 'hi' });
    assert.throws(() => jsonCodec.encodeData(new Uint8Array([1])), /msgpack/);
    assert.throws(() => jsonCodec.decode('[1]'), /not an object/);
    assert.throws(() => jsonCodec.decode('{"id":'), SyntaxError);
  });

  test('base64 round trip', () => {
    const b = new Uint8Array(70000).map((_, i) => (i * 31) & 255);
    assert.deepEqual(base64ToBytes(bytesToBase64(b)), b);
  });

  test('MessagePack commands, data as bin', () => {
    const c = msgpackCodec({ encode: mpEncode, decode: mpDecode });
    const frame = c.encode({ id: 7, publish: { channel: 'c', data: c.encodeData({ a: 1 }), idempotency_key: undefined } });
    assert.ok(frame instanceof Uint8Array);
    const back = mpDecode(frame);
    assert.equal(back.id, 7);
    assert.ok(!('idempotency_key' in back.publish), 'undefined fields are omitted');
    assert.ok(back.publish.data instanceof Uint8Array, 'data travels as bin');
    assert.equal(new TextDecoder().decode(back.publish.data), '{"a":1}');
    // Server side: a publication with JSON bytes and one with binary bytes.
    const push = mpEncode({ pub: { channel: 'c', offset: 1, data: new TextEncoder().encode('{"x":2}') } });
    const m = c.decode(push.buffer.slice(push.byteOffset, push.byteOffset + push.byteLength));
    assert.deepEqual(c.decodeData(m.pub.data), { x: 2 });
    assert.deepEqual(c.decodeData(new Uint8Array([0xff, 0])), new Uint8Array([0xff, 0]));
    assert.deepEqual(c.encodeData(new Uint8Array([9])), new Uint8Array([9]));
    assert.throws(() => c.decode('text'), /binary/);
  });
});

// Every client a test made is stopped after it, failed or not, so that no
// reconnect loop outlives its test.
const live = [];
afterEach(() => {
  for (const c of live.splice(0)) c.disconnect();
});

/** A client over a fake socket with fast backoff. */
function fakeClient(opts = {}) {
  const { ctor, sockets } = fakeWebSocket({ msgpack: opts.msgpack });
  // WebSocket only: the fake plays the server; HTTP streaming is tested
  // end to end.
  const client = new Herald('ws://fake/ws', { websocket: ctor, transports: ['websocket'], reconnect: { baseMs: 5, maxMs: 20 }, timeoutMs: 2000, ...opts });
  live.push(client);
  const disconnects = [];
  client.on('disconnect', (e) => disconnects.push(e));
  return { client, sockets, disconnects, ctor };
}

describe('transports', { timeout: 15000 }, () => {
  test('HTTP streaming URLs come from the WebSocket URL', () => {
    assert.deepEqual(streamUrls('ws://h:8000/ws'), { stream: 'http://h:8000/stream', send: 'http://h:8000/stream/send' });
    assert.deepEqual(streamUrls('wss://h/herald/ws?x=1'), { stream: 'https://h/herald/stream', send: 'https://h/herald/stream/send' });
    assert.deepEqual(streamUrls('https://h/stream'), { stream: 'https://h/stream', send: 'https://h/stream/send' });
  });

  test('msgpack and a missing WebSocket narrow the transports', () => {
    const { ctor } = fakeWebSocket();
    assert.equal(new Herald('ws://fake/ws', { websocket: ctor }).transport, 'websocket');
    assert.equal(new Herald('ws://fake/ws', { websocket: ctor, transports: ['http-stream', 'websocket'] }).transport, 'http-stream');
    assert.equal(new Herald('ws://fake/ws', { websocket: ctor, codec: 'msgpack', transports: ['http-stream', 'websocket'] }).transport, 'websocket');
    assert.throws(() => new Herald('ws://fake/ws', { websocket: ctor, codec: 'msgpack', transports: ['http-stream'] }), /no usable transport/);
  });
});

describe('client state machine', { timeout: 15000 }, () => {
  test('connects, answers pings with pong, sends commands with unique ids', async () => {
    const { client, sockets } = fakeClient({ name: 'unit' });
    const states = [];
    client.on('state', (e) => states.push(e.state));
    const p = client.connect();
    const ws = await acceptConnect(sockets, 0);
    await p;
    assert.deepEqual(ws.protocols, ['herald.json']);
    assert.equal(ws.commands('connect')[0].connect.name, 'unit');
    assert.equal(client.state, 'connected');
    assert.equal(client.clientId, 'c0');
    ws.deliver({ ping: {} });
    assert.deepEqual(ws.sent.at(-1), { pong: {} });
    const pub = client.publish('ch', { a: 1 });
    const cmd = await ws.waitCommand('publish');
    ws.deliver({ id: cmd.id, publish: { epoch: 'E', offset: 4 } });
    assert.deepEqual(await pub, { epoch: 'E', offset: 4 });
    const ids = ws.sent.filter((c) => c.id).map((c) => c.id);
    assert.equal(new Set(ids).size, ids.length);
    client.disconnect();
    assert.deepEqual(states, ['connecting', 'connected', 'disconnected']);
    assert.equal(ws.closedByClient, 1000);
  });

  test('error replies reject with the code', async () => {
    const { client, sockets } = fakeClient();
    client.connect();
    const ws = await acceptConnect(sockets, 0);
    const p = client.presence('x');
    const cmd = await ws.waitCommand('presence');
    ws.deliver({ id: cmd.id, error: { code: 108, message: 'not available' } });
    await assert.rejects(p, (e) => e.code === 108 && e.name === 'HeraldError');
    client.disconnect();
  });

  test('a silent connection is detected dead after ping + margin and replaced', async () => {
    const { client, sockets, disconnects } = fakeClient({ pingMarginMs: 50 });
    client.connect();
    await acceptConnect(sockets, 0, { ping: 0.1 });
    // Nothing more arrives: the watchdog fires after 100 + 50 ms.
    await waitFor(() => disconnects.length === 1, { message: 'disconnect' });
    assert.equal(disconnects[0].code, 1006);
    assert.match(disconnects[0].reason, /no ping/);
    assert.equal(disconnects[0].reconnect, true);
    assert.equal(sockets[0].closedByClient, 1000);
    await acceptConnect(sockets, 1, { ping: 0.1 });
    await waitFor(() => client.state === 'connected');
    client.disconnect();
  });

  test('pings keep a connection alive', async () => {
    const { client, sockets, disconnects } = fakeClient({ pingMarginMs: 300 });
    client.connect();
    const ws = await acceptConnect(sockets, 0, { ping: 0.1 });
    // Pings every 50 ms for well over the 400 ms a silent connection gets.
    const until = Date.now() + 1000;
    let n = 0;
    while (Date.now() < until) {
      await sleep(50);
      ws.deliver({ ping: {} });
      n++;
    }
    assert.equal(disconnects.length, 0);
    assert.equal(sockets.length, 1);
    assert.equal(ws.commands('pong').length, n);
    client.disconnect();
  });

  test('terminal disconnect push stops the client: no reconnect', async () => {
    const { client, sockets, disconnects } = fakeClient();
    const p = client.connect();
    const ws = await acceptConnect(sockets, 0);
    await p;
    ws.deliver({ disconnect: { code: 3503, reason: 'force disconnect', reconnect: false } });
    assert.equal(client.state, 'disconnected');
    assert.deepEqual(disconnects, [{ code: 3503, reason: 'force disconnect', reconnect: false }]);
    await sleep(200); // backoff is at most 20 ms here
    assert.equal(sockets.length, 1);
    await assert.rejects(client.ready(), /not connected/);
  });

  test('terminal close codes without a push stop the client', async () => {
    for (const code of [1002, 1009, 3500, 4500]) {
      const { client, sockets, disconnects } = fakeClient();
      client.connect();
      const ws = await acceptConnect(sockets, 0);
      ws.serverClose(code, 'bye');
      assert.equal(client.state, 'disconnected', `code ${code}`);
      assert.equal(disconnects.at(-1).reconnect, false);
      await sleep(60);
      assert.equal(sockets.length, 1, `code ${code}: no reconnect`);
    }
  });

  test('invalid token at connect rejects connect() with TerminalError 3500', async () => {
    const { client, sockets } = fakeClient({ token: 'bad' });
    const p = client.connect();
    const ws = await waitFor(() => sockets[0]);
    await ws.waitCommand('connect');
    ws.deliver({ disconnect: { code: 3500, reason: 'invalid token', reconnect: false } });
    await assert.rejects(p, (e) => e instanceof TerminalError && e.code === 3500);
  });

  test('reconnect waits at least reconnect_after', async () => {
    const { client, sockets } = fakeClient();
    client.connect();
    const ws = await acceptConnect(sockets, 0);
    const t0 = Date.now();
    ws.deliver({ disconnect: { code: 3000, reason: 'shutdown', reconnect: true, reconnect_after: 300 } });
    assert.equal(client.state, 'connecting');
    const ws1 = await waitFor(() => sockets[1], { message: 'second socket' });
    // (A timer may fire a millisecond early by the wall clock.)
    assert.ok(ws1.createdAt - t0 >= 295, `reconnected after ${ws1.createdAt - t0} ms`);
    client.disconnect();
  });

  test('failed attempts back off: no reconnect storm', async () => {
    const { client, sockets, ctor } = fakeClient({ reconnect: { baseMs: 20, maxMs: 160 } });
    ctor.refuse = true; // every attempt is refused before open
    client.connect();
    await sleep(400);
    client.disconnect();
    // Full jitter: the expected sum of waits of the first k attempts is
    // about 10*(2^k) ms up to the cap, so 400 ms allow ~6-12 attempts,
    // never hundreds.
    assert.ok(sockets.length < 60, `${sockets.length} attempts in 400 ms`);
    assert.ok(sockets.length >= 2);
  });

  test('error 109 at connect: getToken, connect again on the same socket', async () => {
    let calls = 0;
    const { client, sockets } = fakeClient({ token: 'old', getToken: async () => `new${++calls}` });
    const p = client.connect();
    const ws = await waitFor(() => sockets[0]);
    const c1 = await ws.waitCommand('connect');
    assert.equal(c1.connect.token, 'old');
    ws.deliver({ id: c1.id, error: { code: 109, message: 'token expired' } });
    const c2 = await ws.waitCommand('connect', 2);
    assert.equal(c2.connect.token, 'new1');
    ws.deliver({ id: c2.id, connect: { client: 'x', version: 'v', ping: 25 } });
    await p;
    assert.equal(sockets.length, 1);
    client.disconnect();
  });

  test('error 109 without getToken is terminal', async () => {
    const { client, sockets, disconnects } = fakeClient({ token: 'old' });
    const p = client.connect();
    const ws = await waitFor(() => sockets[0]);
    const c1 = await ws.waitCommand('connect');
    ws.deliver({ id: c1.id, error: { code: 109, message: 'token expired' } });
    await assert.rejects(p, (e) => e.code === 3502);
    assert.equal(disconnects.at(-1).code, 3502);
  });

  test('getToken is used for the first token; UnauthorizedError stops', async () => {
    const { client, sockets, disconnects } = fakeClient({
      getToken: async () => {
        throw new UnauthorizedError('no session');
      },
    });
    await assert.rejects(client.connect(), TerminalError);
    assert.equal(sockets.length, 0);
    assert.equal(disconnects.at(-1).reconnect, false);
  });

  test('one attempt at a time while getToken is slow; disconnect()+connect() meanwhile still connects', async () => {
    const pending = [];
    const { client, sockets } = fakeClient({ getToken: () => new Promise((r) => pending.push(r)) });
    client.connect();
    client.connect(); // no second attempt
    await sleep(20);
    assert.equal(pending.length, 1);
    client.disconnect();
    const p = client.connect();
    await waitFor(() => pending.length === 2);
    pending[0]('stale'); // the first attempt was abandoned
    pending[1]('fresh');
    const ws = await acceptConnect(sockets, 0);
    await p;
    await sleep(20);
    assert.equal(sockets.length, 1);
    assert.equal(ws.commands('connect')[0].connect.token, 'fresh');
    client.disconnect();
  });

  test('expiring token is refreshed over the open connection', async () => {
    let calls = 0;
    const { client, sockets } = fakeClient({ token: 't0', getToken: async () => `t${++calls}` });
    client.connect();
    const ws = await acceptConnect(sockets, 0, { expires: true, ttl: 1 });
    const r1 = await ws.waitCommand('refresh');
    assert.equal(r1.refresh.token, 't1');
    ws.deliver({ id: r1.id, error: { code: 100, message: 'internal', temporary: true } });
    const r2 = await ws.waitCommand('refresh', 2);
    assert.equal(r2.refresh.token, 't2');
    ws.deliver({ id: r2.id, refresh: { expires: true, ttl: 1 } });
    await ws.waitCommand('refresh', 3);
    assert.equal(sockets.length, 1);
    client.disconnect();
  });

  test('a refresh push from the server triggers a refresh now, once', async () => {
    let calls = 0;
    const { client, sockets } = fakeClient({ token: 't0', getToken: async () => `t${++calls}` });
    client.connect();
    const ws = await acceptConnect(sockets, 0, { expires: true, ttl: 3600 });
    await sleep(30);
    assert.equal(ws.commands('refresh').length, 0, 'not due yet');
    ws.deliver({ refresh: { expires: true, ttl: 25 } });
    const r = await ws.waitCommand('refresh');
    assert.equal(r.refresh.token, 't1');
    ws.deliver({ refresh: { expires: true, ttl: 24 } }); // while one is in flight: ignored
    ws.deliver({ id: r.id, refresh: { expires: true, ttl: 3600 } });
    await sleep(30);
    assert.equal(ws.commands('refresh').length, 1);
    assert.equal(calls, 1);
    client.disconnect();
  });

  test('close 3502 with getToken reconnects with a fresh token', async () => {
    let calls = 0;
    const { client, sockets } = fakeClient({ token: 't0', getToken: async () => `t${++calls}` });
    client.connect();
    const ws = await acceptConnect(sockets, 0);
    ws.deliver({ disconnect: { code: 3502, reason: 'token expired', reconnect: false } });
    const ws1 = await waitFor(() => sockets[1]);
    const c = await ws1.waitCommand('connect');
    assert.equal(c.connect.token, 't1');
    client.disconnect();
  });

  test('offline pauses reconnecting; online resumes at once', async () => {
    const target = new EventTarget();
    globalThis.addEventListener = target.addEventListener.bind(target);
    globalThis.removeEventListener = target.removeEventListener.bind(target);
    try {
      const { client, sockets, disconnects } = fakeClient();
      client.connect();
      await acceptConnect(sockets, 0);
      target.dispatchEvent(new Event('offline'));
      assert.equal(disconnects.at(-1).reason, 'browser offline');
      assert.equal(client.state, 'connecting');
      await sleep(150);
      assert.equal(sockets.length, 1, 'no attempt while offline');
      target.dispatchEvent(new Event('online'));
      await acceptConnect(sockets, 1);
      await waitFor(() => client.state === 'connected');
      client.disconnect();
    } finally {
      delete globalThis.addEventListener;
      delete globalThis.removeEventListener;
    }
  });
});

describe('deltas', { timeout: 15000 }, () => {
  const enc = new TextEncoder();
  // A pseudo-random sequence of documents, each the previous one edited.
  function edits(seed, n) {
    const rnd = (k) => {
      seed = (seed * 1103515245 + 12345) % 2147483648;
      return seed % k;
    };
    let cur = new Uint8Array(rnd(3000));
    for (let i = 0; i < cur.length; i++) cur[i] = 32 + rnd(20);
    const out = [cur];
    for (let i = 1; i < n; i++) {
      const next = Array.from(cur);
      for (let k = rnd(6); k > 0; k--) {
        const at = rnd(next.length + 1);
        const len = rnd(30);
        if (rnd(2)) next.splice(at, len);
        else next.splice(at, 0, ...Array.from({ length: len }, () => rnd(256)));
      }
      cur = Uint8Array.from(next);
      out.push(cur);
    }
    return out;
  }

  test('the decoder applies the deltas of an independent Fossil encoder (npm fossil-delta)', () => {
    for (const seed of [1, 2, 3, 4]) {
      const docs = edits(seed, 40);
      for (let i = 1; i < docs.length; i++) {
        const d = Uint8Array.from(refCreateDelta(docs[i - 1], docs[i]));
        assert.deepEqual(applyDelta(docs[i - 1], d), docs[i], `seed ${seed} doc ${i}`);
      }
    }
  });

  test('checksum and hand-written deltas', () => {
    assert.equal(fossilChecksum(enc.encode('abcd')), 0x61626364);
    assert.equal(fossilChecksum(enc.encode('abcde')), (0x61626364 + 0x65000000) >>> 0);
    assert.equal(fossilChecksum(new Uint8Array(8).fill(255)), 0xfffffffe);
    const src = enc.encode('hello world, hello herald');
    const want = enc.encode('hello herald, hello world');
    const digits = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
    const b64 = (v) => {
      let s = '';
      do {
        s = digits[v % 64] + s;
        v = Math.floor(v / 64);
      } while (v > 0);
      return s;
    };
    const delta = enc.encode(`P\n6@0,6:herald8@B,5@6,${b64(fossilChecksum(want))};`);
    assert.deepEqual(applyDelta(src, delta), want);
    assert.deepEqual(Uint8Array.from(refApplyDelta(src, delta)), want);
    for (const bad of ['', '5', '2\n2:ab', '2\n2:ab0;', '4\n4@0,0;', '1\n1!a0;', '1\n1@0;', '9\n9:abc', '~~~~~~~~~~~~\n']) {
      assert.throws(() => applyDelta(enc.encode('abc'), enc.encode(bad)), DeltaError, JSON.stringify(bad));
    }
    // A delta that repeats a copy makes a target longer than its source
    // and itself (the decoder's buffer grows).
    const rep = enc.encode('0123456789abcdef');
    const long = new Uint8Array(16 * 40);
    for (let i = 0; i < 40; i++) long.set(rep, i * 16);
    assert.deepEqual(applyDelta(rep, enc.encode(`${b64(long.length)}\n${'G@0,'.repeat(40)}${b64(fossilChecksum(long))};`)), long);
    // A stated length of 60 MiB with nothing behind it fails, cheaply.
    assert.throws(() => applyDelta(rep, enc.encode(`${b64(60 * 1024 * 1024)}\n1@0,0;`)), DeltaError);
    // The right delta on the wrong source fails its checksum.
    const d = Uint8Array.from(refCreateDelta(src, want));
    assert.throws(() => applyDelta(enc.encode('HELLO WORLD, HELLO HERALD'), d), DeltaError);
  });

  test('pubDataText finds the exact text of a JSON push\'s data', () => {
    const data = '{ "a" : [1, {"b":"x\\"}{]"}], "s":"\\u00e9é" }';
    assert.equal(pubDataText(`{"pub":{"channel":"c\\"data\\":","offset":3,"data":${data},"tags":{"data":"no"}}}`), data);
    assert.equal(pubDataText('{"pub":{"data":12.5e3,"gap":true}}'), '12.5e3');
    assert.equal(pubDataText('{"pub":{"data":"s"}}'), '"s"');
    assert.equal(pubDataText('{"pub":{"offset":1}}'), undefined);
  });

  test('a delta subscription applies deltas; a delta that does not apply resubscribes with recover and delivers nothing wrong', async () => {
    const f = fakeClient();
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('room', { delta: true });
    const got = [];
    const events = [];
    const reasons = [];
    sub.on('publication', (p) => got.push(p));
    sub.on('subscribed', (e) => events.push(e));
    sub.on('subscribing', (e) => reasons.push(e.reason));
    sub.on('error', () => {});
    const ready = sub.subscribe();
    const cmd = await ws.waitCommand('subscribe');
    assert.deepEqual(cmd.subscribe, { channel: 'room', delta: 'fossil' });
    ws.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 5, delta: true } });
    await ready;
    assert.equal(events[0].delta, true);
    const docs = [{ n: 6, text: 'a'.repeat(100) }, { n: 7, text: 'd'.repeat(100) }, { n: 8, text: 'c' + 'a'.repeat(100) }];
    const bytes = docs.map((d) => enc.encode(JSON.stringify(d)));
    const deltaPush = (o, from, to) => ({ pub: { channel: 'room', offset: o, data: bytesToBase64(Uint8Array.from(refCreateDelta(from, to))), b64: true, delta: true } });
    ws.deliver({ pub: { channel: 'room', offset: 6, data: docs[0] } });
    ws.deliver(deltaPush(7, bytes[0], bytes[1]));
    assert.ok(refCreateDelta(bytes[0], bytes[2]).length < bytes[2].length / 2, 'the test delta copies from its source');
    assert.deepEqual(got.map((p) => p.data), docs.slice(0, 2));
    assert.equal(got[1].offset, 7);
    assert.equal(got[1].delta, undefined);
    // A delta against another source: its checksum fails.
    ws.deliver(deltaPush(8, bytes[0], bytes[2]));
    assert.equal(got.length, 2);
    assert.equal(sub.state, 'subscribing');
    assert.deepEqual(reasons, ['delta did not apply']);
    const n = ws.sent.length;
    assert.deepEqual(Object.keys(ws.sent[n - 2]).sort(), ['id', 'unsubscribe']);
    const re = ws.sent[n - 1];
    assert.deepEqual(re.subscribe, { channel: 'room', delta: 'fossil', recover: true, epoch: 'E', offset: 7 });
    ws.deliver({ id: re.id, subscribe: { recoverable: true, epoch: 'E', offset: 8, was_recovering: true, recovered: true, delta: true, publications: [{ offset: 8, data: docs[2] }] } });
    // After the reply, a delta before any full publication cannot apply either.
    assert.deepEqual(got.map((p) => p.data), docs);
    ws.deliver({ pub: { channel: 'room', offset: 9, data: docs[0] } });
    ws.deliver(deltaPush(10, bytes[0], bytes[2]));
    // The JSON encoding's usual form: the delta as a string.
    ws.deliver({ pub: { channel: 'room', offset: 11, data: new TextDecoder().decode(Uint8Array.from(refCreateDelta(bytes[2], bytes[1]))), delta: true } });
    assert.deepEqual(got.map((p) => p.offset), [6, 7, 8, 9, 10, 11]);
    assert.deepEqual(got[4].data, docs[2]);
    assert.deepEqual(got[5].data, docs[1]);
    f.client.disconnect();
  });
});

describe('subscriptions', { timeout: 15000 }, () => {
  async function subscribed(result) {
    const f = fakeClient();
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('room');
    const got = { pubs: [], subscribed: [] };
    sub.on('publication', (p) => got.pubs.push(p.offset));
    sub.on('subscribed', (e) => got.subscribed.push(e));
    const ready = sub.subscribe();
    const cmd = await ws.waitCommand('subscribe');
    ws.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 5, ...result } });
    await ready;
    return { ...f, ws, sub, got };
  }

  test('a gap in live offsets: unsubscribe, resubscribe with recover, no loss, no duplicate', async () => {
    const { client, ws, sub, got } = await subscribed();
    ws.deliver({ pub: { channel: 'room', offset: 6, data: 1 } });
    ws.deliver({ pub: { channel: 'room', offset: 6, data: 1 } }); // duplicate
    ws.deliver({ pub: { channel: 'room', offset: 8, data: 1 } }); // 7 is missing
    assert.deepEqual(got.pubs, [6]);
    assert.equal(sub.state, 'subscribing');
    const n = ws.sent.length;
    assert.deepEqual(Object.keys(ws.sent[n - 2]).sort(), ['id', 'unsubscribe']);
    const re = ws.sent[n - 1];
    assert.deepEqual(re.subscribe, { channel: 'room', recover: true, epoch: 'E', offset: 6 });
    ws.deliver({ pub: { channel: 'room', offset: 9, data: 1 } }); // dropped while resyncing
    ws.deliver({ id: re.id, subscribe: { recoverable: true, epoch: 'E', offset: 9, was_recovering: true, recovered: true, publications: [7, 8, 9].map((o) => ({ offset: o, data: o })) } });
    ws.deliver({ pub: { channel: 'room', offset: 9, data: 1 } });
    ws.deliver({ pub: { channel: 'room', offset: 10, data: 1 } });
    assert.deepEqual(got.pubs, [6, 7, 8, 9, 10]);
    assert.equal(got.subscribed.at(-1).recovered, true);
    assert.equal(got.subscribed.at(-1).recoveredCount, 3);
    assert.deepEqual(sub.position(), { epoch: 'E', offset: 10 });
    client.disconnect();
  });

  test('a filtered subscription sends its filter and takes skipped offsets for filtered out, not for a gap', async () => {
    const f = fakeClient();
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('room', { filter: 'kind == "a"' });
    const got = [];
    const events = [];
    sub.on('publication', (p) => got.push(p.offset));
    sub.on('subscribed', (e) => events.push(e));
    const ready = sub.subscribe();
    const cmd = await ws.waitCommand('subscribe');
    assert.deepEqual(cmd.subscribe, { channel: 'room', filter: 'kind == "a"' });
    ws.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 5, filtered: true } });
    await ready;
    assert.equal(events[0].filtered, true);
    ws.deliver({ pub: { channel: 'room', offset: 7, data: 1 } });
    ws.deliver({ pub: { channel: 'room', offset: 7, data: 1 } }); // duplicate
    ws.deliver({ pub: { channel: 'room', offset: 12, data: 1 } });
    assert.deepEqual(got, [7, 12]);
    assert.equal(sub.state, 'subscribed');
    assert.equal(ws.commands('subscribe').length, 1);
    assert.deepEqual(sub.position(), { epoch: 'E', offset: 12 });
    // A reconnect recovers from the last offset, with the filter.
    ws.serverClose(1006);
    const ws1 = await acceptConnect(f.sockets, 1);
    const re = await ws1.waitCommand('subscribe');
    assert.deepEqual(re.subscribe, { channel: 'room', filter: 'kind == "a"', recover: true, epoch: 'E', offset: 12 });
    f.client.disconnect();
  });

  test('acknowledgements: batched after the listeners, each offset handed over once and in order, redelivery awaited, resume from the acknowledged offset', async () => {
    const f = fakeClient({ ackDelayMs: 5 });
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('room');
    const got = [];
    sub.on('publication', (p) => got.push(p.offset));
    const ready = sub.subscribe();
    const cmd = await ws.waitCommand('subscribe');
    ws.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 5, ack: true } });
    await ready;
    ws.deliver({ pub: { channel: 'room', offset: 6, data: 1 } });
    ws.deliver({ pub: { channel: 'room', offset: 7, data: 1 } });
    const ack = await ws.waitCommand('ack');
    assert.deepEqual(ack, { ack: { offsets: { room: 7 } } }, 'one batched ack, without id');
    ws.deliver({ pub: { channel: 'room', offset: 9, data: 1 } }); // 8 was lost: wait for the redelivery
    assert.deepEqual(got, [6, 7]);
    ws.deliver({ pub: { channel: 'room', offset: 7, data: 1, redelivered: true } }); // its ack crossed it
    ws.deliver({ pub: { channel: 'room', offset: 8, data: 1, redelivered: true } });
    ws.deliver({ pub: { channel: 'room', offset: 9, data: 1, redelivered: true } });
    assert.deepEqual(got, [6, 7, 8, 9]);
    assert.equal(sub.state, 'subscribed');
    assert.equal(ws.commands('subscribe').length, 1, 'no resubscribe');
    await ws.waitCommand('ack', 2);
    await waitFor(() => sub.acked() === 9 && ws.commands('ack').some((c) => c.ack.offsets.room === 9), { message: 'ack of 9' });
    // Manual acknowledgements: a reconnect resumes from the acknowledged offset.
    const m = f.client.newSubscription('manual', { manualAck: true });
    const mgot = [];
    m.on('publication', (p) => mgot.push(p.offset));
    const mready = m.subscribe();
    const mc = await ws.waitCommand('subscribe', 2);
    ws.deliver({ id: mc.id, subscribe: { recoverable: true, epoch: 'E', offset: 0, ack: true } });
    await mready;
    for (const o of [1, 2, 3]) ws.deliver({ pub: { channel: 'manual', offset: o, data: 1 } });
    m.ack(2);
    ws.serverClose(1006);
    const ws1 = await acceptConnect(f.sockets, 1);
    const re = await ws1.waitCommand('subscribe', 2);
    const mre = [ws1.commands('subscribe')[0], re].find((c) => c.subscribe.channel === 'manual');
    assert.deepEqual(mre.subscribe, { channel: 'manual', recover: true, epoch: 'E', offset: 2 });
    ws1.deliver({ id: mre.id, subscribe: { recoverable: true, epoch: 'E', offset: 4, ack: true, was_recovering: true, recovered: true, publications: [3, 4].map((o) => ({ offset: o, data: o })) } });
    assert.deepEqual(mgot, [1, 2, 3, 4], '3 came again and was not handed over twice');
    assert.equal(m.acked(), 2);
    f.client.disconnect();
  });

  test('a conflated subscription exposes skipped and takes skipped offsets for conflation, not for a gap', async () => {
    const f = fakeClient();
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('prices');
    const got = [];
    const events = [];
    sub.on('publication', (p) => got.push([p.offset, p.tags.key, p.data, p.skipped]));
    sub.on('subscribed', (e) => events.push(e));
    const ready = sub.subscribe();
    const cmd = await ws.waitCommand('subscribe');
    ws.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 5, conflated: true } });
    await ready;
    assert.equal(events[0].conflated, true);
    assert.equal(events[0].filtered, false);
    ws.deliver({ pub: { channel: 'prices', offset: 6, tags: { key: 'a' }, data: 1 } });
    ws.deliver({ pub: { channel: 'prices', offset: 9, tags: { key: 'b' }, data: 2, skipped: 1 } });
    ws.deliver({ pub: { channel: 'prices', offset: 9, tags: { key: 'b' }, data: 2, skipped: 1 } }); // duplicate
    ws.deliver({ pub: { channel: 'prices', offset: 12, tags: { key: 'a' }, data: 3, skipped: 4 } });
    assert.deepEqual(got, [[6, 'a', 1, undefined], [9, 'b', 2, 1], [12, 'a', 3, 4]]);
    assert.equal(sub.state, 'subscribed');
    assert.equal(ws.commands('subscribe').length, 1, 'a conflated skip is not a gap: no resubscribe');
    assert.deepEqual(sub.position(), { epoch: 'E', offset: 12 });
    f.client.disconnect();
  });

  test('a server-side conflated subscription takes skipped offsets for no gap', async () => {
    const f = fakeClient();
    const pubs = [];
    f.client.on('publication', (p) => pubs.push([p.offset, p.skipped]));
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0, { subs: { '#u': { recoverable: true, epoch: 'E', offset: 3, conflated: true } } });
    ws.deliver({ pub: { channel: '#u', offset: 4, data: 1 } });
    ws.deliver({ pub: { channel: '#u', offset: 8, data: 1, skipped: 3 } });
    assert.deepEqual(pubs, [[4, undefined], [8, 3]]);
    assert.equal(f.client.state, 'connected');
    assert.equal(f.sockets.length, 1, 'no reconnect over a conflated skip');
    f.client.disconnect();
  });

  test('reconnect resubscribes from the last position and reports recovered', async () => {
    const { client, sockets, ws, sub, got } = await subscribed();
    ws.deliver({ pub: { channel: 'room', offset: 6, data: 1 } });
    ws.serverClose(1006);
    assert.equal(sub.state, 'subscribing');
    const ws1 = await acceptConnect(sockets, 1);
    const cmd = await ws1.waitCommand('subscribe');
    assert.deepEqual(cmd.subscribe, { channel: 'room', recover: true, epoch: 'E', offset: 6 });
    ws1.deliver({ id: cmd.id, subscribe: { recoverable: true, epoch: 'E', offset: 7, was_recovering: true, recovered: true, publications: [{ offset: 7, data: 7 }] } });
    assert.deepEqual(got.pubs, [6, 7]);
    assert.deepEqual({ ...got.subscribed.at(-1), position: undefined }, { channel: 'room', recoverable: true, wasRecovering: true, recovered: true, streamReset: false, recoveredCount: 1, position: undefined, filtered: false, delta: false, ack: false, conflated: false });
    client.disconnect();
  });

  test('server-side subscriptions: positions in connect, recovered first, duplicates dropped, a gap reconnects', async () => {
    const { client, sockets } = fakeClient();
    const pubs = [];
    const subscribed = [];
    client.on('publication', (p) => pubs.push(p.offset));
    client.on('subscribed', (e) => subscribed.push(e));
    client.connect();
    const ws = await acceptConnect(sockets, 0, { subs: { feed: { recoverable: true, epoch: 'E', offset: 2 } } });
    assert.equal(ws.commands('connect')[0].connect.subs, undefined);
    assert.equal(subscribed[0].channel, 'feed');
    ws.deliver({ pub: { channel: 'feed', offset: 3, data: 1 } });
    ws.deliver({ pub: { channel: 'feed', offset: 3, data: 1 } }); // duplicate
    ws.deliver({ pub: { channel: 'feed', offset: 5, data: 1 } }); // 4 is missing: reconnect
    ws.deliver({ pub: { channel: 'feed', offset: 6, data: 1 } }); // ignored: that connection is gone
    assert.deepEqual(pubs, [3]);
    const ws1 = await waitFor(() => sockets[1], { message: 'reconnect after the gap' });
    const cmd = await ws1.waitCommand('connect');
    assert.deepEqual(cmd.connect.subs, { feed: { channel: 'feed', recover: true, epoch: 'E', offset: 3 } });
    ws1.deliver({
      id: cmd.id,
      connect: {
        client: 'c1', version: '0.1.0', ping: 25,
        subs: { feed: { recoverable: true, epoch: 'E', offset: 6, was_recovering: true, recovered: true, publications: [4, 5, 6].map((o) => ({ offset: o, data: o })) } },
      },
    });
    ws1.deliver({ pub: { channel: 'feed', offset: 6, data: 1 } }); // already recovered
    ws1.deliver({ pub: { channel: 'feed', offset: 7, data: 1 } });
    assert.deepEqual(pubs, [3, 4, 5, 6, 7]);
    assert.deepEqual(
      (({ wasRecovering, recovered, recoveredCount }) => ({ wasRecovering, recovered, recoveredCount }))(subscribed.at(-1)),
      { wasRecovering: true, recovered: true, recoveredCount: 3 },
    );

    // A refused position (the token no longer grants the channel): connect
    // again on the same socket without positions.
    ws1.serverClose(1006);
    const ws2 = await waitFor(() => sockets[2], { message: 'reconnect' });
    const c1 = await ws2.waitCommand('connect');
    assert.equal(c1.connect.subs.feed.offset, 7);
    ws2.deliver({ id: c1.id, error: { code: 103, message: 'permission denied' } });
    const c2 = await ws2.waitCommand('connect', 2);
    assert.equal(c2.connect.subs, undefined);
    ws2.deliver({ id: c2.id, connect: { client: 'c2', version: '0.1.0', ping: 25, subs: { feed: { recoverable: true, epoch: 'E', offset: 8 } } } });
    await waitFor(() => client.state === 'connected');
    ws2.deliver({ pub: { channel: 'feed', offset: 9, data: 1 } }); // from the new position on
    assert.deepEqual(pubs, [3, 4, 5, 6, 7, 9]);
    client.disconnect();
  });

  test('subscribe push: a server-side subscription added after connect, asked for at reconnect; unsubscribe push forgets it', async () => {
    const { client, sockets } = fakeClient();
    const pubs = [];
    const subscribed = [];
    const unsubscribed = [];
    client.on('publication', (p) => pubs.push(`${p.channel}@${p.offset}`));
    client.on('subscribed', (e) => subscribed.push(e));
    client.on('unsubscribed', (e) => unsubscribed.push(e));
    client.connect();
    const ws = await acceptConnect(sockets, 0);
    ws.deliver({ pub: { channel: 'api:a', offset: 1, data: 1 } }); // not subscribed: dropped
    ws.deliver({ subscribe: { channel: 'api:a', recoverable: true, epoch: 'E', offset: 1 } });
    ws.deliver({ subscribe: { channel: 'api:nohistory' } });
    assert.deepEqual(subscribed.map((e) => [e.channel, e.recoverable, e.wasRecovering, e.position?.offset]), [
      ['api:a', true, false, 1],
      ['api:nohistory', false, false, undefined],
    ]);
    ws.deliver({ pub: { channel: 'api:a', offset: 2, data: 1 } });
    ws.deliver({ pub: { channel: 'api:a', offset: 2, data: 1 } }); // duplicate
    ws.deliver({ pub: { channel: 'api:nohistory', data: 1 } });
    assert.deepEqual(pubs, ['api:a@2', 'api:nohistory@0']);

    // A cut connection: both channels are asked for, with the position of
    // the one with history, and what was missed comes first.
    ws.serverClose(1006);
    const ws1 = await waitFor(() => sockets[1], { message: 'reconnect' });
    const c1 = await ws1.waitCommand('connect');
    assert.deepEqual(c1.connect.subs, {
      'api:a': { channel: 'api:a', recover: true, epoch: 'E', offset: 2 },
      'api:nohistory': { channel: 'api:nohistory' },
    });
    ws1.deliver({
      id: c1.id,
      connect: {
        client: 'c1', version: '0.1.0', ping: 25,
        subs: {
          'api:a': { recoverable: true, epoch: 'E', offset: 4, was_recovering: true, recovered: true, publications: [3, 4].map((o) => ({ offset: o, data: o })) },
          'api:nohistory': {},
        },
      },
    });
    ws1.deliver({ pub: { channel: 'api:a', offset: 5, data: 1 } });
    assert.deepEqual(pubs, ['api:a@2', 'api:nohistory@0', 'api:a@3', 'api:a@4', 'api:a@5']);
    assert.equal(subscribed.at(-2).recovered, true);

    // The server ends them: reported with the code, then forgotten.
    ws1.deliver({ unsubscribe: { channel: 'api:a', code: 2000, reason: 'bye' } });
    ws1.deliver({ unsubscribe: { channel: 'api:nohistory', code: 2500, reason: 'again' } });
    ws1.deliver({ unsubscribe: { channel: 'never-subscribed', code: 2000 } });
    ws1.deliver({ pub: { channel: 'api:a', offset: 6, data: 1 } }); // raced the unsubscribe: dropped
    assert.deepEqual(unsubscribed, [
      { channel: 'api:a', code: 2000, reason: 'bye', resubscribe: false, position: { epoch: 'E', offset: 5 } },
      { channel: 'api:nohistory', code: 2500, reason: 'again', resubscribe: true },
    ]);
    assert.equal(pubs.length, 5);
    ws1.serverClose(1006);
    const ws2 = await waitFor(() => sockets[2], { message: 'reconnect' });
    const c2 = await ws2.waitCommand('connect');
    assert.equal(c2.connect.subs, undefined);
    client.disconnect();
  });

  test('unsubscribe push on a subscription: 2000 ends it, 2500 resubscribes with recovery', async () => {
    const { client, ws, sub, got } = await subscribed();
    const subscribing = [];
    const unsubscribed = [];
    const serverSide = [];
    sub.on('subscribing', (e) => subscribing.push(e));
    sub.on('unsubscribed', (e) => unsubscribed.push(e));
    client.on('unsubscribed', (e) => serverSide.push(e));
    ws.deliver({ pub: { channel: 'room', offset: 6, data: 1 } });
    ws.deliver({ unsubscribe: { channel: 'room', code: 2500, reason: 'move' } });
    assert.equal(sub.state, 'subscribing');
    assert.deepEqual(subscribing, [{ channel: 'room', code: 2500, reason: 'move' }]);
    const re = await ws.waitCommand('subscribe', 2);
    assert.deepEqual(re.subscribe, { channel: 'room', recover: true, epoch: 'E', offset: 6 });
    assert.equal(ws.commands('unsubscribe').length, 0, 'the server unsubscribed already');
    ws.deliver({ id: re.id, subscribe: { recoverable: true, epoch: 'E', offset: 7, was_recovering: true, recovered: true, publications: [{ offset: 7, data: 7 }] } });
    ws.deliver({ pub: { channel: 'room', offset: 8, data: 1 } });
    assert.deepEqual(got.pubs, [6, 7, 8]);
    assert.equal(sub.state, 'subscribed');
    assert.equal(got.subscribed.at(-1).recovered, true);

    ws.deliver({ unsubscribe: { channel: 'room', code: 2000, reason: 'gone' } });
    ws.deliver({ pub: { channel: 'room', offset: 9, data: 1 } });
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(unsubscribed, [{ channel: 'room', code: 2000, reason: 'gone' }]);
    assert.deepEqual(got.pubs, [6, 7, 8]);
    assert.equal(ws.commands('subscribe').length, 2, 'no resubscribe after 2000');
    assert.deepEqual(serverSide, [], 'a client subscription is not reported as server-side');
    await assert.rejects(sub.ready(), /not subscribed/);
    client.disconnect();
  });

  for (const codec of ['json', 'msgpack']) {
    test(`message push: data decoded as publications' data (${codec})`, async () => {
      const msgpack = codec === 'msgpack' ? { encode: mpEncode, decode: mpDecode } : undefined;
      const { client, sockets } = fakeClient({ codec, msgpack });
      const got = [];
      client.on('message', (e) => got.push(e.data));
      client.connect();
      const ws = await acceptConnect(sockets, 0);
      assert.deepEqual(ws.protocols, [`herald.${codec}`]);
      const te = new TextEncoder();
      if (codec === 'json') {
        ws.deliver({ message: { data: { k: [1, 'v'] } } });
        ws.deliver({ message: { data: 'AAEC/w==', b64: true } });
        ws.deliver({ message: { data: 'AAEC/w==' } }); // a string, not bytes
      } else {
        ws.deliver({ message: { data: te.encode('{"k":[1,"v"]}') } });
        ws.deliver({ message: { data: new Uint8Array([0, 1, 2, 255]) } });
        ws.deliver({ message: { data: te.encode('"AAEC/w=="') } });
      }
      assert.deepEqual(got, [{ k: [1, 'v'] }, new Uint8Array([0, 1, 2, 255]), 'AAEC/w==']);
      client.disconnect();
    });
  }

  test('a restarted stream (new epoch) is recovered from its start', async () => {
    const { client, sockets, ws, got } = await subscribed();
    ws.serverClose(1006);
    const ws1 = await acceptConnect(sockets, 1);
    const c1 = await ws1.waitCommand('subscribe');
    ws1.deliver({ id: c1.id, subscribe: { recoverable: true, epoch: 'F', offset: 2, was_recovering: true, recovered: false } });
    const c2 = await ws1.waitCommand('subscribe', 2);
    assert.deepEqual(c2.subscribe, { channel: 'room', recover: true, epoch: 'F', offset: 0 });
    ws1.deliver({ id: c2.id, subscribe: { recoverable: true, epoch: 'F', offset: 2, was_recovering: true, recovered: true, publications: [{ offset: 1 }, { offset: 2 }] } });
    assert.deepEqual(got.pubs, [1, 2]);
    const ev = got.subscribed.at(-1);
    assert.equal(ev.streamReset, true);
    assert.equal(ev.recovered, false);
    assert.equal(ev.recoveredCount, 2);
    client.disconnect();
  });

  test('permanent subscribe errors end the subscription; temporary ones retry', async () => {
    const f = fakeClient();
    f.client.connect();
    const ws = await acceptConnect(f.sockets, 0);
    const sub = f.client.newSubscription('secret');
    const errors = [];
    sub.on('error', (e) => errors.push(e.error.code));
    const p = sub.subscribe();
    const c1 = await ws.waitCommand('subscribe');
    ws.deliver({ id: c1.id, error: { code: 100, message: 'internal', temporary: true } });
    const c2 = await ws.waitCommand('subscribe', 2);
    ws.deliver({ id: c2.id, error: { code: 103, message: 'permission denied' } });
    await assert.rejects(p, (e) => e.code === 103);
    assert.equal(sub.state, 'unsubscribed');
    assert.deepEqual(errors, [100, 103]);
    f.client.disconnect();
  });
});

describe('ready()', { timeout: 15000 }, () => {
  test('client: a timeout rejects one waiter; connecting resolves the others; disconnect() rejects', async () => {
    const { client, sockets } = fakeClient();
    client.connect();
    const untimed = client.ready();
    const long = client.ready(10000);
    await assert.rejects(client.ready(20), (e) => e instanceof TimeoutError && e.message === 'herald: not connected within timeout');
    await acceptConnect(sockets, 0);
    await untimed;
    await long;
    assert.equal(client.state, 'connected');
    await client.ready(20);
    const { client: other } = fakeClient();
    other.connect();
    const pending = other.ready(10000);
    other.disconnect();
    await assert.rejects(pending, (e) => e instanceof DisconnectedError && e.message === 'herald: disconnect called');
  });

  test('subscription: a timeout rejects one waiter; subscribing resolves the others; unsubscribe() rejects', async () => {
    const f = fakeClient();
    f.client.connect();
    const sub = f.client.newSubscription('room');
    sub.subscribe();
    const long = sub.ready(10000);
    await assert.rejects(sub.ready(20), (e) => e instanceof TimeoutError && e.message === 'herald: subscribe timeout');
    const ws = await acceptConnect(f.sockets, 0);
    const cmd = await ws.waitCommand('subscribe');
    ws.deliver({ id: cmd.id, subscribe: {} });
    await long;
    assert.equal(sub.state, 'subscribed');
    const other = f.client.newSubscription('other');
    other.subscribe();
    const pending = other.ready(10000);
    other.unsubscribe();
    await assert.rejects(pending, /herald: unsubscribed/);
    await assert.rejects(other.ready(), /not subscribed/);
  });
});
