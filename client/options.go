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
	// OnServerPublication and OnServerSubscribed handle server-side
	// subscriptions (the token's channels claim) from the first connection
	// on; Client.OnServerPublication and Client.OnServerSubscribed replace
	// them later.
	OnServerPublication func(Publication)
	OnServerSubscribed  func(SubscribedEvent)
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
