// The Herald client: one WebSocket at a time, kept up by itself. It
// reconnects with full-jitter exponential backoff (at least the server's
// reconnect_after), stops on terminal codes, answers server pings, treats a
// connection silent for ping + margin as dead, refreshes an expiring token
// over the open connection, pauses while the browser is offline, and
// resubscribes every subscription with recovery after each reconnect.
//
// Every message of a connection is handled synchronously, in arrival order:
// a subscribe reply (with its recovered publications) is fully processed
// before any later publication, as docs/protocol.md requires.

import { reconnectDelay, reconnects } from './backoff.js';
import { jsonCodec, msgpackCodec, loadMsgpack, decodePublication, decodeClientInfo, type Codec } from './codec.js';
import { Emitter } from './emitter.js';
import { DisconnectCode, DisconnectedError, ErrorCode, HeraldError, TerminalError, TimeoutError, UnauthorizedError } from './errors.js';
import { Subscription, subscribeOutcome, type SubHost, type ConnHandle } from './subscription.js';
import { classifyOffset } from './gap.js';
import { Waiters, rejected } from './waiters.js';
import type {
  ClientInfo,
  ConnectedEvent,
  DisconnectEvent,
  HeraldOptions,
  HistoryOptions,
  HistoryResult,
  MessagePushEvent,
  PresenceStats,
  Publication,
  PublishOptions,
  ServerUnsubscribedEvent,
  State,
  StateEvent,
  StreamPosition,
  SubscribedEvent,
  SubscriptionOptions,
  Transport,
  WebSocketConstructor,
  WebSocketLike,
  WireCommand,
  WireServerMessage,
  WireSubscribeRequest,
} from './types.js';

/** The SDK version, sent in connect. */
import { HttpStreamSocket } from './httpstream.js';

export const VERSION = '0.1.0';

type Timer = ReturnType<typeof setTimeout>;

export interface ClientEvents {
  state: StateEvent;
  /** Connecting again after a connection ended (code and reason of the end). */
  connecting: { code: number; reason: string };
  connected: ConnectedEvent;
  /** A connection ended (or the client stopped); reconnect tells what follows. */
  disconnect: DisconnectEvent;
  /** Something failed that the client handles by itself (retry, reconnect). */
  error: { type: 'transport' | 'connect' | 'token' | 'refresh' | 'codec'; error: Error };
  /**
   * Publications of server-side subscriptions: channels the server
   * subscribed the connection to, at connect (token `channels` claim) or
   * later (server API `subscribe`).
   */
  publication: Publication;
  join: { channel: string; info: ClientInfo };
  leave: { channel: string; info: ClientInfo };
  /**
   * A server-side subscription: made at connect (and after each
   * reconnect, with wasRecovering and recovered) or added later by a
   * `subscribe` push. Before any of its publications.
   */
  subscribed: SubscribedEvent;
  /** The server ended a server-side subscription. */
  unsubscribed: ServerUnsubscribedEvent;
  /** A `message` push: data sent to this connection alone. */
  message: MessagePushEvent;
}

interface Pending {
  resolve: (m: WireServerMessage) => void;
  fail: (err: Error) => void;
  timer: Timer;
}

/** One WebSocket connection. */
class Conn {
  readonly ws: WebSocketLike;
  readonly codec: Codec;
  transport: Transport = 'websocket';
  readonly pending = new Map<number, Pending>();
  /** The connect reply was received. */
  connected = false;
  ended = false;
  pingMs = 0;
  lastRecv = 0;
  /** A token refresh is in flight. */
  refreshing = false;
  timer: Timer | undefined; // connect timeout, then the dead-connection watchdog
  constructor(ws: WebSocketLike, codec: Codec) {
    this.ws = ws;
    this.codec = codec;
  }
}

const noop = (): void => {};

