package herald

import (
	"context"
	"fmt"
	"hash/maphash"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// The subscription lifecycle, top to bottom (docs/architecture.md draws
// the same steps as a table). Every way into a channel goes through the
// same three steps: a client's subscribe command, and at connect both the
// channels the credentials grant (server-side subscriptions) and the
// client's own channels with their positions.
//
//	prepare   resolve the name to its namespace (channels.go resolve);
//	          authorize (authz.go maySubscribe: subscription token, proxy,
//	          namespace rules; granted channels skip it); register the
//	          subscription in the hub, held, and subscribe the node at the
//	          broker if it is the node's first subscriber (hubAdd); read the
//	          stream position and, for a recovering client, what it missed
//	          (readPosition); decide whether it recovered (broker.Recovered).
//	activate  queue the reply, then the live publications held since
//	          registration, through the hub (hub.Activate).
//	join      add the presence entry and publish the join event.
//
// And back out, through release: the unsubscribe command, and every
// subscription of a connection that closed (cleanup). A subscription
// prepared but never activated (a connect that fails half way) is dropped.
//
// Why this order. The subscription is registered in the hub, and the node
// subscribed at the broker, before the history read. From that moment every
// live publication the node receives for the channel is held for the new
// subscription. The read then returns the stream's position P (and, when
// recovering, the publications since the client's position). activate sends
// the reply, which carries P and the recovered publications, then the held
// publications above P; those at or below P are in the reply already (a
// broker may deliver a publication to the node after a read has seen it),
// and the hub skips live ones at or below P from then on. A held
// publication beyond P+1 means the node's stream skipped offsets: the
// connection is closed with "insufficient state" so that the client
// recovers from history. So nothing published after the read is missed and
// nothing is delivered twice. Channels without history have no offsets:
// everything held since registration is delivered after the reply.

// subscription is one of the session's channels: the hub's registration,
// the namespace it belongs to, and who granted it, in one allocation.
type subscription struct {
	hub.Sub // its Aux holds the grant
	ns      *namespace
}

func (sub *subscription) grant() grant { return grant(sub.Aux) }

// grant is who allowed a subscription.
type grant uint8

const (
	grantClient      grant = iota // the client asked; authorized by authz.go
	grantCredentials              // the connection's token or connect proxy listed it, or a personal channel
	grantAPI                      // the server API subscribed the connection (recorded in the grants store)
)

// pendingSub is a subscription registered in the hub but not yet active,
// with the reply its subscribe gets.
type pendingSub struct {
	sub   *subscription
	res   *protocol.SubscribeResult
	after uint64 // the position the reply carries: held publications after it follow
	since uint64 // the offset recovered from, when recovering
}

// subscribe runs the subscribe command. The reply goes out through the hub
// so that it precedes every live publication of the channel.
func (ss *session) subscribe(ctx context.Context, id uint64, req *protocol.SubscribeRequest) {
	p, perr := ss.prepare(ctx, req, grantClient)
	if perr != nil {
		ss.replyError(id, perr)
		return
	}
	ss.activate(ctx, &protocol.ServerMessage{ID: id, Subscribe: p.res}, []*pendingSub{p})
}

// serverSubscribe subscribes the connection to ch on the server's own
// initiative (the server API): the same lifecycle as a client subscribe,
// announced with a subscribe push that carries the channel and its
// position, and ahead of the channel's live publications. A channel the
// connection already has is left as it is.
func (ss *session) serverSubscribe(ctx context.Context, ch string) *protocol.Error {
	p, perr := ss.prepare(ctx, &protocol.SubscribeRequest{Channel: ch}, grantAPI)
	if perr != nil {
		if perr.Code == protocol.ErrAlreadySubscribed {
			return nil
		}
		return perr
	}
	p.res.Channel = ch
	ss.activate(ctx, &protocol.ServerMessage{Subscribe: p.res}, []*pendingSub{p})
	return nil
}

// prepare checks a subscription, registers it (held, not yet live) and
// reads what recovery needs. g says who grants the channel: only a client's
// own subscription is authorized here. On error nothing is left
// registered.
func (ss *session) prepare(ctx context.Context, req *protocol.SubscribeRequest, g grant) (*pendingSub, *protocol.Error) {
	s := ss.s
	if req == nil || req.Channel == "" {
		return nil, protocol.NewError(protocol.ErrBadRequest, "channel required")
	}
	ch := req.Channel
	ns, perr := s.resolve(ch)
	if perr != nil {
		return nil, perr
	}
	if g == grantClient {
		if perr := ss.maySubscribe(ctx, ns, ch, req.Token); perr != nil {
			return nil, perr
		}
	}
	f, perr := parseFilter(req.Filter)
	if perr != nil {
		return nil, perr
	}
	delta, perr := wantsDelta(ns, req.Delta)
	if perr != nil {
		return nil, perr
	}
	// Acknowledgements need a connection that can send them, and offsets
	// without holes: a filter's skipped offsets would look like losses.
	ack := ns.Ack && ss.stream() == nil && !ss.observer()
	if ack && f != nil {
		return nil, protocol.NewError(protocol.ErrNotAvailable, "filters are not available on channels with acknowledgements")
	}
	if ack {
		// Redelivered publications go full, so the server could not know
		// which publication a client's delta base is: deltas are not
		// granted with acknowledgements.
		delta = false
	}
	if perr := ss.roomFor(ch); perr != nil {
		return nil, perr
	}
	sub := ss.newSubscription()
	*sub = subscription{ns: ns, Sub: hub.Sub{Conn: ss.conn, Codec: ss.ci, Channel: ch, Policy: ns.policy, JoinLeave: ns.JoinLeave, Compress: ns.Compression, Aux: uint8(g), Ack: ack}}
	if delta {
		sub.SetDelta()
	}
	if ns.conflate != nil {
		sub.SetConflate(ns.conflate)
	}
	if err := s.hubAdd(ctx, &sub.Sub, f); err != nil {
		s.log.Error("broker subscribe", "channel", ch, "err", err)
		return nil, brokerError(err, "subscribe failed")
	}
	p := &pendingSub{sub: sub, res: &protocol.SubscribeResult{JoinLeave: ns.JoinLeave, Filtered: f != nil, Delta: delta, Ack: ack, Conflated: ns.conflate != nil}}
	if ns.history {
		if ack {
			req = ss.fromCursor(ctx, ns, req)
		}
		if perr := s.readPosition(ctx, req, f, p); perr != nil {
			s.hubRemove(&sub.Sub)
			return nil, perr
		}
	}
	if !ss.addSub(sub) {
		s.hubRemove(&sub.Sub)
		return nil, protocol.NewError(protocol.ErrInternal, "connection closed")
	}
	if ack {
		// The client has acknowledged what it recovered from, or, without
		// recovery, starts at the stream's position.
		acked := p.res.Offset
		if p.res.Recovered {
			acked = p.since
		}
		ss.startAck(p, acked, p.res.Epoch)
	}
	return p, nil
}

// roomFor refuses a second subscription to ch and one past the limit.
func (ss *session) roomFor(ch string) *protocol.Error {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.sub(ch) != nil {
		return protocol.NewError(protocol.ErrAlreadySubscribed, "already subscribed")
	}
	if len(ss.subs) >= ss.s.cfg.MaxSubscriptions {
		return protocol.NewError(protocol.ErrLimitExceeded, "too many subscriptions")
	}
	return nil
}

// addSub records sub in the session; false once the session is closed
// (cleanup has taken, or will never see, its list).
func (ss *session) addSub(sub *subscription) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.state.Load() == stateClosed {
		return false
	}
	ss.subs = append(ss.subs, sub)
	return true
}

