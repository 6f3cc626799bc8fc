package herald

import (
	"context"
	"encoding/json"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Presence across a broker outage. While a node's broker connection is
// down, join/leave events of other nodes do not reach it, and its own
// (and its presence writes) may not reach the store or the others: the
// members its subscribers built from join/leave may be wrong. So:
//
//   - when the broker reports the connection lost, every subscriber with
//     join/leave gets presence_stale for its channel;
//   - when the connection is back, the node writes its presence entries
//     again, tells the other nodes which channels' join/leave it could not
//     publish meanwhile (control op presence_sync), and sends every
//     subscriber with join/leave presence_sync: the channel's members read
//     from the presence store;
//   - a node told by another of such channels sends presence_sync for
//     those it has subscribers of.

var _ broker.OutageHandler = nodeHandler{}

// maxUnannounced bounds the channels remembered as having join/leave
// events that could not be published; beyond it, every channel is synced.
const maxUnannounced = 10000

// presenceOutage is the node's view of its broker's connection.
type presenceOutage struct {
	mu          sync.Mutex
	down        bool
	unannounced map[string]struct{} // channels whose join/leave failed to publish
	overflow    bool                // more than maxUnannounced
}

// unannounced records that a join or leave of ch could not be published.
func (s *Server) unannounced(ch string) {
	o := &s.outage
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.overflow {
		return
	}
	if o.unannounced == nil {
		o.unannounced = make(map[string]struct{})
	}
	if len(o.unannounced) >= maxUnannounced {
		o.overflow, o.unannounced = true, nil
		return
	}
	o.unannounced[ch] = struct{}{}
}

func (n nodeHandler) HandleBrokerDown() {
	s := n.s
	o := &s.outage
	o.mu.Lock()
	was := o.down
	o.down = true
	o.mu.Unlock()
	if was {
		return
	}
	s.log.Warn("broker connection lost: presence may be stale until it is back")
	for _, c := range s.hub.Channels(nil) {
		s.hub.Broadcast(c.Name, &protocol.ServerMessage{PresenceStale: &protocol.PresenceStale{Channel: c.Name}}, wantJoinLeave)
	}
}

func (n nodeHandler) HandleBrokerUp() {
	s := n.s
	o := &s.outage
	o.mu.Lock()
	was := o.down
	o.down = false
	o.mu.Unlock()
	if !was {
		return
	}
	s.goTracked(s.afterOutage)
}

// afterOutage runs once the broker connection is back: presence entries
// written again, the other nodes told, every local channel synced.
func (s *Server) afterOutage() {
	s.log.Info("broker connection back: syncing presence")
	s.refreshRound()
	o := &s.outage
	o.mu.Lock()
	chans, all := o.unannounced, o.overflow
	o.unannounced, o.overflow = nil, false
	o.mu.Unlock()
	if len(chans) > 0 || all {
		names := make([]string, 0, len(chans))
		for ch := range chans {
			names = append(names, ch)
		}
		body, _ := json.Marshal(names)
		b, _ := json.Marshal(control{Op: "presence_sync", From: s.nodeID, Body: body})
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		if err := s.broker.PublishControl(ctx, b); err != nil {
			s.log.Warn("presence sync: telling the other nodes", "err", err)
		}
		cancel()
	}
	s.syncPresence(nil)
}

// onPresenceSync handles another node's presence_sync: channels whose
// join/leave it could not publish (none listed: all of them).
func (s *Server) onPresenceSync(c control) {
	if c.From == s.nodeID {
		return
	}
	var names []string
	if len(c.Body) > 0 && json.Unmarshal(c.Body, &names) != nil {
		return
	}
	var only map[string]bool
	if len(names) > 0 {
		only = make(map[string]bool, len(names))
		for _, n := range names {
			only[n] = true
		}
	}
	s.goTracked(func() { s.syncPresence(only) })
}

// syncPresence sends presence_sync to the subscribers with join/leave of
// every channel of this node (only those in only, if not nil) whose
// namespace keeps presence.
func (s *Server) syncPresence(only map[string]bool) {
	for _, c := range s.hub.Channels(func(name string) bool { return only == nil || only[name] }) {
		ns, perr := s.resolve(c.Name)
		if perr != nil || !ns.Presence || !ns.JoinLeave {
			continue
		}
		ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
		m, err := s.presence.Presence(ctx, c.Name)
		cancel()
		if err != nil {
			s.log.Warn("presence sync", "channel", c.Name, "err", err)
			continue
		}
		if m == nil {
			m = map[string]*protocol.ClientInfo{}
		}
		s.hub.Broadcast(c.Name, &protocol.ServerMessage{PresenceSync: &protocol.PresenceSync{Channel: c.Name, Presence: m}}, wantJoinLeave)
	}
}
