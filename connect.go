package herald

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"slices"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/protocol"
)

// The connect command, step by step: authenticate (a token or the connect
// proxy), establish the connection's identity, admitUser (the cluster-wide
// per-user limit), connectSubs (the channels the credentials grant and the
// client's own channels with their positions, prepared through the
// subscription lifecycle of subscribe.go), then the state turns connected
// and activate sends the reply followed by each channel's held
// publications. A step that fails answers the client itself and rolls back
// what the steps before it registered.

// authResult is who a connection is, from its token or the connect proxy.
type authResult struct {
	user     string
	info     []byte
	channels []string
	expires  time.Time
	proxied  bool
}

func (ss *session) connect(id uint64, req *protocol.ConnectRequest) {
	s := ss.s
	if ss.state.Load() != stateNew {
		ss.replyError(id, protocol.NewError(protocol.ErrBadRequest, "already connected"))
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	who, ok := ss.authenticate(ctx, id, req)
	if !ok {
		return
	}
	if ss.peer != nil {
		ss.peer.headers = nil
	}
	if who.user == "" && !s.cfg.AllowAnonymous && !ss.observer() {
		ss.disconnect(protocol.DisconnectUnauthorized, 0, true)
		return
	}
	res := ss.establish(who)
	if !ss.admitUser(ctx) {
		ss.disconnect(protocol.DisconnectConnectionLimit, 30*time.Second+time.Duration(mrand.Int64N(int64(30*time.Second))), true)
		return
	}
	pending, perr := ss.connectSubs(ctx, append(who.channels, s.personalChannels(who.user)...), req.Subs)
	if perr != nil {
		ss.replyError(id, perr)
		return
	}
	if !ss.state.CompareAndSwap(stateNew, stateConnected) {
		ss.drop(pending)
		return // closed meanwhile
	}
	ss.nextPing.Store(time.Now().Add(s.cfg.PingInterval).UnixNano())
	first := who.user != "" && s.sessions.addUser(who.user, ss)
	if s.events != nil && !ss.observer() {
		s.events.connected(ss, who.user, first)
	}
	if len(pending) > 0 {
		res.Subs = make(map[string]*protocol.SubscribeResult, len(pending))
		for _, p := range pending {
			res.Subs[p.sub.Channel] = p.res
		}
	}
	ss.activate(ctx, &protocol.ServerMessage{ID: id, Connect: res}, pending)
}

// authenticate finds out who the client is: its token, or else the connect
// proxy's answer (anonymous when neither applies). When it fails it has
// answered the client (an error reply or a disconnect) and returns false.
func (ss *session) authenticate(ctx context.Context, id uint64, req *protocol.ConnectRequest) (authResult, bool) {
	s := ss.s
	switch {
	case ss.admin:
		return authResult{}, true // the admin cookie authenticated the upgrade
	case req.APIKey != "":
		// A backend: it may watch every channel, the events channel
		// included, but is no member and publishes through the API.
		if !s.validAPIKey(req.APIKey) {
			ss.disconnectWith(protocol.DisconnectInvalidToken, "invalid API key", 0, true)
			return authResult{}, false
		}
		ss.mu.Lock()
		ss.backend = true
		ss.mu.Unlock()
		return authResult{}, true
	case req.Token != "":
		c, err := s.verifier.Verify(ctx, req.Token)
		switch {
		case errors.Is(err, auth.ErrTokenExpired):
			// The client may fetch a fresh token and connect again.
			ss.replyError(id, protocol.NewError(protocol.ErrTokenExpired, "token expired"))
			return authResult{}, false
		case err != nil:
			ss.disconnect(protocol.DisconnectInvalidToken, 0, true)
			return authResult{}, false
		}
		who := authResult{user: c.Subject, info: c.Info, channels: c.Channels}
		if c.ExpiresAt != nil {
			who.expires = c.ExpiresAt.Time
		}
		return who, true
	case s.cfg.Proxy.ConnectURL != "":
		r, err := s.callProxy(ctx, s.cfg.Proxy.ConnectURL, &proxyRequest{
			Client: ss.id, Encoding: ss.codec().Name(), Name: req.Name, Remote: ss.ip(), Headers: ss.headers(),
		})
		if err != nil {
			if perr := ss.proxyError(err); perr != nil {
				ss.replyError(id, perr)
			}
			return authResult{}, false
		}
		who := authResult{user: r.User, info: r.Info, channels: r.Channels, proxied: true}
		if r.ExpireAt > 0 {
			who.expires = time.Unix(r.ExpireAt, 0)
		}
		return who, true
	}
	return authResult{}, true
}

// establish gives the session its identity and credentials' expiry, and
// returns the connect reply to fill.
func (ss *session) establish(who authResult) *protocol.ConnectResult {
	res := &protocol.ConnectResult{Client: ss.id, Version: Version, Ping: uint32(ss.s.cfg.PingInterval / time.Second)}
	ss.mu.Lock()
	ss.user = who.user
	ss.info = protocol.Data(who.info)
	ss.mu.Unlock()
	if !who.expires.IsZero() {
		ss.expires.Store(who.expires.Unix())
		ss.flags.set(flagProxyExpiry, who.proxied)
		res.Expires = true
		res.TTL = uint32(max(time.Until(who.expires)/time.Second, 0))
	}
	return res
}

// admitUser applies MaxConnectionsPerUser: it registers this connection in
// the user's cluster-wide count and reports whether it is within the
// limit. Concurrent connects may both see the other and both be refused:
// never more than the limit get in. The count lives in the presence store,
// so a dead node's connections leave it with their entries' expiry.
func (ss *session) admitUser(ctx context.Context) bool {
	s := ss.s
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if user == "" || s.cfg.MaxConnectionsPerUser <= 0 {
		return true
	}
	ch := userConnsChannel(user)
	if err := s.presence.AddPresence(ctx, ch, ss.id, ss.clientInfo(), s.presenceTTL); err != nil {
		s.log.Warn("user slot", "err", err)
		return true // fail open: the limit is a guard, not an authorization
	}
	ss.mu.Lock()
	ss.userSlot = true
	ss.mu.Unlock()
	st, err := s.presence.PresenceStats(ctx, ch)
	return err != nil || st.NumClients <= s.cfg.MaxConnectionsPerUser
}

// userConnsChannel is the presence key counting a user's connections
// across the cluster.
func userConnsChannel(user string) string { return "$conns:" + user }

// connectSubs prepares the subscriptions a connect makes: first the
// channels the credentials grant (server-side subscriptions, recovering
// from the position the client sends for them in subs), then the client's
// own channels in subs, checked like subscribe commands. If one fails, the
// ones prepared before it are dropped and its error returned.
func (ss *session) connectSubs(ctx context.Context, granted []string, subs map[string]*protocol.SubscribeRequest) ([]*pendingSub, *protocol.Error) {
	var pending []*pendingSub
	add := func(r *protocol.SubscribeRequest, g grant) *protocol.Error {
		p, perr := ss.prepare(ctx, r, g)
		if perr != nil && g == grantClient && perr.Code == protocol.ErrPermissionDenied && ss.apiGranted(ctx, r.Channel) {
			// A channel the server API subscribed the user to: it comes
			// back with its position, like a server-side subscription.
			p, perr = ss.prepare(ctx, r, grantAPI)
		}
		if perr != nil {
			ss.drop(pending)
			return perr
		}
		pending = append(pending, p)
		return nil
	}
	for _, ch := range granted {
		r := &protocol.SubscribeRequest{Channel: ch}
		if q := subs[ch]; q != nil && q.Recover {
			// A reconnecting client's position in this server-side
			// subscription: recover it like a client subscription.
			r.Recover, r.Epoch, r.Offset = true, q.Epoch, q.Offset
		}
		if perr := add(r, grantCredentials); perr != nil {
			return nil, perr
		}
	}
	for ch, r := range subs {
		if slices.Contains(granted, ch) {
			continue // a server-side subscription's position, used above
		}
		if r == nil {
			r = &protocol.SubscribeRequest{}
		}
		r.Channel = ch
		if perr := add(r, grantClient); perr != nil {
			return nil, perr
		}
	}
	return pending, nil
}

// personalChannels returns user's personal channels: one per namespace
// with Personal set ("NS:#USER", or "#USER" in the default namespace).
// Anonymous connections have none.
func (s *Server) personalChannels(user string) []string {
	if user == "" {
		return nil
	}
	var out []string
	for _, ns := range s.personal {
		ch := "#" + user
		if ns != "" {
			ch = ns + ":" + ch
		}
		if !validChannelName(ch, s.cfg.MaxChannelLength) {
			continue // a user id that cannot stand in a channel name
		}
		out = append(out, ch)
	}
	return out
}
