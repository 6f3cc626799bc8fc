// herald-client: the TypeScript SDK of Herald. See README.md.
export { Herald, VERSION, type ClientEvents } from './client.js';
export { Subscription, type SubscriptionEvents } from './subscription.js';
export { HeraldError, DisconnectedError, TimeoutError, TerminalError, UnauthorizedError, ErrorCode, DisconnectCode } from './errors.js';
export { backoff, reconnectDelay, reconnects } from './backoff.js';
export { classifyOffset, type OffsetVerdict } from './gap.js';
export { jsonCodec, msgpackCodec, type Codec } from './codec.js';
export type * from './types.js';
export { HttpStreamSocket, streamUrls } from './httpstream.js';
