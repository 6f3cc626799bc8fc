// A subscription to one channel. It survives reconnects: after every new
// connection it resubscribes with recovery from the last position it
// delivered, and on a gap in live offsets it unsubscribes and subscribes
// again with recovery, so the application sees every publication once and
// in order (docs/protocol.md, "Positions, history and recovery").

import { Emitter } from './emitter.js';
import { HeraldError, TimeoutError, UnauthorizedError, ErrorCode } from './errors.js';
import { classifyOffset } from './gap.js';
import { applyDelta, DeltaError } from './fossil.js';
import { Waiters, rejected } from './waiters.js';
import { bytesToValue } from './codec.js';
import type {
  ClientInfo,
  HistoryOptions,
  HistoryResult,
  PresenceStats,
  Publication,
  PublishOptions,
  StreamPosition,
  SubscribedEvent,
  SubscribingEvent,
  SubscriptionErrorEvent,
  SubscriptionOptions,
  SubscriptionState,
  UnsubscribedEvent,
  WireClientInfo,
  WireCommand,
  WirePublication,
  WireServerMessage,
  WireSubscribeRequest,
  WireSubscribeResult,
} from './types.js';

/** An opaque connection handle. */
export type ConnHandle = object;

/**
 * What a subscription needs from its client.
 * @internal
 */
export interface SubHost {
  clientId(): string;
  /** The current connection if it is connected (connect reply received). */
  conn(): ConnHandle | null;
  send(conn: ConnHandle, cmd: WireCommand, onReply: (m: WireServerMessage) => void, onFail: (err: Error) => void): void;
  decodePublication(p: WirePublication, channel: string): Publication;
  /** The exact bytes of a publication's data (raw: the frame's text). */
  dataBytes(p: WirePublication, raw: () => string | undefined): Uint8Array | null;
  decodeClientInfo(i: WireClientInfo): ClientInfo;
  backoffMs(attempt: number): number;
  publish(channel: string, data: unknown, opts?: PublishOptions): Promise<StreamPosition>;
  history(channel: string, opts?: HistoryOptions): Promise<HistoryResult>;
  presence(channel: string): Promise<Record<string, ClientInfo>>;
  presenceStats(channel: string): Promise<PresenceStats>;
  /** Batches an acknowledgement of channel up to offset. */
  queueAck(channel: string, offset: number): void;
}

export interface SubscriptionEvents {
  state: { state: SubscriptionState; previous: SubscriptionState };
  /**
   * The subscription is (re)subscribing, recovering: after a disconnect
   * (its code), a gap (code 0), or the server's unsubscribe with a code in
   * 2500-2999.
   */
  subscribing: SubscribingEvent;
  subscribed: SubscribedEvent;
  /**
   * The subscription ended: unsubscribe() (code 0), a refused subscribe
   * (the error code), or the server's unsubscribe with a code in
   * 2000-2499 (2000: the application ended it through the server API).
   */
  unsubscribed: UnsubscribedEvent;
  publication: Publication;
  join: { channel: string; info: ClientInfo };
  leave: { channel: string; info: ClientInfo };
  /**
   * Join and leave events of the channel may be lost from now on (the
   * server's node lost its broker): members kept from join and leave may
   * be wrong until presence_sync.
   */
  presence_stale: { channel: string };
  /**
   * The channel's current members, by client id, once the server's broker
   * is back (or after another node could not announce its joins and
   * leaves): they replace the members kept; join and leave after it apply
   * to them.
   */
  presence_sync: { channel: string; presence: Record<string, ClientInfo> };
  /** A failed subscribe that the SDK retries, or the error that ended the subscription. */
  error: SubscriptionErrorEvent;
}

const noop = (): void => {};

/**
 * The subscribed event of a subscribe result, and the publications it
 * recovered (none unless it recovered them all).
 */
export function subscribeOutcome(
  channel: string,
  res: WireSubscribeResult,
  streamReset = false,
): { ev: SubscribedEvent; pubs: WirePublication[] } {
  const pubs = res.was_recovering && res.recovered ? (res.publications ?? []) : [];
  const ev: SubscribedEvent = {
    channel,
    recoverable: !!res.recoverable,
    wasRecovering: !!res.was_recovering || streamReset,
    recovered: !!res.recovered && !streamReset,
    streamReset,
    recoveredCount: pubs.length,
    filtered: !!res.filtered,
    delta: !!res.delta,
    ack: !!res.ack,
    conflated: !!res.conflated,
  };
  if (res.recoverable) ev.position = { epoch: res.epoch ?? '', offset: res.offset ?? 0 };
  return { ev, pubs };
}

