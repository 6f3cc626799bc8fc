package transport

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gobwas/ws"
)

var (
	// ErrQueueFull is returned by Enqueue when the frame does not fit the
	// outbound queue.
	ErrQueueFull = errors.New("herald: outbound queue full")
	// ErrClosed is returned by Enqueue once the connection is closing.
	ErrClosed = errors.New("herald: connection closed")
)

// Handler receives a connection's messages and its end. The engine calls
// OnMessage for one connection at a time, in order; msg is valid only during
// the call. OnClose is called exactly once, after which no OnMessage follows.
type Handler interface {
	OnMessage(c *Conn, msg []byte, binary bool)
	OnClose(c *Conn, code ws.StatusCode, err error)
}

type item struct {
	b   []byte
	tag any
}

// write states
const (
	wIdle    = iota // nothing to write, no flush scheduled
	wRunning        // a flush is scheduled or running
	wAgain          // running, and the socket became writable meanwhile
	wBlocked        // the socket is full; waiting for writability
)

// closeTag marks the close frame in the queue.
type closeTagT struct{}

var closeTag any = closeTagT{}

// Conn is one WebSocket connection. Its methods are safe for concurrent use.
// Create it with NewConn and hand it to an Engine with Serve.
type Conn struct {
	nc   net.Conn
	eng  engine
	opts *Options
	h    Handler

	mu     sync.Mutex
	q      queue
	qbytes int
	woff   int32 // bytes of q[0] already written (a frame is under 2 GiB)
	// inflight is how many frames at the front of q the writer took for
	// the write in progress (takeBatch to commit): they may be in the
	// kernel already, so nothing may remove them.
	inflight int32
	wstate   uint8
	closing  bool // a close frame is queued: nothing else is accepted
	// peerClosed: the peer sent its close frame (or failed); once ours is
	// written the socket closes without waiting.
	peerClosed bool
	closed     bool
	framing    Framing // fills padding: a Conn is no larger for it
	// deflate: permessage-deflate was negotiated (set before Serve, then
	// read only): messages with RSV1 are inflated. Fills padding too.
	deflate   bool
	closeCode ws.StatusCode
	// rare holds what few connections need, allocated when first needed:
	// a connection is no larger for it.
	rare *connRare

	rd *reader // owned by whichever goroutine is reading; nil between messages

	pollKey uint64 // epoll engine: key in the poller's table
	rstate  int32  // epoll engine: read state, atomic
	// epoll engine: the socket's own descriptor (Go's net.Conn is released
	// after the upgrade), its use count with a closing bit, and the poller
	// watching it.
	fd      int32
	fdState atomic.Int32
	// epoll engine, owned by the connection's flusher (they fill
	// padding): when it last wrote the socket, in ticks of 2^16 ns that
	// wrap every 4.3 s, and how many writes in a row came within twice
	// the write coalesce of the one before (at most 255). See holdWrite.
	wlast  uint16
	whot   uint8
	hold   uint8 // holdUrgent, holdHeld (c.mu)
	poller *poller
}

// Bits of Conn.hold.
const (
	// holdUrgent: a frame queued by Enqueue, not EnqueuePush, waits to be
	// written: the flusher does not hold the connection back.
	holdUrgent = 1 << iota
	// holdHeld: the flusher holds the connection's write back; an
	// urgent frame makes it write now (engine.expedite).
	holdHeld
)

// NewConn wraps an upgraded connection.
func NewConn(nc net.Conn, opts *Options, h Handler) *Conn {
	c := new(Conn)
	c.Init(nc, opts, h)
	return c
}

// Init is NewConn for a Conn allocated by the caller, as part of an object
// of its own (a connection is long-lived: allocated apart, it shares its
// memory pages with the handshake's garbage of its size). c must be new:
// never initialized or served.
func (c *Conn) Init(nc net.Conn, opts *Options, h Handler) {
	c.nc, c.opts, c.h = nc, opts.withDefaults(), h
}

// SetDeflate records that the handshake negotiated permessage-deflate
// (see DeflateNegotiation): compressed messages from the peer are then
// inflated, and frames made by CompressedMessageFrame may be queued. Call
// it before Serve.
func (c *Conn) SetDeflate() { c.deflate = true }

// Deflate reports whether permessage-deflate was negotiated.
func (c *Conn) Deflate() bool { return c.deflate }

// Handler returns the handler the connection was created with.
func (c *Conn) Handler() Handler { return c.h }

// Enqueue appends a complete frame to the outbound queue. The frame's bytes
// must not change afterwards; they may be shared with other connections.
// tag travels with the frame for DropQueued. It returns ErrQueueFull when
// the frame would push the queue past its bounds (an empty queue takes any
// frame) and ErrClosed once the connection is closing.
func (c *Conn) Enqueue(frame []byte, tag any) error { return c.enqueue(frame, tag, false, false) }

