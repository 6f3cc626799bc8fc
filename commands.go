package herald

import (
	"context"
	"errors"
	"hash/maphash"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// commandTimeout bounds the broker calls of one command.
const commandTimeout = 10 * time.Second

func (ss *session) handle(cmd *protocol.Command) {
	method := cmd.Method()
	if method == "pong" {
		return // OnMessage already cleared the pending pong
	}
	if cmd.ID == 0 {
		ss.disconnect(protocol.DisconnectBadRequest, 0, true)
		return
	}
	if method == "" {
		ss.replyError(cmd.ID, protocol.NewError(protocol.ErrMethodNotFound, "unknown command"))
		return
	}
	ss.s.metrics.commands.WithLabelValues(method).Inc()
	if method == "connect" {
		ss.connect(cmd.ID, cmd.Connect)
		return
	}
	if ss.state.Load() != stateConnected {
		ss.replyError(cmd.ID, protocol.NewError(protocol.ErrNotConnected, "send connect first"))
		return
	}
	ctx, cancel := context.WithTimeout(ss.s.ctx, commandTimeout)
	defer cancel()
	var (
		res  protocol.ServerMessage
		perr *protocol.Error
	)
	switch method {
	case "subscribe":
		ss.subscribe(ctx, cmd.ID, cmd.Subscribe)
		return
	case "unsubscribe":
		res.Unsubscribe, perr = ss.unsubscribe(ctx, cmd.Unsubscribe)
	case "publish":
		res.Publish, perr = ss.publish(ctx, cmd.Publish)
	case "history":
		res.History, perr = ss.history(ctx, cmd.History)
	case "presence":
		res.Presence, perr = ss.presence(ctx, cmd.Presence)
	case "presence_stats":
		res.PresenceStats, perr = ss.presenceStats(ctx, cmd.PresenceStats)
	case "rpc":
		res.RPC, perr = ss.rpc(cmd.RPC)
	case "refresh":
		res.Refresh, perr = ss.refresh(cmd.Refresh)
	case "ping":
		res.Ping = &protocol.Empty{}
	}
	if perr != nil {
		ss.replyError(cmd.ID, perr)
		return
	}
	res.ID = cmd.ID
	ss.reply(&res)
}

// pendingSub is a subscription registered in the hub but not yet active.
type pendingSub struct {
	sub   *subscription
	res   *protocol.SubscribeResult
	after uint64
}

func (ss *session) connect(id uint64, req *protocol.ConnectRequest) {
	s := ss.s
	if ss.state.Load() != stateNew {
		ss.replyError(id, protocol.NewError(protocol.ErrBadRequest, "already connected"))
		return
	}
	var claims *auth.Claims
	if req.Token != "" {
		c, err := s.verifier.Verify(req.Token)
		switch {
		case errors.Is(err, auth.ErrTokenExpired):
			// The client may fetch a fresh token and connect again.
			ss.replyError(id, protocol.NewError(protocol.ErrTokenExpired, "token expired"))
			return
		case err != nil:
			ss.disconnect(protocol.DisconnectInvalidToken, 0, true)
			return
		}
		claims = c
	}
	if (claims == nil || claims.Subject == "") && !s.cfg.AllowAnonymous {
		ss.disconnect(protocol.DisconnectUnauthorized, 0, true)
		return
	}
	res := &protocol.ConnectResult{Client: ss.id, Version: Version, Ping: uint32(s.cfg.PingInterval / time.Second)}
	ss.mu.Lock()
	if claims != nil {
		ss.user = claims.Subject
		ss.info = protocol.Data(claims.Info)
		if claims.ExpiresAt != nil {
			ss.expires.Store(claims.ExpiresAt.Unix())
			res.Expires = true
			res.TTL = uint32(max(time.Until(claims.ExpiresAt.Time)/time.Second, 0))
		}
	}
	user := ss.user
	ss.mu.Unlock()

	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	var pending []*pendingSub
	rollback := func() {
		for _, p := range pending {
			ss.drop(ctx, p.sub)
		}
	}
	if claims != nil {
		for _, ch := range claims.Channels {
			p, perr := ss.prepare(ctx, &protocol.SubscribeRequest{Channel: ch}, true)
			if perr != nil {
				rollback()
				ss.replyError(id, perr)
				return
			}
			pending = append(pending, p)
		}
	}
	for ch, r := range req.Subs {
		if r == nil {
			r = &protocol.SubscribeRequest{}
		}
		r.Channel = ch
		p, perr := ss.prepare(ctx, r, false)
		if perr != nil {
			rollback()
			ss.replyError(id, perr)
			return
		}
		pending = append(pending, p)
	}
	if !ss.state.CompareAndSwap(stateNew, stateConnected) {
		rollback()
		return // closed meanwhile
	}
	ss.nextPing.Store(time.Now().Add(s.cfg.PingInterval).UnixNano())
	s.sessions.addUser(user, ss)
	if len(pending) > 0 {
		res.Subs = make(map[string]*protocol.SubscribeResult, len(pending))
		for _, p := range pending {
			res.Subs[p.sub.ch] = p.res
		}
	}
	ss.activate(ctx, &protocol.ServerMessage{ID: id, Connect: res}, pending)
}

// subscribe runs the subscribe command: the reply goes out through the hub
// so that it precedes every live publication of the channel.
func (ss *session) subscribe(ctx context.Context, id uint64, req *protocol.SubscribeRequest) {
	p, perr := ss.prepare(ctx, req, false)
	if perr != nil {
		ss.replyError(id, perr)
		return
	}
	ss.activate(ctx, &protocol.ServerMessage{ID: id, Subscribe: p.res}, []*pendingSub{p})
}

// activate sends reply, then the held publications of each pending
// subscription, and announces the new members.
func (ss *session) activate(ctx context.Context, reply *protocol.ServerMessage, pending []*pendingSub) {
	payload, err := ss.codec.AppendServerMessage(nil, reply)
	if err != nil {
		ss.s.log.Error("encode reply", "err", err)
		ss.disconnect(protocol.DisconnectServerError, 0, true)
		return
	}
	frame := transport.MessageFrame(ss.codec.Binary(), payload)
	if len(pending) == 0 {
		if ss.conn.Enqueue(frame, nil) == transport.ErrQueueFull {
			ss.disconnect(protocol.DisconnectSlow, 0, true)
		}
		return
	}
	for i, p := range pending {
		first := frame
		if i > 0 {
			first = nil
		}
		if !ss.s.hub.Activate(p.sub.hs, first, p.after) {
			return
		}
	}
	info := ss.clientInfo()
	for _, p := range pending {
		ss.s.join(ctx, ss, p.sub, info)
	}
}

// prepare checks a subscription, registers it (held, not yet live) and
// reads what recovery needs.
func (ss *session) prepare(ctx context.Context, req *protocol.SubscribeRequest, serverSide bool) (*pendingSub, *protocol.Error) {
	s := ss.s
	if req == nil || req.Channel == "" {
		return nil, protocol.NewError(protocol.ErrBadRequest, "channel required")
	}
	ch := req.Channel
	ns, perr := s.resolve(ch)
	if perr != nil {
		return nil, perr
	}
	if !serverSide {
		if perr := ss.mayRead(ns, ch, req.Token); perr != nil {
			return nil, perr
		}
	}
	ss.mu.Lock()
	if _, dup := ss.subs[ch]; dup {
		ss.mu.Unlock()
		return nil, protocol.NewError(protocol.ErrAlreadySubscribed, "already subscribed")
	}
	if len(ss.subs) >= s.cfg.MaxSubscriptions {
		ss.mu.Unlock()
		return nil, protocol.NewError(protocol.ErrLimitExceeded, "too many subscriptions")
	}
	ss.mu.Unlock()

	hs := &hub.Sub{Conn: ss.conn, Codec: ss.codec, Channel: ch, Policy: ns.policy, JoinLeave: ns.JoinLeave, Owner: ss}
	sub := &subscription{ch: ch, ns: ns, hs: hs}
	if err := s.hubAdd(ctx, hs); err != nil {
		s.log.Error("broker subscribe", "channel", ch, "err", err)
		return nil, protocol.NewError(protocol.ErrInternal, "subscribe failed")
	}
	p := &pendingSub{sub: sub, res: &protocol.SubscribeResult{JoinLeave: ns.JoinLeave}}
	if ns.history {
		opts := broker.HistoryOptions{}
		var since protocol.StreamPosition
		if req.Recover {
			since = protocol.StreamPosition{Epoch: req.Epoch, Offset: req.Offset}
			opts = broker.HistoryOptions{Since: &since, Limit: -1}
		}
		start := time.Now()
		pubs, pos, err := s.broker.History(ctx, ch, opts)
		s.observe("history", start)
		if err != nil {
			s.hubRemove(hs)
			s.log.Error("broker history", "channel", ch, "err", err)
			return nil, protocol.NewError(protocol.ErrInternal, "history failed")
		}
		p.res.Recoverable = true
		p.res.Epoch, p.res.Offset = pos.Epoch, pos.Offset
		p.after = pos.Offset
		if req.Recover {
			p.res.WasRecovering = true
			p.res.Recovered = broker.Recovered(since, pubs, pos)
			if p.res.Recovered {
				p.res.Publications = pubs
			}
		}
	}
	ss.mu.Lock()
	if ss.state.Load() == stateClosed {
		ss.mu.Unlock()
		s.hubRemove(hs)
		return nil, protocol.NewError(protocol.ErrInternal, "connection closed")
	}
	if ss.subs == nil {
		ss.subs = make(map[string]*subscription)
	}
	ss.subs[ch] = sub
	ss.mu.Unlock()
	return p, nil
}

// drop removes a subscription that was prepared but never announced.
func (ss *session) drop(ctx context.Context, sub *subscription) {
	ss.mu.Lock()
	delete(ss.subs, sub.ch)
	ss.mu.Unlock()
	ss.s.hubRemove(sub.hs)
}

// mayRead checks the right to subscribe to, and read the history and
// presence of, a channel.
func (ss *session) mayRead(ns *namespace, ch, subToken string) *protocol.Error {
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if subToken != "" {
		c, err := ss.s.verifier.Verify(subToken)
		if errors.Is(err, auth.ErrTokenExpired) {
			return protocol.NewError(protocol.ErrTokenExpired, "subscription token expired")
		}
		if err != nil || c.Channel != ch || c.Client != ss.id || c.Subject != user {
			return protocol.NewError(protocol.ErrPermissionDenied, "invalid subscription token")
		}
		return nil
	}
	if user == "" {
		if ns.AllowAnonymousSubscribe {
			return nil
		}
	} else if ns.AllowSubscribe {
		return nil
	}
	return protocol.NewError(protocol.ErrPermissionDenied, "permission denied")
}

func (ss *session) unsubscribe(ctx context.Context, req *protocol.UnsubscribeRequest) (*protocol.UnsubscribeResult, *protocol.Error) {
	ss.mu.Lock()
	sub := ss.subs[req.Channel]
	delete(ss.subs, req.Channel)
	ss.mu.Unlock()
	if sub != nil {
		ss.s.leave(ctx, ss, sub)
	}
	return &protocol.UnsubscribeResult{}, nil
}

func (ss *session) publish(ctx context.Context, req *protocol.PublishRequest) (*protocol.PublishResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if !ns.AllowPublish || ss.mayRead(ns, req.Channel, "") != nil {
		return nil, protocol.NewError(protocol.ErrPermissionDenied, "permission denied")
	}
	if len(req.Data) == 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "data required")
	}
	pos, perr := ss.s.publish(ctx, ns, req.Channel, &protocol.Publication{Data: req.Data, Info: ss.clientInfo()}, req.IdempotencyKey)
	if perr != nil {
		return nil, perr
	}
	ss.s.metrics.publications.WithLabelValues("client").Inc()
	return &protocol.PublishResult{Epoch: pos.Epoch, Offset: pos.Offset}, nil
}

