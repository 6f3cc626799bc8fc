package transport

import "github.com/gobwas/ws"

// EchoHandler sends every message back as it came: the conformance-suite
// endpoint (/ws/echo). A message the queue cannot take closes the
// connection with 1008 rather than growing memory.
type EchoHandler struct{}

func (EchoHandler) OnMessage(c *Conn, msg []byte, binary bool) {
	if err := c.Enqueue(MessageFrame(binary, msg), nil); err == ErrQueueFull {
		c.Close(ws.StatusPolicyViolation, "queue full", nil, true)
	}
}

func (EchoHandler) OnClose(*Conn, ws.StatusCode, error) {}
