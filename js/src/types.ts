// Public types of the SDK and the wire shapes of protocol v1
// (docs/protocol.md). Wire shapes use the protocol's snake_case keys; the
// public API uses camelCase.

/** A place in a channel's history stream. */
export interface StreamPosition {
  epoch: string;
  offset: number;
}

/** A connection, in presence, join/leave and as a publisher. */
export interface ClientInfo {
  client: string;
  user: string;
  /** The connection's `info` token claim, decoded. */
  connInfo?: unknown;
}

/** A message received in a channel. */
export interface Publication<T = unknown> {
  channel: string;
  /** Position in the channel's stream; 0 for channels without history. */
  offset: number;
  /**
   * The payload. JSON codec: the JSON value, or a Uint8Array for binary
   * payloads (sent by the server as base64 with `b64: true`). MessagePack
   * codec: the payload parsed as JSON when it is UTF-8 JSON, else a
   * Uint8Array.
   */
  data: T;
  /** The publishing connection (client publications only). */
  info?: ClientInfo;
  tags?: Record<string, string>;
  /** Server time (unix ms) when the publication was accepted. */
  time?: number;
  /**
   * The server dropped earlier publications of a channel without history
   * for this connection (slow-client policy "drop"). On channels with
   * history the SDK recovers instead and never shows a gap.
   */
  gap?: boolean;
  /**
   * On a channel with acknowledgements: the server sent this publication
   * again because its acknowledgement was late. The SDK hands each offset
   * to the application once, so this is seen only when the first sending
   * was lost.
   */
  redelivered?: boolean;
  /**
   * On a channel whose slow-client policy is "conflate": how many
   * publications of the same key this one replaced while the client was
   * behind. The client never received them, by design; it is not a gap
   * (see SubscribedEvent.conflated). Absent otherwise.
   */
  skipped?: number;
}

export type State = 'disconnected' | 'connecting' | 'connected';
export type SubscriptionState = 'unsubscribed' | 'subscribing' | 'subscribed';

/** The end of a connection. */
export interface DisconnectEvent {
  code: number;
  reason: string;
  /** Whether the client reconnects by itself. */
  reconnect: boolean;
  /** The server's hint: the least time to wait before reconnecting (ms). */
  reconnectAfter?: number;
}

export interface ConnectedEvent {
  client: string;
  version: string;
  /** Server ping interval, seconds. */
  ping: number;
  /** Whether the credentials expire; ttl is the seconds left. */
  expires: boolean;
  ttl?: number;
}

export interface StateEvent {
  state: State;
  previous: State;
}

/** A (re)subscription was accepted. */
export interface SubscribedEvent {
  channel: string;
  /** The channel keeps history: positions are meaningful. */
  recoverable: boolean;
  /** The subscribe asked to recover from a position. */
  wasRecovering: boolean;
  /**
   * Every missed publication was delivered (before any later live one).
   * wasRecovering && !recovered means a gap the application must fill
   * (e.g. reload from history).
   */
  recovered: boolean;
  /**
   * The channel's stream was lost and restarted (its epoch changed, e.g. a
   * single node with the memory broker restarted). The SDK then delivers
   * the new stream from its start (unless recoverNewStream is false), but
   * publications of the old stream after the last one received may be lost,
   * so recovered is false.
   */
  streamReset: boolean;
  /** How many missed publications this subscribe delivered. */
  recoveredCount: number;
  /** The stream position after the subscribe (recoverable channels). */
  position?: StreamPosition;
  /**
   * The subscription has a filter: its publications' offsets skip those
   * of the publications filtered out, which is not a gap.
   */
  filtered: boolean;
  /** The server granted the delta option: publications may travel as deltas. */
  delta: boolean;
  /**
   * The channel's namespace wants acknowledgements: the SDK acknowledges
   * each publication once the 'publication' listeners return, unless the
   * subscription has manualAck.
   */
  ack: boolean;
  /**
   * The channel's slow-client policy is "conflate": while the client is
   * behind it gets only the newest publication per key (marked with
   * `skipped`), so offsets skip, which is not a gap; a recovery returns
   * the newest publication per key.
   */
  conflated: boolean;
}

export interface SubscribingEvent {
  channel: string;
  code: number;
  reason: string;
}

export interface UnsubscribedEvent {
  channel: string;
  /**
   * 0 when unsubscribe() was called; the error code when a subscribe was
   * refused; the server's unsubscribe code (2000-2499: the server ended
   * the subscription, 2000 when the application did through the server
   * API) when the server ended it.
   */
  code: number;
  reason: string;
}

/**
 * The server ended a server-side subscription (an `unsubscribe` push, e.g.
 * from the server API): no publication of the channel follows, and the
 * client forgets it, so a reconnect does not ask for it again.
 */
