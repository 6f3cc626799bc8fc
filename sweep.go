package herald

import (
	"context"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// sweep runs once a second over every session: stale connections, pings and
// missing pongs, expired credentials. One goroutine for the node, not a
// timer per connection.
func (s *Server) sweep() {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			s.sweepOnce(now)
		}
	}
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
			if exp := ss.expires.Load(); exp != 0 && now.Unix() >= exp {
				ss.disconnect(protocol.DisconnectTokenExpired, 0, true)
				return
			}
			if n >= ss.nextPing.Load() {
				ss.nextPing.Store(n + ping)
				ss.pongDue.CompareAndSwap(0, n+pong)
				if err := ss.conn.Enqueue(s.pingFrames[codecIdx(ss.codec)], nil); err != nil {
					ss.disconnect(protocol.DisconnectSlow, 0, true)
				}
			}
		}
	})
}

func codecIdx(c protocol.Codec) int {
	if c.Binary() {
		return 1
	}
	return 0
}

// refreshPresence re-adds this node's presence entries every PresenceTTL/3
// so that they outlive the TTL only while the node lives.
func (s *Server) refreshPresence() {
	t := time.NewTicker(s.cfg.PresenceTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-s.quit:
			return
		case <-t.C:
		}
		s.sessions.each(func(ss *session) {
			for _, sub := range ss.presenceSubs() {
				ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
				if err := s.presence.AddPresence(ctx, sub.ch, ss.id, ss.clientInfo(), s.cfg.PresenceTTL); err != nil {
					s.log.Warn("presence refresh", "channel", sub.ch, "err", err)
				}
				cancel()
			}
		})
	}
}
