package herald

import (
	"encoding/json"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/protocol"
)

// nodeHandler receives what the broker delivers to this node: publications
// and join/leave events for the hub's fan-out, and control messages from
// other nodes (and this one).
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
