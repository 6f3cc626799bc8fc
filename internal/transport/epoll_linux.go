//go:build linux

package transport

import (
	"errors"
	"io"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// epollEngine waits for readiness with epoll, so an idle connection holds
// neither a goroutine nor a buffer. Connections are registered edge-triggered
// for input and output once; a reader goroutine (parked between events) is
// handed each readiness event and reads until EAGAIN; shared flusher
// goroutines write queues.
//
// Connections without a raw file descriptor (TLS) are served by an embedded
// goroutine engine.
type epollEngine struct {
	std      *stdEngine
	pollers  []*poller
	flushers []*flusher
	wg       sync.WaitGroup // pollers and flushers
	workers  sync.WaitGroup // readers
	// tasks queues readable connections for the reader goroutines, which
	// park on it between events and keep their grown stacks. idle counts
	// the parked readers not yet promised a queued connection: dispatch
	// takes one, or starts a reader when none is left while fewer than
	// maxReaders run. Beyond that, connections wait in the queue for the
	// running readers, and a poller that sees none of them take one for
	// stallAfter starts more: a burst of short reads (a round of pongs) is
	// served by a bounded set of readers, and slow handlers never stall
	// the others for long.
	tasks    chan *Conn
	idle     atomic.Int32
	readers  atomic.Int32         // reader goroutines alive
	taken    atomic.Uint64        // connections taken from the queue so far
	spawn    func()               // e.reader(nil), made once: starting it allocates nothing
	coalesce time.Duration        // pause between back-to-back flush rounds
	clock    func() time.Duration // monotonic time since the engine started; tests set their own
	nextSeq  atomic.Uint32        // connections served so far: picks the poller, tags the key
	closed   atomic.Bool
	bytesOut atomic.Uint64
	writes   atomic.Uint64 // write system calls: writev of a flush, write of writeNow
}

// wakeKey is the eventfd's key. A connection's key is its slot in its
// poller's table (from 1) in the low 32 bits and its sequence number in
// the high 32: an event queued for a connection that has closed since,
// whose slot another took, does not match the new one's key.
const wakeKey = 0

type poller struct {
	e      *epollEngine
	epfd   int
	wakefd int
	mu     sync.Mutex
	// slots are the connections watched, each at the slot its key names
	// (slot 0 is the eventfd's, never taken), and free the vacant slots.
	// A slot costs a pointer per connection where a map's entry cost about
	// 36 bytes at 15,000 connections (key, value and the table's slack).
	slots []*Conn
	free  []uint32

	// the poller's view of the readers' progress (its goroutine only)
	taken    uint64    // e.taken when last seen to move
	progress time.Time // when that was
}

// read states (Conn.rstate)
const (
	rIdle    = 0
	rRunning = 1
	rAgain   = 2 // more input arrived while running
)

func newEpollEngine(o EngineOptions) (*epollEngine, error) { return newEpollEngineQueue(o, maxQueued) }

// newEpollEngineQueue is newEpollEngine with room for queued connections
// in the reader queue.
func newEpollEngineQueue(o EngineOptions, queued int) (*epollEngine, error) {
	e := &epollEngine{std: newStdEngine(), tasks: make(chan *Conn, queued), coalesce: o.Coalesce}
	t0 := time.Now()
	e.clock = func() time.Duration { return time.Since(t0) }
	e.spawn = func() { e.reader(nil) }
	np := min(max(runtime.GOMAXPROCS(0)/2, 1), 4)
	for i := 0; i < np; i++ {
		p, err := newPoller(e)
		if err != nil {
			for _, p := range e.pollers {
				p.close()
			}
			return nil, err
		}
		e.pollers = append(e.pollers, p)
	}
	for i := 0; i < flusherCount(runtime.GOMAXPROCS(0)); i++ {
		f := newFlusher(e)
		e.flushers = append(e.flushers, f)
	}
	for _, p := range e.pollers {
		e.wg.Add(1)
		go p.loop()
	}
	for _, f := range e.flushers {
		e.wg.Add(1)
		go f.loop()
	}
	return e, nil
}

func (e *epollEngine) Name() string { return "epoll" }

func (e *epollEngine) BytesOut() uint64 { return e.bytesOut.Load() + e.std.BytesOut() }

func (e *epollEngine) Writes() uint64 { return e.writes.Load() + e.std.Writes() }

func newPoller(e *epollEngine) (*poller, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	wfd, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		unix.Close(epfd)
		return nil, err
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN}
	setKey(&ev, wakeKey)
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wfd, &ev); err != nil {
		unix.Close(epfd)
		unix.Close(wfd)
		return nil, err
	}
	return &poller{e: e, epfd: epfd, wakefd: wfd, slots: make([]*Conn, 1)}, nil
}