// EnqueuePush is Enqueue for a push the peer does not wait for as an
// answer, such as a publication: on a connection the epoll engine has
// written more than a thousand times a second for a while, it may wait up
// to the write coalesce (default 1 ms) after the previous write, so that
// one write carries the frames of several pushes. Replies and anything
// queued with Enqueue go out at once, with whatever pushes are queued.
func (c *Conn) EnqueuePush(frame []byte, tag any) error { return c.enqueue(frame, tag, false, true) }

// EnqueueSmall is Enqueue for a small frame without a tag, such as a ping:
// when nothing is queued or being written, the engine writes it to the
// socket at once (the epoll engine does), so that an idle connection's
// keep-alive takes no queue memory; otherwise, and for whatever part the
// socket did not take, it is queued like any frame.
func (c *Conn) EnqueueSmall(frame []byte) error { return c.enqueue(frame, nil, true, false) }

// EnqueueUnder is EnqueuePush that also refuses the frame with
// ErrQueueFull when limit frames or more are queued already (not yet
// written): for a subscriber that wants to know it is falling behind long
// before the queue is full.
func (c *Conn) EnqueueUnder(frame []byte, tag any, limit int) error {
	c.mu.Lock()
	if c.q.len() >= limit && c.q.len() > 0 && !c.closing && !c.closed {
		c.mu.Unlock()
		return ErrQueueFull
	}
	return c.enqueueLocked(frame, tag, false, true)
}

// NotifyBelow arranges for fn to be called once, on the goroutine that
// writes the connection, as soon as a write leaves at most n frames
// queued. It reports false, and arranges nothing, when at most n frames
// are queued already, n is negative, or the connection is closing; fn is
// never called if the connection closes first. fn must not block: it may
// Enqueue.
func (c *Conn) NotifyBelow(n int, fn func()) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n < 0 || c.closing || c.closed || c.q.len() <= n {
		return false
	}
	r := c.rareLocked()
	if len(r.onLow) == 0 || n < r.lowMark {
		r.lowMark = n
	}
	r.onLow = append(r.onLow, fn)
	return true
}

// connRare is the part of a connection that few connections need.
type connRare struct {
	timer *time.Timer // the close handshake's (once closing)
	// onLow are called, once, when a write leaves at most lowMark frames
	// queued (NotifyBelow).
	onLow   []func()
	lowMark int
}

// rareLocked returns c.rare, allocated if need be. (c.mu held.)
func (c *Conn) rareLocked() *connRare {
	if c.rare == nil {
		c.rare = new(connRare)
	}
	return c.rare
}

func (c *Conn) enqueue(frame []byte, tag any, direct, push bool) error {
	c.mu.Lock()
	return c.enqueueLocked(frame, tag, direct, push)
}

// enqueueLocked is enqueue with c.mu held; it unlocks it.
func (c *Conn) enqueueLocked(frame []byte, tag any, direct, push bool) error {
	if c.closing || c.closed {
		c.mu.Unlock()
		return ErrClosed
	}
	if direct && c.wstate == wIdle && c.q.len() == 0 {
		// No flush is scheduled or running, and c.mu keeps it so: this
		// goroutine is the connection's only writer for the moment.
		n := c.eng.writeNow(c, frame)
		if n == len(frame) {
			c.mu.Unlock()
			return nil
		}
		frame = frame[n:]
	}
	if c.q.len() > 0 && (c.q.len() >= c.opts.QueueMaxMessages || c.qbytes+len(frame) > c.opts.QueueMaxBytes) {
		c.mu.Unlock()
		return ErrQueueFull
	}
	c.q.push(item{b: frame, tag: tag})
	c.qbytes += len(frame)
	w := c.queuedLocked(!push)
	c.mu.Unlock()
	c.wake(w)
	return nil
}

// writerWake is what a goroutine that queued a frame has the engine do
// once it unlocks c.mu (queuedLocked, wake).
type writerWake uint8

const (
	wakeNone     writerWake = iota
	wakeSchedule            // no flush was scheduled: schedule one
	wakeExpedite            // the flusher holds the write back: write now
)

// queuedLocked records, with c.mu held, that a frame was queued, urgent
// unless a push the engine may hold back, and says what the engine must
// do once c.mu is unlocked.
func (c *Conn) queuedLocked(urgent bool) writerWake {
	w := wakeNone
	if urgent {
		if c.hold&holdHeld != 0 {
			w = wakeExpedite
		}
		c.hold = holdUrgent
	}
	if c.wstate == wIdle {
		c.wstate = wRunning
		w = wakeSchedule
	}
	return w
}

