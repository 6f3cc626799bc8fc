// Package client is Herald's Go SDK. Dial connects (the first attempt is
// synchronous, so a refused token is an error at once) and the client then
// keeps the connection up: it reconnects with exponential backoff and full
// jitter, honours the server's reconnect-after hint and terminal codes, and
// resubscribes every subscription from its last (epoch, offset), reporting
// whether the missed publications were recovered. Server-side
// subscriptions (the token's channels claim; Options.OnServerPublication
// and OnServerSubscribed) recover the same way through connect.
//
// A Client is safe for concurrent use. Close stops it and joins its
// goroutines. Subscription callbacks run on the client's reader goroutine,
// in stream order; a callback that blocks delays every subscription (and, in
// the end, makes the server drop the connection as slow, after which the
// client recovers).
package client