// add gives c a slot and its key (seq in the high 32 bits). (p.mu held.)
func (p *poller) add(c *Conn, seq uint32) {
	var slot uint32
	if n := len(p.free); n > 0 {
		slot = p.free[n-1]
		p.free = p.free[:n-1]
	} else {
		slot = uint32(len(p.slots))
		p.slots = append(p.slots, nil)
	}
	c.pollKey = uint64(seq)<<32 | uint64(slot)
	p.slots[slot] = c
}

// remove vacates c's slot, if c still holds it. (p.mu held.)
func (p *poller) remove(c *Conn) {
	slot := uint32(c.pollKey)
	if slot == 0 || int(slot) >= len(p.slots) || p.slots[slot] != c {
		return
	}
	p.slots[slot] = nil
	p.free = append(p.free, slot)
}

// lookup returns the connection that key names, or nil if it has closed.
func (p *poller) lookup(key uint64) *Conn {
	slot := uint32(key)
	p.mu.Lock()
	defer p.mu.Unlock()
	if int(slot) >= len(p.slots) {
		return nil
	}
	if c := p.slots[slot]; c != nil && c.pollKey == key {
		return c
	}
	return nil
}

func setKey(ev *unix.EpollEvent, key uint64) {
	ev.Fd = int32(uint32(key))
	ev.Pad = int32(uint32(key >> 32))
}

func getKey(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

func (p *poller) close() {
	unix.Close(p.epfd)
	unix.Close(p.wakefd)
}

func (p *poller) loop() {
	defer p.e.wg.Done()
	defer p.close()
	events := make([]unix.EpollEvent, 256)
	for {
		wait := -1
		if len(p.e.tasks) > 0 {
			wait = int(stallAfter / time.Millisecond) // to check on the readers
		}
		n, err := unix.EpollWait(p.epfd, events, wait)
		if err != nil {
			if err == unix.EINTR {
				continue
			}
			return
		}
		if len(p.e.tasks) > 0 {
			p.checkStall(time.Now())
		}
		for i := 0; i < n; i++ {
			ev := &events[i]
			key := getKey(ev)
			if key == wakeKey {
				if p.e.closed.Load() {
					return
				}
				continue
			}
			c := p.lookup(key)
			if c == nil {
				continue // closed since the event was queued
			}
			if ev.Events&(unix.EPOLLIN|unix.EPOLLRDHUP|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				p.e.readable(c)
			}
			if ev.Events&(unix.EPOLLOUT|unix.EPOLLHUP|unix.EPOLLERR) != 0 {
				if c.writable() {
					p.e.scheduleFlush(c)
				}
			}
		}
	}
}

// Serve takes the socket over: it duplicates its descriptor and closes Go's
// net.Conn, so that an idle connection costs neither the runtime's poller
// entry nor the net package's address objects. From then on the descriptor
// is used only under acquireFD and closed once, by the last user after
// detach.
func (e *epollEngine) Serve(c *Conn, in []byte) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return e.std.Serve(c, in)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return e.std.Serve(c, in)
	}
	if e.closed.Load() {
		return ErrClosed
	}
	fd := -1
	var derr error
	if err := raw.Control(func(f uintptr) { fd, derr = unix.FcntlInt(f, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return e.std.Serve(c, in)
	}
	// The duplicate shares the open file description, which Go made
	// non-blocking; closing the original leaves the socket open.
	_ = c.nc.Close()
	seq := e.nextSeq.Add(1)
	p := e.pollers[seq%uint32(len(e.pollers))]
	// The first reader runs now (for bytes that came with the handshake and
	// anything since); events until it finishes only mark it to go again.
	atomic.StoreInt32(&c.rstate, rRunning)
	p.mu.Lock()
	p.add(c, seq) // sets c.pollKey, before c.eng makes c schedule flushes
	key := c.pollKey
	p.mu.Unlock()
	c.mu.Lock() // for RemoteAddr, which may run from now on
	c.nc = nil
	c.eng = e
	c.fd, c.poller = int32(fd), p
	c.mu.Unlock()
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET}
	setKey(&ev, key)
	if err := unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		p.mu.Lock()
		p.remove(c)
		p.mu.Unlock()
		unix.Close(fd)
		return err
	}
	e.workers.Add(1)
	go func() {
		defer e.workers.Done()
		e.read(c, in)
	}()
	return nil
}

