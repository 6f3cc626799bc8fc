// HTTP streaming: the fallback for networks that break WebSocket upgrades.
// The server's messages come as the body of one long GET /stream response,
// one JSON message per line, read with fetch streams; commands go as POST
// /stream/send, numbered so that the server runs them in order whichever
// node of a cluster takes each POST. HttpStreamSocket wraps this in the
// WebSocket surface the client uses, so the client runs the same protocol
// on either.

import type { WebSocketLike } from './types.js';

/** The stream and send URLs for a client URL (ws://HOST/ws → http://HOST/stream). */
export function streamUrls(url: string): { stream: string; send: string } {
  const u = new URL(url);
  if (u.protocol === 'ws:') u.protocol = 'http:';
  else if (u.protocol === 'wss:') u.protocol = 'https:';
  if (u.pathname.endsWith('/ws')) u.pathname = u.pathname.slice(0, -3) + '/stream';
  else if (!u.pathname.endsWith('/stream')) u.pathname = u.pathname.replace(/\/$/, '') + '/stream';
  u.search = '';
  u.hash = '';
  const stream = u.toString();
  u.pathname += '/send';
  return { stream, send: u.toString() };
}

/** The most commands one POST carries (the server takes 100). */
const MAX_BATCH = 100;

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * One HTTP-streaming connection with the surface of a WebSocket: open,
 * message (one per line), close; send queues a command for the next POST.
 */
export class HttpStreamSocket implements WebSocketLike {
  binaryType = 'arraybuffer';
  readonly protocol = 'herald.json';
  readyState = 0;
  onopen: ((ev: unknown) => void) | null = null;
  onmessage: ((ev: { data: unknown }) => void) | null = null;
  onclose: ((ev: { code: number; reason: string }) => void) | null = null;
  onerror: ((ev: unknown) => void) | null = null;

  #ctrl = new AbortController();
  #sendUrl: string;
  #session = '';
  #queue: string[] = [];
  #seq = 0;
  #sending = false;
  #closed = false;
  #code = 1006;
  #reason = 'connection lost';

  constructor(url: string) {
    const u = streamUrls(url);
    this.#sendUrl = u.send;
    void this.#run(u.stream);
  }

  async #run(url: string): Promise<void> {
    let resp: Response;
    try {
      resp = await fetch(url, { signal: this.#ctrl.signal, cache: 'no-store', headers: { Accept: 'application/x-ndjson' } });
    } catch {
      this.#finish(1006, 'stream request failed');
      return;
    }
    const session = resp.headers.get('Herald-Session');
    if (!resp.ok || !resp.body || !session) {
      this.#finish(1006, `stream request answered HTTP ${resp.status}`);
      return;
    }
    if (this.#closed) return;
    this.#session = session;
    this.readyState = 1;
    this.onopen?.({});
    void this.#flush();
    const reader = resp.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += dec.decode(value, { stream: true });
        let i: number;
        while ((i = buf.indexOf('\n')) >= 0) {
          const line = buf.slice(0, i).trim();
          buf = buf.slice(i + 1);
          if (line && !this.#closed) this.#line(line);
        }
      }
    } catch {
      // aborted or lost: the close below says so
    }
    this.#finish(this.#code, this.#reason);
  }

  #line(line: string): void {
    if (line.startsWith('{"disconnect":')) {
      // The stream ends after it: close with its code, as a WebSocket would.
      try {
        const d = (JSON.parse(line) as { disconnect: { code: number; reason?: string } }).disconnect;
        this.#code = d.code;
        this.#reason = d.reason ?? '';
      } catch {
        // the client reports the undecodable message itself
      }
    }
    this.onmessage?.({ data: line });
  }

  send(data: string | Uint8Array): void {
    if (this.readyState !== 1) throw new Error('herald: HTTP stream not open');
    this.#queue.push(typeof data === 'string' ? data : new TextDecoder().decode(data));
    void this.#flush();
  }

  /** Posts the queued commands, one POST at a time, in order. */
  async #flush(): Promise<void> {
    if (this.#sending || !this.#session) return;
    this.#sending = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const batch = this.#queue.splice(0, MAX_BATCH);
        const seq = ++this.#seq;
        if (!(await this.#post(seq, batch.join('\n')))) {
          this.#finish(1006, 'commands could not be sent');
          return;
        }
      }
    } finally {
      this.#sending = false;
    }
  }

  /** One POST, retried with the same number (the server runs it once). */
  async #post(seq: number, body: string): Promise<boolean> {
    const url = `${this.#sendUrl}?session=${encodeURIComponent(this.#session)}&seq=${seq}`;
    for (let attempt = 0; attempt < 5; attempt++) {
      if (attempt > 0) await sleep(100 * attempt);
      if (this.#closed) return false;
      try {
        // text/plain keeps a cross-origin POST a simple request (no preflight).
        const r = await fetch(url, { method: 'POST', body, headers: { 'Content-Type': 'text/plain' }, signal: this.#ctrl.signal });
        if (r.status < 300) return true;
        if (r.status !== 429 && r.status < 500) return false;
      } catch {
        if (this.#closed) return false;
      }
    }
    return false;
  }

  close(code = 1000, reason = ''): void {
    this.#finish(code, reason);
  }

  #finish(code: number, reason: string): void {
    if (this.#closed) return;
    this.#closed = true;
    this.readyState = 3;
    this.#ctrl.abort();
    this.onclose?.({ code, reason });
  }
}