export interface ServerUnsubscribedEvent {
  channel: string;
  /**
   * 2000-2499: the subscription is over (2000: the application ended it);
   * 2500-2999: the client may subscribe again, recovering.
   */
  code: number;
  reason: string;
  /**
   * The code is in 2500-2999. The SDK does not subscribe again to a
   * server-side channel (the server decides what it subscribes a
   * connection to); the application may, with newSubscription(channel,
   * {since: position}).
   */
  resubscribe: boolean;
  /** The position of the last publication delivered (channels with history). */
  position?: StreamPosition;
}

/**
 * A `message` push: data the server sent to this connection alone (the
 * server API's `send`), not through a channel. Decoded like publication
 * data: with JSON, the JSON value, or a Uint8Array for binary data (sent
 * as base64 with `b64: true`); with MessagePack, the bytes parsed as JSON
 * when they are UTF-8 JSON, else a Uint8Array.
 */
export interface MessagePushEvent<T = unknown> {
  data: T;
}

export interface SubscriptionErrorEvent {
  channel: string;
  error: Error;
}

export interface HistoryOptions {
  /** Read after this position (before it with reverse). */
  since?: StreamPosition;
  /** 0: only the current position; negative: everything retained. */
  limit?: number;
  reverse?: boolean;
  /**
   * Keep only the publications read whose tags match this filter (the
   * syntax of the subscribe option filter); limit counts those read.
   */
  filter?: string;
}

export interface HistoryResult<T = unknown> {
  publications: Publication<T>[];
  epoch: string;
  offset: number;
}

export interface PresenceStats {
  numClients: number;
  numUsers: number;
}

export interface PublishOptions {
  /** Retries with the same key within the server's window are no-ops. */
  idempotencyKey?: string;
}

/** Minimal WebSocket surface the SDK uses (browser WebSocket, `ws`). */
export interface WebSocketLike {
  binaryType: string;
  readonly protocol: string;
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
}

/** A transport: WebSocket, or HTTP streaming (one long response, commands as POSTs). */
export type Transport = 'websocket' | 'http-stream';

/** A WebSocket constructor: the browser's, or `WebSocket` from `ws`. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => any;

/** The MessagePack functions the SDK needs (those of @msgpack/msgpack). */
export interface MsgpackImpl {
  encode(value: unknown, options?: { ignoreUndefined?: boolean }): Uint8Array;
  decode(data: Uint8Array | ArrayBuffer): unknown;
}

export interface ReconnectOptions {
  /** First backoff bound, ms. Default 200. */
  baseMs?: number;
  /** Largest backoff bound, ms. Default 20000. */
  maxMs?: number;
}

export interface HeraldOptions {
  /** Connection token (JWT). Empty: anonymous. */
  token?: string;
  /**
   * Returns a fresh connection token: called when there is no token yet,
   * when the server reports the token expired (error 109 or close 3502)
   * and before expiry to send `refresh`. Throw UnauthorizedError to stop
   * the client for good; other errors are retried with backoff.
   */
  getToken?: () => Promise<string>;
  /** Wire encoding. Default 'json'. */
  codec?: 'json' | 'msgpack';
  /**
   * MessagePack implementation for codec 'msgpack'; default: a dynamic
   * import of the optional peer dependency @msgpack/msgpack.
   */
  msgpack?: MsgpackImpl;
  reconnect?: ReconnectOptions;
  /** WebSocket constructor; default globalThis.WebSocket. */
  websocket?: WebSocketConstructor;
  /**
   * The transports to try, in order. Default ['websocket', 'http-stream']:
   * when a WebSocket attempt fails before its connect reply (the upgrade
   * refused, or no message within fallbackTimeoutMs), the next attempt
   * uses HTTP streaming (fetch streams; JSON only, so a client with codec
   * 'msgpack' uses WebSocket alone). A transport that connected is kept
   * for later reconnects until an attempt on it fails.
   */
  transports?: Transport[];
  /** With several transports: how long an attempt may go without a message, ms. Default 5000. */
  fallbackTimeoutMs?: number;
  /** Client name sent in connect. Default 'herald-js'. */
  name?: string;
  /** Bound of one connection attempt and of every command, ms. Default 10000. */
  timeoutMs?: number;
  /**
   * Added to the server's ping interval: a connection silent for longer is
   * considered dead, closed and replaced. Default 10000.
   */
  pingMarginMs?: number;
  /**
   * Acknowledgements (channels with acknowledgements) made within this
   * many ms go in one ack command, or at once when 256 are waiting.
   * Default 10.
   */
  ackDelayMs?: number;
}