// maxParked bounds the reader goroutines kept waiting for work.
const maxParked = 64

// maxReaders bounds the readers dispatch starts; more start only when the
// running ones stall.
const maxReaders = 64

// stallAfter is how long queued connections wait while no reader takes
// one before more readers start (at most maxReaders more each time): long
// enough that readers merely waiting for a core on a busy machine are not
// taken for stalled (starting more of them then only adds goroutines
// and stacks), short next to a broker's or an application's answer.
const stallAfter = 10 * time.Millisecond

// maxQueued bounds the readable connections queued for readers; a burst
// beyond it starts readers with the connection in hand.
const maxQueued = 1024

// dispatch runs a read for c on a parked reader, a new goroutine, or the
// next reader to finish. A connection queued for a reader, or for a reader
// started for it (with no arguments: e.spawn), costs no allocation, so
// that the reads of idle connections (a pong per ping interval) allocate
// nothing; and a round of them (the pongs of every connection pinged in
// the same second come back together) starts at most maxReaders readers,
// not one per connection: each left a goroutine's stack behind until the
// next collection.
func (e *epollEngine) dispatch(c *Conn) {
	select {
	case e.tasks <- c:
	default:
		e.startReader(c)
		return
	}
	if e.idle.Add(-1) >= 0 {
		return // a parked reader is promised to it
	}
	e.idle.Add(1)
	if e.readers.Load() < maxReaders {
		e.startReader(nil)
	}
}

// startReader starts a reader for c, or for a queued connection if c is
// nil (without allocating).
func (e *epollEngine) startReader(c *Conn) {
	e.readers.Add(1)
	e.workers.Add(1)
	if c == nil {
		go e.spawn()
	} else {
		go e.reader(c)
	}
}

// checkStall starts readers for the queued connections (at most
// maxReaders) when no reader has taken one for stallAfter: the running
// ones are all held by slow handlers. Called by the poller's goroutine
// while connections are queued.
func (p *poller) checkStall(now time.Time) {
	e := p.e
	if t := e.taken.Load(); t != p.taken || p.progress.IsZero() {
		p.taken, p.progress = t, now
		return
	}
	if now.Sub(p.progress) < stallAfter {
		return
	}
	for range min(len(e.tasks), maxReaders) {
		e.startReader(nil)
	}
	p.progress = now
}

// reader reads c (if not nil, else a queued connection), then takes the
// next queued connection, or parks for more work while fewer than
// maxParked readers are parked.
func (e *epollEngine) reader(c *Conn) {
	defer e.workers.Done()
	defer e.readers.Add(-1)
	for {
		if c == nil {
			var ok bool
			if c, ok = <-e.tasks; !ok {
				return // the engine is closed
			}
			e.taken.Add(1)
		}
		e.read(c, nil)
		c = nil
		select {
		case c = <-e.tasks:
			// Queued beyond the readers: taken at once (maybe one
			// promised to a parked reader, which then takes the next).
			if c == nil {
				return // the engine is closed
			}
			e.taken.Add(1)
			continue
		default:
		}
		if e.idle.Add(1) > maxParked {
			e.idle.Add(-1)
			return
		}
	}
}

