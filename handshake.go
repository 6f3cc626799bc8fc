package herald

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// The listener path of Serve reads each connection's request head itself.
// WebSocket upgrades to /ws are answered right there with gobwas/ws's
// zero-copy upgrader: no net/http connection state, request object,
// header map or buffers per connection. Every other request, and any head
// that does not fit in max_header_bytes, goes on to net/http with the bytes
// already read, so limits and answers there are net/http's.

// forwardListener hands connections to an http.Server.
type forwardListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newForwardListener(addr net.Addr) *forwardListener {
	return &forwardListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *forwardListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *forwardListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *forwardListener) Addr() net.Addr { return l.addr }

// forward gives c to net/http, or closes it if net/http has stopped.
func (l *forwardListener) forward(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

// prefixConn replays bytes already read before reading from the socket.
type prefixConn struct {
	net.Conn
	prefix []byte
}

func (c *prefixConn) Read(p []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(p, c.prefix)
		c.prefix = c.prefix[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// tlsConnKey marks, in a request's context, a connection that came over
// TLS: net/http sets Request.TLS only for a *tls.Conn, and Serve hands it
// a prefixConn.
type tlsConnKey struct{}

// markTLS is the ConnContext of the servers NewHTTPServer makes.
func markTLS(ctx context.Context, c net.Conn) context.Context {
	if pc, ok := c.(*prefixConn); ok {
		c = pc.Conn
	}
	if _, ok := c.(*tls.Conn); ok {
		return context.WithValue(ctx, tlsConnKey{}, true)
	}
	return ctx
}

var headBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

var crlfcrlf = []byte("\r\n\r\n")

// readHead reads until the end of the request head, at most limit bytes. It
// returns what it read and where the head ends (-1 if it did not).
func readHead(c net.Conn, buf []byte, limit int) ([]byte, int, error) {
	for {
		if len(buf) == cap(buf) {
			if cap(buf) >= limit {
				return buf, -1, nil
			}
			buf = append(buf, 0)[:len(buf)] // grow
		}
		n, err := c.Read(buf[len(buf):cap(buf)])
		from := max(len(buf)-3, 0)
		buf = buf[:len(buf)+n]
		if i := bytes.Index(buf[from:], crlfcrlf); i >= 0 {
			return buf, from + i + 4, nil
		}
		if err != nil {
			return buf, -1, err
		}
	}
}

// isUpgradeToWS reports whether head's request line is "GET /ws" (with or
// without a query).
func isUpgradeToWS(head []byte) bool {
	line, _, _ := bytes.Cut(head, []byte("\r\n"))
	rest, ok := bytes.CutPrefix(line, []byte("GET /ws"))
	return ok && len(rest) > 0 && (rest[0] == ' ' || rest[0] == '?')
}

// handshake serves one accepted connection; the caller holds s.handlers.
func (s *Server) handshake(c net.Conn, fl *forwardListener) {
	_ = c.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	bp := headBufs.Get().(*[]byte)
	buf, end, err := readHead(c, (*bp)[:0], s.cfg.MaxHeaderBytes)
	if end < 0 {
		if err != nil {
			// Closed, or too slow (the handshake timeout): nothing to say.
			*bp = buf[:0]
			headBufs.Put(bp)
			c.Close()
			return
		}
		// Too big for the fast path: net/http answers it (431).
		s.forwardRead(c, fl, buf, bp)
		return
	}
	if !isUpgradeToWS(buf[:end]) {
		s.forwardRead(c, fl, buf, bp)
		return
	}
	var origin, host string
	var headers map[string]string
	names := s.forwardedHeaders()
	ip, acquired := "", false
	var deflate transport.DeflateNegotiation
	u := ws.Upgrader{
		Protocol: func(p []byte) bool {
			return string(p) == protocol.SubprotocolJSON || string(p) == protocol.SubprotocolMsgpack
		},
		OnHost: func(h []byte) error { host = string(h); return nil },
		OnHeader: func(k, v []byte) error {
			switch {
			case bytes.EqualFold(k, []byte("Origin")):
				origin = string(v)
			case names != nil:
				forwardHeader(&headers, names, string(k), string(v))
			}
			return nil
		},
		OnBeforeUpgrade: func() (ws.HandshakeHeader, error) {
			var no *refusal
			ip, no = s.admit(origin, host, func() string { return hostOf(c.RemoteAddr()) })
			if no != nil {
				return nil, ws.RejectConnectionError(ws.RejectionStatus(no.status), ws.RejectionReason(no.reason))
			}
			acquired = true
			return nil, nil
		},
	}
	if s.cfg.Compression {
		u.Negotiate = deflate.Negotiate
	}
	hs, err := u.Upgrade(struct {
		io.Reader
		io.Writer
	}{bytes.NewReader(buf[:end]), c})
	var in []byte
	if end < len(buf) {
		in = bytes.Clone(buf[end:]) // frames sent right after the head
	}
	*bp = buf[:0]
	headBufs.Put(bp)
	if err != nil {
		if acquired {
			s.perIP.release(ip)
		}
		c.Close()
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	s.startSession(c, in, hs.Protocol, deflate.Accepted(), ip, headers, time.Time{})
}

// forwardRead passes c to net/http with the bytes read so far.
func (s *Server) forwardRead(c net.Conn, fl *forwardListener, buf []byte, bp *[]byte) {
	prefix := bytes.Clone(buf)
	*bp = buf[:0]
	headBufs.Put(bp)
	_ = c.SetReadDeadline(time.Time{})
	fl.forward(&prefixConn{Conn: c, prefix: prefix})
}
