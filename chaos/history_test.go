package chaos

import (
	"fmt"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// pos is a stream position.
type pos = protocol.StreamPosition

// clock gives every recorded event a time: nanoseconds since the run
// started, from the monotonic clock, so that publish calls and returns
// order correctly for the linearizability check.
type clock struct{ start time.Time }

func (c clock) now() int64 { return int64(time.Since(c.start)) }

// streamEvent is one thing a subscriber's application was handed: a
// (re)subscription or a publication.
type streamEvent struct {
	T      int64
	Client string // the client id of the connection's session
	Sub    bool   // a subscribed event; otherwise a publication
	// subscribed events
	WasRecovering, Recovered bool
	Pos                      pos
	// publications
	Offset uint64
	ID     string // the publication's id (publisher/sequence), from its data
	Gap    bool
}

func (e streamEvent) String() string {
	t := time.Duration(e.T).Round(time.Millisecond)
	if e.Sub {
		return fmt.Sprintf("%v subscribed (client %s) recovering=%v recovered=%v at %s/%d", t, e.Client, e.WasRecovering, e.Recovered, e.Pos.Epoch, e.Pos.Offset)
	}
	g := ""
	if e.Gap {
		g = " gap"
	}
	return fmt.Sprintf("%v publication offset %d %s%s", t, e.Offset, e.ID, g)
}

// stream is what one logical subscriber saw in one channel, across the
// client sessions it went through (a client that disconnects at random is
// replaced by a new one subscribing from the last position).
type stream struct {
	Name    string
	Channel string
	// Start is when the stream's first subscribe was called: publications
	// called after it must reach the stream.
	Start int64
	// Live: the stream stayed subscribed to the end of the run.
	Live bool

	mu     sync.Mutex
	Events []streamEvent
	last   pos // the last position delivered (or subscribed at)
}

func (s *stream) add(e streamEvent) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.Events = append(s.Events, e)
	if e.Sub {
		if !e.Recovered {
			s.last = e.Pos
		}
		if e.Recovered && s.last.Epoch == "" {
			s.last = e.Pos
		}
		return
	}
	s.last.Offset = e.Offset
}

// position returns the last position delivered.
func (s *stream) position() pos {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.last
}

func (s *stream) events() []streamEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]streamEvent(nil), s.Events...)
}

// publishOp is one logical publish: the first attempt's call to the
// acknowledgement of the attempt that succeeded, every attempt with the
// same idempotency key.
type publishOp struct {
	Channel  string
	ID       string // also the data's id and the idempotency key
	Via      string // "api" or "client"
	Call     int64
	Return   int64 // 0 until acknowledged
	Acked    bool
	Pos      pos // the acknowledged position
	Attempts int
}

// readOp is a read of a channel's position (history with limit 0).
type readOp struct {
	Channel string
	Call    int64
	Return  int64
	Pos     pos
}

// fault is one entry of the fault timeline.
type fault struct {
	T    int64
	Kind string
	What string
}

func (f fault) String() string {
	return fmt.Sprintf("%v %s: %s", time.Duration(f.T).Round(time.Millisecond), f.Kind, f.What)
}

// finalChannel is a channel's whole history read once the run is over.
type finalChannel struct {
	Pos  pos
	Pubs map[uint64]string // offset -> publication id
}

// history is everything a run recorded.
type history struct {
	mu        sync.Mutex
	clock     clock
	Streams   []*stream
	Publishes []*publishOp
	Reads     []readOp
	Faults    []fault
	Final     map[string]finalChannel
	// Extra are violations found while the run went on (presence,
	// convergence), added to the checker's.
	Extra []violation
}

func newHistory() *history {
	return &history{clock: clock{start: time.Now()}, Final: map[string]finalChannel{}}
}

func (h *history) addStream(s *stream) {
	h.mu.Lock()
	h.Streams = append(h.Streams, s)
	h.mu.Unlock()
}

func (h *history) addPublish(op *publishOp) {
	h.mu.Lock()
	h.Publishes = append(h.Publishes, op)
	h.mu.Unlock()
}

func (h *history) ackPublish(op *publishOp, p pos, attempts int) {
	t := h.clock.now()
	h.mu.Lock()
	op.Return, op.Acked, op.Pos, op.Attempts = t, true, p, attempts
	h.mu.Unlock()
}

func (h *history) failPublish(op *publishOp, attempts int) {
	h.mu.Lock()
	op.Attempts = attempts
	h.mu.Unlock()
}

func (h *history) addRead(r readOp) {
	h.mu.Lock()
	h.Reads = append(h.Reads, r)
	h.mu.Unlock()
}

func (h *history) addFault(kind, format string, args ...any) {
	f := fault{T: h.clock.now(), Kind: kind, What: fmt.Sprintf(format, args...)}
	h.mu.Lock()
	h.Faults = append(h.Faults, f)
	h.mu.Unlock()
}

func (h *history) addViolation(v violation) {
	h.mu.Lock()
	h.Extra = append(h.Extra, v)
	h.mu.Unlock()
}
