package herald

import (
	"context"
	"encoding/json"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// nodeHandler receives what the broker delivers to this node.
type nodeHandler struct{ s *Server }

var _ broker.Handler = nodeHandler{}

func (n nodeHandler) HandlePublication(ch string, pub *protocol.Publication, epoch string) {
	n.s.hub.Publish(ch, pub, epoch)
}

func (n nodeHandler) HandleJoin(ch string, info *protocol.ClientInfo) {
	n.s.hub.Broadcast(ch, &protocol.ServerMessage{Join: &protocol.PresenceEvent{Channel: ch, Info: *info}}, wantJoinLeave)
}

func (n nodeHandler) HandleLeave(ch string, info *protocol.ClientInfo) {
	n.s.hub.Broadcast(ch, &protocol.ServerMessage{Leave: &protocol.PresenceEvent{Channel: ch, Info: *info}}, wantJoinLeave)
}

func wantJoinLeave(s *hub.Sub) bool { return s.JoinLeave }

// control is a node-to-node message.
type control struct {
	Op     string `json:"op"`
	User   string `json:"user,omitempty"`
	Code   uint32 `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
}

func (n nodeHandler) HandleControl(data []byte) {
	var c control
	if err := json.Unmarshal(data, &c); err != nil {
		n.s.log.Warn("bad control message", "err", err)
		return
	}
	switch c.Op {
	case "disconnect":
		for _, ss := range n.s.sessions.userSessions(c.User) {
			ss.disconnectWith(c.Code, c.Reason, 0, true)
		}
	}
}

// disconnectUser disconnects the user's connections on every node.
func (s *Server) disconnectUser(ctx context.Context, user string, code uint32, reason string) error {
	b, _ := json.Marshal(control{Op: "disconnect", User: user, Code: code, Reason: reason})
	return s.broker.PublishControl(ctx, b)
}

// observe records a broker call's latency.
func (s *Server) observe(op string, start time.Time) {
	s.metrics.brokerLatency.WithLabelValues(op).Observe(time.Since(start).Seconds())
}

// publish is the path of every publication: namespace options, broker.
func (s *Server) publish(ctx context.Context, ns *namespace, ch string, pub *protocol.Publication, idemKey string) (protocol.StreamPosition, *protocol.Error) {
	start := time.Now()
	pos, _, err := s.broker.Publish(ctx, ch, pub, ns.publishOptions(idemKey, s.cfg.IdempotencyWindow))
	s.observe("publish", start)
	if err != nil {
		s.log.Error("publish", "channel", ch, "err", err)
		return pos, protocol.NewError(protocol.ErrInternal, "publish failed")
	}
	return pos, nil
}
