// Package client is Herald's Go SDK. Dial connects (the first attempt is
// synchronous, so a refused token is an error at once) and the client then
// keeps the connection up: it reconnects with exponential backoff and full
// jitter, honours the server's reconnect-after hint and terminal codes, and
// resubscribes every subscription from its last (epoch, offset), reporting
// whether the missed publications were recovered.
//
// Server-side subscriptions are channels the server subscribed the
// connection to: the token's channels claim at connect, and the server
// API's subscribe at any time after (a subscribe push). They have no
// Subscription; Options.OnServerSubscribed reports each one and
// OnServerPublication receives its publications. They recover the same
// way as client subscriptions: the client sends their positions when it
// reconnects and the server delivers what was missed, before any live
// publication. When the server ends one (the server API's unsubscribe),
// OnServerUnsubscribed reports it with its code and reason and the client
// forgets it.
//
// The server may also end a client subscription:
// SubscribeOptions.OnServerUnsubscribed reports the code and reason; codes
// 2000-2499 end the subscription (OnUnsubscribed follows and C is closed),
// codes 2500-2999 make the client subscribe again, recovering from its
// last position. Options.OnMessage receives the data the server sends to
// this one connection (the server API's send), as the bytes sent.
//
// A Client is safe for concurrent use. Close stops it and joins its
// goroutines. The callbacks of publications, subscribe and unsubscribe
// events and messages run on the client's reader goroutine, in stream
// order; a callback that blocks delays every subscription (and, in the
// end, makes the server drop the connection as slow, after which the
// client recovers).
package client
