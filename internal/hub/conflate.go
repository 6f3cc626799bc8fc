package hub

import (
	"time"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// Defaults of Conflate.
const (
	DefaultConflateMaxKeys = 10000
	DefaultConflateBehind  = 32
)

// Conflate configures the subscriptions whose Policy is PolicyConflate
// (Sub.SetConflate). One value is shared by the subscriptions of a namespace; it must not
// change once in use.
//
// A conflating subscriber that keeps up gets every publication by the
// same path as any other subscriber. Once its connection has Behind
// frames queued it is behind: from then on its publications are kept
// aside, the newest per key only (a newer one replaces the older one of
// its key and goes behind the others, so that they still leave in offset
// order), and they are queued as the connection's queue drains, each with
// Skipped set to the publications of its key it replaced. When nothing is
// kept aside any more, the subscriber is back on the common path.
type Conflate struct {
	// Key is the publication tag whose value is a publication's key. Empty
	// makes the whole channel one key; a publication without the tag has
	// the empty key.
	Key string
	// Rate, when above 0, caps the publications a subscriber receives per
	// key at Rate per second: one sooner than 1/Rate s after the previous
	// of its key is kept aside as when behind. Every publication of such a
	// subscriber then costs a lookup by key. Default 0: no cap.
	Rate int
	// MaxKeys bounds the keys kept for one subscriber; a subscriber that
	// needs more is closed as slow (OnSlow). Default 10,000.
	MaxKeys int
	// Behind is the number of frames queued on a connection (not yet
	// written to its socket) from which its subscriber is behind. Default 32.
	Behind int
}

// SetConflate configures s's PolicyConflate with c (the defaults if it is
// never called). Call it before Add; c is shared and read only.
func (s *Sub) SetConflate(c *Conflate) {
	if s.x == nil {
		s.x = &subExt{}
	}
	s.x.cf = c
}

func (c *Conflate) maxKeys() int {
	if c.MaxKeys > 0 {
		return c.MaxKeys
	}
	return DefaultConflateMaxKeys
}

func (c *Conflate) behind() int {
	if c.Behind > 0 {
		return c.Behind
	}
	return DefaultConflateBehind
}

func (c *Conflate) key(p *protocol.Publication) string {
	if c.Key == "" {
		return ""
	}
	return p.Tags[c.Key]
}

// Reduce returns the newest publication per key of pubs (in offset order),
// each with Skipped counting the older ones of its key it stands for:
// what a conflating subscriber recovers. pubs is not modified; the
// publications that stand for others are copies.
func (c *Conflate) Reduce(pubs []*protocol.Publication) []*protocol.Publication {
	if len(pubs) < 2 {
		return pubs
	}
	newest := make(map[string]int, 16) // key -> index in pubs of its newest
	skipped := make([]uint32, len(pubs))
	for i, p := range pubs {
		k := c.key(p)
		if j, ok := newest[k]; ok {
			skipped[i] = skipped[j] + 1 + p.Skipped
		} else {
			skipped[i] = p.Skipped
		}
		newest[k] = i
	}
	out := make([]*protocol.Publication, 0, len(newest))
	for i, p := range pubs {
		if newest[c.key(p)] != i {
			continue
		}
		if skipped[i] != p.Skipped {
			q := *p
			q.Skipped = skipped[i]
			p = &q
		}
		out = append(out, p)
	}
	return out
}

// conflation is a conflating subscriber's publications kept aside: one
// entry per key, the pending ones linked in offset order. Guarded by the
// channel lock.
type conflation struct {
	keys       map[string]*centry
	head, tail *centry // pending entries, oldest first
	pending    int
	bytes      int  // data bytes of the pending publications
	waiting    bool // a drain notification or the rate timer is armed
	timer      *time.Timer
}

type centry struct {
	key        string
	pub        *protocol.Publication // nil unless pending
	skipped    uint32
	prev, next *centry
	sent       time.Time // when the key's last publication was queued (Rate only)
}

func (cs *conflation) push(e *centry) {
	e.prev, e.next = cs.tail, nil
	if cs.tail != nil {
		cs.tail.next = e
	} else {
		cs.head = e
	}
	cs.tail = e
}

func (cs *conflation) unlink(e *centry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		cs.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		cs.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

// conflating reports whether s's publications go through conflate: it is
// behind, or its publications are rate-capped. This is all the common
// path pays for conflation.
func conflating(s *Sub) bool {
	return s.Policy == PolicyConflate && (s.x.cf.Rate > 0 || s.x.cs != nil)
}

// conflate keeps pub aside for s, replacing the pending publication of its
// key, then queues what s's connection has room for. It reports false
// once s is closing.
func (h *Hub) conflate(s *Sub, pub *protocol.Publication) bool {
	cs := s.x.cs
	if cs == nil {
		cs = &conflation{keys: make(map[string]*centry)}
		s.x.cs = cs
	}
	c := s.x.cf
	k := c.key(pub)
	e := cs.keys[k]
	if e == nil {
		if len(cs.keys) >= c.maxKeys() && !cs.prune(c) {
			h.slowClose(s)
			return false
		}
		e = &centry{key: k}
		cs.keys[k] = e
	}
	if e.pub != nil {
		// The pending publication of the key is replaced; the new one
		// goes behind the other keys' to keep offset order.
		e.skipped += 1 + e.pub.Skipped
		cs.bytes -= len(e.pub.Data)
		cs.unlink(e)
		cs.pending--
		h.conflated.Add(1)
	}
	e.pub = pub
	cs.push(e)
	cs.pending++
	cs.bytes += len(pub.Data)
	storeMax(&h.pendingMax, uint64(cs.pending))
	storeMax(&h.pendingBytesMax, uint64(cs.bytes))
	return h.drain(s, cs)
}

// prune forgets the keys with nothing pending whose rate interval has
// passed (Rate only), and reports whether there is room for a new key.
func (cs *conflation) prune(c *Conflate) bool {
	if c.Rate <= 0 {
		return false // every key kept is pending
	}
	cutoff := time.Now().Add(-time.Second / time.Duration(c.Rate))
	for k, e := range cs.keys {
		if e.pub == nil && e.sent.Before(cutoff) {
			delete(cs.keys, k)
		}
	}
	return len(cs.keys) < c.maxKeys()
}

// drain queues s's pending publications, oldest first, while its
// connection is not behind (and their keys' rate allows). It arms a
// notification (queue drained, or rate interval over) for the rest. With
// nothing left pending and no rate, s is back on the common path. It
// reports false once s is closing.
func (h *Hub) drain(s *Sub, cs *conflation) bool {
	c := s.x.cf
	for cs.head != nil && !cs.waiting {
		e := cs.head
		now := time.Time{}
		if c.Rate > 0 {
			now = time.Now()
			if due := e.sent.Add(time.Second / time.Duration(c.Rate)); now.Before(due) {
				cs.waiting = true
				if cs.timer == nil {
					cs.timer = time.AfterFunc(due.Sub(now), func() { h.wake(s, cs) })
				} else {
					cs.timer.Reset(due.Sub(now))
				}
				return true
			}
		}
		p := e.pub
		if e.skipped > 0 {
			q := *p
			q.Skipped += e.skipped
			p = &q
		}
		switch err := h.enqueue(s, p, nil); err {
		case nil:
		case transport.ErrQueueFull:
			// Behind (or full of other frames): go on when it drains.
			n, _ := s.Conn.QueueLen()
			if n == 0 {
				continue // drained meanwhile
			}
			if s.Conn.NotifyBelow(min(c.behind()/2, n-1), func() { h.wake(s, cs) }) {
				cs.waiting = true
				return true
			}
			if s.Conn.Closing() {
				return false
			}
			continue // drained meanwhile
		default:
			return false // closing
		}
		h.delivered.Add(1)
		cs.unlink(e)
		cs.pending--
		cs.bytes -= len(e.pub.Data)
		e.pub, e.skipped = nil, 0
		if c.Rate > 0 {
			e.sent = now
		} else {
			delete(cs.keys, e.key)
		}
	}
	if cs.head == nil && c.Rate <= 0 {
		s.x.cs = nil
	}
	return true
}

// wake continues the drain of s's conflation cs, if it is still s's.
func (h *Hub) wake(s *Sub, cs *conflation) {
	ch := h.lockedChannel(s)
	if ch == nil {
		return
	}
	defer ch.mu.Unlock()
	if s.x == nil || s.x.cs != cs || s.recovering {
		return
	}
	cs.waiting = false
	h.drain(s, cs)
}

// stop ends cs when its subscription goes.
func (cs *conflation) stop() {
	if cs.timer != nil {
		cs.timer.Stop()
	}
}

func storeMax(v interface {
	Load() uint64
	CompareAndSwap(old, new uint64) bool
}, n uint64) {
	for {
		old := v.Load()
		if n <= old || v.CompareAndSwap(old, n) {
			return
		}
	}
}
