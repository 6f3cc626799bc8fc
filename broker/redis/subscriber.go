package redis

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	goredis "github.com/redis/go-redis/v9"
)

var (
	// errReroute: the node does not serve the name's slot (any more).
	errReroute = errors.New("herald: redis: slot moved")
	// errUnsubscribed: Unsubscribe ran while the subscription was pending.
	errUnsubscribed = errors.New("herald: redis: unsubscribed meanwhile")
)

// subscribeBatch bounds the names sent in one SUBSCRIBE on resubscription.
const subscribeBatch = 512

// subscriber owns one pub/sub connection and the goroutine that reads it:
// the only one in standalone and classic cluster mode, one per master in
// sharded cluster mode.
//
// go-redis's PubSub reconnects by itself and resubscribes what it knows
// (in one command, which a cluster refuses for shard channels of several
// slots), but does not say when it did. The reader finds out in two ways: a
// receive error, after which it replaces the PubSub and subscribes every
// name again itself, and a subscription confirmation nobody waits for,
// which means the name was (re)subscribed on a new connection and
// publications may have been lost: the channel then catches up from
// history (Broker.resync).
type subscriber struct {
	b      *Broker
	addr   string          // node address, "" unless sharded cluster mode
	client *goredis.Client // the subscriber's own client (sharded cluster mode), closed by Broker.Close
	newPS  func() *goredis.PubSub

	mu     sync.Mutex
	ps     *goredis.PubSub
	closed bool
	names  map[string]struct{}       // subscribed or being subscribed
	subW   map[string][]chan<- error // waiting for a subscribe confirmation
	unsubW map[string][]chan<- error // waiting for an unsubscribe confirmation
	// partial: reset could not write every name's subscribe on the new
	// PubSub. go-redis knows only the names written (or tried), so when it
	// reconnects by itself it resubscribes those alone; the reader then
	// resets again, to subscribe them all.
	partial bool
}

func newSubscriber(b *Broker, addr string, client *goredis.Client, newPS func() *goredis.PubSub) *subscriber {
	return &subscriber{
		b:      b,
		addr:   addr,
		client: client,
		newPS:  newPS,
		ps:     newPS(),
		names:  make(map[string]struct{}),
		subW:   make(map[string][]chan<- error),
		unsubW: make(map[string][]chan<- error),
	}
}

// writeCtx bounds a (un)subscribe write, which may have to dial. It is
// detached from the caller's context: go-redis drops the shared
// connection when a write's context is cancelled.
func (s *subscriber) writeCtx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), s.b.cfg.DialTimeout+s.b.cfg.WriteTimeout)
}

// write sends SUBSCRIBE or UNSUBSCRIBE (sharded or not) for names. If the
// write fails, go-redis has reconnected without the new names, so it
// tries once more; a second failure means the connection is down and the
// reader will replace it. s.mu must be held.
func (s *subscriber) write(sub bool, names ...string) error {
	ctx, cancel := s.writeCtx()
	defer cancel()
	var err error
	for range 2 {
		switch {
		case s.b.sharded && sub:
			err = s.ps.SSubscribe(ctx, names...)
		case s.b.sharded:
			err = s.ps.SUnsubscribe(ctx, names...)
		case sub:
			err = s.ps.Subscribe(ctx, names...)
		default:
			err = s.ps.Unsubscribe(ctx, names...)
		}
		if err == nil {
			return nil
		}
	}
	return err
}

// groups splits names into what one (S)(UN)SUBSCRIBE may carry: in
// sharded cluster mode the names of one slot (more is CROSSSLOT),
// otherwise batches of subscribeBatch.
func (s *subscriber) groups(names []string) [][]string {
	var out [][]string
	if s.addr == "" {
		for batch := range slices.Chunk(names, subscribeBatch) {
			out = append(out, batch)
		}
		return out
	}
	bySlot := make(map[int][]string)
	for _, n := range names {
		slot := keySlot(n)
		bySlot[slot] = append(bySlot[slot], n)
	}
	for _, g := range bySlot {
		for batch := range slices.Chunk(g, subscribeBatch) {
			out = append(out, batch)
		}
	}
	return out
}

// subscribe subscribes name and waits for the server's confirmation.
func (s *subscriber) subscribe(ctx context.Context, name string) error {
	w := make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		if s.b.closed.Load() {
			return broker.ErrClosed
		}
		return errReroute // retired by the router
	}
	s.names[name] = struct{}{}
	s.subW[name] = append(s.subW[name], w)
	// A failed write is not final: the reader replaces a broken connection
	// and subscribes every name again, which confirms this one.
	_ = s.write(true, name)
	s.mu.Unlock()
	select {
	case err := <-w:
		return err
	case <-ctx.Done():
		s.mu.Lock()
		dropWaiter(s.subW, name, w)
		s.mu.Unlock()
		return ctx.Err()
	}
}

