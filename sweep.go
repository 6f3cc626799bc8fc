package herald

import (
	"context"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"sync"
	"time"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// sweep runs once a second over every session: stale connections, pings and
// missing pongs, expired credentials. One goroutine for the node, not a
// timer per connection.
func (s *Server) sweep() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var rel releaser
	heap := []rtmetrics.Sample{{Name: "/gc/heap/allocs:bytes"}, {Name: "/gc/heap/live:bytes"}}
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.sweepOnce(now)
			rtmetrics.Read(heap)
			if rel.due(s.sessions.added.Load(), heapBytes(heap[0]), heapBytes(heap[1]), now) {
				s.goTracked(debug.FreeOSMemory)
			}
		}
	}
}

func heapBytes(m rtmetrics.Sample) uint64 {
	if m.Value.Kind() != rtmetrics.KindUint64 {
		return 0
	}
	return m.Value.Uint64()
}

// A burst of connections leaves the heap with free pages: the garbage of
// thousands of handshakes, collected, but kept by the runtime for a heap
// that may grow again (up to twice the live heap). Once such a burst has
// settled, the node returns them to the operating system, so that its RSS
// comes down to what the connections hold. It happens once per burst, not
// under steady traffic: a forced collection costs a few milliseconds of CPU.
//
// An idle node allocates too, slowly (a pong read here, a sample there),
// and its RSS would grow back by all of it until the runtime's next
// collection, which a slow heap may not reach for a long time, and keep
// it after. So when the node allocated little over a window of
// releaseQuiet (it is idle: under traffic the runtime collects on its own
// and reuses the pages at once) but enough since the last release to be
// worth a collection, the free pages are returned too.
const (
	releaseBurst = 1000             // connections accepted since the last release
	releaseQuiet = 30 * time.Second // with none accepted for this long

	// releaseIdleMin is the least allocated since the last release that
	// an idle release returns: at least this, or a 64th of the live heap.
	releaseIdleMin = 256 << 10
	// releaseIdleBusy is what a window of releaseQuiet allocates from
	// which the node is not idle.
	releaseIdleBusy = 4 << 20
)

// releaser decides when to return free memory; the sweep owns it.
type releaser struct {
	atRelease int64     // connections accepted when memory was last returned
	seen      int64     // connections accepted at the last check
	since     time.Time // when seen last changed

	allocAtRelease uint64    // bytes allocated so far when memory was last returned
	window         time.Time // start of the current idle window
	allocAtWindow  uint64    // bytes allocated so far at its start
}

// due reports whether memory should be returned now, given the number of
// connections accepted so far, the bytes allocated so far and the live
// heap.
func (r *releaser) due(accepted int64, allocated, live uint64, now time.Time) bool {
	if r.window.IsZero() {
		r.window, r.allocAtWindow = now, allocated
	}
	if r.burstDue(accepted, now) {
		r.released(allocated, now)
		return true
	}
	if now.Sub(r.window) < releaseQuiet {
		return false
	}
	inWindow := allocated - r.allocAtWindow
	r.window, r.allocAtWindow = now, allocated
	if inWindow >= releaseIdleBusy || allocated-r.allocAtRelease < max(releaseIdleMin, live/64) {
		return false
	}
	r.released(allocated, now)
	return true
}

func (r *releaser) released(allocated uint64, now time.Time) {
	r.allocAtRelease = allocated
	r.window, r.allocAtWindow = now, allocated
}

// burstDue reports whether a burst of connections has settled.
func (r *releaser) burstDue(accepted int64, now time.Time) bool {
	if accepted != r.seen {
		r.seen, r.since = accepted, now
		return false
	}
	if accepted-r.atRelease < releaseBurst || now.Sub(r.since) < releaseQuiet {
		return false
	}
	r.atRelease = accepted
	return true
}

func (s *Server) sweepOnce(now time.Time) {
	n := now.UnixNano()
	stale := int64(s.cfg.StaleTimeout)
	ping := int64(s.cfg.PingInterval)
	pong := int64(s.cfg.PongTimeout)
	s.sessions.each(func(ss *session) {
		switch ss.state.Load() {
		case stateNew:
			if n-ss.created > stale {
				ss.disconnect(protocol.DisconnectStale, 0, true)
			}
		case stateConnected:
			if due := ss.pongDue.Load(); due != 0 && n > due {
				ss.disconnect(protocol.DisconnectNoPong, 0, true)
				return
			}
			if exp := ss.expires.Load(); exp != 0 && s.checkExpiry(ss, exp, now) {
				return
			}
			if n >= ss.nextPing.Load() {
				ss.nextPing.Store(n + ping)
				if ss.conn.Framing() != transport.FramingSSE {
					// An EventSource cannot answer: its pings only
					// keep proxies from timing the stream out.
					ss.pongDue.CompareAndSwap(0, n+pong)
				}
				if err := ss.conn.EnqueueSmall(s.pingFrames[ss.conn.Framing()][int(ss.ci)]); err != nil {
					ss.disconnect(protocol.DisconnectSlow, 0, true)
				}
			}
		}
	})
}

