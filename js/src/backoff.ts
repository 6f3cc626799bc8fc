// Reconnect policy: full-jitter exponential backoff and the classification
// of close codes into reconnect and terminal (docs/protocol.md,
// "Disconnects").

/**
 * The backoff before attempt n (0-based): uniform in
 * [0, min(maxMs, baseMs * 2^n)). random is injectable for tests.
 */
export function backoff(attempt: number, baseMs = 200, maxMs = 20000, random: () => number = Math.random): number {
  const n = Math.max(0, Math.min(attempt, 52));
  const bound = Math.min(maxMs, baseMs * 2 ** n);
  return Math.floor(random() * bound);
}

/** The delay before reconnecting: the backoff, but at least the server's hint. */
export function reconnectDelay(attempt: number, baseMs: number, maxMs: number, reconnectAfter = 0, random: () => number = Math.random): number {
  return Math.max(backoff(attempt, baseMs, maxMs, random), reconnectAfter);
}

/**
 * Whether a client should reconnect after the connection closed with code.
 * RFC 6455 codes: not after protocol violations (1002, 1003, 1007, 1008,
 * 1009, 1010), yes otherwise. Herald: 3000-3499 and 4000-4499 reconnect,
 * 3500-3999 and 4500-4999 are terminal.
 */
export function reconnects(code: number): boolean {
  if (code < 3000) {
    return ![1002, 1003, 1007, 1008, 1009, 1010].includes(code);
  }
  if (code < 3500) return true;
  if (code < 4000) return false;
  if (code < 4500) return true;
  return false;
}
