package transport

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

// Engine serves connections: it reads their frames and writes their queues.
type Engine interface {
	// Serve starts serving c. bufferedIn holds bytes the peer sent right
	// after the handshake. Serve returns at once.
	Serve(c *Conn, bufferedIn []byte) error
	// Close stops the engine's own goroutines and waits for them and for
	// every reader and writer it started. Connections must be closed first.
	Close() error
	// Name is "epoll" or "goroutine".
	Name() string
	// BytesOut is the number of bytes written to sockets so far.
	BytesOut() uint64
	// Writes is the number of write system calls made to sockets so far
	// (writev or write): over the frames queued, how well writes coalesce.
	Writes() uint64
}

// engine is what a Conn needs from the engine serving it.
type engine interface {
	scheduleFlush(c *Conn)
	// expedite has c, whose write the engine holds back for more pushes,
	// written now: something urgent was queued.
	expedite(c *Conn)
	detach(c *Conn)
	// writeNow writes b to c's socket without blocking, if the engine can,
	// and returns how many bytes went out. The caller holds c.mu with no
	// flush scheduled.
	writeNow(c *Conn, b []byte) int
}

// EngineOptions tune an engine. The zero value selects the defaults.
type EngineOptions struct {
	// Coalesce is how long the epoll engine's flushers pause between two
	// rounds of writes when the second round is already waiting: under
	// load, frames for each connection pile up meanwhile and go out in
	// one writev, which is where the throughput of fan-out comes from. An
	// idle flusher writes at once, so light traffic waits for nothing. A
	// connection written more often than every Coalesce holds pushes
	// (EnqueuePush) back until Coalesce after its previous write (see
	// holdAfter). Default 1ms; negative turns both off.
	Coalesce time.Duration
}

// NewEngine returns the engine of the given kind: "epoll" (Linux only),
// "goroutine", or "" for the best available.
func NewEngine(kind string) (Engine, error) { return NewEngineWith(kind, EngineOptions{}) }

// NewEngineWith is NewEngine with options.
func NewEngineWith(kind string, o EngineOptions) (Engine, error) {
	if o.Coalesce == 0 {
		o.Coalesce = time.Millisecond
	}
	switch kind {
	case "goroutine":
		return newStdEngine(), nil
	case "", "auto", "epoll":
		e, err := newEpollEngine(o)
		if err != nil {
			if kind == "epoll" {
				return nil, err
			}
			return newStdEngine(), nil
		}
		return e, nil
	}
	return nil, fmt.Errorf("herald: unknown transport engine %q", kind)
}

// stdEngine runs a reader goroutine per connection and a writer goroutine
// while its queue is non-empty.
type stdEngine struct {
	wg       sync.WaitGroup
	bytesOut atomic.Uint64
	writes   atomic.Uint64
}

func newStdEngine() *stdEngine { return &stdEngine{} }

func (e *stdEngine) Name() string { return "goroutine" }

func (e *stdEngine) BytesOut() uint64 { return e.bytesOut.Load() }

func (e *stdEngine) Writes() uint64 { return e.writes.Load() }

func (e *stdEngine) Serve(c *Conn, bufferedIn []byte) error {
	c.eng = e
	e.wg.Add(1)
	go e.readLoop(c, bufferedIn)
	return nil
}

func (e *stdEngine) Close() error {
	e.wg.Wait()
	return nil
}

var readBufs = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}

func (e *stdEngine) readLoop(c *Conn, in []byte) {
	defer e.wg.Done()
	if len(in) > 0 {
		if c.feed(in) != nil {
			e.drain(c)
			return
		}
	}
	bp := readBufs.Get().(*[]byte)
	defer readBufs.Put(bp)
	buf := *bp
	for {
		n, err := c.nc.Read(buf)
		if n > 0 {
			if c.feed(buf[:n]) != nil {
				e.drain(c)
				return
			}
		}
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			c.shutdown(err)
			return
		}
	}
}

// drain waits for the socket to close after reading stopped (the close
// frame is on its way out, and the close timer bounds the wait).
func (e *stdEngine) drain(c *Conn) {
	buf := make([]byte, 128)
	for {
		if _, err := c.nc.Read(buf); err != nil {
			c.shutdown(nil)
			return
		}
	}
}

func (e *stdEngine) scheduleFlush(c *Conn) {
	e.wg.Add(1)
	go e.flushLoop(c)
}

func (e *stdEngine) detach(*Conn) {}

// expedite has nothing to do: the goroutine engine holds no write back.
func (e *stdEngine) expedite(*Conn) {}

// writeNow writes nothing: the goroutine engine's writes block.
func (e *stdEngine) writeNow(*Conn, []byte) int { return 0 }

var iovs = sync.Pool{New: func() any { s := make([][]byte, 0, 64); return &s }}

func (e *stdEngine) flushLoop(c *Conn) {
	defer e.wg.Done()
	ip := iovs.Get().(*[][]byte)
	defer func() { clear((*ip)[:cap(*ip)]); iovs.Put(ip) }()
	iov := *ip
	defer func() { *ip = iov[:0] }()
	for {
		iov = c.takeBatch(iov[:0], 1024)
		var n int64
		var err error
		if len(iov) > 0 {
			_ = c.nc.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
			bufs := net.Buffers(iov)
			n, err = bufs.WriteTo(c.nc)
			e.writes.Add(1)
		}
		e.bytesOut.Add(uint64(n))
		more, shut := c.commit(int(n), false)
		if err != nil {
			c.shutdown(err)
			return
		}
		if shut {
			c.shutdown(nil)
			return
		}
		if !more {
			return
		}
	}
}

// Upgrader completes WebSocket handshakes.
type Upgrader struct {
	// Subprotocols lists the accepted subprotocols; the first one the
	// client offers that is listed wins.
	Subprotocols []string
	// Compression negotiates permessage-deflate in UpgradeDeflate when the
	// client offers it (see DeflateNegotiation).
	Compression bool
}

// Upgrade answers the handshake and takes the connection from net/http. It
// returns the connection, the bytes the client sent after the handshake,
// and the chosen subprotocol. On error the HTTP response has been written.
// It never negotiates permessage-deflate: see UpgradeDeflate.
func (u *Upgrader) Upgrade(w http.ResponseWriter, r *http.Request) (net.Conn, []byte, string, error) {
	nc, in, sub, _, err := u.upgrade(w, r, false)
	return nc, in, sub, err
}

// UpgradeDeflate is Upgrade that negotiates permessage-deflate when
// Compression is set and reports whether it was (then call SetDeflate on
// the connection).
func (u *Upgrader) UpgradeDeflate(w http.ResponseWriter, r *http.Request) (net.Conn, []byte, string, bool, error) {
	return u.upgrade(w, r, u.Compression)
}

func (u *Upgrader) upgrade(w http.ResponseWriter, r *http.Request, deflate bool) (net.Conn, []byte, string, bool, error) {
	var d DeflateNegotiation
	up := ws.HTTPUpgrader{
		Protocol: func(p string) bool { return slices.Contains(u.Subprotocols, p) },
	}
	if deflate {
		up.Negotiate = d.Negotiate
	}
	nc, rw, hs, err := up.Upgrade(r, w)
	if err != nil {
		return nil, nil, "", false, err
	}
	var in []byte
	if rw != nil && rw.Reader.Buffered() > 0 {
		in = make([]byte, rw.Reader.Buffered())
		_, _ = io.ReadFull(rw.Reader, in)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, in, hs.Protocol, d.Accepted(), nil
}