// readable handles an input event.
func (e *epollEngine) readable(c *Conn) {
	for {
		switch s := atomic.LoadInt32(&c.rstate); s {
		case rIdle:
			if atomic.CompareAndSwapInt32(&c.rstate, rIdle, rRunning) {
				e.dispatch(c)
				return
			}
		case rRunning:
			if atomic.CompareAndSwapInt32(&c.rstate, rRunning, rAgain) {
				return
			}
		default:
			return
		}
	}
}

// fdClosing marks a descriptor that is being closed; the bits below it
// count its users.
const fdClosing = 1 << 30

// acquireFD reserves the descriptor for one read or write; false once the
// connection is closing.
func (c *Conn) acquireFD() bool {
	for {
		v := c.fdState.Load()
		if v&fdClosing != 0 {
			return false
		}
		if c.fdState.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// releaseFD ends a use; the last user of a closing descriptor closes it.
func (c *Conn) releaseFD() {
	if c.fdState.Add(-1) == fdClosing {
		unix.Close(int(c.fd))
	}
}

// closeFD marks the descriptor closing and closes it now if nobody uses it
// (otherwise the last releaseFD does). The number cannot be reused while a
// read or write still holds it.
func (c *Conn) closeFD() {
	for {
		v := c.fdState.Load()
		if v&fdClosing != 0 {
			return
		}
		if c.fdState.CompareAndSwap(v, v|fdClosing) {
			if v == 0 {
				unix.Close(int(c.fd))
			}
			return
		}
	}
}

// peerAddr asks the kernel for the socket's peer address, so that a
// connection needs to keep none.
func (c *Conn) peerAddr() string {
	if !c.acquireFD() {
		return ""
	}
	sa, err := unix.Getpeername(int(c.fd))
	c.releaseFD()
	if err != nil {
		return ""
	}
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		return netip.AddrPortFrom(netip.AddrFrom4(a.Addr), uint16(a.Port)).String()
	case *unix.SockaddrInet6:
		return netip.AddrPortFrom(netip.AddrFrom16(a.Addr).Unmap(), uint16(a.Port)).String()
	}
	return ""
}

// Reads borrow a small buffer first and a large one only when the small one
// came back full: most reads are a pong or a short command, and a burst of
// them (every connection's pong, a ping interval after a burst of
// connects) then takes kilobytes, not a 16 KiB buffer per reader.
var (
	readBufsSmall = sync.Pool{New: func() any { b := make([]byte, 1<<10); return &b }}
	readBufs16    = sync.Pool{New: func() any { b := make([]byte, 16<<10); return &b }}
)

// read reads until the socket has no more input, then goes idle unless more
// arrived meanwhile.
func (e *epollEngine) read(c *Conn, in []byte) {
	if len(in) > 0 && c.feed(in) != nil {
		return // stays "running": no further reads
	}
	if c.fdState.Load()&fdClosing != 0 {
		return // closed since the event: no buffer to borrow
	}
	pool := &readBufsSmall
	bp := pool.Get().(*[]byte)
	defer func() { pool.Put(bp) }()
	buf := *bp
	for {
		for {
			if !c.acquireFD() {
				return // closed
			}
			n, err := unix.Read(int(c.fd), buf)
			c.releaseFD()
			if n == len(buf) && pool == &readBufsSmall {
				// More may be waiting: go on with a large buffer, these
				// bytes first, so that the frame reader sees as much at
				// once as it would have.
				big := readBufs16.Get().(*[]byte)
				copy(*big, buf[:n])
				pool.Put(bp)
				pool, bp, buf = &readBufs16, big, *big
				if !c.acquireFD() {
					return
				}
				// An error or the peer's end shows again on the next read.
				if m, err := unix.Read(int(c.fd), buf[n:]); err == nil && m > 0 {
					n += m
				}
				c.releaseFD()
			}
			if err == unix.EAGAIN {
				break
			}
			if err == unix.EINTR {
				continue
			}
			if err != nil || n == 0 {
				if err == nil {
					err = io.ErrUnexpectedEOF
				}
				c.shutdown(err)
				return
			}
			if c.feed(buf[:n]) != nil {
				return
			}
		}
		if atomic.CompareAndSwapInt32(&c.rstate, rRunning, rIdle) {
			return
		}
		atomic.StoreInt32(&c.rstate, rRunning) // was rAgain: read once more
	}
}

func (e *epollEngine) detach(c *Conn) {
	p := c.poller
	if p == nil {
		return
	}
	if c.acquireFD() {
		_ = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_DEL, int(c.fd), nil)
		c.releaseFD()
	}
	p.mu.Lock()
	p.remove(c)
	p.mu.Unlock()
	c.closeFD()
}

