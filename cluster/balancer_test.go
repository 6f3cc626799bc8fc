package cluster_test

import (
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// balancer is a TCP load balancer: each new connection goes to the next
// live backend, round robin; a backend that refuses is skipped. The test
// can pin the next connections to one backend, mark backends down (no
// new connections) and cut a backend's connections.
type balancer struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	next   int
	pinned int // backend of new connections, -1 for round robin
	down   []bool
	conns  map[*pipe]int
	served []int // connections made to each backend, in all
	closed bool

	wg sync.WaitGroup
}

// pipe is one proxied connection.
type pipe struct{ client, server net.Conn }

func (p *pipe) close() {
	p.client.Close()
	p.server.Close()
}

// newBalancer listens on a loopback port; it is closed when the test ends.
func newBalancer(t *testing.T, backends []string) *balancer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &balancer{ln: ln, backends: backends, pinned: -1, down: make([]bool, len(backends)), conns: map[*pipe]int{}, served: make([]int, len(backends))}
	b.wg.Add(1)
	go b.accept()
	t.Cleanup(b.close)
	return b
}

// URL is the WebSocket URL of the balancer.
func (b *balancer) URL() string { return "ws://" + b.ln.Addr().String() + "/ws" }

func (b *balancer) accept() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.wg.Add(1)
		go b.proxy(c)
	}
}

// pick returns the backends to try for a new connection, in order.
func (b *balancer) pick() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.pinned >= 0 {
		return []int{b.pinned}
	}
	var order []int
	for i := range b.backends {
		k := (b.next + i) % len(b.backends)
		if !b.down[k] {
			order = append(order, k)
		}
	}
	b.next = (b.next + 1) % len(b.backends)
	return order
}

func (b *balancer) proxy(c net.Conn) {
	defer b.wg.Done()
	var s net.Conn
	idx := -1
	for _, i := range b.pick() {
		var err error
		if s, err = net.DialTimeout("tcp", b.backends[i], 2*time.Second); err == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		c.Close()
		return
	}
	p := &pipe{client: c, server: s}
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		p.close()
		return
	}
	b.conns[p] = idx
	b.served[idx]++
	b.mu.Unlock()
	done := make(chan struct{}, 2)
	cp := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		// One direction ended (the node died, or the client left): end
		// both, as a balancer does.
		p.close()
		done <- struct{}{}
	}
	go cp(s, c)
	go cp(c, s)
	<-done
	<-done
	b.mu.Lock()
	delete(b.conns, p)
	b.mu.Unlock()
}

// pin sends new connections to backend i until unpin.
func (b *balancer) pin(i int) {
	b.mu.Lock()
	b.pinned = i
	b.mu.Unlock()
}

func (b *balancer) unpin() { b.pin(-1) }

// setDown takes backend i out of (or back into) the rotation.
func (b *balancer) setDown(i int, down bool) {
	b.mu.Lock()
	b.down[i] = down
	b.mu.Unlock()
}

// cut closes every connection to backend i.
func (b *balancer) cut(i int) {
	b.mu.Lock()
	var ps []*pipe
	for p, k := range b.conns {
		if k == i {
			ps = append(ps, p)
		}
	}
	b.mu.Unlock()
	for _, p := range ps {
		p.close()
	}
}

// count returns the number of open connections per backend.
func (b *balancer) count() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := make([]int, len(b.backends))
	for _, k := range b.conns {
		n[k]++
	}
	return n
}

// servedTotal returns the number of connections made to each backend so
// far.
func (b *balancer) servedTotal() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.served...)
}

func (b *balancer) close() {
	b.mu.Lock()
	b.closed = true
	ps := make([]*pipe, 0, len(b.conns))
	for p := range b.conns {
		ps = append(ps, p)
	}
	b.mu.Unlock()
	_ = b.ln.Close()
	for _, p := range ps {
		p.close()
	}
	b.wg.Wait()
}