// checkExpiry handles a connection whose credentials expire at exp (unix
// seconds): a refresh push (or a refresh proxy call) TokenRefreshNotice
// before, and a 3502 disconnect TokenExpiryGrace after. It reports whether
// the connection was closed.
func (s *Server) checkExpiry(ss *session, exp int64, now time.Time) bool {
	left := time.Unix(exp, 0).Sub(now)
	if left <= -s.cfg.TokenExpiryGrace || (left <= 0 && ss.flags.has(flagProxyExpiry) && s.cfg.Proxy.RefreshURL == "") {
		ss.disconnect(protocol.DisconnectTokenExpired, 0, true)
		return true
	}
	if left > s.cfg.TokenRefreshNotice {
		return false
	}
	if ss.flags.has(flagProxyExpiry) {
		if s.cfg.Proxy.RefreshURL != "" && ss.flags.setIfClear(flagRefreshing) {
			s.goTracked(func() { s.proxyRefresh(ss) })
		}
		return false
	}
	if ss.flags.setIfClear(flagNotified) {
		ttl := uint32(max(left/time.Second, 0))
		payload, _ := ss.codec().AppendServerMessage(nil, &protocol.ServerMessage{Refresh: &protocol.RefreshResult{Expires: true, TTL: ttl}})
		_ = ss.conn.Enqueue(ss.frame(payload), nil)
	}
	return false
}

// proxyRefresh asks the application to extend a proxy-authenticated
// connection.
func (s *Server) proxyRefresh(ss *session) {
	defer ss.flags.set(flagRefreshing, false)
	info := ss.clientInfo()
	r, err := s.callProxy(s.ctx, s.cfg.Proxy.RefreshURL, &proxyRequest{Client: ss.id, User: info.User})
	switch {
	case err != nil:
		if perr := ss.proxyError(err); perr != nil {
			s.log.Warn("refresh proxy", "client", ss.id, "err", perr)
		}
	case r.Expired:
		ss.disconnect(protocol.DisconnectTokenExpired, 0, true)
	case r.ExpireAt > 0:
		ss.setExpiry(time.Unix(r.ExpireAt, 0))
	default:
		ss.setExpiry(time.Time{})
	}
}

// refreshParallel is how many presence writes a refresh round keeps in
// flight: one after the other, a node with thousands of entries would take
// longer than their TTL to write them all.
const refreshParallel = 32

// entryWrite is one presence entry to write again.
type entryWrite struct {
	key, member string
	info        *protocol.ClientInfo
	ttl         time.Duration
}

// refreshPresence re-adds this node's presence entries every PresenceTTL/3
// so that they outlive the TTL only while the node lives (and its
// lifecycle entries, lifecycle.go), and the grants of API subscriptions
// every grantTTL/3 (directed.go).
func (s *Server) refreshPresence() {
	every := s.grantTTL() / 3
	if s.presenceTTL > 0 {
		every = min(every, s.presenceTTL/3)
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		s.refreshRound()
	}
}

// refreshRound writes every entry of the node again, refreshParallel at a
// time, and returns when all are written.
func (s *Server) refreshRound() {
	// The writers start with the first entry: a node with nothing to
	// refresh (an in-process store, no API subscriptions) starts none.
	var writes chan entryWrite
	var wg sync.WaitGroup
	add := func(w entryWrite) {
		if writes == nil {
			writes = make(chan entryWrite, 4*refreshParallel)
			for range refreshParallel {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for w := range writes {
						ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
						if err := s.presence.AddPresence(ctx, w.key, w.member, w.info, w.ttl); err != nil {
							s.log.Warn("presence refresh", "key", w.key, "err", err)
						}
						cancel()
					}
				}()
			}
		}
		writes <- w
	}
	if s.events != nil {
		s.events.refresh(add)
	}
	s.sessions.each(func(ss *session) {
		s.refreshGrants(ss, add)
		if s.presenceTTL == 0 {
			return // an in-process store: entries need no refresh
		}
		ss.mu.Lock()
		slot, user := ss.userSlot, ss.user
		ss.mu.Unlock()
		info := ss.clientInfo()
		if slot {
			add(entryWrite{userConnsChannel(user), ss.id, info, s.presenceTTL})
		}
		for _, sub := range ss.presenceSubs() {
			add(entryWrite{sub.Channel, ss.id, info, s.presenceTTL})
		}
	})
	if writes != nil {
		close(writes)
		wg.Wait()
	}
}
