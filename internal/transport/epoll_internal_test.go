//go:build linux

package transport

import (
	"net"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// TestDispatchAllocatesNothing: handing readable connections to readers
// allocates nothing, also when a round of them outnumbers the parked
// readers and readers are started for the rest, and starts at most
// maxReaders of them. Every idle connection
// reads a pong per ping interval, and a round of pings comes back as a
// burst: a reader started with its connection as an argument cost an
// allocation per read beyond the parked readers, which is what an idle
// node's heap grew by between collections.
func TestDispatchAllocatesNothing(t *testing.T) {
	e, err := newEpollEngine(EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	// A closed connection: each read returns at once, so that what is
	// measured is the hand-over alone.
	c := &Conn{}
	c.fdState.Store(fdClosing)
	const burst = 4 * maxParked
	round := func() {
		for range burst {
			e.dispatch(c)
			if n := e.readers.Load(); n > maxReaders {
				t.Fatalf("%d readers, at most %d wanted", n, maxReaders)
			}
		}
		for len(e.tasks) > 0 {
			runtime.Gosched()
		}
	}
	round() // the first round starts every reader
	// None per connection (there were more than one); the runtime may
	// allocate a few of its own (a goroutine descriptor when more run than
	// ever before, a collection's workers).
	if n := testing.AllocsPerRun(20, round); n >= 4 {
		t.Errorf("a round of %d readable connections: %v allocations, want none per connection", burst, n)
	}
}

// TestDispatchEveryConnectionRead: every readable connection is read
// when a burst of them outnumbers the parked readers and overflows the
// queue of connections waiting for a reader.
func TestDispatchEveryConnectionRead(t *testing.T) {
	e, err := newEpollEngineQueue(EngineOptions{}, maxParked/2) // a queue that overflows
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	const n = 3 * maxParked
	frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame([]byte("pong"))))
	conns := make([]*Conn, n)
	handlers := make([]*readCounter, n)
	peers := make([]int, n)
	for i := range conns {
		fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		handlers[i] = &readCounter{}
		c := NewConn(nil, &Options{}, handlers[i])
		c.eng = stubEngine{}
		c.fd = int32(fds[0])
		conns[i], peers[i] = c, fds[1]
	}
	defer func() {
		for i, c := range conns {
			c.closeFD()
			unix.Close(peers[i])
		}
	}()
	for round := 1; round <= 3; round++ {
		for i := range conns {
			if _, err := unix.Write(peers[i], frame); err != nil {
				t.Fatal(err)
			}
		}
		for _, c := range conns {
			e.readable(c)
		}
		deadline := time.Now().Add(10 * time.Second)
		for i := 0; i < n; {
			if handlers[i].n.Load() == int32(round) {
				i++
				continue
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: connection %d read %d messages, want %d", round, i, handlers[i].n.Load(), round)
			}
			time.Sleep(time.Millisecond)
		}
	}
}

type readCounter struct{ n atomic.Int32 }

func (h *readCounter) OnMessage(*Conn, []byte, bool)       { h.n.Add(1) }
func (h *readCounter) OnClose(*Conn, ws.StatusCode, error) {}

// TestDispatchSlowHandlers: while maxReaders readers are held by slow
// handlers, another connection's message is still read.
func TestDispatchSlowHandlers(t *testing.T) {
	e, err := newEpollEngine(EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	release := make(chan struct{})
	defer close(release) // before the engine's Close, which waits for the readers
	entered := make(chan struct{}, maxReaders)
	slow := &blockingHandler{entered: entered, release: release}
	fast := &readCounter{}
	var clients []net.Conn
	var conns []*Conn
	serve := func(h Handler) net.Conn {
		cl, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		sc, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		c := NewConn(sc, &Options{CloseTimeout: time.Second}, h)
		if err := e.Serve(c, nil); err != nil {
			t.Fatal(err)
		}
		clients, conns = append(clients, cl), append(conns, c)
		return cl
	}
	defer func() {
		for _, c := range conns {
			c.Abort(nil)
		}
		for _, cl := range clients {
			cl.Close()
		}
	}()
	var slowClients []net.Conn
	for range maxReaders {
		slowClients = append(slowClients, serve(slow))
	}
	fastClient := serve(fast)
	// Each connection's first read (on a goroutine of its own) is over:
	// from now on, reads go through dispatch.
	deadline := time.Now().Add(10 * time.Second)
	for _, c := range conns {
		for atomic.LoadInt32(&c.rstate) != rIdle {
			if time.Now().After(deadline) {
				t.Fatal("a connection's first read did not end")
			}
			time.Sleep(time.Millisecond)
		}
	}
	frame := ws.MustCompileFrame(ws.MaskFrame(ws.NewBinaryFrame([]byte("cmd"))))
	for _, cl := range slowClients {
		if _, err := cl.Write(frame); err != nil {
			t.Fatal(err)
		}
	}
	for range maxReaders {
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the slow handlers were not all called")
		}
	}
	if _, err := fastClient.Write(frame); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for fast.n.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("a message waited behind slow handlers")
		}
		time.Sleep(time.Millisecond)
	}
}

