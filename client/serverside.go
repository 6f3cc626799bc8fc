package client

import "github.com/heraldhq/herald/protocol"

// Server-side subscriptions: channels the server subscribed the connection
// to rather than the application: the token's channels claim (or the
// connect proxy's, or a personal channel) at connect, and the server API's
// subscribe, announced by a subscribe push. They have no Subscription:
// their events go to the client's handlers, and their positions to the
// next connect, which recovers them. Also here: the server's message
// pushes, data sent to this one connection.

// serverSub is the client's record of one server-side subscription.
type serverSub struct {
	recoverable bool
	skips       bool           // filtered or conflated: skipped offsets are not a gap
	pos         StreamPosition // of the last publication delivered, when recoverable
}

// OnServerPublication sets the handler of publications in channels the
// client did not subscribe to itself (server-side subscriptions).
func (c *Client) OnServerPublication(f func(Publication)) {
	c.mu.Lock()
	c.onServerPub = f
	c.mu.Unlock()
}

// OnServerSubscribed sets the handler of server-side subscriptions: it is
// called for each one a connection starts with and for each one the
// server adds later (a subscribe push from the server API), before its
// publications, and tells whether a reconnect recovered every publication
// missed meanwhile (WasRecovering and Recovered), as for client
// subscriptions.
func (c *Client) OnServerSubscribed(f func(SubscribedEvent)) {
	c.mu.Lock()
	c.onServerSub = f
	c.mu.Unlock()
}

// OnServerUnsubscribed sets the handler called when the server ends a
// server-side subscription (see Options.OnServerUnsubscribed).
func (c *Client) OnServerUnsubscribed(f func(UnsubscribedEvent)) {
	c.mu.Lock()
	c.onServerUnsub = f
	c.mu.Unlock()
}

// OnMessage sets the handler of data the server sends to this connection
// alone (see Options.OnMessage).
func (c *Client) OnMessage(f func(data []byte)) {
	c.mu.Lock()
	c.onMessage = f
	c.mu.Unlock()
}

// serverPositions returns what the next connect sends for the server-side
// subscriptions, nil if there are none: the position of each one with
// history, so that the server recovers what was missed, and an empty entry
// for the others, so that the server restores the channels its API
// subscribed the connection to. The caller holds c.mu.
func (c *Client) serverPositions() map[string]*protocol.SubscribeRequest {
	if len(c.serverSubs) == 0 {
		return nil
	}
	out := make(map[string]*protocol.SubscribeRequest, len(c.serverSubs))
	for ch, s := range c.serverSubs {
		r := &protocol.SubscribeRequest{}
		if s.recoverable {
			r.Recover, r.Epoch, r.Offset = true, s.pos.Epoch, s.pos.Offset
		}
		out[ch] = r
	}
	return out
}

// applyServerSubs runs on the reader goroutine with a connect result's
// server-side subscriptions: recovered publications are delivered before
// anything read after the reply, and the set replaces the previous
// connection's (a channel no longer granted is forgotten).
func (c *Client) applyServerSubs(conn *wsConn, subs map[string]*protocol.SubscribeResult) {
	c.mu.Lock()
	clear(c.serverSubs)
	c.mu.Unlock()
	for ch, r := range subs {
		c.serverSubscribed(conn, ch, r)
	}
}

// serverSubscribed records a server-side subscription, from a connect
// result or a subscribe push, reports it and delivers its recovered
// publications. It runs on the reader goroutine.
func (c *Client) serverSubscribed(conn *wsConn, ch string, r *protocol.SubscribeResult) {
	if r == nil {
		return
	}
	c.mu.Lock()
	if c.subs[ch] != nil {
		c.mu.Unlock()
		return // a client subscription's result
	}
	c.serverSubs[ch] = serverSub{recoverable: r.Recoverable, skips: r.Filtered || r.Conflated, pos: StreamPosition{Epoch: r.Epoch, Offset: r.Offset}}
	onSub, onPub := c.onServerSub, c.onServerPub
	c.mu.Unlock()
	if onSub != nil {
		onSub(subscribedEvent(ch, r))
	}
	if onPub != nil {
		for _, p := range recoveredPublications(ch, r) {
			onPub(toPublication(p))
		}
	}
}

// serverPublication classifies a publication of a server-side
// subscription and advances its position on offsetNext. A publication
// without a position (a channel without history) is offsetNext; one of a
// channel that is not a server-side subscription (it raced an
// unsubscribe) is dropped as offsetDuplicate. On offsetGap the position
// stays and the caller reconnects, so that the connect recovers from it.
// The caller holds c.mu.
func (c *Client) serverPublication(p *protocol.Publication) offsetVerdict {
	s, ok := c.serverSubs[p.Channel]
	switch {
	case !ok:
		return offsetDuplicate
	case !s.recoverable || p.Offset == 0:
		return offsetNext
	}
	v := classifyOffset(s.pos.Offset, p.Offset)
	if v == offsetGap && s.skips {
		v = offsetNext
	}
	if v == offsetNext {
		s.pos.Offset = p.Offset
		c.serverSubs[p.Channel] = s
	}
	return v
}

// serverUnsubscribed handles an unsubscribe push for a channel that has no
// Subscription: a server-side subscription leaves the set (the next
// connect does not ask for it again) and is reported. It runs on the
// reader goroutine.
func (c *Client) serverUnsubscribed(u *protocol.UnsubscribeResult) {
	c.mu.Lock()
	s, ok := c.serverSubs[u.Channel]
	delete(c.serverSubs, u.Channel)
	f := c.onServerUnsub
	c.mu.Unlock()
	if ok && f != nil {
		f(unsubscribedEvent(u, s.recoverable, s.pos))
	}
}

// message delivers a message push. It runs on the reader goroutine.
func (c *Client) message(m *protocol.MessagePush) {
	c.mu.Lock()
	f := c.onMessage
	c.mu.Unlock()
	if f != nil {
		f([]byte(m.Data))
	}
}