export interface SubscriptionOptions {
  /**
   * Resubscribe with recovery from the last position after a reconnect or
   * a gap. Default true.
   */
  recover?: boolean;
  /** Recover from this position on the first subscribe (saved earlier). */
  since?: StreamPosition;
  /** Subscription token (bound to one connection's client id). */
  token?: string;
  /**
   * Returns a subscription token for this connection; called at every
   * (re)subscribe, since the client id changes on every connection.
   */
  getToken?: (ctx: { channel: string; client: string }) => Promise<string>;
  /**
   * When a recovering subscribe finds the stream restarted under a new
   * epoch, deliver the new stream from its beginning. Default true.
   */
  recoverNewStream?: boolean;
  /**
   * A filter over the publications' tags: the server sends only the
   * publications it matches, live and recovered, for example
   * `type == "trade" and price > 100` (syntax in docs/protocol.md). A filter
   * the server cannot parse fails subscribe() with error code 118
   * (ErrorCode.BadFilter). Skipped offsets are not treated as a gap.
   */
  filter?: string;
  /**
   * Ask for delta compression: where the channel's namespace has it on
   * (SubscribedEvent.delta), publications travel as Fossil deltas against
   * the previous one received and the SDK applies them, so the
   * application always gets the full data. A delta that does not apply
   * (its checksum fails) is handled as a gap: the subscription subscribes
   * again, recovering from the last position delivered. Elsewhere the
   * option is ignored. Default false.
   */
  delta?: boolean;
  /**
   * On a channel with acknowledgements, leave them to the application: it
   * calls Subscription.ack(offset) once it has processed the publications
   * up to offset (for example after an asynchronous handler settles). By
   * default the SDK acknowledges a publication once the 'publication'
   * listeners return. Default false.
   */
  manualAck?: boolean;
  /**
   * On a channel with acknowledgements, resume from the last offset the
   * connection's user acknowledged on any device or connection (the
   * server keeps it per user and channel) when it is further than the
   * subscription's own position: a second device or a fresh page gets
   * what none of the user's devices acknowledged. Default false.
   */
  fromAcked?: boolean;
}

// ---- wire shapes ----

export interface WireError {
  code: number;
  message: string;
  temporary?: boolean;
}

export interface WireClientInfo {
  client: string;
  user: string;
  conn_info?: unknown;
}

export interface WirePublication {
  channel?: string;
  offset?: number;
  data?: unknown;
  b64?: boolean;
  info?: WireClientInfo;
  tags?: Record<string, string>;
  time?: number;
  gap?: boolean;
  /** data is a Fossil delta against the previous publication received. */
  delta?: boolean;
  /** Sent again for want of an acknowledgement (channels with acknowledgements). */
  redelivered?: boolean;
  /** Publications of the same key this one replaced (conflate policy). */
  skipped?: number;
}

export interface WireSubscribeRequest {
  channel: string;
  token?: string;
  recover?: boolean;
  epoch?: string;
  offset?: number;
  filter?: string;
  delta?: 'fossil';
  acked?: boolean;
}

export interface WireSubscribeResult {
  channel?: string;
  recoverable?: boolean;
  epoch?: string;
  offset?: number;
  was_recovering?: boolean;
  recovered?: boolean;
  publications?: WirePublication[];
  join_leave?: boolean;
  filtered?: boolean;
  delta?: boolean;
  ack?: boolean;
  conflated?: boolean;
}

export interface WireConnectResult {
  client: string;
  version: string;
  ping?: number;
  expires?: boolean;
  ttl?: number;
  subs?: Record<string, WireSubscribeResult>;
  data?: unknown;
}

export interface WireDisconnect {
  code: number;
  reason: string;
  reconnect: boolean;
  reconnect_after?: number;
}

/** A server message: a reply (id set) or a push. */
export interface WireServerMessage {
  id?: number;
  error?: WireError;
  connect?: WireConnectResult;
  subscribe?: WireSubscribeResult;
  unsubscribe?: { channel?: string; code?: number; reason?: string };
  publish?: { epoch?: string; offset?: number };
  presence?: { presence?: Record<string, WireClientInfo> };
  presence_stats?: { num_clients?: number; num_users?: number };
  history?: { publications?: WirePublication[]; epoch?: string; offset?: number };
  rpc?: { data?: unknown };
  refresh?: { expires?: boolean; ttl?: number };
  ping?: object;
  pub?: WirePublication;
  join?: { channel: string; info: WireClientInfo };
  leave?: { channel: string; info: WireClientInfo };
  presence_stale?: { channel: string };
  presence_sync?: { channel: string; presence?: Record<string, WireClientInfo> };
  message?: { data?: unknown; b64?: boolean };
  disconnect?: WireDisconnect;
}

/** A command: an id (except pong) and exactly one request field. */
export interface WireCommand {
  id?: number;
  [method: string]: unknown;
}