type blockingHandler struct {
	entered chan<- struct{}
	release <-chan struct{}
}

func (h *blockingHandler) OnMessage(*Conn, []byte, bool) {
	h.entered <- struct{}{}
	<-h.release
}
func (h *blockingHandler) OnClose(*Conn, ws.StatusCode, error) {}

// TestPollerSlots: a closed connection's slot is taken by the next one,
// the table grows only to the most connections watched at once, and an
// event queued under a closed connection's key finds nothing, also once
// another connection holds its slot.
func TestPollerSlots(t *testing.T) {
	t.Parallel()
	p := &poller{slots: make([]*Conn, 1)}
	add := func(seq uint32) *Conn {
		c := &Conn{}
		p.mu.Lock()
		p.add(c, seq)
		p.mu.Unlock()
		if uint32(c.pollKey) == 0 {
			t.Fatalf("connection %d got the eventfd's slot", seq)
		}
		if c.pollKey == wakeKey {
			t.Fatalf("connection %d got the eventfd's key", seq)
		}
		if got := p.lookup(c.pollKey); got != c {
			t.Fatalf("connection %d: lookup of its key found %p, want %p", seq, got, c)
		}
		return c
	}
	remove := func(c *Conn) {
		p.mu.Lock()
		p.remove(c)
		p.mu.Unlock()
		if got := p.lookup(c.pollKey); got != nil {
			t.Fatalf("a removed connection's key still finds %p", got)
		}
	}
	var conns []*Conn
	for seq := uint32(1); seq <= 10; seq++ {
		conns = append(conns, add(seq))
	}
	old := conns[3]
	remove(old)
	remove(old) // twice: a no-op
	c := add(11)
	if uint32(c.pollKey) != uint32(old.pollKey) {
		t.Errorf("slot %d taken, want the vacated %d", uint32(c.pollKey), uint32(old.pollKey))
	}
	if got := p.lookup(old.pollKey); got != nil {
		t.Errorf("the closed connection's key found %p in its reused slot", got)
	}
	remove(old) // the slot's new holder stays
	if got := p.lookup(c.pollKey); got != c {
		t.Errorf("removing a closed connection again vacated its successor's slot")
	}
	for seq := uint32(12); seq < 1000; seq++ {
		remove(conns[0])
		conns = append(conns[1:], add(seq))
	}
	if n := len(p.slots); n != 12 {
		t.Errorf("%d slots after a churn of at most 11 connections at once, want 12", n)
	}
	if got := p.lookup(uint64(5)<<32 | 1000); got != nil {
		t.Errorf("a key beyond the table found %p", got)
	}
}

