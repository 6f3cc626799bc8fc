package protocol

import "fmt"

// Subprotocol names negotiated with Sec-WebSocket-Protocol.
const (
	SubprotocolJSON    = "herald.json"
	SubprotocolMsgpack = "herald.msgpack"
)

// Error codes carried in replies. Codes 100-199 are Herald's; applications
// may use 1000-1999 for their own RPC errors.
const (
	ErrInternal              = 100 // temporary: retry may succeed
	ErrUnauthorized          = 101
	ErrUnknownChannel        = 102 // the channel's namespace is not configured
	ErrPermissionDenied      = 103
	ErrMethodNotFound        = 104
	ErrAlreadySubscribed     = 105
	ErrLimitExceeded         = 106
	ErrBadRequest            = 107
	ErrNotAvailable          = 108 // the feature is off for this channel
	ErrTokenExpired          = 109
	ErrExpired               = 110 // the connection's credentials expired
	ErrTooManyRequests       = 111 // temporary
	ErrUnrecoverablePosition = 112
	ErrInvalidChannel        = 113 // the channel name is malformed
	ErrNotFound              = 114
	ErrTimeout               = 115 // temporary
	ErrNotConnected          = 116 // a command other than connect before connect
	ErrUnavailable           = 117 // temporary: the broker cannot serve it now (leader election, outage)
	ErrBadFilter             = 118 // a subscription or history filter does not parse
)

// Error is an error reply. Temporary errors may be retried as they are.
type Error struct {
	Code      uint32 `json:"code" msgpack:"code"`
	Message   string `json:"message" msgpack:"message"`
	Temporary bool   `json:"temporary,omitempty" msgpack:"temporary,omitempty"`
}

func (e *Error) Error() string { return fmt.Sprintf("herald error %d: %s", e.Code, e.Message) }

// NewError returns an Error with the standard message for code.
func NewError(code uint32, msg string) *Error {
	e := &Error{Code: code, Message: msg}
	switch code {
	case ErrInternal, ErrTooManyRequests, ErrTimeout, ErrUnavailable:
		e.Temporary = true
	}
	return e
}

// Disconnect codes, sent in the disconnect push and as the WebSocket close
// code. 3000-3499 and 4000-4499: the client reconnects (after the hint if one
// is given). 3500-3999 and 4500-4999: terminal, the client must not reconnect
// on its own. 4000-4999 are free for applications (server API disconnect).
// Codes below 3000 are RFC 6455 close codes from the frame layer.
const (
	DisconnectShutdown          = 3000 // node draining; reconnect after the hint
	DisconnectInsufficientState = 3001 // the node lost the stream position; reconnect and recover
	DisconnectSlow              = 3002 // outbound queue overflowed; reconnect and recover
	DisconnectWriteError        = 3003
	DisconnectNoPong            = 3004 // no pong within the pong timeout
	DisconnectServerError       = 3005
	DisconnectStale             = 3006 // no connect command within the stale timeout
	DisconnectForceReconnect    = 3007
	DisconnectTooManyRequests   = 3008 // command rate limit exceeded
	DisconnectConnectionLimit   = 3009 // per-IP or per-user connection limit

	DisconnectInvalidToken     = 3500
	DisconnectBadRequest       = 3501
	DisconnectTokenExpired     = 3502
	DisconnectForceNoReconnect = 3503
	DisconnectPermissionDenied = 3504
	DisconnectUnauthorized     = 3505 // anonymous connections are not allowed
)

// Unsubscribe codes, in the unsubscribe push that ends a subscription on
// the server's side. 2000-2499: the subscription is over and the client
// must not subscribe again by itself; 2500-2999: the client may subscribe
// again (with recovery).
const (
	UnsubscribeServer      = 2000 // the application (server API) ended the subscription
	UnsubscribeResubscribe = 2500 // subscribe again, recovering
)

// DisconnectReconnects reports whether a client that receives code should
// reconnect by itself.
func DisconnectReconnects(code uint32) bool {
	switch {
	case code < 3000:
		// RFC 6455 codes: a protocol violation will not heal by reconnecting,
		// but abnormal closures and going-away do.
		switch code {
		case 1002, 1003, 1007, 1008, 1009, 1010:
			return false
		}
		return true
	case code < 3500:
		return true
	case code < 4000:
		return false
	case code < 4500:
		return true
	default:
		return false
	}
}

// DisconnectReason returns the short reason string for a Herald disconnect code.
func DisconnectReason(code uint32) string {
	switch code {
	case DisconnectShutdown:
		return "shutdown"
	case DisconnectInsufficientState:
		return "insufficient state"
	case DisconnectSlow:
		return "slow"
	case DisconnectWriteError:
		return "write error"
	case DisconnectNoPong:
		return "no pong"
	case DisconnectServerError:
		return "server error"
	case DisconnectStale:
		return "stale"
	case DisconnectForceReconnect:
		return "force reconnect"
	case DisconnectTooManyRequests:
		return "too many requests"
	case DisconnectConnectionLimit:
		return "connection limit"
	case DisconnectInvalidToken:
		return "invalid token"
	case DisconnectBadRequest:
		return "bad request"
	case DisconnectTokenExpired:
		return "token expired"
	case DisconnectForceNoReconnect:
		return "force disconnect"
	case DisconnectPermissionDenied:
		return "permission denied"
	case DisconnectUnauthorized:
		return "unauthorized"
	}
	return ""
}
