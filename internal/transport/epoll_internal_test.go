//go:build linux

package transport

import (
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"golang.org/x/sys/unix"
)

// TestDispatchAllocatesNothing: handing readable connections to readers
// allocates nothing, also when a round of them outnumbers the parked
// readers and readers are started for the rest. Every idle connection
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
		}
		for len(e.tasks) > 0 {
			runtime.Gosched()
		}
	}
	round() // the first round starts every reader
	if n := testing.AllocsPerRun(20, round); n != 0 {
		t.Errorf("a round of %d readable connections: %v allocations, want 0", burst, n)
	}
}

// TestDispatchEveryConnectionRead: every readable connection is read
// when a burst of them outnumbers the parked readers and overflows the
// queue of connections waiting for a reader.
func TestDispatchEveryConnectionRead(t *testing.T) {
	e, err := newEpollEngine(EngineOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	e.tasks = make(chan *Conn, maxParked/2) // no reader runs yet: a queue that overflows
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