// readPosition reads the stream position of p's channel and, when req
// recovers, the publications after the client's position, and records in
// p's reply whether they are all of them. With a filter f the reply
// carries only those f matches: whether all were recovered is decided on
// the stream's own offsets, before the filter.
func (s *Server) readPosition(ctx context.Context, req *protocol.SubscribeRequest, f *filter.Filter, p *pendingSub) *protocol.Error {
	opts := broker.HistoryOptions{} // Limit 0: the position only
	var since protocol.StreamPosition
	if req.Recover {
		since = protocol.StreamPosition{Epoch: req.Epoch, Offset: req.Offset}
		p.since = req.Offset
		opts = broker.HistoryOptions{Since: &since, Limit: -1}
		if brokenRecovery {
			opts = broker.HistoryOptions{}
		}
	}
	pubs, pos, perr := s.readHistory(ctx, p.sub.Channel, opts)
	if perr != nil {
		return perr
	}
	p.res.Recoverable = true
	p.res.Epoch, p.res.Offset = pos.Epoch, pos.Offset
	p.after = pos.Offset
	if req.Recover {
		p.res.WasRecovering = true
		p.res.Recovered = brokenRecovery || broker.Recovered(since, pubs, pos)
		if p.res.Recovered {
			p.res.Publications = filterPubs(f, pubs)
			if c := p.sub.ns.conflate; c != nil {
				// A conflating subscriber recovers the newest
				// publication per key, as if it had been behind.
				p.res.Publications = c.Reduce(p.res.Publications)
			}
		}
	}
	return nil
}