// writeNow makes one non-blocking write of b; a connection served by the
// goroutine engine (the fallback) writes nothing here.
func (e *epollEngine) writeNow(c *Conn, b []byte) int {
	if !c.acquireFD() {
		return 0
	}
	n, err := unix.Write(int(c.fd), b)
	c.releaseFD()
	e.writes.Add(1)
	if err != nil || n < 0 {
		return 0
	}
	e.bytesOut.Add(uint64(n))
	return n
}

func (e *epollEngine) scheduleFlush(c *Conn) {
	e.flusherOf(c).add(c)
}

func (e *epollEngine) flusherOf(c *Conn) *flusher {
	return e.flushers[c.pollKey%uint64(len(e.flushers))]
}

// expedite wakes c's flusher, which holds c's write back: the flusher
// looks for urgent frames among the connections it holds.
func (e *epollEngine) expedite(c *Conn) {
	f := e.flusherOf(c)
	f.urgent.Store(true)
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// Close stops pollers and flushers and waits for every goroutine.
func (e *epollEngine) Close() error {
	if !e.closed.CompareAndSwap(false, true) {
		return nil
	}
	for _, p := range e.pollers {
		var one = [8]byte{1}
		_, _ = unix.Write(p.wakefd, one[:])
	}
	for _, f := range e.flushers {
		f.stop()
	}
	e.wg.Wait()
	close(e.tasks) // the pollers, which queue connections, have stopped
	e.workers.Wait()
	return e.std.Close()
}

const iovMax = 1024

// flusherCount is how many flushers an engine runs on procs Ps: one per P
// but one, and at least one. A flusher writing a fan-out keeps its P for
// the whole round (tens of milliseconds at thousands of connections), and
// Go asks the network poller only when a P looks for work or every 10 ms
// (sysmon): with a flusher on every P, a publish request, a broker's
// answer and its live messages each waited for that. The P left over
// blocks in the poller and runs them as they arrive (1 x 3,000 saturated
// on 2 cores, GOMAXPROCS 2: one node 1.4x the deliveries/s, 3 nodes on
// Redis 1.75x, publish requests answered in half the time;
// docs/BENCHMARKS.md).
func flusherCount(procs int) int { return max(procs-1, 1) }

// coalesceMin is the width of a flush round (connections) from which the
// flusher pauses before the next round.
const coalesceMin = 64

// coalescePause is the pause after a flush round of width connections: the
// configured pause per started 500 connections, at most ten of them. A
// wider round takes longer to write, so each connection's frames are
// further apart already; the pause grows with it so that each next write
// carries several frames (saturated 1 x 1,000 fan-out: about 1.7M -> 2.1M
// deliveries/s from 1 ms to 2 ms; 1 x 5,000: 1.1M -> 1.6M from 1 ms to
// 10 ms; latency at 100 msg/s unchanged).
func coalescePause(base time.Duration, width int) time.Duration {
	return base * time.Duration(min(width/500+1, 10))
}

// coalesceTarget is how many frames a behind flusher wants each write to
// carry. On loopback a writev's fixed cost is that of some 30 frames' bytes
// (a memory node at 1 x 3,000 saturated spent 22 µs per writev of 19
// frames, each node of a 3-node cluster on the same 2 cores 16 µs per
// writev of 4): below the target, the call is most of a delivery's cost.
const coalesceTarget = 16

// coalesceMaxPauses bounds the wait after a round, in configured pauses
// (100 ms at the default 1 ms).
const coalesceMaxPauses = 100

// coalesceWait is how long a flusher waits before its next round, after
// a round of width connections (at least coalesceMin: the flusher is
// behind) that took took to write and made writes writes carrying frames
// frames, and that started period after the round before it (0: it was
// the first since the flusher woke, or no work came in while it was
// written: then the flusher is not behind for long). starve is the
// flusher's recent rounds' time over the CPU time they got (flusher.starve,
// at least 1).
//
// It is coalescePause unless the writes carried fewer than
// coalesceTarget frames each. The connections' frames then came in at
// about frames/writes per period each; the wait makes the next round
// start when, at that rate, each has coalesceTarget frames queued, but
// it is never longer than starve-1 rounds nor than coalesceMaxPauses
// pauses. Without it, a node whose rounds are narrower, such as one of a
// cluster with a third of the subscribers, writes each connection
// several times as often as one node with them all, a few frames per
// write, and spends its cores on system calls (3-node cluster on Redis,
// 1 x 3,000 saturated, on 2 shared cores: 3.5 frames per write without,
// 5 with; one node, 10 without and 19 with).
//
// The bound follows how long the rounds wait for a core. A flusher whose
// rounds get one whenever they want (starve near 1) has cores to spare:
// it waits the plain pause, and its frames go out as soon as the round
// before is written. One whose rounds wait as long as they run (starve
// 2, a node that has the machine's cores to itself, saturated) waits as
// long as its round; one that waits longer for a core than it runs on
// one (several nodes or other busy processes sharing the cores) waits
// starve-1 rounds: its frames are late by the cores anyway, and each
// write it saves gives the cores back to the rest. A cluster node on 2
// shared cores otherwise wrote 3 frames per write and spent three
// quarters of its time in system calls; one node with one flusher at a
// steady 100 publications/s to 3,000 subscribers, whose rounds waited as
// long as they ran whatever its starve, had a p50 10-18 ms higher.
func coalesceWait(base time.Duration, width, writes, frames int, period, took time.Duration, starve float64) time.Duration {
	p := coalescePause(base, width)
	if period <= 0 || writes == 0 || frames >= coalesceTarget*writes {
		return p
	}
	want := time.Duration(float64(period)*coalesceTarget*float64(writes)/float64(frames)) - took
	bound := time.Duration(float64(took) * (starve - 1))
	return max(p, min(want, bound, coalesceMaxPauses*base))
}

// starveMax bounds a round's starve sample: a round descheduled for long
// says little about the next.
const starveMax = 10

// threadCPU returns the CPU time the calling thread has used and the
// thread's id (-1 if unknown).
func threadCPU() (time.Duration, int) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts); err != nil {
		return 0, -1
	}
	return time.Duration(ts.Nano()), unix.Gettid()
}

