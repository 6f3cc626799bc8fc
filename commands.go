package herald

import (
	"context"
	"errors"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/protocol"
)

// commandTimeout bounds the broker calls of one command.
const commandTimeout = 10 * time.Second

// Client commands. The transport hands a connection's messages to
// OnMessage one at a time, so a connection's commands run in order and
// each reply is queued before the next command starts; replies to
// subscribe and connect go out through the hub (subscribe.go) so that they
// precede the channel's live publications. connect is in connect.go,
// subscribe and unsubscribe in subscribe.go; the halves of publish,
// history and presence that the server API shares are in ops.go.

// handle runs one decoded command: rate limit, state checks, dispatch.
func (ss *session) handle(cmd *protocol.Command) {
	method := cmd.Method()
	if method == "pong" {
		return // OnMessage already cleared the pending pong
	}
	if cmd.ID == 0 && method != "ack" {
		ss.disconnect(protocol.DisconnectBadRequest, 0, true)
		return
	}
	if ss.s.cfg.CommandRate > 0 && !ss.bucket.allow(time.Now(), ss.s.cfg.CommandRate, ss.s.cfg.CommandBurst) {
		if int(ss.bucket.refused) > ss.s.cfg.CommandBurst {
			ss.disconnect(protocol.DisconnectTooManyRequests, time.Second, false)
			return
		}
		if cmd.ID != 0 {
			ss.replyError(cmd.ID, protocol.NewError(protocol.ErrTooManyRequests, "too many requests"))
		}
		return
	}
	if method == "" {
		ss.replyError(cmd.ID, protocol.NewError(protocol.ErrMethodNotFound, "unknown command"))
		return
	}
	ss.s.metrics.commands.WithLabelValues(method).Inc()
	if ss.observer() && !adminMay(method) {
		ss.replyError(cmd.ID, protocol.NewError(protocol.ErrPermissionDenied, "this connection is read-only"))
		return
	}
	if method == "connect" {
		ss.connect(cmd.ID, cmd.Connect)
		return
	}
	if ss.state.Load() != stateConnected {
		if cmd.ID != 0 {
			ss.replyError(cmd.ID, protocol.NewError(protocol.ErrNotConnected, "send connect first"))
		}
		return
	}
	if method == "ack" {
		// The most frequent command of ack namespaces: no context, and
		// no reply unless asked for one.
		ss.ack(cmd.Ack)
		if cmd.ID != 0 {
			ss.reply(&protocol.ServerMessage{ID: cmd.ID, Ack: &protocol.Empty{}})
		}
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
	pos, perr := ss.s.publish(ctx, ns, req.Channel, "client", &protocol.Publication{Data: data, Info: info}, req.IdempotencyKey)
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
	ss.flags.set(flagProxyExpiry, false)
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
	ss.flags.set(flagNotified, false)
}