// wake does what queuedLocked said, without c.mu. Inlined: a fan-out
// that queues behind a scheduled flush, the common case, makes no call.
func (c *Conn) wake(w writerWake) {
	if w != wakeNone {
		c.wakeEngine(w)
	}
}

func (c *Conn) wakeEngine(w writerWake) {
	if w == wakeSchedule {
		c.eng.scheduleFlush(c)
	} else {
		c.eng.expedite(c)
	}
}

// QueueLen returns the number of frames and bytes waiting to be written.
func (c *Conn) QueueLen() (frames, bytes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.q.len(), c.qbytes - int(c.woff)
}

// DropQueued removes the queued frames whose tag satisfies drop (frames
// being written or partly written stay) and returns their tags.
func (c *Conn) DropQueued(drop func(tag any) bool) []any {
	c.mu.Lock()
	defer c.mu.Unlock()
	var dropped []any
	held := c.held()
	c.q.filter(func(i int, it *item) bool {
		if i >= held && it.tag != nil && it.tag != closeTag && drop(it.tag) {
			dropped = append(dropped, it.tag)
			c.qbytes -= len(it.b)
			return false
		}
		return true
	})
	return dropped
}

// Close sends a close frame after the frames already queued (first is
// written in front of it when given: a last protocol message such as a
// disconnect push), then closes the socket once the peer answers or
// CloseTimeout passes. With discard the queued frames not yet started are
// dropped first. Close is idempotent.
func (c *Conn) Close(code ws.StatusCode, reason string, first []byte, discard bool) {
	c.mu.Lock()
	if c.closing || c.closed {
		c.mu.Unlock()
		return
	}
	c.closing = true
	if c.closeCode == 0 {
		c.closeCode = code
	}
	if discard && c.q.len() > 0 {
		held := c.held()
		c.q.filter(func(i int, it *item) bool {
			if i < held || it.tag == headTag {
				return true // being written, or partly written, or a response head: finish it
			}
			c.qbytes -= len(it.b)
			return false
		})
	}
	if first != nil {
		c.q.push(item{b: first})
		c.qbytes += len(first)
	}
	cf := lastChunk
	if c.framing == FramingWebSocket {
		cf = closeFrame(code, reason)
	} else {
		// An HTTP stream ends with its last chunk; there is no answer
		// to wait for.
		c.peerClosed = true
	}
	c.q.push(item{b: cf, tag: closeTag})
	c.qbytes += len(cf)
	w := c.queuedLocked(true)
	c.rareLocked().timer = time.AfterFunc(c.opts.CloseTimeout, func() { c.shutdown(ErrCloseTimeout) })
	c.mu.Unlock()
	c.wake(w)
}

// ErrCloseTimeout is the close error of a connection whose peer did not
// complete the close handshake in time.
var ErrCloseTimeout = errors.New("herald: close handshake timed out")

// Abort closes the socket at once, without a close frame.
func (c *Conn) Abort(err error) { c.shutdown(err) }

// fail closes the connection after a protocol violation by the peer: a
// close frame with code, then the socket, without waiting for an answer.
func (c *Conn) fail(code ws.StatusCode, reason string) {
	c.mu.Lock()
	c.peerClosed = true
	c.mu.Unlock()
	c.Close(code, reason, nil, true)
}

// shutdown closes the socket and reports OnClose, once.
func (c *Conn) shutdown(err error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	if r := c.rare; r != nil {
		if r.timer != nil {
			r.timer.Stop()
		}
		r.onLow = nil
	}
	c.q.reset()
	c.qbytes, c.woff = 0, 0
	code := c.closeCode
	c.mu.Unlock()
	c.eng.detach(c) // the epoll engine closes its descriptor here
	if c.nc != nil {
		_ = c.nc.Close()
	}
	if code == 0 {
		code = ws.StatusAbnormalClosure
	}
	c.h.OnClose(c, code, err)
}

// RemoteAddr returns the peer's address as host:port ("" once closed or
// when unknown). Connections on the epoll engine keep no address: it is
// asked of the kernel on each call.
func (c *Conn) RemoteAddr() string {
	c.mu.Lock()
	nc, closed, fd := c.nc, c.closed, c.poller != nil
	c.mu.Unlock()
	switch {
	case closed:
		return ""
	case nc != nil:
		return nc.RemoteAddr().String()
	case fd:
		return c.peerAddr()
	}
	return ""
}

// Closing reports whether the connection is closing or closed: a close
// frame is queued and nothing more is accepted.
func (c *Conn) Closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closing || c.closed
}

