package herald

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// Operations on connections, wherever in the cluster they are: the server
// API's subscribe, unsubscribe, send, refresh and disconnect. The node that
// takes the call asks every node (a node query, nodes.go) to act on its own
// connections of the user, or on the one client, and sums what they did.

// ErrNoConnection is returned when no node has a connection of the user or
// client an operation names.
var ErrNoConnection = errors.New("herald: no such connection")

// Target names the connections an operation acts on: every connection of
// User, or the one connection Client (exactly one of them).
type Target struct {
	User   string `json:"user,omitempty"`
	Client string `json:"client,omitempty"`
}

func (t Target) validate() *protocol.Error {
	if (t.User == "") == (t.Client == "") {
		return protocol.NewError(protocol.ErrBadRequest, "user or client required (one of them)")
	}
	return nil
}

// act is what each node is asked to do.
type act struct {
	Target
	Op       string `json:"op"` // subscribe, unsubscribe, send, refresh, disconnect
	Channel  string `json:"channel,omitempty"`
	Data     []byte `json:"data,omitempty"` // send: base64 in the control message, so binary data survives
	Code     uint32 `json:"code,omitempty"`
	Reason   string `json:"reason,omitempty"`
	ExpireAt int64  `json:"expire_at,omitempty"` // refresh: unix seconds; 0: no expiry
	Expired  bool   `json:"expired,omitempty"`   // refresh: the credentials are expired now
}

// actAnswer is one node's part: the connections it found and how many of
// them the operation failed on (with the first error).
type actAnswer struct {
	Found  int             `json:"found"`
	Failed int             `json:"failed,omitempty"`
	Error  *protocol.Error `json:"error,omitempty"`
}

// ActResult is what an operation did in the cluster.
type ActResult struct {
	// Connections is how many connections the operation reached.
	Connections int `json:"connections"`
	// Failed counts the connections it failed on; Error is one such
	// failure (for example a subscription limit).
	Failed int             `json:"failed,omitempty"`
	Error  *protocol.Error `json:"error,omitempty"`
	// Unreachable lists nodes that did not answer in time: their
	// connections may or may not have been reached.
	Unreachable []string `json:"unreachable_nodes,omitempty"`
}

// runAct asks every node to do a and sums the answers. It returns
// ErrNoConnection when no node that answered has a connection of the
// target and none was unreachable.
func (s *Server) runAct(ctx context.Context, a *act) (*ActResult, error) {
	answers, silent, err := s.queryNodes(ctx, "act", a)
	if err != nil {
		return nil, err
	}
	res := &ActResult{Unreachable: silent}
	for node, body := range answers {
		var ans actAnswer
		if err := json.Unmarshal(body, &ans); err != nil {
			s.log.Warn("node act answer", "node", node, "err", err)
			continue
		}
		res.Connections += ans.Found - ans.Failed
		res.Failed += ans.Failed
		if res.Error == nil {
			res.Error = ans.Error
		}
	}
	if res.Connections+res.Failed == 0 && len(silent) == 0 {
		return res, ErrNoConnection
	}
	return res, nil
}

// targets returns this node's connected sessions of t.
func (s *Server) targets(t Target) []*session {
	var out []*session
	if t.Client != "" {
		if ss := s.sessions.byID(t.Client); ss != nil {
			out = append(out, ss)
		}
	} else {
		out = s.sessions.userSessions(t.User)
	}
	live := out[:0]
	for _, ss := range out {
		if ss.state.Load() == stateConnected && !ss.conn.Closing() {
			live = append(live, ss)
		}
	}
	return live
}