// A connection written often holds its pushes back a little: after
// holdAfter writes in a row, each within twice the write coalesce of the
// one before, a connection whose queue holds only pushes (EnqueuePush),
// fewer than coalesceTarget of them, is written no sooner than the write
// coalesce after its previous write. A subscriber of a channel published
// to thousands of times a second then gets its publications several to a
// write instead of one or two (hot channel, one node: 2.7 frames per
// write without), and the peer reads them several to a read. Below a
// thousand writes a second a connection waits for nothing, and neither
// do replies: a reply queued behind held pushes takes them with it.
const holdAfter = 4

// writeTick is the unit of Conn.wlast: 2^16 ns, about 66 µs.
const writeTickShift = 16

// held is a connection whose write waits until due (e.clock).
type held struct {
	c   *Conn
	due time.Duration
}

// flusher writes the queues of the connections scheduled on it, each with
// one writev per round. While it writes, frames pile up in other queues, so
// a busy flusher batches more per syscall.
type flusher struct {
	e     *epollEngine
	mu    sync.Mutex
	list  []*Conn
	spare []*Conn
	wake  chan struct{}
	quit  chan struct{}

	// held are connections whose write waits (holdWrite).
	held    []held
	dueNext time.Duration // the first due time of held
	now     time.Duration // e.clock() at the start of the round
	urgent  atomic.Bool   // a held connection may have urgent frames (expedite)

	iov    [][]byte
	iovecs []unix.Iovec
	n      int
	err    error
	// writes made and frames written in the current round
	writes, frames int
	// starve is a moving average of the wide rounds' time over the CPU
	// time their thread got (1: a core whenever it wanted one).
	starve float64
}

