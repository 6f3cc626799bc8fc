package client

import (
	"context"
	"net/http"
	"time"
)

// Options configure a Client. The zero value connects anonymously with the
// JSON encoding and default backoff.
type Options struct {
	// Token is the connection JWT. GetToken, if set, is called for a fresh
	// one when the server reports the token expired: at connect, before
	// expiry (for the refresh command), and after a 3502 disconnect (a
	// missed refresh), which then reconnects instead of ending the client.
	Token    string
	GetToken func(ctx context.Context) (string, error)
	// APIKey connects as a backend with one of the server's API keys
	// instead of a token: the connection may subscribe to every channel,
	// the lifecycle events channel "$events" included, but not publish.
	APIKey string
	// Transport is "websocket" (the default, also "") or "http-stream":
	// the server's messages over one long HTTP response and commands as
	// POSTs, for networks that break WebSocket upgrades. The URL given to
	// Dial stays the WebSocket one (ws://HOST/ws): HTTP streaming uses
	// http://HOST/stream. HTTP streaming speaks JSON only.
	Transport string
	// Binary selects the MessagePack encoding instead of JSON.
	Binary bool
	// Name identifies the client software to the server.
	Name string
	// Header is sent with the WebSocket handshake (for example Origin).
	Header http.Header
	// ReconnectBase and ReconnectMax bound the backoff: before attempt n the
	// client waits a random time in [0, min(ReconnectMax, ReconnectBase*2^n)),
	// and at least the server's reconnect-after hint. Defaults 200ms and 20s.
	ReconnectBase time.Duration
	ReconnectMax  time.Duration
	// DialTimeout bounds one connection attempt (handshake and connect
	// reply). Default 10s.
	DialTimeout time.Duration
	// PingMargin is added to the server's ping interval to decide that a
	// silent connection is dead. Default 10s.
	PingMargin time.Duration
	// OnState is called on every state change.
	OnState func(State)
	// OnDisconnect is called when a connection ends, with the code and
	// whether the client will reconnect.
	OnDisconnect func(DisconnectEvent)
	// OnServerPublication, OnServerSubscribed and OnServerUnsubscribed
	// handle server-side subscriptions: channels the server subscribed the
	// connection to, at connect (the token's channels claim) or later (the
	// server API's subscribe, which may name a channel the client could
	// not subscribe to itself). OnServerSubscribed reports each one before
	// its publications; the client then keeps its position and sends it
	// when it reconnects, so that the server restores the subscription and
	// delivers what was missed (OnServerSubscribed again, with
	// WasRecovering and Recovered), with no gap and no duplicate.
	// OnServerUnsubscribed reports that the server ended one (an
	// unsubscribe push, whatever its code): no publication of it follows
	// and the client forgets it, so a reconnect does not ask for it again.
	// They are set from the first connection on; the Client methods of the
	// same names replace them later.
	OnServerPublication  func(Publication)
	OnServerSubscribed   func(SubscribedEvent)
	OnServerUnsubscribed func(UnsubscribedEvent)
	// OnMessage receives the data the server sends to this connection
	// alone, not through a channel (the server API's send): the exact
	// bytes sent, whichever the encoding (binary data travels as base64 in
	// JSON and is decoded). Messages are not stored: one sent while the
	// client is disconnected is lost. Client.OnMessage replaces it later.
	OnMessage func(data []byte)
	// AckDelay batches acknowledgements (channels with acknowledgements):
	// those made within it go in one ack command, or at once when 256
	// publications are waiting. Default 10ms.
	AckDelay time.Duration
}

func (o Options) withDefaults() Options {
	if o.ReconnectBase <= 0 {
		o.ReconnectBase = 200 * time.Millisecond
	}
	if o.ReconnectMax <= 0 {
		o.ReconnectMax = 20 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.AckDelay <= 0 {
		o.AckDelay = 10 * time.Millisecond
	}
	if o.PingMargin <= 0 {
		o.PingMargin = 10 * time.Second
	}
	return o
}

// State is the connection state.
type State int

const (
	StateDisconnected State = iota
	StateConnecting
	StateConnected
	StateClosed // closed by Close or by a terminal code; final
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "disconnected"
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// DisconnectEvent describes the end of one connection.
type DisconnectEvent struct {
	Code      uint32
	Reason    string
	Reconnect bool
	// ReconnectAfter is the server's hint (0 if none).
	ReconnectAfter time.Duration
}
