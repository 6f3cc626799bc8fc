package hub

import (
	"time"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// Acknowledgements. A subscription with Ack set keeps, under its
// channel's lock, the offset its client acknowledged and the publications
// sent to it since, in offset order, at most AckOptions.MaxUnacked of
// them. Ack drops those the client acknowledged (cumulatively, up to an
// offset); AckCheck, which the owner calls periodically for each such
// subscription (one timer for the node, not one per publication), sends
// them all again, in order and marked Redelivered, once the oldest has
// waited Timeout, and reports those that have waited Deadline since they
// were first sent, once each. A publication that would go past
// MaxUnacked is not sent: the subscription's policy applies
// (PolicyDisconnect closes it as slow; PolicyDrop skips the publication
// and marks the next one sent with Gap, so that the client recovers).
//
// Subscriptions without Ack cost one branch in send and nothing else.

// AckOptions configure the tracking of one Ack subscription.
type AckOptions struct {
	// MaxUnacked bounds the publications sent and not acknowledged.
	// Default 1000.
	MaxUnacked int
}

type ackState struct {
	acked   uint64     // offsets up to this one are acknowledged
	pending []ackEntry // sent and not acknowledged, in offset order
	max     int
}

type ackEntry struct {
	pub   *protocol.Publication
	first int64 // unix nanoseconds it was first sent
	sent  int64 // and last sent
	late  bool  // reported past the deadline
}

// ackOf returns s's ack state, creating it. The channel lock is held.
func ackOf(s *Sub) *ackState {
	if s.x == nil {
		s.x = &subExt{}
	}
	if s.x.ack == nil {
		s.x.ack = &ackState{max: 1000}
	}
	return s.x.ack
}

// StartAck sets the position an Ack subscription starts from, before
// Activate: acked is the offset its client has acknowledged, and pubs are
// publications after it that the subscribe reply carries (recovered), so
// they are tracked as sent at now (unix nanoseconds). It reports false if
// sub is no longer registered.
func (h *Hub) StartAck(sub *Sub, opts AckOptions, acked uint64, pubs []*protocol.Publication, now int64) bool {
	ch := h.lockedChannel(sub)
	if ch == nil {
		return false
	}
	defer ch.mu.Unlock()
	a := ackOf(sub)
	if opts.MaxUnacked > 0 {
		a.max = opts.MaxUnacked
	}
	a.acked = acked
	a.pending = a.pending[:0]
	for _, p := range pubs {
		if p.Offset > acked {
			a.pending = append(a.pending, ackEntry{pub: p, first: now, sent: now})
		}
	}
	return true
}

// sendAcked is send for an Ack subscription: the publication is tracked
// until acknowledged, and refused past MaxUnacked.
func (h *Hub) sendAcked(s *Sub, pub *protocol.Publication, frames *[numVariants][]byte) bool {
	a := ackOf(s)
	if pub.Offset == 0 {
		return h.sendPlain(s, pub, frames) // no position to acknowledge
	}
	if len(a.pending) >= a.max {
		h.unacked.Add(1)
		if s.Policy != PolicyDrop {
			h.slowClose(s)
			return false
		}
		// Skipped: the next publication sent tells the client it
		// missed some, and it recovers from what it acknowledged.
		s.gap.Store(true)
		h.dropped.Add(1)
		return false
	}
	if !h.sendPlain(s, pub, frames) {
		return false
	}
	now := nanotime()
	a.pending = append(a.pending, ackEntry{pub: pub, first: now, sent: now})
	return true
}

// Ack records that sub's client acknowledged every publication up to
// offset. An offset beyond the last one sent counts as the last one sent.
// It returns the offset acknowledged from now on, and false if sub is not
// an active Ack subscription.
func (h *Hub) Ack(sub *Sub, offset uint64) (uint64, bool) {
	ch := h.lockedChannel(sub)
	if ch == nil {
		return 0, false
	}
	defer ch.mu.Unlock()
	if sub.x == nil || sub.x.ack == nil {
		return 0, false
	}
	a := sub.x.ack
	if offset <= a.acked {
		return a.acked, true
	}
	n := 0
	for n < len(a.pending) && a.pending[n].pub.Offset <= offset {
		n++
	}
	if n > 0 {
		a.acked = a.pending[n-1].pub.Offset
		m := copy(a.pending, a.pending[n:])
		clear(a.pending[m:])
		a.pending = a.pending[:m]
		if cap(a.pending) > 64 && m < cap(a.pending)/4 {
			a.pending = append([]ackEntry(nil), a.pending...)
		}
	}
	return a.acked, true
}

// AckCheck redelivers sub's unacknowledged publications when the oldest
// was sent timeout (nanoseconds) or more before now (unix nanoseconds),
// in order and marked Redelivered, and returns those first sent deadline
// or more before now that it had not returned before. Redelivery stops at
// a full queue; the next check tries again.
func (h *Hub) AckCheck(sub *Sub, now, timeout, deadline int64) (late []*protocol.Publication) {
	ch := h.lockedChannel(sub)
	if ch == nil {
		return nil
	}
	defer ch.mu.Unlock()
	if sub.recovering || sub.x == nil || sub.x.ack == nil {
		return nil
	}
	a := sub.x.ack
	if len(a.pending) == 0 {
		return nil
	}
	for i := range a.pending {
		e := &a.pending[i]
		if now-e.first < deadline {
			break // the rest were first sent later
		}
		if e.late {
			continue // reported already
		}
		e.late = true
		late = append(late, e.pub)
	}
	if now-a.pending[0].sent < timeout {
		return late
	}
	for i := range a.pending {
		e := &a.pending[i]
		p := *e.pub
		p.Channel = sub.Channel
		p.Redelivered = true
		p.Gap = false
		if err := h.enqueue(sub, &p, nil); err != nil {
			if err != transport.ErrQueueFull {
				return late // closing
			}
			break // the queue is full: the client is slow, try later
		}
		e.sent = now
		h.redelivered.Add(1)
	}
	return late
}

// Unacked returns the number of publications sent to sub and not
// acknowledged, and the offset acknowledged.
func (h *Hub) Unacked(sub *Sub) (n int, acked uint64) {
	ch := h.lockedChannel(sub)
	if ch == nil {
		return 0, 0
	}
	defer ch.mu.Unlock()
	if sub.x == nil || sub.x.ack == nil {
		return 0, 0
	}
	return len(sub.x.ack.pending), sub.x.ack.acked
}

func nanotime() int64 { return time.Now().UnixNano() }