func (ss *session) history(ctx context.Context, req *protocol.HistoryRequest) (*protocol.HistoryResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if perr := ss.mayRead(ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.history(ctx, ns, req)
}

func (ss *session) subscribed(ch string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.subs[ch] != nil
}

func (ss *session) presence(ctx context.Context, req *protocol.PresenceRequest) (*protocol.PresenceResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if perr := ss.mayRead(ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.presenceOf(ctx, ns, req.Channel)
}

func (ss *session) presenceStats(ctx context.Context, req *protocol.PresenceStatsRequest) (*protocol.PresenceStatsResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if perr := ss.mayRead(ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.presenceStatsOf(ctx, ns, req.Channel)
}

func (ss *session) rpc(req *protocol.RPCRequest) (*protocol.RPCResult, *protocol.Error) {
	if ss.s.cfg.OnRPC == nil {
		return nil, protocol.NewError(protocol.ErrMethodNotFound, "rpc is not enabled")
	}
	ss.mu.Lock()
	rc := RPCContext{Client: ss.id, User: ss.user}
	ss.mu.Unlock()
	data, err := ss.s.cfg.OnRPC(rc, req.Method, req.Data)
	if err != nil {
		var pe *protocol.Error
		if errors.As(err, &pe) {
			return nil, pe
		}
		return nil, protocol.NewError(protocol.ErrInternal, "rpc failed")
	}
	return &protocol.RPCResult{Data: data}, nil
}

func (ss *session) refresh(req *protocol.RefreshRequest) (*protocol.RefreshResult, *protocol.Error) {
	c, err := ss.s.verifier.Verify(req.Token)
	if errors.Is(err, auth.ErrTokenExpired) {
		return nil, protocol.NewError(protocol.ErrTokenExpired, "token expired")
	}
	ss.mu.Lock()
	user := ss.user
	ss.mu.Unlock()
	if err != nil || c.Subject != user {
		return nil, protocol.NewError(protocol.ErrPermissionDenied, "invalid token")
	}
	res := &protocol.RefreshResult{}
	if c.ExpiresAt != nil {
		ss.expires.Store(c.ExpiresAt.Unix())
		res.Expires = true
		res.TTL = uint32(max(time.Until(c.ExpiresAt.Time)/time.Second, 0))
	} else {
		ss.expires.Store(0)
	}
	return res, nil
}

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
		if err := s.presence.AddPresence(ctx, sub.ch, ss.id, info, s.cfg.PresenceTTL); err != nil {
			s.log.Warn("presence add", "channel", sub.ch, "err", err)
		}
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishJoin(ctx, sub.ch, info); err != nil {
			s.log.Warn("publish join", "channel", sub.ch, "err", err)
		}
	}
}

func (s *Server) leave(ctx context.Context, ss *session, sub *subscription) {
	s.hubRemove(sub.hs)
	if sub.ns.Presence {
		if err := s.presence.RemovePresence(ctx, sub.ch, ss.id); err != nil {
			s.log.Warn("presence remove", "channel", sub.ch, "err", err)
		}
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishLeave(ctx, sub.ch, ss.clientInfo()); err != nil {
			s.log.Warn("publish leave", "channel", sub.ch, "err", err)
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
