package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// clientOptions reconnect fast, so that tests stay short.
func clientOptions() *client.Options {
	return &client.Options{ReconnectBase: 50 * time.Millisecond, ReconnectMax: 500 * time.Millisecond, DialTimeout: 5 * time.Second}
}

// dial connects a client to url; it is closed when the test ends.
func dial(t *testing.T, url string, opts *client.Options) *client.Client {
	t.Helper()
	if opts == nil {
		opts = clientOptions()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, url, opts)
	if err != nil {
		t.Fatalf("dial %s: %v", url, err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// event is what a subscriber saw, in order: a (re)subscription or a
// publication.
type event struct {
	sub *client.SubscribedEvent
	off uint64
	n   int // the publication's sequence number (its data is {"n":N})
}

// subscriber is a client subscribed to one channel that records
// everything it is given.
type subscriber struct {
	name string
	c    *client.Client

	mu         sync.Mutex
	events     []event
	epoch      string // of the last subscribe
	last       uint64 // offset of the last publication (or of the subscribe)
	disconnect []client.DisconnectEvent
}

// subscribe connects a client to url and subscribes it to ch.
func subscribe(t *testing.T, name, url, ch string) *subscriber {
	t.Helper()
	s := &subscriber{name: name}
	opts := clientOptions()
	opts.OnDisconnect = func(e client.DisconnectEvent) {
		s.mu.Lock()
		s.disconnect = append(s.disconnect, e)
		s.mu.Unlock()
	}
	s.c = dial(t, url, opts)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := s.c.Subscribe(ctx, ch, client.SubscribeOptions{
		OnSubscribed: func(e client.SubscribedEvent) {
			s.mu.Lock()
			defer s.mu.Unlock()
			s.events = append(s.events, event{sub: &e})
			s.epoch, s.last = e.Position.Epoch, e.Position.Offset
			if e.Recovered {
				// Recovered publications follow: the position is the
				// last one delivered before.
				s.last = s.lastDelivered()
			}
		},
		OnPublication: func(p client.Publication) {
			var d struct {
				N int `json:"n"`
			}
			_ = json.Unmarshal(p.Data, &d)
			s.mu.Lock()
			defer s.mu.Unlock()
			s.events = append(s.events, event{off: p.Offset, n: d.N})
			s.last = p.Offset
		},
	})
	if err != nil {
		t.Fatalf("%s: subscribe %s: %v", name, ch, err)
	}
	return s
}

// lastDelivered is the offset the stream stood at before the last
// subscribe event: of the last publication, or of the last subscribe that
// did not recover (s.mu held).
func (s *subscriber) lastDelivered() uint64 {
	for i := len(s.events) - 2; i >= 0; i-- {
		e := s.events[i]
		if e.sub == nil {
			return e.off
		}
		if !e.sub.Recovered {
			return e.sub.Position.Offset
		}
	}
	return 0
}

// position returns where the subscriber's stream stands.
func (s *subscriber) position() protocol.StreamPosition {
	s.mu.Lock()
	defer s.mu.Unlock()
	return protocol.StreamPosition{Epoch: s.epoch, Offset: s.last}
}

// publisher publishes {"n":1}, {"n":2}, ... into one channel from its own
// client, each with an idempotency key, retrying a failed publish until
// it succeeds; it records the position each publication got.
type publisher struct {
	c     *client.Client
	ch    string
	total int

	mu    sync.Mutex
	pos   map[protocol.StreamPosition]int // position -> n
	byN   map[int]protocol.StreamPosition
	last  protocol.StreamPosition
	count int
	fails int
	start map[string]bool // epochs seen

	stop chan struct{}
	done chan struct{}
}

// startPublisher publishes total publications through url, one every
// pace, in its own goroutine; it ends with the test.
func startPublisher(t *testing.T, url, ch string, total int, pace time.Duration) *publisher {
	t.Helper()
	p := &publisher{
		c: dial(t, url, nil), ch: ch, total: total,
		pos: map[protocol.StreamPosition]int{}, byN: map[int]protocol.StreamPosition{}, start: map[string]bool{},
		stop: make(chan struct{}), done: make(chan struct{}),
	}
	key := randomHex(4)
	go func() {
		defer close(p.done)
		for n := 1; n <= total; n++ {
			data := []byte(`{"n":` + strconv.Itoa(n) + `}`)
			for {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				pos, err := p.c.Publish(ctx, ch, data, &client.PublishOptions{IdempotencyKey: key + "-" + strconv.Itoa(n)})
				cancel()
				if err == nil {
					p.mu.Lock()
					p.pos[pos] = n
					p.byN[n] = pos
					p.last = pos
					p.count = n
					p.start[pos.Epoch] = true
					p.mu.Unlock()
					break
				}
				p.mu.Lock()
				p.fails++
				p.mu.Unlock()
				if !p.pause(50 * time.Millisecond) {
					return
				}
			}
			if !p.pause(pace) {
				return
			}
		}
	}()
	t.Cleanup(func() {
		close(p.stop)
		<-p.done
	})
	return p
}

func (p *publisher) pause(d time.Duration) bool {
	if d <= 0 {
		select {
		case <-p.stop:
			return false
		default:
			return true
		}
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-p.stop:
		return false
	case <-tm.C:
		return true
	}
}

// published returns how many publications succeeded.
func (p *publisher) published() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.count
}

func (p *publisher) epochs() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.start)
}

