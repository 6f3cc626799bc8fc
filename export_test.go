package herald

import (
	"time"
	"unsafe"
)

// SetTestHookSessionClose sets a function that each session's OnClose
// calls first, with the session's node id; nil removes it. Tests use it to
// hold a close that the transport has begun but not yet reported.
func SetTestHookSessionClose(f func(node string)) {
	if f == nil {
		testHookSessionClose.Store(nil)
		return
	}
	testHookSessionClose.Store(&f)
}

// SetAdminClock makes the admin UI read the time from now (nil: the real
// clock), for tests of session expiry and the login rate limit.
func (s *Server) SetAdminClock(now func() time.Time) {
	if now == nil {
		s.admin.now.Store(nil)
		return
	}
	s.admin.now.Store(&now)
}

// SweepAt runs one pass of the once-a-second sweep as if it were now:
// pings, stale connections, expired credentials.
func (s *Server) SweepAt(now time.Time) { s.sweepOnce(now) }

// ConflateStats returns the hub's conflation counters: publications
// replaced, and the most publications (and data bytes) kept aside for one
// conflating subscriber at any time.
func (s *Server) ConflateStats() (conflated, pendingMax, pendingBytesMax uint64) {
	st := s.hub.Stats()
	return st.Conflated, st.ConflatePendingMax, st.ConflatePendingBytesMax
}

// FirstSubscription reports which of the connection clientID's
// subscriptions, by channel, is the one allocated with its session ("" if
// none is), and whether the connection is found.
func (s *Server) FirstSubscription(clientID string) (string, bool) {
	ss := s.sessions.byID(clientID)
	if ss == nil {
		return "", false
	}
	if ss.stream() != nil {
		return "", true // not a wsSession
	}
	first := &(*wsSession)(unsafe.Pointer(ss)).sub0
	ss.mu.Lock()
	defer ss.mu.Unlock()
	for _, sub := range ss.subs {
		if sub == first {
			return sub.Channel, true
		}
	}
	return "", true
}
