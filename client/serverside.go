package client

import "github.com/heraldhq/herald/protocol"

// Server-side subscriptions: channels the server subscribed the connection
// to rather than the application (the token's channels claim, for
// example). They have no Subscription: their events go to the client's
// handlers, and their positions to the next connect, which recovers them.

// OnServerPublication sets the handler of publications in channels the
// client did not subscribe to itself (server-side subscriptions).
func (c *Client) OnServerPublication(f func(Publication)) {
	c.mu.Lock()
	c.onServerPub = f
	c.mu.Unlock()
}

// OnServerSubscribed sets the handler of server-side subscriptions: it is
// called for each one a connection starts with, before its publications,
// and tells whether a reconnect recovered every publication missed
// meanwhile (WasRecovering and Recovered), as for client subscriptions.
func (c *Client) OnServerSubscribed(f func(SubscribedEvent)) {
	c.mu.Lock()
	c.onServerSub = f
	c.mu.Unlock()
}

// serverPositions returns the recovery requests of the server-side
// subscriptions, nil if there are none. The caller holds c.mu.
func (c *Client) serverPositions() map[string]*protocol.SubscribeRequest {
	if len(c.serverSubs) == 0 {
		return nil
	}
	out := make(map[string]*protocol.SubscribeRequest, len(c.serverSubs))
	for ch, pos := range c.serverSubs {
		out[ch] = &protocol.SubscribeRequest{Recover: true, Epoch: pos.Epoch, Offset: pos.Offset}
	}
	return out
}

// applyServerSubs runs on the reader goroutine with a connect result's
// server-side subscriptions: recovered publications are delivered before
// anything read after the reply, and the positions replace the previous
// connection's (a channel no longer granted is forgotten).
func (c *Client) applyServerSubs(conn *wsConn, subs map[string]*protocol.SubscribeResult) {
	c.mu.Lock()
	clear(c.serverSubs)
	c.mu.Unlock()
	for ch, r := range subs {
		c.serverSubscribed(conn, ch, r)
	}
}

// serverSubscribed records a server-side subscription, reports it and
// delivers its recovered publications. It runs on the reader goroutine.
func (c *Client) serverSubscribed(conn *wsConn, ch string, r *protocol.SubscribeResult) {
	if r == nil {
		return
	}
	c.mu.Lock()
	if c.subs[ch] != nil {
		c.mu.Unlock()
		return // a client subscription's result
	}
	if r.Recoverable {
		c.serverSubs[ch] = StreamPosition{Epoch: r.Epoch, Offset: r.Offset}
	} else {
		delete(c.serverSubs, ch)
	}
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
// without a position (no history, or not a server-side channel) is
// offsetNext. On offsetGap the position stays and the caller reconnects,
// so that the connect recovers from it. The caller holds c.mu.
func (c *Client) serverPublication(p *protocol.Publication) offsetVerdict {
	pos, ok := c.serverSubs[p.Channel]
	if !ok || p.Offset == 0 {
		return offsetNext
	}
	v := classifyOffset(pos.Offset, p.Offset)
	if v == offsetNext {
		pos.Offset = p.Offset
		c.serverSubs[p.Channel] = pos
	}
	return v
}