// activate sends reply, then the held publications of each pending
// subscription, and announces the new members. The reply rides on the
// first subscription's activation, under its channel's lock, so no live
// publication of that channel can overtake it.
func (ss *session) activate(ctx context.Context, reply *protocol.ServerMessage, pending []*pendingSub) {
	if ss.stream() != nil && ss.stream().sse != nil {
		ss.activateSSE(ctx, reply, pending)
		return
	}
	payload, err := ss.codec().AppendServerMessage(nil, reply)
	if err != nil {
		ss.s.log.Error("encode reply", "err", err)
		ss.disconnect(protocol.DisconnectServerError, 0, true)
		return
	}
	frame := ss.frame(payload)
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
			return // closed meanwhile, or closing as slow or behind
		}
	}
	info := ss.clientInfo()
	for _, p := range pending {
		ss.join(ctx, p.sub, info)
	}
}

// join adds the presence entry and publishes the join event of an active
// subscription. If the connection closed meanwhile, its cleanup may have
// removed the entry before it was added: join then removes it itself, so
// no member outlives its connection.
func (ss *session) join(ctx context.Context, sub *subscription, info *protocol.ClientInfo) {
	s := ss.s
	if ss.observer() {
		return // observers watch without being members
	}
	if sub.ns.Presence {
		if err := s.presence.AddPresence(ctx, sub.Channel, ss.id, info, s.presenceTTL); err != nil {
			s.log.Warn("presence add", "channel", sub.Channel, "err", err)
		}
	}
	if s.events != nil {
		s.events.joined(ss, sub, info.User)
	}
	if ss.state.Load() == stateClosed {
		// Cleanup may have released the subscription before the entry
		// was added: take it out again, and announce nothing.
		if sub.ns.Presence {
			if err := s.presence.RemovePresence(ctx, sub.Channel, ss.id); err != nil {
				s.log.Warn("presence remove", "channel", sub.Channel, "err", err)
			}
		}
		if s.events != nil {
			s.events.left(ss, sub, info.User, 0, "disconnect")
		}
		return
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishJoin(ctx, sub.Channel, info); err != nil {
			s.log.Warn("publish join", "channel", sub.Channel, "err", err)
			s.unannounced(sub.Channel)
		}
	}
}

// unsubscribe runs the unsubscribe command.
func (ss *session) unsubscribe(ctx context.Context, req *protocol.UnsubscribeRequest) (*protocol.UnsubscribeResult, *protocol.Error) {
	ss.mu.Lock()
	sub := ss.removeSub(req.Channel)
	ss.mu.Unlock()
	if sub != nil {
		ss.release(ctx, sub, 0, "unsubscribe")
	}
	return &protocol.UnsubscribeResult{}, nil
}

// serverUnsubscribe ends the connection's subscription to ch on the
// server's initiative: it is released, then the unsubscribe push (channel,
// code, reason) follows the channel's last publication queued for the
// connection. It reports whether the connection had the channel.
func (ss *session) serverUnsubscribe(ctx context.Context, ch string, code uint32, reason string) bool {
	ss.mu.Lock()
	sub := ss.removeSub(ch)
	ss.mu.Unlock()
	if sub == nil {
		return false
	}
	ss.release(ctx, sub, code, reason)
	ss.reply(&protocol.ServerMessage{Unsubscribe: &protocol.UnsubscribeResult{Channel: ch, Code: code, Reason: reason}})
	return true
}

