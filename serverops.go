package herald

import (
	"context"
	"hash/maphash"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// Server-side halves shared by client commands and the HTTP API.

func (s *Server) subLock(ch string) func() {
	l := &s.subLocks[maphash.String(subLockSeed, ch)%uint64(len(s.subLocks))]
	l.Lock()
	return l.Unlock
}

var subLockSeed = maphash.MakeSeed()

// hubAdd registers a subscription and, for the node's first subscriber of
// the channel, subscribes the node at the broker before any history read,
// so that nothing published after the read is missed.
func (s *Server) hubAdd(ctx context.Context, hs *hub.Sub) error {
	defer s.subLock(hs.Channel)()
	if !s.hub.Add(hs) {
		return nil
	}
	start := time.Now()
	err := s.broker.Subscribe(ctx, hs.Channel)
	s.observe("subscribe", start)
	if err != nil {
		s.hub.Remove(hs)
	}
	return err
}

func (s *Server) hubRemove(hs *hub.Sub) {
	defer s.subLock(hs.Channel)()
	if !s.hub.Remove(hs) {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), commandTimeout)
	defer cancel()
	start := time.Now()
	if err := s.broker.Unsubscribe(ctx, hs.Channel); err != nil {
		s.log.Warn("broker unsubscribe", "channel", hs.Channel, "err", err)
	}
	s.observe("unsubscribe", start)
}

func (s *Server) join(ctx context.Context, ss *session, sub *subscription, info *protocol.ClientInfo) {
	if sub.ns.Presence {
		if err := s.presence.AddPresence(ctx, sub.Channel, ss.id, info, s.presenceTTL); err != nil {
			s.log.Warn("presence add", "channel", sub.Channel, "err", err)
		}
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishJoin(ctx, sub.Channel, info); err != nil {
			s.log.Warn("publish join", "channel", sub.Channel, "err", err)
		}
	}
}

func (s *Server) leave(ctx context.Context, ss *session, sub *subscription) {
	s.hubRemove(&sub.Sub)
	if sub.ns.Presence {
		if err := s.presence.RemovePresence(ctx, sub.Channel, ss.id); err != nil {
			s.log.Warn("presence remove", "channel", sub.Channel, "err", err)
		}
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishLeave(ctx, sub.Channel, ss.clientInfo()); err != nil {
			s.log.Warn("publish leave", "channel", sub.Channel, "err", err)
		}
	}
}

func (s *Server) history(ctx context.Context, ns *namespace, req *protocol.HistoryRequest) (*protocol.HistoryResult, *protocol.Error) {
	if !ns.history {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "channel keeps no history")
	}
	start := time.Now()
	pubs, pos, err := s.broker.History(ctx, req.Channel, broker.HistoryOptions{Since: req.Since, Limit: int(req.Limit), Reverse: req.Reverse})
	s.observe("history", start)
	if err != nil {
		s.log.Error("history", "channel", req.Channel, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "history failed")
	}
	if pubs == nil {
		pubs = []*protocol.Publication{}
	}
	return &protocol.HistoryResult{Publications: pubs, Epoch: pos.Epoch, Offset: pos.Offset}, nil
}

func (s *Server) presenceOf(ctx context.Context, ns *namespace, ch string) (*protocol.PresenceResult, *protocol.Error) {
	if !ns.Presence {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "presence is off for this channel")
	}
	m, err := s.presence.Presence(ctx, ch)
	if err != nil {
		s.log.Error("presence", "channel", ch, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "presence failed")
	}
	return &protocol.PresenceResult{Presence: m}, nil
}

func (s *Server) presenceStatsOf(ctx context.Context, ns *namespace, ch string) (*protocol.PresenceStatsResult, *protocol.Error) {
	if !ns.Presence {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "presence is off for this channel")
	}
	st, err := s.presence.PresenceStats(ctx, ch)
	if err != nil {
		s.log.Error("presence stats", "channel", ch, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "presence failed")
	}
	return &protocol.PresenceStatsResult{NumClients: uint32(st.NumClients), NumUsers: uint32(st.NumUsers)}, nil
}
