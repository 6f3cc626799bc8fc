package faultnet_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/faultnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// echo starts a TCP echo server; it stops when the test ends.
func echo(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(c, c)
				c.Close()
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String()
}

func proxy(t *testing.T, backends ...string) *faultnet.Proxy {
	t.Helper()
	p, err := faultnet.New(backends...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("read %q: %v", msg, err)
	}
	if string(got) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
}

// TestBlackholeHoldsBytes: while the blackhole is on nothing comes back;
// when it ends, the held bytes arrive, in order, none lost.
func TestBlackholeHoldsBytes(t *testing.T) {
	t.Parallel()
	p := proxy(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "before")
	p.SetFaults(faultnet.Faults{Blackhole: true})
	if _, err := c.Write([]byte("held")); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	var ne net.Error
	if n, err := c.Read(make([]byte, 16)); !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("read through a blackhole: %d bytes, %v; want a timeout", n, err)
	}
	p.SetFaults(faultnet.Faults{})
	got := make([]byte, 4)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(c, got); err != nil || string(got) != "held" {
		t.Fatalf("after the blackhole: %q, %v", got, err)
	}
}

// TestReset closes the proxied connections; new ones work.
func TestReset(t *testing.T) {
	t.Parallel()
	p := proxy(t, echo(t))
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "x")
	if n := p.Reset(-1); n != 1 {
		t.Fatalf("reset %d connections, want 1", n)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil || os.IsTimeout(err) {
		t.Fatalf("read after reset: %v, want the connection closed", err)
	}
	c2, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	roundTrip(t, c2, "y")
}

// TestFaultsKeepBytes: latency and a bandwidth cap change timing only.
func TestFaultsKeepBytes(t *testing.T) {
	t.Parallel()
	p := proxy(t, echo(t))
	p.SetFaults(faultnet.Faults{Latency: time.Millisecond, Bandwidth: 1 << 20})
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	msg := bytes.Repeat([]byte("0123456789"), 5000)
	roundTrip(t, c, string(msg))
}

// TestBalancer round-robins over backends and skips one marked down.
func TestBalancer(t *testing.T) {
	t.Parallel()
	a, b := echo(t), echo(t)
	p := proxy(t, a, b)
	p.SetDown(0, true)
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		roundTrip(t, c, "z")
		c.Close()
	}
	// The proxy forgets a closed connection once both its directions end.
	for deadline := time.Now().Add(5 * time.Second); p.Conns() != 0; {
		if time.Now().After(deadline) {
			t.Fatalf("%d closed connections still open after 5s", p.Conns())
		}
		time.Sleep(time.Millisecond)
	}
	// An open connection goes to b, none to a.
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	roundTrip(t, c, "w")
	if n := p.Reset(0); n != 0 {
		t.Fatalf("%d connections to the backend marked down", n)
	}
	if n := p.Reset(1); n != 1 {
		t.Fatalf("%d connections to the live backend, want 1", n)
	}
}