/**
 * A client's subscription to one channel. Create it with
 * Herald.newSubscription; call subscribe() to start.
 */
export class Subscription extends Emitter<SubscriptionEvents> {
  readonly channel: string;
  #host: SubHost;
  #opts: SubscriptionOptions;
  #state: SubscriptionState = 'unsubscribed';
  /** The connection the subscription is active on (state subscribed). */
  #conn: ConnHandle | null = null;
  #pos: StreamPosition | null = null;
  #recoverable = false;
  /** Identifies the latest subscribe request: older replies are ignored. */
  #seq = 0;
  #retryTimer: ReturnType<typeof setTimeout> | undefined;
  #retryAttempt = 0;
  /** A recovering subscribe found a new epoch: catching up on the new stream. */
  #streamReset = false;
  #waiters = new Waiters();
  /** The last subscribe reply granted deltas. */
  #delta = false;
  /** The server skips offsets on purpose (filtered or conflated): not a gap. */
  #skips = false;
  /** The data of the last publication received since: the next delta's source. */
  #base: Uint8Array | null = null;
  /** The server wants acknowledgements (the last subscribe reply's ack). */
  #ack = false;
  /** The offset (of #pos's epoch) acknowledged: resubscriptions recover from it. */
  #acked = 0;

  /** @internal Use Herald.newSubscription. */
  constructor(host: SubHost, channel: string, opts: SubscriptionOptions = {}) {
    super();
    this.#host = host;
    this.channel = channel;
    this.#opts = { ...opts };
    if (opts.since) this.#pos = { epoch: opts.since.epoch, offset: opts.since.offset };
  }

  get state(): SubscriptionState {
    return this.#state;
  }

  /**
   * The position of the last publication delivered (or of the subscribe),
   * for recovering later with the `since` option; null before the first
   * subscribe on a channel with history.
   */
  position(): StreamPosition | null {
    return this.#pos ? { ...this.#pos } : null;
  }

  /**
   * Starts subscribing (now if connected, else at the next connect). The
   * promise settles at the first subscribe result: it rejects if the
   * server refuses the subscription (the state goes back to
   * unsubscribed). Awaiting it is optional.
   */
  subscribe(): Promise<void> {
    if (this.#state === 'unsubscribed') {
      this.#setState('subscribing');
      const conn = this.#host.conn();
      if (conn) this._subscribeOn(conn);
    }
    return this.ready();
  }

