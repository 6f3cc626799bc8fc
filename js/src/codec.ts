// The two encodings of protocol v1: JSON in text frames (subprotocol
// herald.json) and MessagePack in binary frames (herald.msgpack). Both
// carry the same message model with the same keys; they differ in how the
// opaque application payload `data` travels.

import { pubDataText } from './fossil.js';
import type { MsgpackImpl, WireClientInfo, WireCommand, WirePublication, WireServerMessage, ClientInfo, Publication } from './types.js';

export interface Codec {
  readonly name: 'json' | 'msgpack';
  /** The WebSocket subprotocol. */
  readonly subprotocol: string;
  encode(cmd: WireCommand): string | Uint8Array;
  decode(frame: unknown): WireServerMessage;
  /** Application value -> wire form of a data field. */
  encodeData(value: unknown): unknown;
  /** Wire form of a data field -> application value. */
  decodeData(wire: unknown, b64?: boolean): unknown;
  /**
   * The exact bytes of a publication's data field, as the server has
   * them (the source of the next delta). raw returns the frame's text
   * (JSON encoding). Null if they cannot be had.
   */
  dataBytes(wire: unknown, b64: boolean | undefined, raw: () => string | undefined, delta?: boolean): Uint8Array | null;
}

const utf8enc = new TextEncoder();
const utf8strict = new TextDecoder('utf-8', { fatal: true });
const utf8 = new TextDecoder();

export function bytesToBase64(b: Uint8Array): string {
  let s = '';
  for (let i = 0; i < b.length; i += 0x8000) {
    s += String.fromCharCode(...b.subarray(i, i + 0x8000));
  }
  return btoa(s);
}

export function base64ToBytes(s: string): Uint8Array {
  const bin = atob(s);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

function toBytes(frame: unknown): Uint8Array | null {
  if (frame instanceof Uint8Array) return frame;
  if (frame instanceof ArrayBuffer) return new Uint8Array(frame);
  if (ArrayBuffer.isView(frame)) return new Uint8Array(frame.buffer, frame.byteOffset, frame.byteLength);
  return null;
}

function asMessage(v: unknown): WireServerMessage {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new TypeError('herald: server message is not an object');
  }
  return v as WireServerMessage;
}

/**
 * Bytes to an application value as a JSON client would see them: parsed
 * when they are UTF-8 JSON (the server carries such payloads to JSON
 * clients verbatim), else the bytes.
 */
export function bytesToValue(b: Uint8Array): unknown {
  if (b.length === 0) return null;
  try {
    return JSON.parse(utf8strict.decode(b));
  } catch {
    return b;
  }
}

export const jsonCodec: Codec = {
  name: 'json',
  subprotocol: 'herald.json',
  encode(cmd) {
    return JSON.stringify(cmd);
  },
  decode(frame) {
    if (typeof frame === 'string') return asMessage(JSON.parse(frame));
    const b = toBytes(frame);
    if (!b) throw new TypeError('herald: unexpected frame type');
    return asMessage(JSON.parse(utf8.decode(b)));
  },
  encodeData(value) {
    if (value === undefined) throw new TypeError('herald: data is undefined');
    if (toBytes(value)) {
      throw new TypeError("herald: binary data needs codec 'msgpack' (JSON carries JSON values)");
    }
    return value;
  },
  decodeData(wire, b64) {
    if (b64 && typeof wire === 'string') return base64ToBytes(wire);
    return wire === undefined ? null : wire;
  },
  dataBytes(wire, b64, raw, delta) {
    if (b64 && typeof wire === 'string') return base64ToBytes(wire);
    // A delta travels as a string of its UTF-8 bytes.
    if (delta) return typeof wire === 'string' ? utf8enc.encode(wire) : null;
    if (wire === undefined || wire === null) return new Uint8Array(0);
    const frame = raw();
    const text = frame === undefined ? undefined : pubDataText(frame);
    return text === undefined ? null : utf8enc.encode(text);
  },
};

/** The MessagePack codec over an implementation such as @msgpack/msgpack. */
export function msgpackCodec(impl: MsgpackImpl): Codec {
  return {
    name: 'msgpack',
    subprotocol: 'herald.msgpack',
    encode(cmd) {
      return impl.encode(cmd, { ignoreUndefined: true });
    },
    decode(frame) {
      const b = toBytes(frame);
      if (!b) throw new TypeError('herald: expected a binary frame');
      return asMessage(impl.decode(b));
    },
    encodeData(value) {
      if (value === undefined) throw new TypeError('herald: data is undefined');
      const b = toBytes(value);
      if (b) return b;
      return utf8enc.encode(JSON.stringify(value));
    },
    decodeData(wire) {
      const b = toBytes(wire);
      if (b) return bytesToValue(b);
      if (typeof wire === 'string') return bytesToValue(utf8enc.encode(wire));
      return wire === undefined ? null : wire;
    },
    dataBytes(wire) {
      const b = toBytes(wire);
      if (b) return b;
      if (typeof wire === 'string') return utf8enc.encode(wire);
      return wire === undefined || wire === null ? new Uint8Array(0) : null;
    },
  };
}

/** Loads the optional peer dependency @msgpack/msgpack. */
export async function loadMsgpack(): Promise<MsgpackImpl> {
  const spec = '@msgpack/msgpack';
  try {
    const m = (await import(/* @vite-ignore */ /* webpackIgnore: true */ spec)) as MsgpackImpl;
    return m;
  } catch (err) {
    throw new Error(
      "herald: codec 'msgpack' needs the package @msgpack/msgpack (npm install @msgpack/msgpack) or the msgpack option",
      { cause: err },
    );
  }
}

export function decodeClientInfo(codec: Codec, w: WireClientInfo | undefined): ClientInfo | undefined {
  if (!w) return undefined;
  const out: ClientInfo = { client: w.client ?? '', user: w.user ?? '' };
  if (w.conn_info !== undefined && w.conn_info !== null) out.connInfo = codec.decodeData(w.conn_info);
  return out;
}

export function decodePublication(codec: Codec, p: WirePublication, channel: string): Publication {
  const out: Publication = {
    channel: p.channel || channel,
    offset: p.offset ?? 0,
    data: codec.decodeData(p.data, p.b64),
  };
  const info = decodeClientInfo(codec, p.info);
  if (info) out.info = info;
  if (p.tags) out.tags = p.tags;
  if (p.time) out.time = p.time;
  if (p.gap) out.gap = true;
  if (p.redelivered) out.redelivered = true;
  if (p.skipped) out.skipped = p.skipped;
  return out;
}