/** A Herald client. Create it, add subscriptions, call connect(). */
export class Herald extends Emitter<ClientEvents> {
  readonly url: string;
  #opts: HeraldOptions;
  #ctor: WebSocketConstructor | undefined;
  #transports: Transport[];
  /** The transport of the next attempt: an index in #transports. */
  #ti = 0;
  #fallbackMs: number;
  #baseMs: number;
  #maxMs: number;
  #timeoutMs: number;
  #marginMs: number;
  #state: State = 'disconnected';
  #conn: Conn | null = null;
  #subs = new Map<string, Subscription>();
  /**
   * The server-side subscriptions and their positions (null for a channel
   * without history): the next connect sends them so that the server
   * restores them and recovers what was missed.
   */
  #serverSubs = new Map<string, StreamPosition | null>();
  /** Server-side subscriptions whose offsets skip on purpose (filtered, conflated). */
  #serverSkips = new Set<string>();
  #nextId = 0;
  #attempt = 0;
  /** connect() was called and neither disconnect() nor a terminal code followed. */
  #active = false;
  /** Bumped by connect() and disconnect(): stale async steps check it. */
  #gen = 0;
  #reconnectTimer: Timer | undefined;
  #refreshTimer: Timer | undefined;
  #token: string;
  #codec: Codec | undefined;
  #clientId = '';
  #waiters = new Waiters();
  #offline = false;
  /** The generation whose #open is getting a codec or token (no socket yet); -1: none. */
  #opening = -1;
  #net: { online: () => void; offline: () => void } | null = null;
  #host: SubHost;

