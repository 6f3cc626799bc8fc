// Package redis is Herald's Redis broker and presence store: nodes of a
// Herald cluster share publications, history, stream positions and
// presence through one Redis server or Redis Cluster. It needs Redis 6.2
// or later (XTRIM MINID), 7.0 for sharded pub/sub.
//
// # Keys
//
// Everything of a channel lives under prefix:{channel}, so that with Redis
// Cluster the hash tag puts all of it in one slot: every script touches a
// single slot and no command is ever CROSSSLOT. (A channel name that
// cannot be a hash tag, empty or containing '}', uses a hash of the name
// as the tag.)
//
//	prefix:{ch}:m        meta hash: epoch, top offset, last append time, history TTL
//	prefix:{ch}:h        history stream, entry IDs <offset>-0
//	prefix:{ch}:i:<key>  idempotency record "epoch:offset", PX window
//	prefix:{ch}:ph/pu/pz presence: client -> info, client -> user, client -> expiry
//	prefix:{ch}:p        pub/sub (or shard) channel of live messages
//	prefix:ctl           pub/sub channel of node-to-node control messages
//
// # Publishing
//
// A publication to a channel with history runs one Lua script on the
// channel's master. It checks the idempotency record, creates the meta hash
// with a random epoch if there is none (and deletes any stream left from a
// lost epoch), takes the next offset, appends to the stream
// with XADD MAXLEN under the ID <offset>-0, trims entries older than the
// history TTL (XTRIM MINID; entry times come from the Redis clock), sets
// key expiries, records the idempotency key and publishes the live message
// "p<offset>:<epoch>:<body>". Because all of this is one atomic script,
// offsets are contiguous (1, 2, 3, ...) per channel even with many
// concurrent publishers on many nodes, live delivery carries the same
// offset and epoch as history, and the pub/sub order of a channel is its
// offset order. A retry with the same idempotency key within its window
// returns the first publication's position, reports duplicate, and
// publishes nothing; without history the record holds offset 0 and still
// deduplicates. A channel without history and without an idempotency key
// publishes straight to pub/sub with offset 0 and epoch "".
//
// A node runs the script for a channel's publications in groups (group
// commit): while it has a script call of a channel in flight, its next
// publications of the channel queue, and the next call takes them
// together (up to 256, 1 MiB of bodies, with the history options of the
// first). The script handles each as above, in order, each with its own
// offset, stream entry and idempotency record (a key recorded earlier in
// the same call makes a duplicate too), trims once, and publishes the
// ones appended in one live message "b<first offset>:<epoch>:<body><body>..."
// (bodies are MessagePack, self-delimiting; one alone goes as "p...").
// A hot channel so costs one script call and one pub/sub message per
// group, not per publication; the stored form does not change.
//
// Streams were chosen over a list because the entry ID doubles as the
// offset: a read "since offset n" is XRANGE n+1 +, O(log N + M), with no
// index arithmetic, and MAXLEN and MINID trimming are built in.
//
// # Epochs and expiry
//
// The epoch names one unbroken stream. It lives in the meta hash, which
// expires MetaTTL (default 24h, never less than the history TTL) after the
// last publication. Whenever the meta hash is gone, whatever the reason
// (RemoveHistory, expiry, FLUSHDB, eviction, a Redis restart without
// persistence, a failover that lost writes), the next History or Publish
// creates a new random epoch, so clients holding the old one learn that
// they cannot recover instead of receiving a silent gap. History entries
// older than the history TTL are trimmed on publish and filtered out on
// read (a binary search over the entries' append times), and the stream
// key expires with its newest entry, while the position outlives them.
// Both keys expire up to an eighth of their TTL (at most a second) after
// that: a publish sets an expiry only when the one set is less than the
// TTL away, and reads the oldest entry only when it may have expired (the
// meta hash keeps a time no entry is older than), so that a hot channel's
// script call runs TIME, HMGET, its XADDs, HSET and PUBLISH.
//
// History reads the position and the selected entries in one script, so
// the two are always consistent.
//
// # Subscriptions and delivery
//
// Subscribe sends (S)SUBSCRIBE and returns only once the server has
// confirmed it, so everything published after Subscribe returns is
// delivered. Each pub/sub connection has one reader goroutine, which calls
// the Handler; a channel's messages arrive on one connection in publish
// order, and a per-channel lock keeps HandlePublication in offset order and
// never concurrent for a channel. Join and leave events travel on the
// channel's pub/sub name; control messages on prefix:ctl, which every
// started node (the publisher included) subscribes to.
//
// With classic pub/sub there is one subscribing connection per node. With
// ShardedPubSub in a cluster a shard channel can only be subscribed on the
// master owning its slot, so there is one connection per master, and one
// SSUBSCRIBE carries the channels of one slot only. The broker keeps its
// own slot table (CLUSTER SLOTS, corrected by MOVED replies) and a router
// goroutine that moves subscriptions when slots move (the server ends the
// subscriptions of a moved slot) or a master's connection fails (after a
// failover its replica owns the slots); a moved channel catches up from
// history as after a reconnect. Connection failures also make the command
// client reload its slot table at once instead of at its next periodic
// reload. Classic PUBLISH in a cluster reaches every node over the cluster
// bus; the broker always publishes from the channel's slot master so that
// a channel's messages share one bus link and stay in order.
//
// # Reconnects
//
// Pub/sub is at-most-once: messages published while a subscriber's
// connection is down are lost to it. The reader detects a broken
// connection by the receive error, or by a health-check PING left
// unanswered for HealthCheckInterval, replaces the connection and
// subscribes every channel again. When a channel's subscription is
// confirmed on the new connection, the broker reads history after the last
// position it delivered (or the position it read when the channel was
// subscribed) and delivers what was missed, in order, before any newer
// live message; live messages already delivered that way are skipped. A
// live message whose offset jumps ahead of the last delivered one (for
// example after Redis cut off a slow subscriber) triggers the same
// catch-up. Catch-ups run on up to 8 worker goroutines of the broker, not
// on the reader: other channels' live messages are delivered meanwhile,
// while the channel's own wait (up to 4096; beyond that they are read
// from history too) and follow its catch-up in offset order. What
// history no longer holds cannot be delivered: Herald's hub
// then sees the offset gap or epoch change in the next publication and
// makes clients recover, so a gap is never silent. Channels without
// history have no offsets, and their messages lost during an outage are
// gone.
//
// # Presence
//
// Presence is a hash of client infos, a hash of client users (to count
// distinct users without decoding infos) and a sorted set of expiry times
// on the Redis clock, all in the channel's slot. Every read first drops
// expired members, so members of a node that died vanish once the ttl
// given to AddPresence passes, and the keys expire with their longest
// lived member.
//
// # Lifecycle
//
// New validates the Config and creates the client without connecting.
// Start pings, detects sharded pub/sub support and subscribes to control
// messages. Presence methods need no Start. Close stops delivery, closes
// every connection and waits for every goroutine the broker started.
package redis
