package herald

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// The node's operations on channels and users, shared by client commands
// (commands.go) and the server API (api.go): each checks the namespace's
// options, calls the broker, records the call's latency, and turns a
// broker failure into a protocol error. Rights are checked by the callers.

// publish is the path of every publication: namespace options, broker.
// source is "api" or "client".
func (s *Server) publish(ctx context.Context, ns *namespace, ch, source string, pub *protocol.Publication, idemKey string) (protocol.StreamPosition, *protocol.Error) {
	end := s.startPublish(ctx, ch, source, pub)
	start := time.Now()
	pos, _, err := s.broker.Publish(ctx, ch, pub, ns.publishOptions(idemKey, s.cfg.IdempotencyWindow))
	s.observe("publish", start)
	end(pos, err)
	if err != nil {
		s.log.Error("publish", "channel", ch, "err", err)
		return pos, brokerError(err, "publish failed")
	}
	s.published.Add(1)
	return pos, nil
}

// brokerError turns a broker failure into a protocol error: 117
// (unavailable, temporary) when the broker refused the call for now,
// otherwise 100 (internal, temporary) with msg.
func brokerError(err error, msg string) *protocol.Error {
	if errors.Is(err, broker.ErrUnavailable) {
		return protocol.NewError(protocol.ErrUnavailable, "broker unavailable, retry")
	}
	return protocol.NewError(protocol.ErrInternal, msg)
}

// readHistory is every history read: the history command and API method,
// and the position and recovery read of each subscription.
func (s *Server) readHistory(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, protocol.StreamPosition, *protocol.Error) {
	start := time.Now()
	pubs, pos, err := s.broker.History(ctx, ch, opts)
	s.observe("history", start)
	if err != nil {
		s.log.Error("broker history", "channel", ch, "err", err)
		return nil, pos, brokerError(err, "history failed")
	}
	return pubs, pos, nil
}

func (s *Server) history(ctx context.Context, ns *namespace, req *protocol.HistoryRequest) (*protocol.HistoryResult, *protocol.Error) {
	if !ns.history {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "channel keeps no history")
	}
	f, perr := parseFilter(req.Filter)
	if perr != nil {
		return nil, perr
	}
	pubs, pos, perr := s.readHistory(ctx, req.Channel, broker.HistoryOptions{Since: req.Since, Limit: int(req.Limit), Reverse: req.Reverse})
	if perr != nil {
		return nil, perr
	}
	pubs = filterPubs(f, pubs)
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
		return nil, brokerError(err, "presence failed")
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
		return nil, brokerError(err, "presence failed")
	}
	return &protocol.PresenceStatsResult{NumClients: uint32(st.NumClients), NumUsers: uint32(st.NumUsers)}, nil
}

// disconnect closes the connections of user, or the connection client,
// on whichever node they are: a control message that each node, this one
// included, handles in node.go.
func (s *Server) disconnect(ctx context.Context, user, client string, code uint32, reason string) error {
	b, _ := json.Marshal(control{Op: "disconnect", User: user, Client: client, Code: code, Reason: reason})
	return s.broker.PublishControl(ctx, b)
}