  constructor(url: string, opts: HeraldOptions = {}) {
    super();
    this.url = url;
    this.#opts = { ...opts };
    const ctor = opts.websocket ?? (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
    let transports = [...(opts.transports ?? ['websocket', 'http-stream'])];
    if (opts.codec === 'msgpack') transports = transports.filter((t) => t !== 'http-stream');
    if (!ctor) transports = transports.filter((t) => t !== 'websocket');
    if (typeof fetch !== 'function') transports = transports.filter((t) => t !== 'http-stream');
    if (transports.length === 0) {
      throw new Error('herald: no usable transport in this environment; pass the websocket option (e.g. WebSocket from the ws package)');
    }
    this.#ctor = ctor;
    this.#transports = transports;
    this.#fallbackMs = opts.fallbackTimeoutMs ?? 5000;
    this.#baseMs = opts.reconnect?.baseMs ?? 200;
    this.#maxMs = opts.reconnect?.maxMs ?? 20000;
    this.#timeoutMs = opts.timeoutMs ?? 10000;
    this.#marginMs = opts.pingMarginMs ?? 10000;
    this.#token = opts.token ?? '';
    if (opts.codec === 'msgpack' && opts.msgpack) this.#codec = msgpackCodec(opts.msgpack);
    else if (opts.codec !== 'msgpack') this.#codec = jsonCodec;
    this.#host = this.#makeHost();
  }

  get state(): State {
    return this.#state;
  }

  /** The transport of the current connection, or of the next attempt. */
  get transport(): Transport {
    return this.#conn?.transport ?? this.#transports[this.#ti]!;
  }

  /** The client id of the current connection ('' before the first connect). */
  get clientId(): string {
    return this.#clientId;
  }

  /**
   * Connects, and keeps reconnecting until disconnect() or a terminal code.
   * The promise resolves when connected and rejects if the client stops
   * first (TerminalError, DisconnectedError); awaiting it is optional.
   */
  connect(): Promise<void> {
    if (!this.#active) {
      this.#active = true;
      this.#gen++;
      this.#attempt = 0;
      this.#listenNetwork();
      this.#setState('connecting');
      this.#startAttempt();
    }
    return this.ready();
  }

  /** Closes the connection and stops reconnecting. Subscriptions keep their positions. */
  disconnect(): void {
    const wasActive = this.#active;
    this.#active = false;
    this.#gen++;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#refreshTimer);
    this.#flushAcks();
    this.#unlistenNetwork();
    const conn = this.#conn;
    this.#conn = null;
    const ev: DisconnectEvent = { code: DisconnectCode.Normal, reason: 'disconnect called', reconnect: false };
    if (conn) {
      this.#teardown(conn);
      if (conn.connected) for (const s of this.#subs.values()) s._connectionLost(ev.code, ev.reason);
    }
    this.#setState('disconnected');
    if (wasActive) this.emit('disconnect', ev);
    const err = new DisconnectedError('herald: disconnect called');
    this.#waiters.rejectAll(err);
    for (const s of this.#subs.values()) s._clientStopped(err);
  }

  /** Resolves when connected; rejects when the client stops, or after timeoutMs. */
  ready(timeoutMs?: number): Promise<void> {
    if (this.#state === 'connected') return Promise.resolve();
    if (!this.#active) return rejected(new DisconnectedError('herald: not connected (call connect())'));
    return this.#waiters.wait(timeoutMs, 'herald: not connected within timeout');
  }

  /** Creates a subscription (one per channel); call its subscribe(). */
  newSubscription(channel: string, opts: SubscriptionOptions = {}): Subscription {
    if (this.#subs.has(channel)) throw new Error(`herald: a subscription to ${channel} exists already`);
    const s = new Subscription(this.#host, channel, opts);
    this.#subs.set(channel, s);
    return s;
  }

  getSubscription(channel: string): Subscription | undefined {
    return this.#subs.get(channel);
  }

  /** Unsubscribes and forgets the subscription. */
  removeSubscription(sub: Subscription): void {
    sub.unsubscribe();
    if (this.#subs.get(sub.channel) === sub) this.#subs.delete(sub.channel);
  }

  subscriptions(): Subscription[] {
    return [...this.#subs.values()];
  }

  /** Publishes data into channel as this client; returns the position it got. */
  async publish(channel: string, data: unknown, opts: PublishOptions = {}): Promise<StreamPosition> {
    const res = (await this.#command('publish', (c) => ({
      channel,
      data: c.encodeData(data),
      idempotency_key: opts.idempotencyKey || undefined,
    }))) as { epoch?: string; offset?: number };
    return { epoch: res.epoch ?? '', offset: res.offset ?? 0 };
  }

  /** Reads a channel's history. */
  async history(channel: string, opts: HistoryOptions = {}): Promise<HistoryResult> {
    const res = (await this.#command('history', () => ({
      channel,
      since: opts.since,
      limit: opts.limit || undefined,
      reverse: opts.reverse || undefined,
      filter: opts.filter || undefined,
    }))) as NonNullable<WireServerMessage['history']>;
    const codec = this.#codec ?? jsonCodec;
    return {
      publications: (res.publications ?? []).map((p) => decodePublication(codec, p, channel)),
      epoch: res.epoch ?? '',
      offset: res.offset ?? 0,
    };
  }

  /** The channel's members by client id. */
  async presence(channel: string): Promise<Record<string, ClientInfo>> {
    const res = (await this.#command('presence', () => ({ channel }))) as NonNullable<WireServerMessage['presence']>;
    const out: Record<string, ClientInfo> = {};
    const codec = this.#codec ?? jsonCodec;
    for (const [id, info] of Object.entries(res.presence ?? {})) out[id] = decodeClientInfo(codec, info)!;
    return out;
  }

  /** Numbers of connections and distinct users in the channel. */
  async presenceStats(channel: string): Promise<PresenceStats> {
    const res = (await this.#command('presence_stats', () => ({ channel }))) as NonNullable<WireServerMessage['presence_stats']>;
    return { numClients: res.num_clients ?? 0, numUsers: res.num_users ?? 0 };
  }

  /** Calls an application method on the server. */
  async rpc(method: string, data?: unknown): Promise<unknown> {
    const res = (await this.#command('rpc', (c) => ({
      method,
      data: data === undefined ? undefined : c.encodeData(data),
    }))) as NonNullable<WireServerMessage['rpc']>;
    const codec = this.#codec ?? jsonCodec;
    return res.data === undefined ? null : codec.decodeData(res.data);
  }

  /** A round trip to the server. */
  async ping(): Promise<void> {
    await this.#command('ping', () => ({}));
  }

  // ---- connection lifecycle ----

  #setState(s: State): void {
    const previous = this.#state;
    if (previous === s) return;
    this.#state = s;
    this.emit('state', { state: s, previous });
  }

  #startAttempt(): void {
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = undefined;
    if (!this.#active || this.#conn || this.#opening === this.#gen) return;
    if (this.#offline) return; // the `online` event starts the next attempt
    const gen = this.#gen;
    this.#opening = gen;
    void this.#open().finally(() => {
      if (this.#opening === gen) this.#opening = -1;
    });
  }

  async #open(): Promise<void> {
    const gen = this.#gen;
    this.#setState('connecting');
    if (!this.#codec) {
      try {
        this.#codec = msgpackCodec(await loadMsgpack());
      } catch (err) {
        if (gen !== this.#gen) return;
        this.emit('error', { type: 'codec', error: err as Error });
        this.#stop({ code: DisconnectCode.BadRequest, reason: (err as Error).message, reconnect: false });
        return;
      }
    }
    if (!this.#token && this.#opts.getToken) {
      let token: string;
      try {
        token = await this.#opts.getToken();
      } catch (err) {
        if (gen !== this.#gen) return;
        this.#tokenFailed(err, null);
        return;
      }
      if (gen !== this.#gen) return;
      this.#token = token;
    }
    if (gen !== this.#gen || !this.#active || this.#conn) return;
    const codec = this.#codec;
    let ws: WebSocketLike;
    const transport = this.#transports[this.#ti]!;
    try {
      ws = transport === 'http-stream' ? new HttpStreamSocket(this.url) : (new this.#ctor!(this.url, [codec.subprotocol]) as WebSocketLike);
    } catch (err) {
      this.emit('error', { type: 'transport', error: err as Error });
      this.#stop({ code: DisconnectCode.BadRequest, reason: `cannot open WebSocket: ${(err as Error).message}`, reconnect: false });
      return;
    }
    const conn = new Conn(ws, codec);
    conn.transport = transport;
    this.#conn = conn;
    ws.binaryType = 'arraybuffer';
    // With a transport to fall back to, an attempt that stays silent gives
    // way sooner.
    const limit = this.#transports.length > 1 ? Math.min(this.#fallbackMs, this.#timeoutMs) : this.#timeoutMs;
    conn.timer = setTimeout(() => this.#lost(conn, 'connect timeout'), limit);
    ws.onopen = () => {
      if (this.#conn === conn) this.#sendConnect(conn, false);
    };
    ws.onmessage = (ev) => this.#onFrame(conn, ev.data);
    ws.onclose = (ev) => {
      const code = ev.code || DisconnectCode.ConnectionLost;
      this.#ended(conn, { code, reason: ev.reason || 'connection closed', reconnect: reconnects(code) });
    };
    ws.onerror = noop; // a close event follows
  }

  /** getToken failed: stop on UnauthorizedError, else retry with backoff. */
  #tokenFailed(err: unknown, conn: Conn | null): void {
    const e = err instanceof Error ? err : new Error(String(err));
    this.emit('error', { type: 'token', error: e });
    const ev: DisconnectEvent = { code: DisconnectCode.Unauthorized, reason: e.message, reconnect: false };
    if (e instanceof UnauthorizedError) {
      if (conn) this.#ended(conn, ev);
      else this.#stop(ev);
      return;
    }
    if (conn) this.#lost(conn, 'getToken failed');
    else this.#scheduleReconnect(0);
  }

  #sendConnect(conn: Conn, retried: boolean, positions = true): void {
    const req: { token?: string; name: string; version: string; subs?: Record<string, WireSubscribeRequest> } = {
      token: this.#token || undefined,
      name: this.#opts.name ?? 'herald-js',
      version: VERSION,
    };
    const withPositions = positions && this.#serverSubs.size > 0;
    if (withPositions) {
      req.subs = {};
      for (const [channel, pos] of this.#serverSubs) {
        req.subs[channel] = pos ? { channel, recover: true, epoch: pos.epoch, offset: pos.offset } : { channel };
      }
    }
    this.#send(
      conn,
      { connect: req },
      (m) => this.#onConnectReply(conn, m, retried, withPositions),
      (err) => this.#lost(conn, err.message),
    );
  }

  #onConnectReply(conn: Conn, m: WireServerMessage, retried: boolean, withPositions: boolean): void {
    if (this.#conn !== conn) return;
    if (m.error && withPositions && m.error.code !== ErrorCode.TokenExpired) {
      // A server-side subscription's position was refused (e.g. the token
      // no longer grants the channel): connect on this socket without them.
      this.#sendConnect(conn, retried, false);
      return;
    }
    if (m.error) {
      const getToken = this.#opts.getToken;
      if (m.error.code === ErrorCode.TokenExpired) {
        if (!getToken) {
          this.#ended(conn, { code: DisconnectCode.TokenExpired, reason: 'token expired', reconnect: false });
          return;
        }
        this.#token = '';
        if (retried) {
          // A fresh token that is expired already: back off and ask again.
          this.#lost(conn, 'token expired');
          return;
        }
        // The session still waits for connect: retry on this socket.
        getToken().then(
          (t) => {
            if (this.#conn !== conn) return;
            this.#token = t;
            this.#sendConnect(conn, true);
          },
          (err) => {
            if (this.#conn === conn) this.#tokenFailed(err, conn);
          },
        );
        return;
      }
      this.emit('error', { type: 'connect', error: new HeraldError(m.error) });
      this.#lost(conn, `connect refused: ${m.error.message}`);
      return;
    }
    const res = m.connect ?? { client: '', version: '' };
    clearTimeout(conn.timer);
    conn.connected = true;
    conn.pingMs = (res.ping ?? 0) * 1000;
    conn.lastRecv = Date.now();
    this.#watch(conn);
    this.#clientId = res.client;
    this.#attempt = 0;
    this.#setState('connected');
    const ev: ConnectedEvent = { client: res.client, version: res.version, ping: res.ping ?? 0, expires: !!res.expires };
    if (res.expires) ev.ttl = res.ttl ?? 0;
    this.emit('connected', ev);
    if (res.expires) this.#scheduleRefresh(conn, res.ttl ?? 0);
    this.#serverSubs.clear();
    for (const [channel, r] of Object.entries(res.subs ?? {})) this.#serverSubscribed(conn, channel, r);
    // Resubscribe before the commands that waited for the connection, so
    // that (for example) a queued publish follows the subscribe.
    for (const s of this.#subs.values()) {
      if (this.#conn !== conn) return;
      s._subscribeOn(conn);
    }
    this.#waiters.resolveAll();
  }

  /**
   * A server-side subscription, from a connect result or a subscribe
   * push: record it and its position, report it, then deliver the
   * publications a reconnect recovered (before any later push).
   */
  #serverSubscribed(conn: Conn, channel: string, r: NonNullable<WireServerMessage['subscribe']>): void {
    if (this.#live(channel)) return;
    const { ev, pubs } = subscribeOutcome(channel, r);
    this.#serverSubs.set(channel, ev.position ? { ...ev.position } : null);
    if (ev.filtered || ev.conflated) this.#serverSkips.add(channel);
    else this.#serverSkips.delete(channel);
    this.emit('subscribed', ev);
    for (const p of pubs) this.emit('publication', decodePublication(conn.codec, p, channel));
  }

  #onFrame(conn: Conn, data: unknown): void {
    if (this.#conn !== conn || conn.ended) return;
    let m: WireServerMessage;
    try {
      m = conn.codec.decode(data);
    } catch (err) {
      this.emit('error', { type: 'transport', error: err as Error });
      this.#lost(conn, 'undecodable server message');
      return;
    }
    conn.lastRecv = Date.now();
    if (m.id) {
      const p = conn.pending.get(m.id);
      if (p) {
        conn.pending.delete(m.id);
        clearTimeout(p.timer);
        p.resolve(m);
      }
      return;
    }
    if (m.ping) {
      this.#write(conn, { pong: {} });
    } else if (m.pub) {
      const ch = m.pub.channel ?? '';
      const s = this.#live(ch);
      if (s) s._onPublication(conn, m.pub, () => frameText(data));
      else if (this.#serverFresh(conn, ch, m.pub.offset ?? 0)) this.emit('publication', decodePublication(conn.codec, m.pub, ch));
    } else if (m.join || m.leave) {
      const ev = (m.join ?? m.leave)!;
      const s = this.#live(ev.channel);
      if (s) s._onJoinLeave(!!m.join, ev.info);
      else this.emit(m.join ? 'join' : 'leave', { channel: ev.channel, info: decodeClientInfo(conn.codec, ev.info)! });
    } else if (m.presence_stale) {
      this.#live(m.presence_stale.channel)?._onPresenceStale();
    } else if (m.presence_sync) {
      this.#live(m.presence_sync.channel)?._onPresenceSync(m.presence_sync.presence ?? {});
    } else if (m.unsubscribe) {
      const u = m.unsubscribe;
      const ch = u.channel ?? '';
      const s = this.#live(ch);
      if (s) s._onServerUnsubscribe(u.code ?? 0, u.reason ?? '');
      else this.#serverUnsubscribed(ch, u.code ?? 0, u.reason ?? '');
    } else if (m.subscribe?.channel) {
      this.#serverSubscribed(conn, m.subscribe.channel, m.subscribe);
    } else if (m.refresh) {
      // The server asks for a new token now (its notice before expiry).
      this.#refreshNow(conn);
    } else if (m.message) {
      this.emit('message', { data: conn.codec.decodeData(m.message.data, m.message.b64) });
    } else if (m.disconnect) {
      const d = m.disconnect;
      // The close frame follows; act on the push now.
      const ev: DisconnectEvent = { code: d.code, reason: d.reason ?? '', reconnect: !!d.reconnect };
      if (d.reconnect_after) ev.reconnectAfter = d.reconnect_after;
      this.#ended(conn, ev);
    }
  }

  /**
   * The application's subscription to channel unless it is unsubscribed:
   * the server's messages about a channel without one (a subscription
   * refused or left) are those of a server-side subscription, if any.
   */
  #live(channel: string): Subscription | undefined {
    const s = this.#subs.get(channel);
    return s && s.state !== 'unsubscribed' ? s : undefined;
  }

  /**
   * The server ended a server-side subscription: forget it (the next
   * connect does not ask for it) and report it.
   */
  #serverUnsubscribed(channel: string, code: number, reason: string): void {
    if (!this.#serverSubs.has(channel)) return;
    const pos = this.#serverSubs.get(channel);
    this.#serverSubs.delete(channel);
    const ev: ServerUnsubscribedEvent = { channel, code, reason, resubscribe: code >= 2500 && code <= 2999 };
    if (pos) ev.position = { ...pos };
    this.emit('unsubscribed', ev);
  }

  /**
   * Advances a server-side subscription's position; false for a
   * publication at or below it (already delivered), for one of a channel
   * that is no subscription (it raced an unsubscribe), and for one after
   * skipped offsets (e.g. dropped for a slow client): the position stays
   * and the connection is replaced, so that the next connect recovers.
   */
  #serverFresh(conn: Conn, channel: string, offset: number): boolean {
    if (!this.#serverSubs.has(channel)) return false;
    const pos = this.#serverSubs.get(channel);
    if (!pos || !offset) return true;
    let v = classifyOffset(pos.offset, offset);
    if (v === 'gap' && this.#serverSkips.has(channel)) v = 'next';
    if (v === 'gap') this.#lost(conn, `offsets skipped in ${channel}`);
    if (v !== 'next') return false;
    pos.offset = offset;
    return true;
  }

  /** Arms the dead-connection watchdog: ping interval + margin of silence. */
  #watch(conn: Conn): void {
    if (!conn.pingMs) return;
    const limit = conn.pingMs + this.#marginMs;
    const check = (): void => {
      if (this.#conn !== conn || conn.ended) return;
      const idle = Date.now() - conn.lastRecv;
      if (idle >= limit) {
        this.#lost(conn, 'no ping from server');
        return;
      }
      conn.timer = setTimeout(check, limit - idle);
    };
    clearTimeout(conn.timer);
    conn.timer = setTimeout(check, limit);
  }

  /** A connection failed without a close code of the server's. */
  #lost(conn: Conn, reason: string): void {
    this.#ended(conn, { code: DisconnectCode.ConnectionLost, reason, reconnect: true });
  }

  #teardown(conn: Conn): void {
    conn.ended = true;
    clearTimeout(conn.timer);
    const ws = conn.ws;
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = noop; // keep one: `ws` throws on an unhandled error event
    try {
      ws.close(1000);
    } catch {
      // already closed
    }
    const err = new DisconnectedError();
    for (const p of conn.pending.values()) {
      clearTimeout(p.timer);
      p.fail(err);
    }
    conn.pending.clear();
  }

  /** A connection ended: report it, then reconnect or stop. */
  #ended(conn: Conn, ev: DisconnectEvent): void {
    if (this.#conn !== conn) return;
    this.#conn = null;
    this.#teardown(conn);
    clearTimeout(this.#refreshTimer);
    const wasConnected = conn.connected;
    if (!wasConnected && this.#transports.length > 1) {
      // The attempt failed before its connect reply (an upgrade refused
      // by a proxy, a silent stream): the next one tries the next transport.
      this.#ti = (this.#ti + 1) % this.#transports.length;
    }
    if (wasConnected) for (const s of this.#subs.values()) s._connectionLost(ev.code, ev.reason);
    let reconnect = ev.reconnect;
    if (!reconnect && ev.code === DisconnectCode.TokenExpired && this.#opts.getToken) {
      // Terminal for the old token only: connect again with a fresh one
      // (the refresh timer may have been late, e.g. after a sleep).
      reconnect = true;
      this.#token = '';
    }
    if (!reconnect) {
      this.#stop(ev);
      return;
    }
    if (wasConnected) {
      this.emit('disconnect', { ...ev, reconnect });
      this.#attempt = 0;
    }
    this.#setState('connecting');
    this.emit('connecting', { code: ev.code, reason: ev.reason });
    this.#scheduleReconnect(ev.reconnectAfter ?? 0);
  }

  #scheduleReconnect(reconnectAfter: number): void {
    if (!this.#active) return;
    const delay = reconnectDelay(this.#attempt, this.#baseMs, this.#maxMs, reconnectAfter);
    this.#attempt++;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#startAttempt(), delay);
  }

  /** Stops for good after a terminal code. */
  #stop(ev: DisconnectEvent): void {
    this.#active = false;
    this.#gen++;
    clearTimeout(this.#reconnectTimer);
    clearTimeout(this.#refreshTimer);
    this.#unlistenNetwork();
    if (this.#conn) {
      const c = this.#conn;
      this.#conn = null;
      this.#teardown(c);
    }
    this.#setState('disconnected');
    this.emit('disconnect', { ...ev, reconnect: false });
    const err = new TerminalError(ev.code, ev.reason);
    this.#waiters.rejectAll(err);
    for (const s of this.#subs.values()) s._clientStopped(err);
  }

  // ---- token refresh ----

  #scheduleRefresh(conn: Conn, ttlS: number): void {
    if (!this.#opts.getToken) return; // the server closes with 3502 at expiry
    const ttl = ttlS * 1000;
    const wait = Math.max(0, ttl - ttl / 10 - 1000);
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = setTimeout(() => void this.#refresh(conn, 0), wait);
  }

  #refreshNow(conn: Conn): void {
    if (!this.#opts.getToken || conn.refreshing) return;
    clearTimeout(this.#refreshTimer);
    void this.#refresh(conn, 0);
  }

  async #refresh(conn: Conn, tries: number): Promise<void> {
    const getToken = this.#opts.getToken;
    if (this.#conn !== conn || !getToken || conn.refreshing) return;
    conn.refreshing = true;
    const retry = (err: Error): void => {
      conn.refreshing = false;
      this.emit('error', { type: 'refresh', error: err });
      if (this.#conn !== conn) return;
      clearTimeout(this.#refreshTimer);
      this.#refreshTimer = setTimeout(() => void this.#refresh(conn, tries + 1), Math.min(1000 * 2 ** tries, 10000) * (0.5 + Math.random() / 2));
    };
    let token: string;
    try {
      token = await getToken();
    } catch (err) {
      conn.refreshing = false;
      if (this.#conn !== conn) return;
      if (err instanceof UnauthorizedError) this.#tokenFailed(err, conn);
      else retry(err instanceof Error ? err : new Error(String(err)));
      return;
    }
    if (this.#conn !== conn) return;
    this.#send(
      conn,
      { refresh: { token } },
      (m) => {
        conn.refreshing = false;
        if (this.#conn !== conn) return;
        if (m.error) {
          // Expired, refused or temporary: try again with a new token until
          // the connection ends (at expiry the server closes with 3502 and
          // the client reconnects with a fresh token).
          retry(new HeraldError(m.error));
          return;
        }
        this.#token = token;
        if (m.refresh?.expires) this.#scheduleRefresh(conn, Math.max(m.refresh.ttl ?? 0, 1));
      },
      (err) => {
        conn.refreshing = false;
        if (err instanceof TimeoutError) retry(err);
      },
    );
  }

  // ---- browser online/offline ----

  #listenNetwork(): void {
    const g = globalThis as { addEventListener?: (t: string, f: () => void) => void };
    if (this.#net || typeof g.addEventListener !== 'function') return;
    const online = (): void => {
      this.#offline = false;
      if (this.#active && !this.#conn) {
        this.#attempt = 0;
        this.#startAttempt();
      }
    };
    const offline = (): void => {
      this.#offline = true;
      clearTimeout(this.#reconnectTimer);
      // The socket may linger half-dead; replace it once back online.
      if (this.#conn) this.#lost(this.#conn, 'browser offline');
    };
    g.addEventListener('online', online);
    g.addEventListener('offline', offline);
    this.#net = { online, offline };
  }

  #unlistenNetwork(): void {
    const g = globalThis as { removeEventListener?: (t: string, f: () => void) => void };
    if (!this.#net || typeof g.removeEventListener !== 'function') return;
    g.removeEventListener('online', this.#net.online);
    g.removeEventListener('offline', this.#net.offline);
    this.#net = null;
    this.#offline = false;
  }

  // ---- commands ----

  #send(conn: Conn, cmd: WireCommand, resolve: (m: WireServerMessage) => void, fail: (err: Error) => void): void {
    if (conn.ended) {
      fail(new DisconnectedError());
      return;
    }
    const id = ++this.#nextId;
    cmd.id = id;
    let frame: string | Uint8Array;
    try {
      frame = conn.codec.encode(cmd);
    } catch (err) {
      fail(err as Error);
      return;
    }
    const timer = setTimeout(() => {
      if (conn.pending.delete(id)) fail(new TimeoutError());
    }, this.#timeoutMs);
    conn.pending.set(id, { resolve, fail, timer });
    try {
      conn.ws.send(frame);
    } catch {
      conn.pending.delete(id);
      clearTimeout(timer);
      fail(new DisconnectedError());
    }
  }

  /** Acknowledgements waiting for the next ack command, by channel. */
  #acks = new Map<string, number>();
  #ackCount = 0;
  #ackTimer: Timer | undefined;

  #queueAck(channel: string, offset: number): void {
    if (offset > (this.#acks.get(channel) ?? 0)) this.#acks.set(channel, offset);
    if (++this.#ackCount >= 256) {
      this.#flushAcks();
      return;
    }
    this.#ackTimer ??= setTimeout(() => this.#flushAcks(), this.#opts.ackDelayMs ?? 10);
  }

  /**
   * Sends the acknowledgements batched so far in one ack command without
   * reply. Without a connection they are dropped: a resubscription
   * recovers from the offsets acknowledged.
   */
  #flushAcks(): void {
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    this.#ackCount = 0;
    if (this.#acks.size === 0) return;
    const offsets = Object.fromEntries(this.#acks);
    this.#acks.clear();
    const conn = this.#conn;
    if (conn?.connected && !conn.ended) this.#write(conn, { ack: { offsets } });
  }

  #write(conn: Conn, cmd: WireCommand): void {
    try {
      conn.ws.send(conn.codec.encode(cmd));
    } catch {
      // the close event follows
    }
  }

  async #connected(): Promise<Conn> {
    if (this.#conn?.connected && this.#state === 'connected') return this.#conn;
    if (!this.#active) throw new DisconnectedError('herald: not connected (call connect())');
    await this.ready(this.#timeoutMs);
    const c = this.#conn;
    if (!c || !c.connected) throw new DisconnectedError();
    return c;
  }

  /** Sends a command on the connection (waiting for one) and returns its result. */
  async #command(method: string, body: (c: Codec) => object): Promise<unknown> {
    const conn = await this.#connected();
    const req = body(conn.codec);
    return new Promise((resolve, reject) => {
      this.#send(
        conn,
        { [method]: req },
        (m) => (m.error ? reject(new HeraldError(m.error)) : resolve((m as Record<string, unknown>)[method] ?? {})),
        reject,
      );
    });
  }

  #makeHost(): SubHost {
    return {
      clientId: () => this.#clientId,
      conn: () => (this.#conn?.connected ? this.#conn : null),
      send: (conn: ConnHandle, cmd, onReply, onFail) => this.#send(conn as Conn, cmd, onReply, onFail),
      decodePublication: (p, channel) => decodePublication(this.#codec ?? jsonCodec, p, channel),
      dataBytes: (p, raw) => (this.#codec ?? jsonCodec).dataBytes(p.data, p.b64, raw, p.delta),
      decodeClientInfo: (i) => decodeClientInfo(this.#codec ?? jsonCodec, i)!,
      backoffMs: (attempt) => reconnectDelay(attempt, this.#baseMs, this.#maxMs),
      publish: (ch, data, opts) => this.publish(ch, data, opts),
      history: (ch, opts) => this.history(ch, opts),
      presence: (ch) => this.presence(ch),
      presenceStats: (ch) => this.presenceStats(ch),
      queueAck: (ch, off) => this.#queueAck(ch, off),
    };
  }
}

const frameDecoder = new TextDecoder();

/** The text of a JSON frame (text frames arrive as strings, others as bytes). */
function frameText(data: unknown): string | undefined {
  if (typeof data === 'string') return data;
  if (data instanceof ArrayBuffer) return frameDecoder.decode(data);
  if (ArrayBuffer.isView(data)) return frameDecoder.decode(data);
  return undefined;
}