// Closed reports whether the socket is closed.
func (c *Conn) Closed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// held is how many frames at the front of the queue the writer holds:
// those of the write in progress, or the one partly written. (c.mu held.)
func (c *Conn) held() int {
	if c.inflight > 0 {
		return int(c.inflight)
	}
	if c.woff > 0 {
		return 1
	}
	return 0
}

// takeBatch appends the queued bytes to iov (at most max frames) under the
// lock. It returns nil iov when there is nothing to write.
func (c *Conn) takeBatch(iov [][]byte, max int) [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return iov
	}
	i := 0
	c.q.each(func(it *item) bool {
		if i == max {
			return false
		}
		b := it.b
		if i == 0 {
			b = b[c.woff:]
		}
		iov = append(iov, b)
		i++
		return true
	})
	c.inflight = int32(i)
	c.hold = 0
	return iov
}

// holdable reports whether c's write may wait for more frames: nothing
// queued came from Enqueue (replies, control frames), fewer than n frames
// are queued, and the connection is not closing. If so c is marked held
// until release.
func (c *Conn) holdable(n int) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold&holdUrgent != 0 || c.closing || c.closed || c.q.len() >= n {
		return false
	}
	c.hold |= holdHeld
	return true
}

// release ends a hold (holdable) when force is set or an urgent frame
// came in since, and reports whether it did.
func (c *Conn) release(force bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !force && c.hold&holdUrgent == 0 && !c.closing && !c.closed {
		return false
	}
	c.hold &^= holdHeld
	return true
}

// commit records n written bytes. blocked says the socket refused more
// (EAGAIN). It returns whether the caller should write again now, and
// whether the connection must now be shut (its close frame went out and the
// peer's close is in, or the peer failed). With nothing left it marks the
// connection idle, so that the next Enqueue schedules a flush.
func (c *Conn) commit(n int, blocked bool) (more, shut bool) {
	c.mu.Lock()
	more, shut = c.commitLocked(n, blocked)
	r := c.rare
	if r == nil || r.onLow == nil || c.q.len() > r.lowMark || c.closing || c.closed {
		c.mu.Unlock()
		return more, shut
	}
	fns := r.onLow
	r.onLow = nil
	c.mu.Unlock()
	for _, fn := range fns {
		fn()
	}
	return more, shut
}

func (c *Conn) commitLocked(n int, blocked bool) (more, shut bool) {
	if c.closed {
		return false, false
	}
	c.inflight = 0
	sentClose := false
	for n > 0 && c.q.len() > 0 {
		it := c.q.front()
		rest := len(it.b) - int(c.woff)
		if n < rest {
			c.woff += int32(n)
			break
		}
		n -= rest
		if it.tag == closeTag {
			sentClose = true
		}
		c.qbytes -= len(it.b)
		c.woff = 0
		c.q.pop()
	}
	if sentClose && c.peerClosed {
		return false, true
	}
	switch {
	case c.q.len() == 0:
		c.wstate = wIdle
		return false, false
	case !blocked:
		return true, false
	case c.wstate == wAgain:
		c.wstate = wRunning // writable again since the EAGAIN: retry
		return true, false
	default:
		c.wstate = wBlocked
		return false, false
	}
}

// writable records that the socket accepts writes again; it returns whether
// a flush must be scheduled.
func (c *Conn) writable() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch c.wstate {
	case wBlocked:
		c.wstate = wRunning
		return true
	case wRunning:
		c.wstate = wAgain
	}
	return false
}

// feed runs data through the frame reader, keeping an incomplete frame at
// the end for the next call. The reader state is allocated only while a
// frame or a fragmented message is incomplete.
func (c *Conn) feed(data []byte) error {
	if c.framing != FramingWebSocket {
		c.shutdown(ErrUnexpectedInput)
		return errStop
	}
	if c.rd == nil {
		c.rd = readerPool.Get().(*reader)
	}
	rd := c.rd
	var err error
	if len(rd.pending) > 0 {
		rd.pending = append(rd.pending, data...)
		var n int
		n, err = c.process(rd.pending)
		rest := rd.pending[n:]
		if len(rest) == 0 || err != nil {
			rd.pending = nil
		} else {
			rd.pending = rd.pending[:copy(rd.pending, rest)]
		}
	} else {
		var n int
		n, err = c.process(data)
		if rest := data[n:]; len(rest) > 0 && err == nil {
			rd.pending = append(make([]byte, 0, max(rd.need, len(rest))), rest...)
		}
	}
	if rd.pending == nil && rd.frag == nil && rd.fragOp == 0 {
		*rd = reader{}
		readerPool.Put(rd)
		c.rd = nil
	}
	return err
}

var readerPool = sync.Pool{New: func() any { return new(reader) }}

// stopping reports whether reading should end: the socket is closed.
func (c *Conn) stopping() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}