// unsubscribe unsubscribes name and waits for the confirmation.
func (s *subscriber) unsubscribe(ctx context.Context, name string) error {
	w := make(chan error, 1)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	delete(s.names, name)
	s.failLocked(s.subW, name, errUnsubscribed)
	s.unsubW[name] = append(s.unsubW[name], w)
	if err := s.write(false, name); err != nil {
		// The connection is down; its replacement will not subscribe name.
		dropWaiter(s.unsubW, name, w)
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	select {
	case <-w:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		dropWaiter(s.unsubW, name, w)
		s.mu.Unlock()
		return ctx.Err()
	}
}

// adopt subscribes names without waiting; their confirmations make the
// channels catch up from history. The router uses it to move channels.
func (s *subscriber) adopt(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	for _, name := range names {
		s.names[name] = struct{}{}
	}
	for _, g := range s.groups(names) {
		if err := s.write(true, g...); err != nil {
			return // the reader replaces the connection and subscribes them all
		}
	}
}

// forgetBudget bounds forget's unsubscribe, which is a courtesy: the node
// is often gone, and a node that is not would only send messages that are
// dropped or deduplicated.
const forgetBudget = 500 * time.Millisecond

// forget drops names without waiting; pending subscribes of them fail
// with errReroute.
func (s *subscriber) forget(names ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return
	}
	var had []string
	for _, name := range names {
		s.failLocked(s.subW, name, errReroute)
		if _, ok := s.names[name]; ok {
			delete(s.names, name)
			had = append(had, name)
		}
	}
	if len(had) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), forgetBudget)
	defer cancel()
	for _, g := range s.groups(had) {
		var err error
		if s.b.sharded {
			err = s.ps.SUnsubscribe(ctx, g...)
		} else {
			err = s.ps.Unsubscribe(ctx, g...)
		}
		if err != nil {
			return
		}
	}
}

func (s *subscriber) failLocked(waiters map[string][]chan<- error, name string, err error) {
	for _, w := range waiters[name] {
		w <- err
	}
	delete(waiters, name)
}

// dropWaiter removes w from the waiters for name.
func dropWaiter(waiters map[string][]chan<- error, name string, w chan<- error) {
	ws := slices.DeleteFunc(waiters[name], func(x chan<- error) bool { return x == w })
	if len(ws) == 0 {
		delete(waiters, name)
	} else {
		waiters[name] = ws
	}
}

// pop takes the oldest waiter for name, if any.
func pop(waiters map[string][]chan<- error, name string) chan<- error {
	ws := waiters[name]
	if len(ws) == 0 {
		return nil
	}
	if len(ws) == 1 {
		delete(waiters, name)
	} else {
		waiters[name] = ws[1:]
	}
	return ws[0]
}

// close closes the connection and fails pending waiters; the reader then
// exits.
func (s *subscriber) close() {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	s.closed = true
	fail := errReroute // retired by the router
	if s.b.closed.Load() {
		fail = broker.ErrClosed
	}
	for name := range s.subW {
		s.failLocked(s.subW, name, fail)
	}
	for name := range s.unsubW {
		s.failLocked(s.unsubW, name, nil)
	}
	ps := s.ps
	s.mu.Unlock()
	_ = ps.Close()
}

// idle: the subscriber serves no name.
func (s *subscriber) idle() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.names) == 0 && len(s.subW) == 0
}

// current returns the PubSub to read, or nil once closed.
func (s *subscriber) current() *goredis.PubSub {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	return s.ps
}

// reset replaces the PubSub after a connection failure and subscribes
// every name on the new one. Pending unsubscribes are done: the new
// connection never had those names.
func (s *subscriber) reset(reason error) {
	s.b.outage(true)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return
	}
	old := s.ps
	s.ps = s.newPS()
	for name := range s.unsubW {
		s.failLocked(s.unsubW, name, nil)
	}
	names := make([]string, 0, len(s.names))
	for name := range s.names {
		names = append(names, name)
	}
	s.partial = false
	up := true
	for _, g := range s.groups(names) {
		if err := s.write(true, g...); err != nil {
			// The connection is down. The next receive fails and resets
			// again, unless go-redis reconnects first: then partial
			// makes the reader reset once it reads from the new one.
			s.partial = true
			up = false
			break
		}
	}
	s.mu.Unlock()
	if up {
		s.b.outage(false)
	}
	_ = old.Close()
	level := slog.LevelWarn
	if len(names) == 0 {
		level = slog.LevelDebug
	}
	s.b.log.Log(context.Background(), level, "redis: pub/sub connection replaced", "node", s.addr, "reason", reason, "channels", len(names))
	if s.addr != "" {
		// The node may have failed over: check where the names live now.
		s.b.checkRoutes(names, false)
	}
}