// TestCoalesceWait: a behind flusher whose writes carry few frames waits
// long enough for its next writes to carry coalesceTarget frames at the
// rate they came in, at most its round's time and coalesceMaxPauses
// pauses; otherwise it waits the plain pause.
func TestCoalesceWait(t *testing.T) {
	t.Parallel()
	const ms = time.Millisecond
	base := coalescePause(ms, 1000) // 3 ms
	for _, tc := range []struct {
		name               string
		writes, frames     int
		period, took, want time.Duration
		starve             float64
	}{
		{"first round of a wake", 1000, 1000, 0, 10 * ms, base, 2},
		{"no writes", 0, 0, 20 * ms, 10 * ms, base, 2},
		{"writes carry the target", 1000, coalesceTarget * 1000, 20 * ms, 10 * ms, base, 2},
		{"writes carry more", 1000, 40 * 1000, 20 * ms, 10 * ms, base, 2},
		// 4 frames per write in 20 ms: 16 in 80 ms, 30 after this round.
		{"four frames per write", 1000, 4000, 20 * ms, 50 * ms, 30 * ms, 2},
		// 8 per write in 40 ms: 16 in 80 ms, but a round that got a core
		// half of its time waits at most the round.
		{"bounded by the round", 1000, 8000, 40 * ms, 10 * ms, 10 * ms, 2},
		// 1 per write in 150 ms: 16 in 2.4 s; at most 100 pauses.
		{"bounded by the pauses", 1000, 1000, 150 * ms, 150 * ms, coalesceMaxPauses * ms, 2},
		// 15 per write in 30 ms: 16 in 32 ms, 2 ms after the round:
		// less than the plain pause.
		{"never less than the pause", 1000, 15000, 30 * ms, 30 * ms, base, 2},
		// A round that had a core whenever it wanted one: the pause only.
		{"a core whenever it wanted", 1000, 8000, 40 * ms, 10 * ms, base, 1},
		// One that waited half as long as it ran: half the round.
		{"a core two thirds of the time", 1000, 8000, 40 * ms, 20 * ms, 10 * ms, 1.5},
		// One that got it a quarter of its time: three rounds.
		{"a quarter of the time on a core", 1000, 8000, 40 * ms, 10 * ms, 30 * ms, 4},
		// ... but no longer than the frames take to reach the target.
		{"starved, bounded by the target", 1000, 8000, 20 * ms, 10 * ms, 30 * ms, 10},
		{"starved, bounded by the pauses", 1000, 1000, 150 * ms, 20 * ms, coalesceMaxPauses * ms, 10},
	} {
		if got := coalesceWait(ms, 1000, tc.writes, tc.frames, tc.period, tc.took, tc.starve); got != tc.want {
			t.Errorf("%s: waits %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestWritesCounted: the engine counts its write system calls, and a
// queue written in one writev counts one.
func TestWritesCounted(t *testing.T) {
	t.Parallel()
	e, c, b := servedPair(t, nil)
	// Queued under the lock with the flush scheduled only afterwards: the
	// flusher finds all 10 frames and writes them in one call.
	c.mu.Lock()
	for i := range 10 {
		c.q.push(item{b: MessageFrame(false, []byte{byte('0' + i)})})
	}
	c.wstate = wRunning
	c.mu.Unlock()
	before := e.Writes()
	e.scheduleFlush(c)
	buf := make([]byte, 64)
	got := 0
	_ = b.SetReadDeadline(time.Now().Add(10 * time.Second))
	for got < 30 {
		n, err := b.Read(buf[got:])
		if err != nil {
			t.Fatal(err)
		}
		got += n
	}
	settled(t, c)
	if w := e.Writes() - before; w != 1 {
		t.Fatalf("10 queued frames took %d writes, want 1", w)
	}
}

// servedPair serves one end of a loopback TCP connection on an epoll
// engine whose clock is the test's (clock, in ns; nil: the real one), and
// returns the Conn and the peer's end.
func servedPair(t *testing.T, clock *atomic.Int64) (*epollEngine, *Conn, net.Conn) {
	t.Helper()
	e, err := newEpollEngine(EngineOptions{Coalesce: time.Millisecond})
	if err != nil {
		t.Skip(err)
	}
	t.Cleanup(func() { e.Close() })
	if clock != nil {
		e.clock = func() time.Duration { return time.Duration(clock.Load()) }
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	b, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	c := NewConn(a, &Options{}, &readCounter{})
	if err := e.Serve(c, nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Abort(nil) })
	return e, c, b
}

// readN reads exactly n bytes from nc and returns them.
func readN(t *testing.T, nc net.Conn, n int) []byte {
	t.Helper()
	buf := make([]byte, n)
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for got := 0; got < n; {
		m, err := nc.Read(buf[got:])
		if err != nil {
			t.Fatalf("read %d of %d bytes: %v", got, n, err)
		}
		got += m
	}
	return buf
}

// settled waits until c's queue is written and committed: the engine has
// counted every write of it (it counts a write before committing it), and
// what the flusher recorded about c before is visible.
func settled(t *testing.T, c *Conn) {
	t.Helper()
	waitLocked(t, c, "the queue written", func() bool { return c.q.len() == 0 })
}

// waitHeld waits until c's flusher holds its write back.
func waitHeld(t *testing.T, c *Conn) {
	t.Helper()
	waitLocked(t, c, "the write held", func() bool { return c.hold&holdHeld != 0 })
}

// waitLocked waits at most 10 s until cond, called with c.mu held, is
// true.
func waitLocked(t *testing.T, c *Conn, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		c.mu.Lock()
		ok := cond()
		c.mu.Unlock()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within 10 s", what)
		}
	}
}

// warmUp makes c a connection written often: pushes, each written (and
// read by the peer) at the clock's current time, until c's next push
// would be held.
func warmUp(t *testing.T, c *Conn, b net.Conn) {
	t.Helper()
	for i := 0; c.whot < holdAfter; i++ {
		if err := c.EnqueuePush(MessageFrame(false, []byte{byte('a' + i%26)}), nil); err != nil {
			t.Fatal(err)
		}
		readN(t, b, 3)
		settled(t, c)
	}
}

// TestHoldHotPushes: on a connection written often, pushes wait for the
// write coalesce after the previous write and go out together; a reply
// (Enqueue) takes the held pushes with it at once. The test's clock
// stands still, so a held write is never due by itself: only the reply
// gets the pushes out.
func TestHoldHotPushes(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	e, c, b := servedPair(t, &clock)
	warmUp(t, c, b)
	before := e.Writes()
	for i, p := range []string{"1", "2", "3"} {
		if err := c.EnqueuePush(MessageFrame(false, []byte(p)), nil); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			waitHeld(t, c)
		}
	}
	if err := c.Enqueue(MessageFrame(false, []byte("R")), nil); err != nil {
		t.Fatal(err)
	}
	got := readN(t, b, 12)
	settled(t, c)
	if w := e.Writes() - before; w != 1 {
		t.Fatalf("3 pushes and a reply of a hot connection took %d writes, want 1", w)
	}
	if want := "\x81\x011\x81\x012\x81\x013\x81\x01R"; string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}

	// Held pushes are written once the clock passes their due time.
	before = e.Writes()
	for i, p := range []string{"4", "5"} {
		if err := c.EnqueuePush(MessageFrame(false, []byte(p)), nil); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			waitHeld(t, c)
		}
	}
	clock.Add(int64(time.Millisecond))
	if got := readN(t, b, 6); string(got) != "\x81\x014\x81\x015" {
		t.Fatalf("got %q", got)
	}
	settled(t, c)
	if w := e.Writes() - before; w != 1 {
		t.Fatalf("2 held pushes took %d writes, want 1", w)
	}

	// Closing writes a held push and the close frame at once.
	if err := c.EnqueuePush(MessageFrame(false, []byte("6")), nil); err != nil {
		t.Fatal(err)
	}
	waitHeld(t, c)
	c.Close(ws.StatusNormalClosure, "", nil, false)
	if got := readN(t, b, 7); string(got[:3]) != "\x81\x016" || got[3] != 0x88 {
		t.Fatalf("got %q, want the push then a close frame", got)
	}
}