func newFlusher(e *epollEngine) *flusher {
	f := &flusher{e: e, wake: make(chan struct{}, 1), quit: make(chan struct{}), starve: 1,
		iov: make([][]byte, 0, iovMax), iovecs: make([]unix.Iovec, iovMax)}
	return f
}

func (f *flusher) add(c *Conn) {
	f.mu.Lock()
	f.list = append(f.list, c)
	f.mu.Unlock()
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

func (f *flusher) stop() { close(f.quit) }

// holdWrite reports whether c's write waits (see holdAfter), and if so
// queues c on f.held; otherwise it records the write about to be made.
func (f *flusher) holdWrite(c *Conn) bool {
	w := f.e.coalesce
	if w <= 0 {
		return false
	}
	now := uint16(f.now >> writeTickShift)
	wt := uint16(max(w>>writeTickShift, 1))
	gap := now - c.wlast
	if c.whot >= holdAfter && gap < wt && c.holdable(coalesceTarget) {
		due := f.now + time.Duration(wt-gap)<<writeTickShift
		if len(f.held) == 0 || due < f.dueNext {
			f.dueNext = due
		}
		f.held = append(f.held, held{c, due})
		return true
	}
	if gap < 2*wt {
		c.whot = min(c.whot+1, 255)
	} else {
		c.whot = 0
	}
	c.wlast = now
	return false
}

// takeDue appends to batch the held connections that are due by f.now,
// or that have urgent frames (with all set, after an expedite), releases
// them, keeps the others and sets f.dueNext to the first of their due
// times.
func (f *flusher) takeDue(batch []*Conn, all bool) []*Conn {
	kept := f.held[:0]
	for _, h := range f.held {
		if due := h.due <= f.now; (all || due) && h.c.release(due) {
			batch = append(batch, h.c)
			continue
		}
		if len(kept) == 0 || h.due < f.dueNext {
			f.dueNext = h.due
		}
		kept = append(kept, h)
	}
	clear(f.held[len(kept):])
	f.held = kept
	return batch
}

func (f *flusher) loop() {
	defer f.e.wg.Done()
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	for {
		if len(f.held) == 0 {
			select {
			case <-f.wake:
			case <-f.quit:
				return
			}
		} else {
			timer.Reset(f.dueNext - f.e.clock())
			select {
			case <-f.wake:
			case <-timer.C:
			case <-f.quit:
				timer.Stop()
				return
			}
			timer.Stop()
		}
		last := 0 // connections in the previous round of this wake
		// When the round before the previous one started (zero: none
		// in this wake), and when the previous one did.
		var prev, start time.Time
		pending := false // work came in while the previous round was written
		for {
			if last >= coalesceMin && f.e.coalesce > 0 {
				// Work arrived while a wide round (a fan-out) was being
				// written: the flusher is behind. Let frames pile up so
				// that each connection's next write carries more of
				// them. Narrow rounds (one busy connection, a socket
				// that became writable) go on at once.
				var period time.Duration
				if !prev.IsZero() && pending {
					period = start.Sub(prev)
				}
				wait := coalesceWait(f.e.coalesce, last, f.writes, f.frames, period, time.Since(start), f.starve)
				select {
				case <-time.After(wait):
				case <-f.quit:
					return
				}
			}
			f.mu.Lock()
			batch := f.list
			f.list, f.spare = f.spare[:0], nil
			f.mu.Unlock()
			f.now = f.e.clock()
			if len(f.held) > 0 {
				if urgent := f.urgent.Swap(false); urgent || f.dueNext <= f.now {
					batch = f.takeDue(batch, urgent)
				}
			}
			if len(batch) == 0 {
				f.spare = batch
				break
			}
			last = len(batch)
			prev, start = start, time.Now()
			f.writes, f.frames = 0, 0
			// Only wide rounds are timed against the thread's CPU clock:
			// narrow ones (a hot channel's few subscribers) never wait.
			cpu0, tid0 := time.Duration(0), -1
			if last >= coalesceMin {
				cpu0, tid0 = threadCPU()
			}
			for i, c := range batch {
				if !f.holdWrite(c) {
					f.flush(c)
				}
				batch[i] = nil
			}
			if tid0 >= 0 {
				f.sampleStarve(start, cpu0, tid0)
			}
			f.mu.Lock()
			f.spare = batch[:0]
			pending = len(f.list) > 0
			f.mu.Unlock()
		}
	}
}

// sampleStarve adds the round that started at start, on thread tid0
// (known: threadCPU worked) having used cpu0, to f.starve. A round whose
// goroutine moved to another thread says nothing.
func (f *flusher) sampleStarve(start time.Time, cpu0 time.Duration, tid0 int) {
	cpu1, tid1 := threadCPU()
	took := time.Since(start)
	if tid1 != tid0 || cpu1 <= cpu0 {
		return
	}
	s := min(max(float64(took)/float64(cpu1-cpu0), 1), starveMax)
	f.starve = 0.75*f.starve + 0.25*s
}

// writev writes f.iov to fd in one system call and records the result in
// f.n and f.err.
func (f *flusher) writev(fd uintptr) {
	n := len(f.iov)
	for i, b := range f.iov {
		f.iovecs[i].Base = unsafe.SliceData(b)
		f.iovecs[i].SetLen(len(b))
	}
	r, _, errno := unix.Syscall(unix.SYS_WRITEV, fd, uintptr(unsafe.Pointer(&f.iovecs[0])), uintptr(n))
	if errno != 0 {
		f.n, f.err = 0, errno
	} else {
		f.n, f.err = int(r), nil
	}
	clear(f.iovecs[:n])
}

// flush writes c's queue until it is empty or the socket is full. After a
// few rounds it yields to the other connections and comes back.
func (f *flusher) flush(c *Conn) {
	for round := 0; round < 8; round++ {
		f.iov = c.takeBatch(f.iov[:0], iovMax)
		if len(f.iov) == 0 {
			c.commit(0, false)
			return
		}
		f.n, f.err = 0, nil
		if !c.acquireFD() {
			clear(f.iov)
			return // closed
		}
		f.writev(uintptr(c.fd))
		c.releaseFD()
		f.e.writes.Add(1)
		f.writes++
		f.frames += len(f.iov)
		clear(f.iov)
		blocked := false
		switch {
		case f.err == unix.EAGAIN:
			blocked = true
		case f.err == unix.EINTR:
		case f.err != nil:
			c.shutdown(errors.Join(errWrite, f.err))
			return
		}
		f.e.bytesOut.Add(uint64(f.n))
		more, shut := c.commit(f.n, blocked)
		if shut {
			c.shutdown(nil)
			return
		}
		if !more {
			return
		}
	}
	f.add(c) // still more: after the others
}

var errWrite = errors.New("herald: write")