// run reads the connection until the subscriber is closed.
func (s *subscriber) run() {
	defer s.b.wg.Done()
	interval := s.b.cfg.HealthCheckInterval
	var backoff time.Duration
	pinged := false
	for {
		ps := s.current()
		if ps == nil {
			return
		}
		msg, err := ps.ReceiveTimeout(context.Background(), interval)
		if s.current() == nil {
			return
		}
		if err != nil {
			var nerr net.Error
			var rerr goredis.Error
			switch {
			case errors.As(err, &nerr) && nerr.Timeout():
				if pinged {
					s.reset(errors.New("health check ping unanswered"))
					pinged = false
					continue
				}
				ctx, cancel := s.writeCtx()
				_ = ps.Ping(ctx)
				cancel()
				pinged = true
			case errors.As(err, &rerr):
				s.onRedisError(err)
			default:
				s.reset(err)
				pinged = false
				backoff = min(max(2*backoff, 50*time.Millisecond), 2*time.Second)
				if !s.b.wait(backoff) {
					return
				}
			}
			continue
		}
		pinged, backoff = false, 0
		s.mu.Lock()
		partial := s.partial
		s.mu.Unlock()
		if partial {
			s.reset(errors.New("resubscribing the names a reconnect left out"))
			continue
		}
		switch m := msg.(type) {
		case *goredis.Subscription:
			s.onSubscription(m)
		case *goredis.Message:
			s.b.dispatch(m)
		}
	}
}

func (s *subscriber) onSubscription(m *goredis.Subscription) {
	switch m.Kind {
	case "subscribe", "ssubscribe":
		s.mu.Lock()
		w := pop(s.subW, m.Channel)
		_, ours := s.names[m.Channel]
		s.mu.Unlock()
		if w != nil {
			w <- nil
		} else if ours {
			// Subscribed again on a new connection, or moved here.
			s.b.resync(m.Channel)
		}
	case "unsubscribe", "sunsubscribe":
		s.mu.Lock()
		w := pop(s.unsubW, m.Channel)
		_, ours := s.names[m.Channel]
		s.mu.Unlock()
		if w != nil {
			w <- nil
		} else if ours {
			// The server dropped the subscription: the slot moved.
			s.b.log.Warn("redis: server ended a subscription", "node", s.addr, "name", m.Channel)
			s.b.checkRoutes([]string{m.Channel}, true)
		}
	}
}

// onRedisError handles an error reply on the pub/sub connection, most
// likely to a (S)SUBSCRIBE: MOVED when the slot is served by another node,
// ASK or TRYAGAIN while it is migrating, CLUSTERDOWN. The reply does not
// name the channel, only (MOVED, ASK) the slot, so the pending subscribes
// of that slot (of every slot if none is given) fail and are retried, and
// the router moves or resubscribes the names.
func (s *subscriber) onRedisError(err error) {
	msg := err.Error()
	kind, rest, _ := strings.Cut(msg, " ")
	slot := -1
	switch kind {
	case "MOVED", "ASK":
		f := strings.Fields(rest)
		if len(f) == 2 {
			if n, perr := strconv.Atoi(f[0]); perr == nil {
				slot = n
				if kind == "MOVED" {
					s.b.hint(slot, f[1])
				}
			}
		}
	case "TRYAGAIN", "CLUSTERDOWN":
	case "CROSSSLOT":
		// go-redis reconnected by itself and resubscribed every shard
		// channel in one SSUBSCRIBE, which a cluster refuses when they
		// span slots: subscribe them again, one slot at a time.
		s.reset(err)
		return
	default:
		// Not about routing (NOPERM, say): pending subscribes fail with it.
		s.mu.Lock()
		for name := range s.subW {
			s.failLocked(s.subW, name, err)
		}
		s.mu.Unlock()
		s.b.log.Warn("redis: pub/sub error reply", "node", s.addr, "err", err)
		return
	}
	var names []string
	s.mu.Lock()
	for name := range s.names {
		if slot < 0 || keySlot(name) == slot {
			names = append(names, name)
			s.failLocked(s.subW, name, errReroute)
		}
	}
	s.mu.Unlock()
	s.b.log.Info("redis: pub/sub redirected", "node", s.addr, "reply", msg, "channels", len(names))
	s.b.checkRoutes(names, true)
}
