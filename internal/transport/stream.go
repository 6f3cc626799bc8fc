package transport

import (
	"errors"
	"net"
	"strconv"
)

// Framing is how a connection's messages are framed on the wire. A
// WebSocket connection speaks RFC 6455 frames; the HTTP fallbacks are the
// body of one long-lived response in chunked transfer encoding, written
// by the same engines and queues: the peer sends nothing on them once the
// response started (client commands come as separate requests), so the
// engine only watches them for the peer's end.
type Framing uint8

const (
	// FramingWebSocket: one WebSocket frame per message.
	FramingWebSocket Framing = iota
	// FramingStream: HTTP streaming, one chunk per message holding the
	// message and a newline (newline-delimited JSON).
	FramingStream
	// FramingSSE: Server-Sent Events, one chunk per event.
	FramingSSE
	// NumFramings is the number of framings.
	NumFramings = 3
)

// String names the framing: "websocket", "http-stream" or "sse".
func (f Framing) String() string {
	switch f {
	case FramingStream:
		return "http-stream"
	case FramingSSE:
		return "sse"
	}
	return "websocket"
}

// Frame returns a complete frame of this framing for a protocol message.
// An SSE frame is an event with the message as its data and no id.
func (f Framing) Frame(binary bool, payload []byte) []byte {
	switch f {
	case FramingStream:
		return Chunk(nil, payload, "\n")
	case FramingSSE:
		return SSEEvent(nil, "", payload)
	}
	return MessageFrame(binary, payload)
}

// Chunk appends one chunk of HTTP/1.1 chunked transfer encoding holding
// payload followed by suffix.
func Chunk(dst, payload []byte, suffix string) []byte {
	n := len(payload) + len(suffix)
	if dst == nil {
		dst = make([]byte, 0, n+12)
	}
	dst = strconv.AppendInt(dst, int64(n), 16)
	dst = append(dst, '\r', '\n')
	dst = append(dst, payload...)
	dst = append(dst, suffix...)
	return append(dst, '\r', '\n')
}

// SSEEvent appends one chunk holding a Server-Sent Event: the id line when
// id is not empty, then data (which must not hold a newline: JSON as
// Herald encodes it never does).
func SSEEvent(dst []byte, id string, data []byte) []byte {
	n := len("data: ") + len(data) + 2
	if id != "" {
		n += len("id: ") + len(id) + 1
	}
	if dst == nil {
		dst = make([]byte, 0, n+12)
	}
	dst = strconv.AppendInt(dst, int64(n), 16)
	dst = append(dst, '\r', '\n')
	if id != "" {
		dst = append(dst, "id: "...)
		dst = append(dst, id...)
		dst = append(dst, '\n')
	}
	dst = append(dst, "data: "...)
	dst = append(dst, data...)
	dst = append(dst, "\n\n\r\n"...)
	return dst
}

// SSEEventRetry appends one chunk holding a Server-Sent Event with a
// retry field (the reconnection delay an EventSource adopts, in
// milliseconds) and data.
func SSEEventRetry(dst []byte, retryMs uint32, data []byte) []byte {
	retry := strconv.AppendUint(nil, uint64(retryMs), 10)
	n := len("retry: ") + len(retry) + 1 + len("data: ") + len(data) + 2
	dst = strconv.AppendInt(dst, int64(n), 16)
	dst = append(dst, "\r\nretry: "...)
	dst = append(dst, retry...)
	dst = append(dst, "\ndata: "...)
	dst = append(dst, data...)
	return append(dst, "\n\n\r\n"...)
}

// lastChunk ends a chunked response body.
var lastChunk = []byte("0\r\n\r\n")

// ErrUnexpectedInput closes an HTTP stream whose peer sent bytes after its
// request: the response is still running, so they can be nothing valid.
var ErrUnexpectedInput = errors.New("herald: unexpected input on an HTTP stream")

// NewStreamConn wraps a connection whose request was answered with the
// head of a chunked response (already written): the engine writes the
// body in framing f and ends it on Close.
func NewStreamConn(nc net.Conn, f Framing, opts *Options, h Handler) *Conn {
	c := NewConn(nc, opts, h)
	c.framing = f
	return c
}

// headTag marks a stream's response head in the queue: Close never
// discards it, as nothing after it would make sense without it.
type headTagT struct{}

var headTag any = headTagT{}

// EnqueueHead queues the head of a stream's response, which must be the
// first thing queued on the connection.
func (c *Conn) EnqueueHead(head []byte) error { return c.Enqueue(head, headTag) }

// Framing returns the connection's framing.
func (c *Conn) Framing() Framing { return c.framing }

// Frame returns a complete frame of the connection's framing for a
// protocol message.
func (c *Conn) Frame(binary bool, payload []byte) []byte { return c.framing.Frame(binary, payload) }
