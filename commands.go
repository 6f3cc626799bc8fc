package herald

import (
	"context"
	"errors"
	mrand "math/rand/v2"
	"slices"
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
	if ss.s.cfg.CommandRate > 0 && !ss.bucket.allow(time.Now(), ss.s.cfg.CommandRate, ss.s.cfg.CommandBurst) {
		if int(ss.bucket.refused) > ss.s.cfg.CommandBurst {
			ss.disconnect(protocol.DisconnectTooManyRequests, time.Second, false)
			return
		}
		ss.replyError(cmd.ID, protocol.NewError(protocol.ErrTooManyRequests, "too many requests"))
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
		res.RPC, perr = ss.rpc(ctx, cmd.RPC)
		if perr == nil && res.RPC == nil {
			return // the application disconnected the client
		}
	case "refresh":
		res.Refresh, perr = ss.refresh(ctx, cmd.Refresh)
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
	ctx, cancel := context.WithTimeout(s.ctx, commandTimeout)
	defer cancel()
	id0 := authResult{}
	switch {
	case req.Token != "":
		c, err := s.verifier.Verify(ctx, req.Token)
		switch {
		case errors.Is(err, auth.ErrTokenExpired):
			// The client may fetch a fresh token and connect again.
			ss.replyError(id, protocol.NewError(protocol.ErrTokenExpired, "token expired"))
			return
		case err != nil:
			ss.disconnect(protocol.DisconnectInvalidToken, 0, true)
			return
		}
		id0 = authResult{user: c.Subject, info: c.Info, channels: c.Channels}
		if c.ExpiresAt != nil {
			id0.expires = c.ExpiresAt.Time
		}
	case s.cfg.Proxy.ConnectURL != "":
		r, err := s.callProxy(ctx, s.cfg.Proxy.ConnectURL, &proxyRequest{
			Client: ss.id, Encoding: ss.codec.Name(), Name: req.Name, Remote: ss.ip, Headers: ss.headers,
		})
		if err != nil {
			if perr := ss.proxyError(err); perr != nil {
				ss.replyError(id, perr)
			}
			return
		}
		id0 = authResult{user: r.User, info: r.Info, channels: r.Channels, proxied: true}
		if r.ExpireAt > 0 {
			id0.expires = time.Unix(r.ExpireAt, 0)
		}
	}
	ss.headers = nil
	if id0.user == "" && !s.cfg.AllowAnonymous {
		ss.disconnect(protocol.DisconnectUnauthorized, 0, true)
		return
	}
	res := &protocol.ConnectResult{Client: ss.id, Version: Version, Ping: uint32(s.cfg.PingInterval / time.Second)}
	ss.mu.Lock()
	ss.user = id0.user
	ss.info = protocol.Data(id0.info)
	user := ss.user
	ss.mu.Unlock()
	if !id0.expires.IsZero() {
		ss.expires.Store(id0.expires.Unix())
		ss.proxyExpiry.Store(id0.proxied)
		res.Expires = true
		res.TTL = uint32(max(time.Until(id0.expires)/time.Second, 0))
	}
	if user != "" && s.cfg.MaxConnectionsPerUser > 0 && !ss.takeUserSlot(ctx) {
		ss.disconnect(protocol.DisconnectConnectionLimit, 30*time.Second+time.Duration(mrand.Int64N(int64(30*time.Second))), true)
		return
	}

	var pending []*pendingSub
	rollback := func() {
		for _, p := range pending {
			ss.drop(ctx, p.sub)
		}
	}
	for _, ch := range id0.channels {
		r := &protocol.SubscribeRequest{Channel: ch}
		if q := req.Subs[ch]; q != nil && q.Recover {
			// A reconnecting client's position in this server-side
			// subscription: recover it like a client subscription.
			r.Recover, r.Epoch, r.Offset = true, q.Epoch, q.Offset
		}
		p, perr := ss.prepare(ctx, r, true)
		if perr != nil {
			rollback()
			ss.replyError(id, perr)
			return
		}
		pending = append(pending, p)
	}
	for ch, r := range req.Subs {
		if slices.Contains(id0.channels, ch) {
			continue // a server-side subscription's position, used above
		}
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
	if user != "" {
		s.sessions.addUser(user, ss)
	}
	if len(pending) > 0 {
		res.Subs = make(map[string]*protocol.SubscribeResult, len(pending))
		for _, p := range pending {
			res.Subs[p.sub.Channel] = p.res
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
		if !ss.s.hub.Activate(&p.sub.Sub, first, p.after) {
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
		if perr := ss.maySubscribe(ctx, ns, ch, req.Token); perr != nil {
			return nil, perr
		}
	}
	ss.mu.Lock()
	if ss.sub(ch) != nil {
		ss.mu.Unlock()
		return nil, protocol.NewError(protocol.ErrAlreadySubscribed, "already subscribed")
	}
	if len(ss.subs) >= s.cfg.MaxSubscriptions {
		ss.mu.Unlock()
		return nil, protocol.NewError(protocol.ErrLimitExceeded, "too many subscriptions")
	}
	ss.mu.Unlock()

	sub := &subscription{ns: ns, Sub: hub.Sub{Conn: ss.conn, Codec: ss.codec, Channel: ch, Policy: ns.policy, JoinLeave: ns.JoinLeave, Owner: ss}}
	hs := &sub.Sub
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
	ss.subs = append(ss.subs, sub)
	ss.mu.Unlock()
	return p, nil
}

// drop removes a subscription that was prepared but never announced.
func (ss *session) drop(ctx context.Context, sub *subscription) {
	ss.mu.Lock()
	ss.removeSub(sub.Channel)
	ss.mu.Unlock()
	ss.s.hubRemove(&sub.Sub)
}

func (ss *session) unsubscribe(ctx context.Context, req *protocol.UnsubscribeRequest) (*protocol.UnsubscribeResult, *protocol.Error) {
	ss.mu.Lock()
	sub := ss.removeSub(req.Channel)
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
	if len(req.Data) == 0 {
		return nil, protocol.NewError(protocol.ErrBadRequest, "data required")
	}
	data := []byte(req.Data)
	info := ss.clientInfo()
	if ns.ProxyPublish && ss.s.cfg.Proxy.PublishURL != "" {
		if !userAllowed(ns, req.Channel, info.User) {
			return nil, protocol.NewError(protocol.ErrPermissionDenied, "channel limited to other users")
		}
		preq := &proxyRequest{Client: ss.id, User: info.User, Channel: req.Channel}
		setData(preq, data)
		r, err := ss.s.callProxy(ctx, ss.s.cfg.Proxy.PublishURL, preq)
		if err != nil {
			if perr := ss.proxyError(err); perr != nil {
				return nil, perr
			}
			return nil, protocol.NewError(protocol.ErrPermissionDenied, "disconnected")
		}
		if d, err := r.payload(); err == nil && len(d) > 0 {
			data = d // the application may rewrite the publication
		}
	} else if !ns.AllowPublish || ss.mayRead(ctx, ns, req.Channel, "") != nil {
		return nil, protocol.NewError(protocol.ErrPermissionDenied, "permission denied")
	}
	pos, perr := ss.s.publish(ctx, ns, req.Channel, &protocol.Publication{Data: data, Info: info}, req.IdempotencyKey)
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
	if perr := ss.mayRead(ctx, ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.history(ctx, ns, req)
}

func (ss *session) subscribed(ch string) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.sub(ch) != nil
}

func (ss *session) presence(ctx context.Context, req *protocol.PresenceRequest) (*protocol.PresenceResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if perr := ss.mayRead(ctx, ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.presenceOf(ctx, ns, req.Channel)
}

func (ss *session) presenceStats(ctx context.Context, req *protocol.PresenceStatsRequest) (*protocol.PresenceStatsResult, *protocol.Error) {
	ns, perr := ss.s.resolve(req.Channel)
	if perr != nil {
		return nil, perr
	}
	if perr := ss.mayRead(ctx, ns, req.Channel, ""); perr != nil && !ss.subscribed(req.Channel) {
		return nil, perr
	}
	return ss.s.presenceStatsOf(ctx, ns, req.Channel)
}

func (ss *session) rpc(ctx context.Context, req *protocol.RPCRequest) (*protocol.RPCResult, *protocol.Error) {
	ss.mu.Lock()
	rc := RPCContext{Client: ss.id, User: ss.user}
	ss.mu.Unlock()
	if ss.s.cfg.OnRPC == nil {
		if ss.s.cfg.Proxy.RPCURL == "" {
			return nil, protocol.NewError(protocol.ErrMethodNotFound, "rpc is not enabled")
		}
		preq := &proxyRequest{Client: rc.Client, User: rc.User, Method: req.Method}
		setData(preq, req.Data)
		r, err := ss.s.callProxy(ctx, ss.s.cfg.Proxy.RPCURL, preq)
		if err != nil {
			return nil, ss.proxyError(err)
		}
		d, err := r.payload()
		if err != nil {
			return nil, protocol.NewError(protocol.ErrInternal, "bad rpc answer")
		}
		return &protocol.RPCResult{Data: d}, nil
	}
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

func (ss *session) refresh(ctx context.Context, req *protocol.RefreshRequest) (*protocol.RefreshResult, *protocol.Error) {
	c, err := ss.s.verifier.Verify(ctx, req.Token)
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
	ss.proxyExpiry.Store(false)
	if c.ExpiresAt != nil {
		ss.setExpiry(c.ExpiresAt.Time)
		res.Expires = true
		res.TTL = uint32(max(time.Until(c.ExpiresAt.Time)/time.Second, 0))
	} else {
		ss.setExpiry(time.Time{})
	}
	return res, nil
}

// setExpiry records new credentials' expiry (zero: none).
func (ss *session) setExpiry(t time.Time) {
	if t.IsZero() {
		ss.expires.Store(0)
	} else {
		ss.expires.Store(t.Unix())
	}
	ss.notified.Store(false)
}
