package transport

import "github.com/gobwas/ws"

// EchoHandler sends every message back as it came: the conformance-suite
// endpoint (/ws/echo). A message the queue cannot take closes the
// connection with 1008 rather than growing memory. On a connection that
// negotiated permessage-deflate the echo goes compressed.
type EchoHandler struct{}

func (EchoHandler) OnMessage(c *Conn, msg []byte, binary bool) {
	frame := MessageFrame
	if c.Deflate() {
		frame = func(binary bool, msg []byte) []byte { f, _ := CompressedMessageFrame(binary, msg); return f }
	}
	if err := c.Enqueue(frame(binary, msg), nil); err == ErrQueueFull {
		c.Close(ws.StatusPolicyViolation, "queue full", nil, true)
	}
}

func (EchoHandler) OnClose(*Conn, ws.StatusCode, error) {}
