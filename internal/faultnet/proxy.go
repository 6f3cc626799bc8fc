// Package faultnet is a TCP proxy for tests that injects network faults
// between two processes on loopback: added latency, slow bandwidth,
// connection resets, and blackholes (bytes and new connections held, not
// lost, until the blackhole ends, as in a partition). With several
// backends it is a round-robin load balancer that skips backends that
// refuse or are marked down. It is imported by tests only.
package faultnet

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"sync"
	"time"
)

// Faults are the faults a Proxy applies to the bytes it forwards, in both
// directions. The zero value forwards as fast as it can.
type Faults struct {
	// Latency delays every chunk of bytes read before it is written on.
	Latency time.Duration
	// Bandwidth, if positive, caps each direction of each connection at
	// that many bytes per second.
	Bandwidth int
	// Blackhole holds every byte and every new connection until it is
	// turned off: peers see a silent connection, and their own timeouts
	// decide what happens.
	Blackhole bool
	// DropServerFrames discards, whole, the WebSocket data frames a
	// backend sends to its client (after the HTTP upgrade response),
	// without closing anything: messages silently lost on a live
	// connection. Control frames pass. It applies only to connections
	// whose backend answered with "HTTP/1.1 101"; other connections are
	// forwarded as they are.
	DropServerFrames bool
}

// Proxy listens on a loopback port and forwards each connection to a
// backend. Its methods are safe for concurrent use; Close stops it and
// every goroutine it started.
type Proxy struct {
	ln       net.Listener
	backends []string

	mu     sync.Mutex
	cond   *sync.Cond // broadcast when faults change or the proxy closes
	faults Faults
	next   int
	down   []bool
	conns  map[*link]int // link -> backend index
	closed bool

	wg sync.WaitGroup
}

// link is one proxied connection.
type link struct{ client, server net.Conn }

