//go:build unix

package testaddr

import (
	"net"
	"strconv"
	"testing"
)

// TestPortClaimed: a port handed out stays claimed: a claim of it through
// another open of its lock file, as another test process would make, is
// refused, and the port itself is free to listen on.
func TestPortClaimed(t *testing.T) {
	p := Port(t)
	if claim(p) {
		t.Fatalf("port %d: claimed again while this process holds it", p)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		t.Fatalf("port %d: %v", p, err)
	}
	ln.Close()
	q := PortWith(t, 7)
	if claim(q) || claim(q+7) {
		t.Fatalf("ports %d and %d: claimed again", q, q+7)
	}
	if q == p {
		t.Fatalf("port %d handed out twice", p)
	}
}