// localAct does a on this node's connections.
func (s *Server) localAct(a *act) actAnswer {
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	var ans actAnswer
	var frames [protocol.NumCodecs * transport.NumFramings][]byte // a message push, encoded once per codec and framing
	for _, ss := range s.targets(a.Target) {
		ans.Found++
		var perr *protocol.Error
		switch a.Op {
		case "subscribe":
			perr = ss.serverSubscribe(ctx, a.Channel)
		case "unsubscribe":
			if !ss.serverUnsubscribe(ctx, a.Channel, a.Code, a.Reason) {
				ans.Found-- // not subscribed: not reached
			}
		case "send":
			ci := int(ss.conn.Framing())*protocol.NumCodecs + int(ss.ci)
			if frames[ci] == nil {
				payload, err := ss.codec().AppendServerMessage(nil, &protocol.ServerMessage{Message: &protocol.MessagePush{Data: protocol.Data(a.Data)}})
				if err != nil {
					return actAnswer{Found: ans.Found, Failed: ans.Found, Error: protocol.NewError(protocol.ErrBadRequest, "data cannot be encoded")}
				}
				frames[ci] = ss.frame(payload)
			}
			if err := ss.conn.Enqueue(frames[ci], nil); err != nil {
				if err == transport.ErrQueueFull {
					ss.disconnect(protocol.DisconnectSlow, 0, true)
				}
				perr = protocol.NewError(protocol.ErrInternal, "connection closing")
			}
		case "refresh":
			ss.serverRefresh(a.ExpireAt, a.Expired)
		case "disconnect":
			ss.disconnectWith(a.Code, a.Reason, 0, true)
		default:
			return actAnswer{Error: protocol.NewError(protocol.ErrMethodNotFound, "unknown operation "+a.Op)}
		}
		if perr != nil {
			ans.Failed++
			if ans.Error == nil {
				ans.Error = perr
			}
		}
	}
	return ans
}

// serverRefresh sets the connection's expiry from the server API: expired
// closes it as a connection whose credentials expired (3502); otherwise
// expireAt (unix seconds) is the new expiry, 0 for none.
func (ss *session) serverRefresh(expireAt int64, expired bool) {
	if expired {
		ss.disconnect(protocol.DisconnectTokenExpired, 0, true)
		return
	}
	ss.flags.set(flagProxyExpiry, false)
	if expireAt == 0 {
		ss.setExpiry(time.Time{})
		return
	}
	ss.setExpiry(time.Unix(expireAt, 0))
}

// API-granted subscriptions outlive a reconnect: the channels the server
// API subscribed a user to are kept in the presence store under
// "$grants:USER", one entry per channel, while a connection of the user
// holds them (refreshed with presence), so that a client that reconnects
// and sends their positions in connect.subs gets them back, recovering.

func grantsKey(user string) string { return "$grants:" + user }

// grantTTL is how long a grant outlives the user's last connection with it.
func (s *Server) grantTTL() time.Duration { return 2 * max(s.presenceTTL, 15*time.Second) }

// addGrant records that the server API subscribed user to ch.
func (s *Server) addGrant(ctx context.Context, user, ch string) {
	if user == "" {
		return
	}
	if err := s.presence.AddPresence(ctx, grantsKey(user), ch, &protocol.ClientInfo{User: user}, s.grantTTL()); err != nil {
		s.log.Warn("record API subscription", "user", user, "channel", ch, "err", err)
	}
}

// removeGrant forgets that grant.
func (s *Server) removeGrant(ctx context.Context, user, ch string) {
	if user == "" {
		return
	}
	if err := s.presence.RemovePresence(ctx, grantsKey(user), ch); err != nil {
		s.log.Warn("forget API subscription", "user", user, "channel", ch, "err", err)
	}
}

// apiGranted reports whether the server API subscribed this connection's
// user to ch (and the grant is still held).
func (ss *session) apiGranted(ctx context.Context, ch string) bool {
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if user == "" {
		return false
	}
	m, err := ss.s.presence.Presence(ctx, grantsKey(user))
	if err != nil {
		ss.s.log.Warn("read API subscriptions", "user", user, "err", err)
		return false
	}
	_, ok := m[ch]
	return ok
}

// refreshGrants queues the grants of the API subscriptions that ss holds
// again, so that they expire only grantTTL after the last one.
func (s *Server) refreshGrants(ss *session, add func(entryWrite)) {
	ss.mu.Lock()
	user := ss.user
	var chans []string
	for _, sub := range ss.subs {
		if sub.grant() == grantAPI {
			chans = append(chans, sub.Channel)
		}
	}
	ss.mu.Unlock()
	if user == "" {
		return
	}
	for _, ch := range chans {
		add(entryWrite{grantsKey(user), ch, &protocol.ClientInfo{User: user}, s.grantTTL()})
	}
}
