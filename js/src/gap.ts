// Offset checks for live publications on channels with history: a client
// never advances its position past an offset it did not receive
// (docs/protocol.md, "Positions, history and recovery").

export type OffsetVerdict = 'next' | 'duplicate' | 'gap';

/**
 * Classifies a live publication's offset against the last offset delivered:
 * 'next' (deliver and advance), 'duplicate' (already delivered: drop) or
 * 'gap' (publications are missing: resubscribe with recovery from last).
 */
export function classifyOffset(last: number, offset: number): OffsetVerdict {
  if (offset <= last) return 'duplicate';
  if (offset === last + 1) return 'next';
  return 'gap';
}
