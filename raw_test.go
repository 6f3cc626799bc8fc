package herald_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/protocol"
)

// rawConn is a hand-driven protocol client for checking the server's
// answers to exact bytes.
type rawConn struct {
	t  testing.TB
	nc net.Conn
}

func dialRaw(t testing.TB, ts *testServer, protocols ...string) *rawConn {
	t.Helper()
	return dialRawHeader(t, ts, nil, protocols...)
}

func dialRawHeader(t testing.TB, ts *testServer, h http.Header, protocols ...string) *rawConn {
	t.Helper()
	d := ws.Dialer{Protocols: protocols, Header: ws.HandshakeHeaderHTTP(h)}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, _, _, err := d.Dial(ctx, ts.wsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	return &rawConn{t: t, nc: nc}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	if err := wsutil.WriteClientText(r.nc, []byte(s)); err != nil {
		r.t.Fatal(err)
	}
}

// next reads the next protocol message (answering nothing by itself).
func (r *rawConn) next() *protocol.ServerMessage {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	data, err := wsutil.ReadServerText(r.nc)
	if err != nil {
		r.t.Fatalf("read: %v", err)
	}
	var m protocol.ServerMessage
	if err := json.Unmarshal(data, &m); err != nil {
		r.t.Fatalf("decode %q: %v", data, err)
	}
	return &m
}

// closeCode reads until the server's close frame and returns its code, and
// the disconnect push seen before it.
func (r *rawConn) closeCode() (ws.StatusCode, *protocol.DisconnectPush) {
	r.t.Helper()
	code, push, ok := r.tryCloseCode()
	if !ok {
		r.t.Fatal("connection ended without a close frame")
	}
	return code, push
}

// tryCloseCode is closeCode for a connection that may also end without a
// close frame (ok false): the server closed the socket before its close
// frame got out. It fails if the connection stays open or the read fails
// otherwise.
func (r *rawConn) tryCloseCode() (ws.StatusCode, *protocol.DisconnectPush, bool) {
	r.t.Helper()
	var push *protocol.DisconnectPush
	for {
		// Open means silent for 10 s: a long backlog may take longer than
		// that to read on a loaded machine.
		_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := ws.ReadFrame(r.nc)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatal("connection still open")
			}
			if !peerEnded(err) {
				r.t.Fatalf("reading until the close: %v", err)
			}
			return 0, push, false
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code, push, true
		case ws.OpText:
			var m protocol.ServerMessage
			if json.Unmarshal(f.Payload, &m) == nil && m.Disconnect != nil {
				push = m.Disconnect
			}
		}
	}
}

func (r *rawConn) connect(token string) *protocol.ConnectResult {
	r.t.Helper()
	b, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]any{"token": token}})
	r.send(string(b))
	m := r.next()
	if m.Error != nil || m.Connect == nil {
		r.t.Fatalf("connect: %+v", m.Error)
	}
	return m.Connect
}

// peerEnded reports whether a read error is the peer closing the socket
// (end of stream or reset), as opposed to a timeout or a malformed frame.
func peerEnded(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET)
}
