// Type-level test (npm run typecheck): the public API as an application
// uses it, in Node with the ws package. Never run.
import WebSocket from 'ws';
import { encode, decode } from '@msgpack/msgpack';
import {
  Herald,
  HeraldError,
  TerminalError,
  UnauthorizedError,
  type Publication,
  type SubscribedEvent,
  type StreamPosition,
  type DisconnectEvent,
  type MessagePushEvent,
  type ServerUnsubscribedEvent,
  type State,
} from '../src/index.js';

export async function example(): Promise<void> {
  const client = new Herald('ws://localhost:8000/ws', {
    websocket: WebSocket,
    codec: 'msgpack',
    msgpack: { encode, decode },
    getToken: async () => {
      const res = await fetch('/token');
      if (res.status === 403) throw new UnauthorizedError();
      return res.text();
    },
    reconnect: { baseMs: 200, maxMs: 20000 },
  });
  client.on('state', (e) => {
    const s: State = e.state;
    void s;
  });
  client.on('disconnect', (e: DisconnectEvent) => console.log(e.code, e.reason, e.reconnect, e.reconnectAfter));
  const saved: StreamPosition | undefined = undefined;
  const sub = client.newSubscription('room:1', { recover: true, since: saved });
  sub.on('publication', (p: Publication) => console.log(p.offset, p.data, p.info?.user));
  sub.on('subscribed', (e: SubscribedEvent) => console.log(e.recovered, e.wasRecovering, e.position?.epoch));
  sub.on('join', (e) => console.log(e.info.client));
  sub.on('leave', (e) => console.log(e.info.user));
  sub.on('error', (e) => console.log(e.error.message));
  sub.on('unsubscribed', (e) => console.log(e.code));
  sub.on('subscribing', (e) => console.log(e.code, e.reason));
  // What the server does on its own: messages to this connection, and
  // server-side subscriptions (token channels, server API subscribe).
  client.on('message', (e: MessagePushEvent) => console.log(e.data));
  client.on('subscribed', (e: SubscribedEvent) => console.log(e.channel, e.recovered));
  client.on('publication', (p: Publication) => console.log(p.channel, p.data));
  client.on('unsubscribed', (e: ServerUnsubscribedEvent) => {
    if (e.resubscribe) client.newSubscription(e.channel, { since: e.position }).subscribe();
  });
  sub.subscribe();
  try {
    await client.connect();
  } catch (err) {
    if (err instanceof TerminalError) console.log(err.code);
  }
  const pos: StreamPosition = await client.publish('room:1', { text: 'hi' }, { idempotencyKey: 'k1' });
  const h = await client.history('room:1', { since: pos, limit: 10, reverse: true });
  const members = await client.presence('room:1');
  const stats = await sub.presenceStats();
  console.log(h.publications.length, Object.keys(members), stats.numClients, stats.numUsers, sub.position());
  try {
    await client.rpc('method', { x: 1 });
  } catch (err) {
    if (err instanceof HeraldError) console.log(err.code, err.temporary);
  }
  sub.unsubscribe();
  client.disconnect();
}