// release ends an active subscription already taken out of the session's
// list: the hub forgets it (and the node unsubscribes at the broker if it
// was the last), its presence entry goes, the leave event is published,
// and lifecycle events learn why it ended (code, reason).
func (ss *session) release(ctx context.Context, sub *subscription, code uint32, reason string) {
	s := ss.s
	if sub.Ack {
		s.acks.remove(sub)
	}
	s.hubRemove(&sub.Sub)
	if ss.observer() {
		return // it never joined
	}
	user := ss.clientInfo().User
	if s.events != nil {
		s.events.left(ss, sub, user, code, reason)
	}
	if u := s.cfg.Proxy.UnsubscribeURL; u != "" {
		s.notifyProxy(u, &proxyRequest{Client: ss.id, User: user, Channel: sub.Channel, Code: code, Reason: reason})
	}
	if sub.ns.Presence {
		if err := s.presence.RemovePresence(ctx, sub.Channel, ss.id); err != nil {
			s.log.Warn("presence remove", "channel", sub.Channel, "err", err)
		}
	}
	if sub.ns.JoinLeave {
		if err := s.broker.PublishLeave(ctx, sub.Channel, ss.clientInfo()); err != nil {
			s.log.Warn("publish leave", "channel", sub.Channel, "err", err)
			s.unannounced(sub.Channel)
		}
	}
}

// drop removes subscriptions that were prepared but never activated: no
// member was announced, so only the session's list and the hub know them.
func (ss *session) drop(pending []*pendingSub) {
	for _, p := range pending {
		ss.mu.Lock()
		ss.removeSub(p.sub.Channel)
		ss.mu.Unlock()
		if p.sub.Ack {
			ss.s.acks.remove(p.sub)
		}
		ss.s.hubRemove(&p.sub.Sub)
	}
}

// sub returns the subscription to ch, or nil. ss.mu must be held.
func (ss *session) sub(ch string) *subscription {
	for _, s := range ss.subs {
		if s.Channel == ch {
			return s
		}
	}
	return nil
}

// removeSub takes the subscription to ch out of the list and returns it.
// ss.mu must be held.
func (ss *session) removeSub(ch string) *subscription {
	for i, s := range ss.subs {
		if s.Channel == ch {
			last := len(ss.subs) - 1
			ss.subs[i] = ss.subs[last]
			ss.subs[last] = nil
			ss.subs = ss.subs[:last]
			if len(ss.subs) == 0 {
				ss.subs = nil
			}
			return s
		}
	}
	return nil
}

// hubAdd registers a subscription and, for the node's first subscriber of
// the channel, subscribes the node at the broker, before any history read
// (see "Why this order" above). Broker subscribes and unsubscribes of one
// channel are serialised, so the node's broker interest always matches
// whether the hub has subscribers.
func (s *Server) hubAdd(ctx context.Context, hs *hub.Sub, f *filter.Filter) error {
	defer s.subLock(hs.Channel)()
	if !s.hub.AddFiltered(hs, f) {
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

// hubRemove unregisters a subscription and, for the node's last subscriber
// of the channel, unsubscribes the node at the broker.
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

func (s *Server) subLock(ch string) func() {
	l := &s.subLocks[maphash.String(subLockSeed, ch)%uint64(len(s.subLocks))]
	l.Lock()
	return l.Unlock
}

var subLockSeed = maphash.MakeSeed()

// wantsDelta reports whether a subscription that asked for the delta
// format format gets deltas: in a namespace with deltas on, and for the
// one format of the protocol. A namespace without deltas ignores the
// request (the reply does not confirm it); an unknown format is refused.
func wantsDelta(ns *namespace, format string) (bool, *protocol.Error) {
	switch format {
	case "":
		return false, nil
	case protocol.DeltaFossil:
		return ns.Delta, nil
	}
	return false, protocol.NewError(protocol.ErrBadRequest, fmt.Sprintf("unknown delta format %q (want %q)", format, protocol.DeltaFossil))
}

// parseFilter parses a subscription or history filter: nil for none, and
// a bad filter is refused with ErrBadFilter and the parser's message.
func parseFilter(text string) (*filter.Filter, *protocol.Error) {
	if text == "" {
		return nil, nil
	}
	f, err := filter.Parse(text)
	if err != nil {
		return nil, protocol.NewError(protocol.ErrBadFilter, strings.TrimPrefix(err.Error(), "herald: "))
	}
	return f, nil
}

// filterPubs returns the publications of pubs that f matches (all of them
// if f is nil), in order.
func filterPubs(f *filter.Filter, pubs []*protocol.Publication) []*protocol.Publication {
	if f == nil {
		return pubs
	}
	out := pubs[:0:0]
	for _, p := range pubs {
		if f.Match(p.Tags) {
			out = append(out, p)
		}
	}
	return out
}