// New starts a proxy on 127.0.0.1 (a port of the kernel's choosing) in
// front of backends.
func New(backends ...string) (*Proxy, error) {
	if len(backends) == 0 {
		return nil, errors.New("faultnet: no backend")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, backends: backends, down: make([]bool, len(backends)), conns: map[*link]int{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's listen address, host:port.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// SetFaults replaces the faults applied from now on.
func (p *Proxy) SetFaults(f Faults) {
	p.mu.Lock()
	p.faults = f
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Faults returns the faults in force.
func (p *Proxy) Faults() Faults {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.faults
}

// SetDown takes backend i out of (or back into) the rotation for new
// connections.
func (p *Proxy) SetDown(i int, down bool) {
	p.mu.Lock()
	p.down[i] = down
	p.mu.Unlock()
}

// Reset closes every open connection with a TCP reset (to backend i only,
// if i >= 0) and returns how many it closed.
func (p *Proxy) Reset(i int) int {
	p.mu.Lock()
	var ls []*link
	for l, k := range p.conns {
		if i < 0 || k == i {
			ls = append(ls, l)
		}
	}
	p.mu.Unlock()
	for _, l := range ls {
		l.reset()
	}
	return len(ls)
}

// Conns returns the number of open connections.
func (p *Proxy) Conns() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}

// Close stops listening, closes every connection and waits for the
// proxy's goroutines.
func (p *Proxy) Close() {
	p.mu.Lock()
	p.closed = true
	p.cond.Broadcast()
	ls := make([]*link, 0, len(p.conns))
	for l := range p.conns {
		ls = append(ls, l)
	}
	p.mu.Unlock()
	_ = p.ln.Close()
	for _, l := range ls {
		l.close()
	}
	p.wg.Wait()
}

func (l *link) close() {
	l.client.Close()
	l.server.Close()
}

func (l *link) reset() {
	for _, c := range []net.Conn{l.client, l.server} {
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.SetLinger(0)
		}
	}
	l.close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// waitOpen blocks while a blackhole is in force; it returns false if the
// proxy closed meanwhile (or stop says so).
func (p *Proxy) waitOpen(stop func() bool) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.faults.Blackhole && !p.closed && !stop() {
		p.cond.Wait()
	}
	return !p.closed && !stop()
}

// order returns the backends to try for a new connection.
func (p *Proxy) order() []int {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []int
	for k := range p.backends {
		i := (p.next + k) % len(p.backends)
		if !p.down[i] {
			out = append(out, i)
		}
	}
	p.next = (p.next + 1) % len(p.backends)
	return out
}

func (p *Proxy) serve(c net.Conn) {
	defer p.wg.Done()
	if !p.waitOpen(func() bool { return false }) {
		c.Close()
		return
	}
	var s net.Conn
	idx := -1
	for _, i := range p.order() {
		var err error
		if s, err = net.DialTimeout("tcp", p.backends[i], 2*time.Second); err == nil {
			idx = i
			break
		}
	}
	if idx < 0 {
		c.Close()
		return
	}
	l := &link{client: c, server: s}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		l.close()
		return
	}
	p.conns[l] = idx
	p.mu.Unlock()

	var (
		once sync.Once
		done = make(chan struct{})
	)
	end := func() {
		once.Do(func() {
			l.close()
			close(done)
			// Wake a direction held by a blackhole.
			p.mu.Lock()
			p.cond.Broadcast()
			p.mu.Unlock()
		})
	}
	ended := func() bool {
		select {
		case <-done:
			return true
		default:
			return false
		}
	}
	var dirs sync.WaitGroup
	dirs.Add(2)
	go func() { defer dirs.Done(); p.copy(s, c, ended); end() }()
	go func() { defer dirs.Done(); p.copyFromServer(c, s, ended); end() }()
	dirs.Wait()
	p.mu.Lock()
	delete(p.conns, l)
	p.mu.Unlock()
}

// copy forwards src to dst chunk by chunk, applying the faults in force
// when each chunk is read.
func (p *Proxy) copy(dst, src net.Conn, ended func() bool) {
	buf := make([]byte, 32<<10)
	for {
		f := p.Faults()
		n := len(buf)
		if f.Bandwidth > 0 {
			// Small chunks keep a capped stream smooth.
			n = min(n, max(f.Bandwidth/20, 256))
		}
		k, err := src.Read(buf[:n])
		if k > 0 {
			if !p.waitOpen(ended) {
				return
			}
			f = p.Faults()
			if f.Latency > 0 {
				time.Sleep(f.Latency)
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return
			}
			if f.Bandwidth > 0 {
				time.Sleep(time.Duration(k) * time.Second / time.Duration(f.Bandwidth))
			}
		}
		if err != nil {
			// One direction ended (a process died or closed): end both,
			// as a load balancer does.
			return
		}
	}
}

// copyFromServer forwards a backend's bytes to its client. Once the
// backend answered a WebSocket upgrade it forwards frame by frame, so
// that DropServerFrames can discard whole frames; otherwise it is copy.
func (p *Proxy) copyFromServer(dst, src net.Conn, ended func() bool) {
	// The first chunk tells (a backend that answers with a few bytes,
	// such as Redis, must not be waited on for more).
	first := make([]byte, 32<<10)
	k, err := src.Read(first)
	first = first[:k]
	if !bytes.HasPrefix(first, []byte("HTTP/1.1 101")) {
		if k > 0 {
			if !p.waitOpen(ended) {
				return
			}
			if f := p.Faults(); f.Latency > 0 {
				time.Sleep(f.Latency)
			}
			if _, werr := dst.Write(first); werr != nil {
				return
			}
		}
		if err == nil {
			p.copy(dst, src, ended)
		}
		return
	}
	r := bufio.NewReaderSize(io.MultiReader(bytes.NewReader(first), src), 32<<10)
	// The upgrade response, up to its blank line.
	var resp []byte
	for !bytes.HasSuffix(resp, []byte("\r\n\r\n")) {
		line, err := r.ReadSlice('\n')
		resp = append(resp, line...)
		if err != nil {
			return
		}
	}
	if !p.waitOpen(ended) {
		return
	}
	if _, err := dst.Write(resp); err != nil {
		return
	}
	var frame []byte
	for {
		frame = frame[:0]
		hdr := make([]byte, 2, 14)
		if _, err := io.ReadFull(r, hdr); err != nil {
			return
		}
		n := uint64(hdr[1] & 0x7f)
		switch n {
		case 126:
			hdr = hdr[:4]
			if _, err := io.ReadFull(r, hdr[2:]); err != nil {
				return
			}
			n = uint64(binary.BigEndian.Uint16(hdr[2:]))
		case 127:
			hdr = hdr[:10]
			if _, err := io.ReadFull(r, hdr[2:]); err != nil {
				return
			}
			n = binary.BigEndian.Uint64(hdr[2:])
		}
		if hdr[1]&0x80 != 0 {
			n += 4 // a mask key (servers send none)
		}
		if n > 64<<20 {
			return
		}
		frame = append(frame, hdr...)
		frame = append(frame, make([]byte, n)...)
		if _, err := io.ReadFull(r, frame[len(hdr):]); err != nil {
			return
		}
		if !p.waitOpen(ended) {
			return
		}
		f := p.Faults()
		if f.DropServerFrames && hdr[0]&0x08 == 0 {
			continue // a data frame (text, binary, continuation): lost
		}
		if f.Latency > 0 {
			time.Sleep(f.Latency)
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
	}
}
