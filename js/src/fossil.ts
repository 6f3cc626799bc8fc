// Applying deltas in the Fossil delta format (www.fossil-scm.org, "Delta
// Encoding"), the format Herald sends to subscriptions with the delta
// option. A delta is the target's length in base-64 digits and a newline,
// then commands: `N@O,` copies N bytes of the source from offset O, `N:`
// inserts the N bytes that follow, `C;` ends with the target's checksum C.
// The server side (the encoder) is the Go package protocol/fossil.

const DIGITS = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~';
const VALUE = new Int8Array(256).fill(-1);
for (let i = 0; i < DIGITS.length; i++) VALUE[DIGITS.charCodeAt(i)] = i;

/** A delta that does not parse, does not fit its source, or fails its checksum. */
export class DeltaError extends Error {
  constructor(message: string) {
    super(`herald: corrupt delta: ${message}`);
    this.name = 'DeltaError';
  }
}

/**
 * The format's checksum: the 32-bit sum of b read as big-endian 32-bit
 * words, the last one padded with zero bytes.
 */
export function fossilChecksum(b: Uint8Array): number {
  let sum = 0;
  const n = b.length & ~3;
  for (let i = 0; i < n; i += 4) {
    sum = (sum + ((b[i]! << 24) | (b[i + 1]! << 16) | (b[i + 2]! << 8) | b[i + 3]!)) >>> 0;
  }
  let last = 0;
  for (let i = n, shift = 24; i < b.length; i++, shift -= 8) last |= b[i]! << shift;
  return (sum + (last >>> 0)) >>> 0;
}

// Integers beyond this cannot be counts of bytes in memory.
const MAX_INT = 2 ** 40;

/**
 * Returns the target that delta makes of src, or throws DeltaError.
 * maxLen bounds the target's length (a delta stating more is refused).
 */
export function applyDelta(src: Uint8Array, delta: Uint8Array, maxLen = 64 * 1024 * 1024): Uint8Array {
  let i = 0;
  const int = (): number => {
    let v = 0;
    const start = i;
    while (i < delta.length) {
      const d = VALUE[delta[i]!]!;
      if (d < 0) break;
      v = v * 64 + d;
      if (v > MAX_INT) throw new DeltaError('integer too large');
      i++;
    }
    if (i === start) throw new DeltaError(`integer expected at byte ${start}`);
    return v;
  };
  const n = int();
  if (delta[i++] !== 0x0a) throw new DeltaError('no newline after the length');
  if (n > maxLen) throw new DeltaError(`target of ${n} bytes, more than ${maxLen}`);
  // The stated length alone does not size the allocation: the buffer
  // grows with what the commands make.
  let out = new Uint8Array(Math.min(n, src.length + delta.length));
  let len = 0;
  const room = (cnt: number): void => {
    if (len + cnt <= out.length) return;
    const grown = new Uint8Array(Math.min(n, Math.max(len + cnt, out.length * 2)));
    grown.set(out.subarray(0, len));
    out = grown;
  };
  while (i < delta.length) {
    const cnt = int();
    const op = delta[i++];
    switch (op) {
      case 0x40: {
        // '@': copy
        const ofs = int();
        if (delta[i++] !== 0x2c) throw new DeltaError('copy without a comma');
        if (ofs + cnt > src.length) throw new DeltaError('copy past the source');
        if (len + cnt > n) throw new DeltaError('copy past the target length');
        room(cnt);
        out.set(src.subarray(ofs, ofs + cnt), len);
        len += cnt;
        break;
      }
      case 0x3a: // ':': insert
        if (cnt > delta.length - i) throw new DeltaError('insert past the end of the delta');
        if (len + cnt > n) throw new DeltaError('insert past the target length');
        room(cnt);
        out.set(delta.subarray(i, i + cnt), len);
        len += cnt;
        i += cnt;
        break;
      case 0x3b: // ';': end
        if (i !== delta.length) throw new DeltaError('data after the checksum');
        if (len !== n) throw new DeltaError(`target of ${len} bytes, want ${n}`);
        if (out.length !== n) out = out.subarray(0, n);
        if (fossilChecksum(out) !== cnt) throw new DeltaError('checksum mismatch');
        return out;
      default:
        throw new DeltaError(op === undefined ? 'command without a letter' : `unknown command ${op}`);
    }
  }
  throw new DeltaError('no checksum');
}

// ---- the exact bytes of a JSON frame's publication data ----

function skipWs(s: string, i: number): number {
  for (;;) {
    const c = s.charCodeAt(i);
    if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) return i;
    i++;
  }
}

function skipString(s: string, i: number): number {
  for (i++; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0x5c) i++;
    else if (c === 0x22) return i + 1;
  }
  throw new DeltaError('unterminated string');
}

function skipValue(s: string, i: number): number {
  const c = s[i];
  if (c === '"') return skipString(s, i);
  if (c === '{' || c === '[') {
    let depth = 0;
    while (i < s.length) {
      const ch = s[i];
      if (ch === '"') {
        i = skipString(s, i);
        continue;
      }
      if (ch === '{' || ch === '[') depth++;
      else if (ch === '}' || ch === ']') {
        depth--;
        if (depth === 0) return i + 1;
      }
      i++;
    }
    throw new DeltaError('unterminated value');
  }
  while (i < s.length && !',}] \t\n\r'.includes(s[i]!)) i++;
  return i;
}

/** The [start, end) of the value of key in the object at s[i]. */
function member(s: string, i: number, key: string): [number, number] | null {
  if (s[i] !== '{') return null;
  i = skipWs(s, i + 1);
  while (i < s.length && s[i] !== '}') {
    const kEnd = skipString(s, i);
    const k = s.slice(i, kEnd);
    i = skipWs(s, kEnd);
    if (s[i] !== ':') return null;
    i = skipWs(s, i + 1);
    const vEnd = skipValue(s, i);
    if (k === key) return [i, vEnd];
    i = skipWs(s, vEnd);
    if (s[i] === ',') i = skipWs(s, i + 1);
  }
  return null;
}

/**
 * The source text of the data of a publication push in the JSON encoding
 * ({"pub": {..., "data": VALUE, ...}}): the exact bytes the server sent,
 * which parsing and serializing again would not give back.
 */
export function pubDataText(frame: string): string | undefined {
  const pub = member(frame, skipWs(frame, 0), '"pub"');
  if (!pub) return undefined;
  const data = member(frame, pub[0], '"data"');
  return data ? frame.slice(data[0], data[1]) : undefined;
}
