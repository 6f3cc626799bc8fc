// An in-memory WebSocket for unit tests of the client state machine: the
// test plays the server, reading the commands the client sent and feeding
// replies and pushes. With msgpack ({encode, decode}) it carries
// MessagePack in binary frames instead of JSON in text frames.

import { waitFor } from './helpers.mjs';

export function fakeWebSocket({ msgpack } = {}) {
  const sockets = [];
  class FakeWS {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = Array.isArray(protocols) ? protocols[0] : protocols;
      this.readyState = 0;
      this.binaryType = 'blob';
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      this.closedByClient = null;
      this.createdAt = Date.now();
      sockets.push(this);
      setTimeout(() => {
        if (this.readyState !== 0) return;
        if (FakeWS.refuse) {
          this.serverClose(1006);
          return;
        }
        this.readyState = 1;
        this.onopen?.({});
      }, 0);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('not open');
      this.sent.push(msgpack ? msgpack.decode(data) : JSON.parse(data));
    }
    close(code) {
      if (this.readyState >= 2) return;
      this.readyState = 3;
      this.closedByClient = code ?? 1005;
      setTimeout(() => this.onclose?.({ code: 1005, reason: '' }), 0);
    }
    // ---- the test's side ----
    deliver(msg) {
      if (!msgpack) {
        this.onmessage?.({ data: JSON.stringify(msg) });
        return;
      }
      const b = msgpack.encode(msg);
      this.onmessage?.({ data: b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) });
    }
    serverClose(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    commands(method) {
      return this.sent.filter((c) => method in c);
    }
    async waitCommand(method, n = 1) {
      return waitFor(() => this.commands(method).length >= n && this.commands(method)[n - 1], { timeout: 3000, message: `command ${method} #${n}` });
    }
  }
  return { ctor: FakeWS, sockets };
}

/** Waits for socket i, answers its connect and returns it. */
export async function acceptConnect(sockets, i, result = {}) {
  const ws = await waitFor(() => sockets[i], { timeout: 3000, message: `socket #${i}` });
  const cmd = await ws.waitCommand('connect');
  ws.deliver({ id: cmd.id, connect: { client: `c${i}`, version: '0.1.0', ping: 25, ...result } });
  return ws;
}
