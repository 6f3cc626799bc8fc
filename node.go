package herald

import (
	"encoding/json"
	"time"

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
	s := n.s
	start := time.Now()
	if pub.Trace != "" && s.tracer != nil {
		s.traceFanout(ch, pub, func() hub.Fanout { return s.hub.Publish(ch, pub, epoch) })
	} else {
		s.hub.Publish(ch, pub, epoch)
	}
	s.fanout.observe(time.Since(start))
}

func (n nodeHandler) HandleJoin(ch string, info *protocol.ClientInfo) {
	n.s.hub.Broadcast(ch, &protocol.ServerMessage{Join: &protocol.PresenceEvent{Channel: ch, Info: *info}}, wantJoinLeave)
}

func (n nodeHandler) HandleLeave(ch string, info *protocol.ClientInfo) {
	n.s.hub.Broadcast(ch, &protocol.ServerMessage{Leave: &protocol.PresenceEvent{Channel: ch, Info: *info}}, wantJoinLeave)
}

func wantJoinLeave(s *hub.Sub) bool { return s.JoinLeave }

// control is a node-to-node message, JSON-encoded. Nodes ignore ops they
// do not know, so a cluster may run mixed versions during a deploy.
//
//	disconnect  close the connections of User, or the one of Client
//	hello       a node's description and last second's sample (nodes.go)
//	hello?      a node that just started: every node answers with hello
//	bye         a node stopping: forget it
//	presence_sync  From could not publish joins/leaves of the channels in Body (a JSON list; empty: all): send presence_sync for them
//	query       From asks every node Query with Body (only node To, if set); ID names the query
//	answer      From answers query ID of node To with Body
type control struct {
	Op     string `json:"op"`
	User   string `json:"user,omitempty"`
	Client string `json:"client,omitempty"`
	Code   uint32 `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`

	From  string          `json:"from,omitempty"`
	To    string          `json:"to,omitempty"`
	ID    uint64          `json:"id,omitempty"`
	Query string          `json:"query,omitempty"`
	Body  json.RawMessage `json:"body,omitempty"`
	Hello *nodeHello      `json:"hello,omitempty"`
}

func (n nodeHandler) HandleControl(data []byte) {
	s := n.s
	var c control
	if err := json.Unmarshal(data, &c); err != nil {
		s.log.Warn("bad control message", "err", err)
		return
	}
	switch c.Op {
	case "disconnect":
		var targets []*session
		switch {
		case c.Client != "":
			if ss := s.sessions.byID(c.Client); ss != nil {
				targets = append(targets, ss)
			}
		case c.User != "":
			targets = s.sessions.userSessions(c.User)
		}
		for _, ss := range targets {
			ss.disconnectWith(c.Code, c.Reason, 0, true)
		}
	case "presence_sync":
		s.onPresenceSync(c)
	case "hello", "hello?":
		if c.Hello == nil || c.Hello.Node == s.nodeID {
			return
		}
		// A node that just started asks for the others' hellos; one
		// heard of for the first time gets this node's too.
		if s.nodes.heard(*c.Hello, time.Now()) || c.Op == "hello?" {
			s.goTracked(func() { s.sayHello("hello") })
		}
	case "bye":
		if c.From != s.nodeID {
			s.nodes.forget(c.From)
			if s.events != nil {
				s.events.nodeLeft(c.From)
			}
		}
	case "query":
		switch {
		case c.To != "" && c.To != s.nodeID:
			// A query for another node (askNode).
		case c.Query == "stream":
			s.answerStream(&c)
		default:
			s.answerQuery(&c)
		}
	case "answer":
		if c.To == s.nodeID {
			s.nodes.deliverAnswer(&c)
		}
	}
}
