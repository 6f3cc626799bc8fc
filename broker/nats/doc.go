// Package nats is Herald's broker and presence store on NATS: core NATS
// carries publications, join/leave and control messages between nodes,
// JetStream keeps history, stream positions, idempotency keys and
// presence. One *Broker is both a broker.Broker and a
// broker.PresenceStore.
//
// It needs a NATS server with JetStream, version 2.9 or later. Every name
// it uses lives under Config.Prefix (default "herald"), so several Herald
// clusters or test runs can share a server:
//
//	<prefix>-history      stream, subjects <prefix>.hist.<channel>
//	<prefix>-presence     stream, subjects <prefix>.pres.<channel>.<client>
//	<prefix>-idempotency  stream, subjects <prefix>.idem.<channel>.<key hash>
//	<prefix>-cursors      stream, subjects <prefix>.curs.<user>.<channel>
//	<prefix>.live.<channel>  core subject a node subscribes to per channel
//	<prefix>.ctl             core subject of control messages
//
// Channel names and client ids become one subject token each: bytes outside
// A-Z a-z 0-9 _ - : @ / = , # ! ~ + ; are %XX-escaped ('.', '*', '>', '%'
// included), so every name works and no two share a subject.
//
// # History and offsets
//
// All channels share the history stream, one subject per channel. A
// stream per channel would cost server resources per channel, and
// per-subject limits cannot express per-channel history sizes, so the
// stream has no per-subject limit and the broker trims it itself.
//
// Offsets are per channel and contiguous. Each history message carries its
// channel's epoch and offset in headers (Herald-Epoch, Herald-Offset). To
// publish, a node reads the subject's last message (epoch E, offset n,
// stream sequence s) and appends offset n+1 in epoch E with
// Nats-Expected-Last-Subject-Sequence: s. The server accepts the append
// only if s is still the subject's last message, so concurrent publishers,
// on one node or many, never get the same offset, leave no hole, and stored
// order is offset order; the loser of a race re-reads and retries. A node
// caches the last message it wrote, so an uncontended append is one round
// trip.
//
// A node appends a channel's publications in groups (group commit): while
// one append of the channel is in flight, the node's next publications of
// the channel queue, and the next append carries them together in one
// message, with consecutive offsets: header Herald-Count n, Herald-Offset
// the last of the n, and a body that is a MessagePack array of the n
// publications (a message of one publication has no Herald-Count and its
// body is the publication). A group holds up to 1024 publications with the
// history options of its first, in a body below the server's max_payload.
// So a hot channel costs one JetStream round trip per group, not per
// publication, and each publisher still gets its own offset (or the
// group's error). History, recovery and live delivery read a message as
// its publications, each with its offset; windows, trimming and
// idempotency work per publication.
//
// The stream republishes (RePublish) every stored message to
// <prefix>.live.<channel>. That is the live path of channels with history:
// only accepted appends reach subscribers, in stored (thus offset) order,
// with the offset they have in history, and a retried or deduplicated
// publish is never delivered twice. nats.go runs each subscription's
// handler on its own goroutine, one message at a time. Republished order
// is stored order as a rule, but not always: a node that lost a race reads
// the subject's last message and may append after it, and see its own
// message republished before that one (seen under load, a few times in
// 100,000 publications from three nodes). So each subscription tracks the
// last offset it delivered: a message that jumps ahead is preceded by the
// missing publications, read from history, and the late one is skipped
// when it comes; HandlePublication is called in offset order per channel.
// Its starting point is the subject's head, read when the subscription is
// registered. A channel's last publication has no later one to show its
// gap, so a node checks, half a second after its last append to a
// channel, that its own subscription delivered it; if not, it delivers
// it from history and publishes a head notice (Herald-Kind "head") on the
// live subject, on which every node fills its own gap from history
// (tail.go). Publications of channels without
// history skip JetStream: a core NATS publish to the same live subject,
// offset 0, epoch "".
//
// Subscribe flushes the connection before returning, so the server has
// registered the subscription: everything stored afterwards is
// republished to this node, and History read after Subscribe misses
// nothing.
//
// # Epochs
//
// The epoch is in the messages, not in a separate record that could
// disagree with them. When a channel's subject is empty — never published
// to, removed by RemoveHistory, expired after HistoryMaxAge, or lost with
// the stream (deleted, or a NATS restart without persistence; the broker
// recreates missing streams) — the next writer starts a new random epoch
// at offset 1. History on an empty subject writes an epoch marker (offset
// 0, not a publication) conditionally on the subject still being empty,
// so the epoch it returns is the one the next publication continues. The
// last message of a subject is never trimmed, so a channel keeps its
// position after its publications leave the window, until HistoryMaxAge
// passes without a publication (as memory.Config.MetaTTL).
//
// # Windows
//
// History returns exactly the window of the latest publication's options:
// the last HistorySize offsets, younger than HistoryTTL (judged by the
// stream's timestamp against the local clock), per publication whatever
// groups they were appended in. Storage is trimmed asynchronously: every
// HistorySize/4 offsets, the messages before the newest one this node
// marked (one every HistorySize/4 offsets) that holds no offset of the
// window, or else all but the last HistorySize messages; and, for a TTL,
// messages stored before one this node appended more than HistoryTTL ago. JetStream per-message TTLs would do
// the latter more exactly but need NATS 2.11 and would expire the last
// message, and with it the position.
//
// # Idempotency
//
// JetStream's Nats-Msg-Id deduplication has one window per stream, while
// IdempotencyWindow is per publish, and it does not cover channels without
// history. So a key is a subject of the idempotency stream holding one
// record: the first publisher claims it with a conditional write (subject
// empty, or holding an expired record), publishes, and completes the
// record with the position. A retry within the window returns that
// position with duplicate=true; one that finds the claim pending waits for
// it (at most 10s, in case its publisher died). A publisher may die, or
// lose its server, after appending and before completing the record, so
// history messages carry the key's hash with each publication: a retry that
// finds a claim pending for a second, or expired, looks for it in the
// channel's history since the claim, and if found completes the record
// and returns its position as a duplicate. A publisher whose append got
// no answer keeps its claim for the same reason (a refused append drops
// it). Channels without history have no such trail: there a claim left
// pending for the claim timeout (10s), within its window, counts as
// published, and the retry completes the record and answers it as a
// duplicate. A key thus publishes at most once; a publisher that died
// after its claim but before its publish left the network loses that
// publication, as channels without history lose any publication a node
// takes down with it. Records carry their
// window and expire when read; MaxIdempotencyWindow bounds the stream's
// MaxAge, and longer windows are refused.
//
// # Presence
//
// The presence stream keeps the last message per subject, as a KV bucket
// does. An entry carries its TTL; readers hide and purge entries older
// than it, so members of a dead node vanish within the TTL given to
// AddPresence. Per-entry TTLs are read-side because the server supports
// per-message TTLs only from 2.11. MaxPresenceTTL bounds the stream's
// MaxAge, which removes what nobody reads. Presence is kept in memory.
//
// # Leader elections and missing streams
//
// No call waits for a stream that cannot answer. A stream whose leader's
// server died has no leader until the others elect one (seconds): a
// publish to it finds no responder at once, and a read (only the leader
// answers reads) gets no answer. Publishes then fail at once, and reads
// after Config.LeaderTimeout (on a cluster; a single server elects no
// leaders, and a slow answer there is only slow), with an error wrapping
// broker.ErrUnavailable: nothing was stored, and the same call may be
// retried. A publish whose append was sent as the leader's server died
// gets no answer at all: it may or may not have been stored. On a cluster
// each send of an append waits a quarter of LeaderTimeout for its answer,
// and an unanswered one is sent again, unchanged, until the stream
// answers (at most RequestTimeout in all). Appends are conditional on the
// subject's last sequence, so at most one of the copies is stored; when
// a copy is refused because something took the place, the broker reads
// that message and knows it by the append's random name (a header):
// the publish then returns the position it was stored at. A copy refused
// because an append of the channel is still being replicated (perhaps an
// earlier copy of the same message, proposed and not yet stored) says
// nothing either way: the broker waits a moment and sends it again until
// the refusal names a stored message. An idempotency claim or a cursor
// write refused in the same way waits too (for at most a quarter of
// LeaderTimeout), instead of reading a record not stored yet and
// spending its attempts. Only when no
// answer came within RequestTimeout does the publish fail with an error
// that says the publication may have been stored (not ErrUnavailable). A stream that is gone (deleted, or lost by a NATS restart
// without persistence) fails calls the same way while a goroutine of the
// broker recreates it; no call recreates a stream under its own deadline.
// Ephemeral consumers of reads are placed at random on the stream's
// servers, for a while on a dead one too: a creation unanswered for a
// quarter of LeaderTimeout is tried again.
//
// # Lifecycle
//
// New validates; Start connects, creates or updates the streams and
// subscribes to control messages; Close waits for calls in flight, drains
// the connection and returns when no handler call runs or will run. The
// broker's goroutines are nats.go's (reader, flusher, one per
// subscription), which end with the connection; Close waits for its closed
// callback. The goroutines the broker starts itself, one in Close and
// those repairing a stream, are joined before Close returns.
//
// Limitations: in a NATS cluster, subscription interest reaches other
// servers asynchronously, so "delivered after Subscribe returns" holds
// strictly only when the node's server also leads the history stream;
// History reads every stored message of the channel (bounded by about
// 1.25 HistorySize) even for a small Limit; TTL judgements depend on clocks
// being in sync.
package nats