// waitPublished waits until n publications have succeeded.
func (p *publisher) waitPublished(t *testing.T, n int, timeout time.Duration) {
	t.Helper()
	checkFor(t, timeout, fmt.Sprintf("%d publications", n), func() error {
		if got := p.published(); got < n {
			return fmt.Errorf("%d published (%d failed attempts)", got, p.failures())
		}
		return nil
	})
}

func (p *publisher) failures() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fails
}

// finish waits until every publication succeeded and every subscriber
// reached the last one's position.
func (p *publisher) finish(t *testing.T, timeout time.Duration, subs ...*subscriber) {
	t.Helper()
	p.waitPublished(t, p.total, timeout)
	p.mu.Lock()
	last := p.last
	p.mu.Unlock()
	checkFor(t, timeout, "every subscriber at the last publication", func() error {
		for _, s := range subs {
			if pos := s.position(); pos != last {
				return fmt.Errorf("%s at %+v, want %+v", s.name, pos, last)
			}
		}
		return nil
	})
}

// streamReport sums up what a subscriber saw.
type streamReport struct {
	delivered   []int // the sequence numbers delivered, in order
	resubscribe int   // subscribe events after the first
	recovered   int   // of which recovered
	lost        int   // of which recovered:false (with a new epoch)
}

// check verifies s's stream against what p published: within an epoch,
// offsets follow each other with no gap and no duplicate and carry what
// the publisher was told they carry; a resubscribe either recovered
// (same epoch, the stream goes on from the last offset delivered) or says
// recovered:false with a new epoch. Every violation is returned.
func (s *subscriber) check(p *publisher) (streamReport, []error) {
	s.mu.Lock()
	events := append([]event(nil), s.events...)
	s.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	var (
		r     streamReport
		errs  []error
		epoch string
		last  uint64
	)
	bad := func(i int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("%s event %d: %s", s.name, i, fmt.Sprintf(format, args...)))
	}
	for i, e := range events {
		if e.sub != nil {
			se := e.sub
			switch {
			case i == 0:
				if se.WasRecovering {
					bad(i, "first subscribe was recovering")
				}
			case !se.WasRecovering:
				bad(i, "resubscribe without recovery: %+v", *se)
			case se.Recovered:
				r.resubscribe++
				r.recovered++
				if se.Position.Epoch != epoch {
					bad(i, "recovered into epoch %s from %s", se.Position.Epoch, epoch)
				}
				continue // the stream goes on from last
			default:
				r.resubscribe++
				r.lost++
				if se.Position.Epoch == epoch {
					bad(i, "recovered:false in the same epoch %s at offset %d (position %d)", epoch, last, se.Position.Offset)
				}
			}
			epoch, last = se.Position.Epoch, se.Position.Offset
			continue
		}
		if e.off != last+1 {
			bad(i, "offset %d after %d in epoch %s: a silent gap or a duplicate", e.off, last, epoch)
		}
		last = e.off
		pos := protocol.StreamPosition{Epoch: epoch, Offset: e.off}
		if n, ok := p.pos[pos]; ok {
			if n != e.n {
				bad(i, "offset %d carries n=%d, the publisher got it for n=%d", e.off, e.n, n)
			}
		} else if at, ok := p.byN[e.n]; ok && at.Epoch == epoch {
			bad(i, "n=%d delivered at offset %d but published at offset %d of the same epoch: published twice", e.n, e.off, at.Offset)
		}
		// Otherwise a publish whose reply was lost, then retried into a
		// new epoch after the broker lost its data: not a gap.
		r.delivered = append(r.delivered, e.n)
	}
	return r, errs
}

// checkExact verifies that s received 1..total exactly once, in order,
// with no recovered:false.
func (s *subscriber) checkExact(t *testing.T, p *publisher) streamReport {
	t.Helper()
	r, errs := s.check(p)
	for _, err := range errs {
		t.Error(err)
	}
	if r.lost > 0 {
		t.Errorf("%s: %d resubscribes reported recovered:false", s.name, r.lost)
	}
	if len(r.delivered) != p.total {
		t.Errorf("%s: %d publications delivered, want %d", s.name, len(r.delivered), p.total)
	}
	for i, n := range r.delivered {
		if n != i+1 {
			t.Errorf("%s: publication %d is n=%d, want %d", s.name, i, n, i+1)
			break
		}
	}
	return r
}
