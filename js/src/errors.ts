import type { WireError } from './types.js';

/** An error reply from the server (protocol error codes 100-199, 1000-1999 from rpc). */
export class HeraldError extends Error {
  readonly code: number;
  /** The command may be retried as it is. */
  readonly temporary: boolean;
  constructor(e: WireError) {
    super(`herald error ${e.code}: ${e.message}`);
    this.name = 'HeraldError';
    this.code = e.code;
    this.temporary = !!e.temporary;
  }
}

/** The connection ended before the reply, or the client is disconnected. */
export class DisconnectedError extends Error {
  constructor(message = 'herald: disconnected') {
    super(message);
    this.name = 'DisconnectedError';
  }
}

/** No reply within timeoutMs. */
export class TimeoutError extends Error {
  constructor(message = 'herald: timeout') {
    super(message);
    this.name = 'TimeoutError';
  }
}

/** The client stopped for good: the server refused it with a terminal code. */
export class TerminalError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string) {
    super(`herald: disconnected with terminal code ${code} (${reason})`);
    this.name = 'TerminalError';
    this.code = code;
    this.reason = reason;
  }
}

/**
 * Thrown by a getToken callback to say the user may not connect (or
 * subscribe): the SDK stops instead of retrying.
 */
export class UnauthorizedError extends Error {
  constructor(message = 'herald: unauthorized') {
    super(message);
    this.name = 'UnauthorizedError';
  }
}

/** Error codes of protocol v1. */
export const ErrorCode = {
  Internal: 100,
  Unauthorized: 101,
  UnknownChannel: 102,
  PermissionDenied: 103,
  MethodNotFound: 104,
  AlreadySubscribed: 105,
  LimitExceeded: 106,
  BadRequest: 107,
  NotAvailable: 108,
  TokenExpired: 109,
  Expired: 110,
  TooManyRequests: 111,
  UnrecoverablePosition: 112,
  InvalidChannel: 113,
  NotFound: 114,
  Timeout: 115,
  NotConnected: 116,
  /** Temporary: the broker could not serve the command now (a leader election, an outage); retry. */
  Unavailable: 117,
  /** A subscribe or history filter does not parse. */
  BadFilter: 118,
} as const;

/** Disconnect codes of protocol v1 (and the client-side ones the SDK reports). */
export const DisconnectCode = {
  /** Client side: the connection was lost (no close frame, no ping, offline, timeout). */
  ConnectionLost: 1006,
  /** Client side: disconnect() was called. */
  Normal: 1000,
  Shutdown: 3000,
  InsufficientState: 3001,
  Slow: 3002,
  WriteError: 3003,
  NoPong: 3004,
  ServerError: 3005,
  Stale: 3006,
  ForceReconnect: 3007,
  TooManyRequests: 3008,
  ConnectionLimit: 3009,
  InvalidToken: 3500,
  BadRequest: 3501,
  TokenExpired: 3502,
  ForceDisconnect: 3503,
  PermissionDenied: 3504,
  Unauthorized: 3505,
} as const;
