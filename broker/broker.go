package broker

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// ErrClosed is returned by calls on a closed broker.
var ErrClosed = errors.New("herald: broker closed")

// ErrUnavailable is wrapped by errors of calls the broker could not serve
// for now, and refused at once rather than wait: its backend is electing
// a leader, recreating a stream, or out of reach. Nothing was stored, so
// the same call may be retried (with the same idempotency key) and
// succeed. The server answers them with the temporary error code 117.
var ErrUnavailable = errors.New("herald: broker unavailable")

// StreamPosition is a channel stream position: the epoch names the stream's
// identity, the offset the last publication in it.
type StreamPosition = protocol.StreamPosition

// Handler receives what the broker delivers to this node. For each channel
// the broker calls HandlePublication in offset order and never concurrently
// with itself for that channel. Handlers must return quickly and must not
// call back into the broker.
type Handler interface {
	// HandlePublication delivers a publication of a channel this node is
	// subscribed to. epoch is the stream's epoch ("" without history).
	HandlePublication(channel string, pub *protocol.Publication, epoch string)
	HandleJoin(channel string, info *protocol.ClientInfo)
	HandleLeave(channel string, info *protocol.ClientInfo)
	// HandleControl delivers a node-to-node message published with
	// PublishControl by any node, this one included.
	HandleControl(data []byte)
}

// PublishOptions controls how a publication is kept.
type PublishOptions struct {
	// HistorySize and HistoryTTL bound the channel's history; both zero means
	// the channel keeps no history and publications get offset 0.
	HistorySize int
	HistoryTTL  time.Duration
	// IdempotencyKey, if set, makes a publish with the same key in the same
	// channel within IdempotencyWindow a no-op that returns the first
	// publication's position.
	IdempotencyKey    string
	IdempotencyWindow time.Duration
}

// HistoryOptions selects publications from a channel's history.
type HistoryOptions struct {
	// Since: only publications after this position. If its epoch differs
	// from the stream's, no publications are returned (the caller compares
	// the returned position's epoch).
	Since *StreamPosition
	// Limit caps the number returned; 0 returns only the position, a
	// negative value returns everything retained.
	Limit int
	// Reverse returns newest first.
	Reverse bool
}

// Broker carries publications, join/leave events and control messages to
// every node subscribed, and keeps history. Implementations are safe for
// concurrent use.
type Broker interface {
	// Start registers the handler and connects. It is called once, before
	// any other method.
	Start(ctx context.Context, h Handler) error
	// Subscribe makes this node receive the channel's publications and
	// join/leave events. Unsubscribe undoes it.
	Subscribe(ctx context.Context, channel string) error
	Unsubscribe(ctx context.Context, channel string) error
	// Publish assigns the next offset (when history is kept), appends to
	// history and delivers to every subscribed node. duplicate reports an
	// idempotent retry, which is not delivered again.
	Publish(ctx context.Context, channel string, pub *protocol.Publication, opts PublishOptions) (pos StreamPosition, duplicate bool, err error)
	PublishJoin(ctx context.Context, channel string, info *protocol.ClientInfo) error
	PublishLeave(ctx context.Context, channel string, info *protocol.ClientInfo) error
	PublishControl(ctx context.Context, data []byte) error
	// History returns retained publications and the stream's current
	// position. A channel never published to has a fresh epoch and offset 0.
	History(ctx context.Context, channel string, opts HistoryOptions) ([]*protocol.Publication, StreamPosition, error)
	// RemoveHistory drops the channel's history; its next stream has a new
	// epoch.
	RemoveHistory(ctx context.Context, channel string) error
	// SetCursor records pos as the position user acknowledged in channel
	// (channels with acknowledgements), kept for ttl after the write. In
	// one epoch a cursor only moves forward: a lower offset leaves the
	// stored one as it is; a position of another epoch replaces it.
	SetCursor(ctx context.Context, user, channel string, pos StreamPosition, ttl time.Duration) error
	// Cursor returns the position SetCursor stored; ok is false if there
	// is none (never written, or expired).
	Cursor(ctx context.Context, user, channel string) (pos StreamPosition, ok bool, err error)
	// Close releases connections and stops delivery.
	Close(ctx context.Context) error
}

// OutageHandler is implemented by handlers that want to know when the
// broker loses its connection and when it has it again. In between,
// join/leave events (and live publications) published by other nodes may
// not reach this node, and its own may not reach them. Brokers call them
// from their own goroutines; a handler must return quickly.
type OutageHandler interface {
	HandleBrokerDown()
	HandleBrokerUp()
}

// Readier is implemented by brokers that can tell whether they serve
// calls now. A server whose broker implements it answers /readyz with
// "ready" only while Ready returns nil, so that a node is not sent
// traffic before its broker can serve it (the NATS broker: before every
// stream it uses has a leader that answers this node).
type Readier interface {
	Ready(ctx context.Context) error
}

// PresenceStats counts a channel's members.
type PresenceStats struct {
	NumClients int
	NumUsers   int
}

// PresenceStore keeps channel members. Entries expire after the ttl given
// when they were added unless added again, so members of a node that died
// disappear by themselves. Implementations are safe for concurrent use.
type PresenceStore interface {
	AddPresence(ctx context.Context, channel, clientID string, info *protocol.ClientInfo, ttl time.Duration) error
	RemovePresence(ctx context.Context, channel, clientID string) error
	Presence(ctx context.Context, channel string) (map[string]*protocol.ClientInfo, error)
	PresenceStats(ctx context.Context, channel string) (PresenceStats, error)
}

// Recovered reports whether pubs, returned by History with Since = since,
// hold every publication after since with no gap: the epoch matches, and the
// first returned offset follows since (or nothing was missed).
func Recovered(since StreamPosition, pubs []*protocol.Publication, cur StreamPosition) bool {
	if since.Epoch != cur.Epoch || since.Offset > cur.Offset {
		return false
	}
	if len(pubs) == 0 {
		return since.Offset == cur.Offset
	}
	for i, p := range pubs {
		if p.Offset != since.Offset+uint64(i)+1 {
			return false
		}
	}
	return pubs[len(pubs)-1].Offset == cur.Offset
}
