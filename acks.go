package herald

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// Acknowledgements (Namespace.Ack). The hub tracks, per subscription, the
// publications sent and not acknowledged (internal/hub/ack.go); this file
// is the node's side: the ack command, one goroutine for the node that
// checks every acknowledged subscription a few times per AckTimeout
// (redelivery, undelivered reports), and the users' cursors, written to
// the broker at most once per user and channel per cursorFlush.

// cursorFlush is how often acknowledged offsets are written to the
// broker: the acknowledgements of a user and channel within it cost one
// write.
const cursorFlush = 250 * time.Millisecond

// EventUndelivered is the lifecycle event of a publication that stayed
// unacknowledged past its namespace's AckDeadline.
const EventUndelivered = "undelivered"

// ackSub is what the tracker keeps of a subscription with
// acknowledgements.
type ackSub struct {
	ss    *session
	user  string
	epoch string // of the channel's stream at subscribe
}

type cursorKey struct{ user, channel string }

type cursorWrite struct {
	pos protocol.StreamPosition
	ttl time.Duration
}

// ackTracker is the node's acknowledged subscriptions. Nil on a node
// without ack namespaces.
type ackTracker struct {
	s        *Server
	interval time.Duration

	mu      sync.Mutex
	subs    map[*subscription]ackSub
	cursors map[cursorKey]cursorWrite // acknowledged, not yet written
	// reported is the highest offset reported undelivered per user (or
	// client, for anonymous ones) and channel, with when: a publication
	// unacknowledged on several of a user's connections is reported once.
	reported map[cursorKey]reportedAt
	flushing bool
}

type reportedAt struct {
	epoch  string
	offset uint64
	at     time.Time
}

// newAckTracker returns the tracker of a node whose namespaces ask for
// acknowledgements, nil if none does.
func newAckTracker(s *Server) *ackTracker {
	var interval time.Duration
	for _, ns := range s.namespaces {
		if ns.Ack {
			if d := ns.AckTimeout / 4; interval == 0 || d < interval {
				interval = d
			}
		}
	}
	if interval == 0 {
		return nil
	}
	interval = min(max(interval, 5*time.Millisecond), time.Second)
	return &ackTracker{s: s, interval: interval, subs: map[*subscription]ackSub{},
		cursors: map[cursorKey]cursorWrite{}, reported: map[cursorKey]reportedAt{}}
}

// run checks the subscriptions every interval until the server quits,
// then writes the cursors still pending.
func (t *ackTracker) run() {
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	var (
		list      []*subscription
		info      []ackSub
		lastFlush time.Time
	)
	for {
		select {
		case <-t.s.quit:
			t.flush()
			return
		case now := <-tick.C:
			list, info = t.snapshot(list[:0], info[:0])
			t.check(now, list, info)
			clear(list)
			clear(info)
			if now.Sub(lastFlush) >= cursorFlush {
				lastFlush = now
				t.flushAsync()
				t.prune(now)
			}
		}
	}
}

func (t *ackTracker) snapshot(list []*subscription, info []ackSub) ([]*subscription, []ackSub) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for sub, a := range t.subs {
		list = append(list, sub)
		info = append(info, a)
	}
	return list, info
}

// check redelivers what is overdue and reports what is past its deadline.
func (t *ackTracker) check(now time.Time, list []*subscription, info []ackSub) {
	n := now.UnixNano()
	for i, sub := range list {
		late := t.s.hub.AckCheck(&sub.Sub, n, int64(sub.ns.AckTimeout), int64(sub.ns.AckDeadline))
		for _, p := range late {
			t.undelivered(now, sub, info[i], p)
		}
	}
}

// undelivered reports a publication unacknowledged past its deadline:
// once per user (or anonymous connection), channel and offset on this
// node, and, through the events channel's idempotency, once in the
// cluster within its window.
func (t *ackTracker) undelivered(now time.Time, sub *subscription, a ackSub, p *protocol.Publication) {
	who := a.user
	if who == "" {
		who = "\x00" + a.ss.id
	}
	k := cursorKey{who, sub.Channel}
	t.mu.Lock()
	r, seen := t.reported[k]
	if seen && r.epoch == a.epoch && p.Offset <= r.offset {
		t.mu.Unlock()
		return
	}
	t.reported[k] = reportedAt{a.epoch, p.Offset, now}
	t.mu.Unlock()
	s := t.s
	s.metrics.undelivered.Inc()
	s.log.Info("publication undelivered", "channel", sub.Channel, "offset", p.Offset, "epoch", a.epoch, "user", a.user, "client", a.ss.id, "deadline", sub.ns.AckDeadline)
	if s.events != nil {
		ev := Event{Type: EventUndelivered, ID: eventID(EventUndelivered, who, sub.Channel, a.epoch, strconv.FormatUint(p.Offset, 10)),
			User: a.user, Client: a.ss.id, Channel: sub.Channel, Offset: p.Offset, Epoch: a.epoch}
		s.events.do(connKey(a.ss, a.user), func() { s.events.emit(ev) })
	}
}

