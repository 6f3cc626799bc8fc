package client

import (
	"errors"
	"fmt"

	"github.com/heraldhq/herald/protocol"
)

var (
	// ErrClosed is returned once the client is closed.
	ErrClosed = errors.New("herald client: closed")
	// ErrDisconnected is returned for a command whose connection ended
	// before the reply.
	ErrDisconnected = errors.New("herald client: disconnected")
)

// Error is an error reply from the server; use errors.As.
type Error = protocol.Error

// TerminalError ends the client: the server refused it with a code that
// forbids reconnecting (invalid token, unauthorized, force disconnect...).
type TerminalError struct {
	Code   uint32
	Reason string
}

func (e *TerminalError) Error() string {
	return fmt.Sprintf("herald client: disconnected with terminal code %d (%s)", e.Code, e.Reason)
}