  /** Leaves the channel. The position is forgotten. */
  unsubscribe(): void {
    if (this.#state === 'unsubscribed') return;
    this.#seq++;
    clearTimeout(this.#retryTimer);
    this.#streamReset = false;
    const conn = this.#host.conn();
    // Sent even while a subscribe is in flight: commands run in order, so
    // the server ends up unsubscribed either way.
    if (conn) this.#host.send(conn, { unsubscribe: { channel: this.channel } }, noop, noop);
    this.#conn = null;
    this.#pos = null;
    this.#ack = false;
    this.#acked = 0;
    this.#setState('unsubscribed');
    this.emit('unsubscribed', { channel: this.channel, code: 0, reason: 'unsubscribe called' });
    this.#waiters.rejectAll(new Error('herald: unsubscribed'));
  }

  /** Resolves once subscribed; rejects on unsubscribe, refusal or timeout. */
  ready(timeoutMs?: number): Promise<void> {
    if (this.#state === 'subscribed') return Promise.resolve();
    if (this.#state === 'unsubscribed') return rejected(new Error('herald: not subscribed (call subscribe())'));
    return this.#waiters.wait(timeoutMs, 'herald: subscribe timeout');
  }

  publish(data: unknown, opts?: PublishOptions): Promise<StreamPosition> {
    return this.#host.publish(this.channel, data, opts);
  }

  history(opts?: HistoryOptions): Promise<HistoryResult> {
    return this.#host.history(this.channel, opts);
  }

  presence(): Promise<Record<string, ClientInfo>> {
    return this.#host.presence(this.channel);
  }

  presenceStats(): Promise<PresenceStats> {
    return this.#host.presenceStats(this.channel);
  }

  // ---- driven by the client ----

  /** @internal Sends a (re)subscribe on conn. */
  _subscribeOn(conn: ConnHandle): void {
    if (this.#state === 'unsubscribed') return;
    clearTimeout(this.#retryTimer);
    const seq = ++this.#seq;
    const req: WireSubscribeRequest = { channel: this.channel };
    if (this.#opts.filter) req.filter = this.#opts.filter;
    if (this.#opts.delta) req.delta = 'fossil';
    if (this.#opts.fromAcked) req.acked = true;
    if (this.#opts.recover !== false && this.#pos) {
      req.recover = true;
      req.epoch = this.#pos.epoch;
      // With acknowledgements, resume from what was acknowledged: what was
      // received and not processed comes again (and is not delivered twice).
      req.offset = this.#ack ? Math.min(this.#acked, this.#pos.offset) : this.#pos.offset;
    }
    const send = (token: string | undefined): void => {
      if (seq !== this.#seq || this.#host.conn() !== conn) return;
      if (token) req.token = token;
      this.#host.send(
        conn,
        { subscribe: req },
        (m) => this.#onReply(conn, seq, req, m),
        (err) => {
          if (seq !== this.#seq || this.#host.conn() !== conn) return;
          // A connection that ended resubscribes on the next one.
          if (err instanceof TimeoutError) this.#retryLater(conn, err);
        },
      );
    };
    const getToken = this.#opts.getToken;
    if (!getToken) {
      send(this.#opts.token);
      return;
    }
    getToken({ channel: this.channel, client: this.#host.clientId() }).then(send, (err: unknown) => {
      if (seq !== this.#seq || this.#host.conn() !== conn) return;
      const e = err instanceof Error ? err : new Error(String(err));
      if (e instanceof UnauthorizedError) {
        this.#end(ErrorCode.PermissionDenied, e.message, e);
        return;
      }
      this.#retryLater(conn, e);
    });
  }

  /** @internal The connection ended; resubscribe on the next one. */
  _connectionLost(code: number, reason: string): void {
    if (this.#state === 'unsubscribed') return;
    this.#seq++;
    this.#conn = null;
    clearTimeout(this.#retryTimer);
    if (this.#state === 'subscribed') {
      this.#setState('subscribing');
      this.emit('subscribing', { channel: this.channel, code, reason });
    }
  }

  /** @internal The client stopped (disconnect() or a terminal code). */
  _clientStopped(err: Error): void {
    this.#waiters.rejectAll(err);
  }

  /**
   * @internal A live publication. Runs in stream order. raw returns the
   * frame's text (JSON encoding), for the exact bytes of its data.
   */
  _onPublication(conn: ConnHandle, wire: WirePublication, raw: () => string | undefined = () => undefined): void {
    if (this.#state !== 'subscribed' || this.#conn !== conn) return;
    // Deltas apply to the previous publication received, delivered or
    // not (a duplicate is still the server's source of the next one).
    let full: Uint8Array | null = null;
    if (wire.delta) {
      try {
        const d = this.#host.dataBytes(wire, raw);
        if (!this.#delta || !this.#base || !d) throw new DeltaError('no previous publication to apply it to');
        full = applyDelta(this.#base, d);
      } catch (err) {
        this.#base = null;
        this.emit('error', { channel: this.channel, error: err as Error });
        this.#resync(conn, 'delta did not apply');
        return;
      }
      this.#base = full;
    } else if (this.#delta) {
      this.#base = this.#host.dataBytes(wire, raw);
    }
    const off = wire.offset ?? 0;
    if (off !== 0 && this.#recoverable && this.#pos) {
      if (this.#opts.recover !== false) {
        const v = classifyOffset(this.#pos.offset, off);
        if (this.#ack && v !== 'next') {
          if (v === 'duplicate') {
            // Sent again while its acknowledgement was on its way, or lost.
            if (wire.redelivered && this.#acked >= off) this.#host.queueAck(this.channel, this.#acked);
            return;
          }
          // Beyond the next: the server sends again, in order, all that is
          // not acknowledged; wait for it. Unless publications were
          // skipped (gap): then recover from what was acknowledged.
          if (wire.gap) this.#resync(conn, 'gap in offsets');
          return;
        }
        if (v === 'duplicate') return;
        // A filtered subscription's offsets skip the publications filtered
        // out, a conflated one's those replaced by a newer one of their
        // key; the server announces a real loss itself (gap, disconnect).
        if (v === 'gap' && !this.#skips) {
          // Never deliver past a gap: resubscribe from the last position
          // delivered and let the server replay what is missing.
          this.#resync(conn, 'gap in offsets');
          return;
        }
      }
      this.#pos.offset = off;
    }
    if (full) {
      const p = this.#host.decodePublication({ ...wire, data: undefined, b64: undefined, delta: undefined }, this.channel);
      p.data = bytesToValue(full);
      this.#deliver(p);
      return;
    }
    this.#deliver(this.#host.decodePublication(wire, this.channel));
  }

  /**
   * On a channel with acknowledgements and with manualAck: acknowledges
   * every publication up to and including offset (an offset beyond the
   * last one delivered counts as that one). The server stops sending them
   * again, and a resubscription (after a reconnect, on any node) resumes
   * after it. Acknowledgements are batched (ackDelayMs).
   */
  ack(offset: number): void {
    if (!this.#ack || !this.#pos) return;
    const off = Math.min(offset, this.#pos.offset);
    if (off <= this.#acked) return;
    this.#acked = off;
    this.#host.queueAck(this.channel, off);
  }

  /** The offset acknowledged, on a channel with acknowledgements. */
  acked(): number {
    return this.#acked;
  }

  /** @internal */
  _onJoinLeave(join: boolean, info: WireClientInfo): void {
    if (this.#state !== 'subscribed') return;
    this.emit(join ? 'join' : 'leave', { channel: this.channel, info: this.#host.decodeClientInfo(info) });
  }

  /** @internal */
  _onPresenceStale(): void {
    if (this.#state !== 'subscribed') return;
    this.emit('presence_stale', { channel: this.channel });
  }

  /** @internal */
  _onPresenceSync(presence: Record<string, WireClientInfo>): void {
    if (this.#state !== 'subscribed') return;
    const out: Record<string, ClientInfo> = {};
    for (const [id, info] of Object.entries(presence)) out[id] = this.#host.decodeClientInfo(info);
    this.emit('presence_sync', { channel: this.channel, presence: out });
  }

  /**
   * @internal The server ended the subscription (an unsubscribe push).
   * Codes 2500-2999: subscribe again, recovering from the last position
   * (a subscribe in flight, or the next connection's, does that already).
   * Others: the subscription is over.
   */
  _onServerUnsubscribe(code: number, reason: string): void {
    if (this.#state === 'unsubscribed') return;
    const conn = this.#host.conn();
    if (code >= 2500 && code <= 2999) {
      if (this.#state !== 'subscribed' || !conn) return;
      this.#conn = null;
      this.#setState('subscribing');
      this.emit('subscribing', { channel: this.channel, code, reason });
      this._subscribeOn(conn);
      return;
    }
    // A subscribe may be in flight (resubscribing after a gap): commands
    // run in order, so this unsubscribe lands after it.
    if (this.#state === 'subscribing' && conn) this.#host.send(conn, { unsubscribe: { channel: this.channel } }, noop, noop);
    this.#end(code, reason, null);
  }

  // ---- internals ----

  #onReply(conn: ConnHandle, seq: number, req: WireSubscribeRequest, m: WireServerMessage): void {
    if (seq !== this.#seq || this.#state === 'unsubscribed' || this.#host.conn() !== conn) return;
    if (m.error) {
      const err = new HeraldError(m.error);
      const retry =
        err.temporary ||
        err.code === ErrorCode.AlreadySubscribed ||
        (err.code === ErrorCode.TokenExpired && !!this.#opts.getToken);
      if (retry) this.#retryLater(conn, err);
      else this.#end(err.code, m.error.message, err);
      return;
    }
    const res = m.subscribe ?? {};
    if (
      res.recoverable &&
      res.was_recovering &&
      !res.recovered &&
      req.epoch !== undefined &&
      res.epoch !== undefined &&
      res.epoch !== req.epoch &&
      this.#opts.recoverNewStream !== false &&
      !this.#streamReset
    ) {
      // The stream restarted under a new epoch: none of its publications
      // can have reached us, so recover the new stream from its start.
      this.#streamReset = true;
      this.#pos = { epoch: res.epoch, offset: 0 };
      this.#host.send(conn, { unsubscribe: { channel: this.channel } }, noop, noop);
      this._subscribeOn(conn);
      return;
    }
    this.#conn = conn;
    this.#recoverable = !!res.recoverable;
    // The server sends the first live publication after the reply full.
    this.#delta = !!res.delta;
    this.#skips = !!res.filtered || !!res.conflated || !!this.#opts.filter;
    this.#base = null;
    this.#retryAttempt = 0;
    const prev = this.#pos;
    if (res.recoverable) this.#pos = { epoch: res.epoch ?? '', offset: res.offset ?? 0 };
    const streamReset = this.#streamReset;
    this.#streamReset = false;
    this.#setState('subscribed');
    const outcome = subscribeOutcome(this.channel, res, streamReset);
    let pubs = outcome.pubs;
    this.#ack = !!res.ack && !!res.recoverable;
    if (this.#ack) pubs = this.#resumeAcks(prev, res, pubs);
    this.emit('subscribed', outcome.ev);
    for (const p of pubs) {
      if (seq !== this.#seq || this.#state !== 'subscribed') break;
      this.#deliver(this.#host.decodePublication(p, this.channel));
    }
    this.#waiters.resolveAll();
  }

  #resync(conn: ConnHandle, reason: string): void {
    this.#setState('subscribing');
    this.emit('subscribing', { channel: this.channel, code: 0, reason });
    // Commands run in order: the unsubscribe lands before the subscribe.
    this.#host.send(conn, { unsubscribe: { channel: this.channel } }, noop, noop);
    this._subscribeOn(conn);
  }

  #retryLater(conn: ConnHandle, err: Error): void {
    this.emit('error', { channel: this.channel, error: err });
    clearTimeout(this.#retryTimer);
    const seq = ++this.#seq;
    const delay = this.#host.backoffMs(this.#retryAttempt++);
    this.#retryTimer = setTimeout(() => {
      if (seq !== this.#seq || this.#host.conn() !== conn || this.#state === 'unsubscribed') return;
      this.#host.send(conn, { unsubscribe: { channel: this.channel } }, noop, noop);
      this._subscribeOn(conn);
    }, delay);
  }

  #end(code: number, reason: string, err: Error | null): void {
    this.#seq++;
    clearTimeout(this.#retryTimer);
    this.#conn = null;
    this.#streamReset = false;
    this.#setState('unsubscribed');
    if (err) this.emit('error', { channel: this.channel, error: err });
    this.emit('unsubscribed', { channel: this.channel, code, reason });
    this.#waiters.rejectAll(err ?? new Error(`herald: unsubscribed by the server: ${code} ${reason}`));
  }

  /**
   * The offset acknowledged after a subscribe reply with acknowledgements,
   * and the recovered publications not yet delivered: those up to prev
   * (the last delivered, same epoch) came again because they were not
   * acknowledged.
   */
  #resumeAcks(prev: StreamPosition | null, res: WireSubscribeResult, pubs: WirePublication[]): WirePublication[] {
    const sameEpoch = !!prev && prev.epoch === res.epoch;
    if (!res.recovered || pubs.length === 0) {
      this.#acked = res.offset ?? 0;
    } else {
      // The server resumed after the position sent, or after the user's
      // acknowledged one if that is further.
      const from = (pubs[0]!.offset ?? 1) - 1;
      this.#acked = sameEpoch ? Math.max(this.#acked, from) : from;
    }
    if (res.recovered && sameEpoch && prev) return pubs.filter((p) => (p.offset ?? 0) > prev.offset);
    return pubs;
  }

  #deliver(p: Publication): void {
    this.emit('publication', p);
    // The listeners returned: acknowledge, unless the application does.
    if (this.#ack && !this.#opts.manualAck && p.offset > this.#acked) {
      this.#acked = p.offset;
      this.#host.queueAck(this.channel, p.offset);
    }
  }

  #setState(s: SubscriptionState): void {
    const previous = this.#state;
    if (previous === s) return;
    this.#state = s;
    this.emit('state', { state: s, previous });
  }
}