// prune forgets the undelivered reports older than every deadline could
// make a repeat.
func (t *ackTracker) prune(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, r := range t.reported {
		if now.Sub(r.at) > 10*time.Minute {
			delete(t.reported, k)
		}
	}
}

// add registers an active subscription with acknowledgements.
func (t *ackTracker) add(sub *subscription, a ackSub) {
	t.mu.Lock()
	t.subs[sub] = a
	t.mu.Unlock()
}

func (t *ackTracker) remove(sub *subscription) {
	t.mu.Lock()
	delete(t.subs, sub)
	t.mu.Unlock()
}

// acked records a user's acknowledged position in a channel for the next
// cursor write.
func (t *ackTracker) acked(sub *subscription, offset uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	a, ok := t.subs[sub]
	if !ok || a.user == "" {
		return
	}
	k := cursorKey{a.user, sub.Channel}
	if c, ok := t.cursors[k]; ok && c.pos.Epoch == a.epoch && c.pos.Offset >= offset {
		return
	}
	t.cursors[k] = cursorWrite{pos: protocol.StreamPosition{Epoch: a.epoch, Offset: offset}, ttl: sub.ns.AckCursorTTL}
}

// flushAsync writes the pending cursors on a goroutine of their own,
// unless the previous writes are still running (they are then written
// next time).
func (t *ackTracker) flushAsync() {
	t.mu.Lock()
	if t.flushing || len(t.cursors) == 0 {
		t.mu.Unlock()
		return
	}
	t.flushing = true
	t.mu.Unlock()
	if !t.s.goTracked(func() {
		t.flush()
		t.mu.Lock()
		t.flushing = false
		t.mu.Unlock()
	}) {
		t.mu.Lock()
		t.flushing = false
		t.mu.Unlock()
	}
}

// flush writes the pending cursors to the broker.
func (t *ackTracker) flush() {
	t.mu.Lock()
	pending := t.cursors
	t.cursors = map[cursorKey]cursorWrite{}
	t.mu.Unlock()
	for k, c := range pending {
		t.s.writeCursor(k, c)
	}
}

// ack runs the ack command: each channel's subscription, if it has
// acknowledgements, drops what the offset covers. Unknown channels and
// channels without acknowledgements are ignored (an acknowledgement may
// cross an unsubscribe).
func (ss *session) ack(req *protocol.AckRequest) {
	t := ss.s.acks
	if t == nil || req == nil {
		return
	}
	for ch, off := range req.Offsets {
		ss.mu.Lock()
		sub := ss.sub(ch)
		ss.mu.Unlock()
		if sub == nil || !sub.Ack {
			continue
		}
		if acked, ok := ss.s.hub.Ack(&sub.Sub, off); ok {
			t.acked(sub, acked)
		}
	}
}

// startAck begins the tracking of a prepared subscription with
// acknowledgements: its client has acknowledged up to acked, and the
// reply carries pubs.
func (ss *session) startAck(p *pendingSub, acked uint64, epoch string) {
	sub := p.sub
	var pubs []*protocol.Publication
	if p.res.Recovered {
		pubs = p.res.Publications
	}
	ss.s.hub.StartAck(&sub.Sub, hub.AckOptions{MaxUnacked: sub.ns.AckMaxUnacked}, acked, pubs, time.Now().UnixNano())
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	ss.s.acks.add(sub, ackSub{ss: ss, user: user, epoch: epoch})
}

// writeCursor stores a user's acknowledged position in a channel. A
// failed write is logged; the next acknowledgement writes again.
func (s *Server) writeCursor(k cursorKey, c cursorWrite) {
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	start := time.Now()
	err := s.broker.SetCursor(ctx, k.user, k.channel, c.pos, c.ttl)
	s.observe("set_cursor", start)
	if err != nil {
		s.log.Warn("write acknowledged position", "user", k.user, "channel", k.channel, "err", err)
	}
}

// fromCursor returns req with the position of the user's cursor when the
// request asks for it (Acked) and the cursor is further than the
// request's own position: the request has none, or one of the same
// epoch behind it. A request whose position is of another epoch keeps
// it. A cursor that cannot be read leaves req as it is (logged).
func (ss *session) fromCursor(ctx context.Context, ns *namespace, req *protocol.SubscribeRequest) *protocol.SubscribeRequest {
	if !req.Acked || !ns.Ack {
		return req
	}
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if user == "" {
		return req
	}
	start := time.Now()
	pos, ok, err := ss.s.broker.Cursor(ctx, user, req.Channel)
	ss.s.observe("cursor", start)
	if err != nil {
		ss.s.log.Warn("read acknowledged position", "user", user, "channel", req.Channel, "err", err)
		return req
	}
	if !ok || (req.Recover && (pos.Epoch != req.Epoch || pos.Offset <= req.Offset)) {
		return req
	}
	r := *req
	r.Recover, r.Epoch, r.Offset = true, pos.Epoch, pos.Offset
	return &r
}