// TestHoldOnlyHotConnections: a connection written less often than every
// two write coalesces is never held: each push is its own write, at once.
// Neither is one whose queue holds coalesceTarget frames already.
func TestHoldOnlyHotConnections(t *testing.T) {
	t.Parallel()
	var clock atomic.Int64
	clock.Store(int64(time.Hour))
	e, c, b := servedPair(t, &clock)
	before := e.Writes()
	for i := range 3 * holdAfter {
		clock.Add(int64(2 * time.Millisecond))
		if err := c.EnqueuePush(MessageFrame(false, []byte{byte('a' + i)}), nil); err != nil {
			t.Fatal(err)
		}
		readN(t, b, 3)
	}
	settled(t, c)
	if w := e.Writes() - before; w != 3*holdAfter {
		t.Fatalf("%d pushes 2 ms apart took %d writes, want one each", 3*holdAfter, w)
	}

	// Hot, but with a full batch queued: written without waiting (the
	// clock stands still).
	warmUp(t, c, b)
	c.mu.Lock()
	for i := range coalesceTarget {
		c.q.push(item{b: MessageFrame(false, []byte{byte('A' + i)})})
	}
	c.wstate = wRunning
	c.mu.Unlock()
	e.scheduleFlush(c)
	readN(t, b, 3*coalesceTarget)
}

// TestStarveSample: a round whose thread used next to no CPU over its
// time (it was waiting, as for a core) raises the flusher's starve; one
// whose goroutine changed threads is not counted.
func TestStarveSample(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	f := &flusher{starve: 1}
	start := time.Now()
	cpu0, tid0 := threadCPU()
	if tid0 < 0 {
		t.Fatal("no thread CPU clock")
	}
	time.Sleep(20 * time.Millisecond)
	f.sampleStarve(start, cpu0, tid0)
	if f.starve < 2 || f.starve > 0.75+0.25*starveMax {
		t.Fatalf("starve %v after a round that slept: want above 2, at most %v", f.starve, 0.75+0.25*starveMax)
	}
	before := f.starve
	f.sampleStarve(start, cpu0, tid0+1)
	if f.starve != before {
		t.Fatalf("starve %v after a round on another thread, want %v unchanged", f.starve, before)
	}
}

func TestFlusherCount(t *testing.T) {
	for _, c := range []struct{ procs, want int }{{1, 1}, {2, 1}, {3, 2}, {8, 7}, {64, 63}} {
		if got := flusherCount(c.procs); got != c.want {
			t.Errorf("flusherCount(%d) = %d, want %d", c.procs, got, c.want)
		}
	}
}
