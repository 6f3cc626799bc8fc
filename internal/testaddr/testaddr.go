// Package testaddr picks loopback ports for tests that must name a port
// before anything listens on it: a child process's listen address, a
// cluster peer's route address, a broker restarted on the same port.
//
// A port the kernel handed out for 127.0.0.1:0 is in its ephemeral range,
// which the kernel keeps handing out: to outgoing connections and to other
// port-0 listeners (an embedded NATS server's client port, say). Between
// the moment a test learns such a port and the moment it listens on it,
// another test running in parallel may get it. The ports from here lie
// below the ephemeral range, where the kernel never picks on its own.
//
// Test binaries of several packages run at once, each its own process,
// and a port may be named long before it is listened on (a cluster node
// binds its HTTP port once its JetStream cluster has formed, seconds
// later). A port handed out is claimed for the life of the process that
// got it (claim): no other test process of this module gets it meanwhile.
package testaddr

import (
	"math/rand/v2"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// lowest is the bottom of the range ports are picked from.
const lowest = 10000

var (
	mu    sync.Mutex
	given = map[int]bool{} // ports handed out in this process
)

// Port returns a loopback TCP port that nobody listens on now.
func Port(tb testing.TB) int {
	tb.Helper()
	return PortWith(tb, 0)
}

// Addr returns "127.0.0.1:PORT" for a port from Port.
func Addr(tb testing.TB) string {
	tb.Helper()
	return "127.0.0.1:" + strconv.Itoa(Port(tb))
}

// Addrs returns n addresses from Addr.
func Addrs(tb testing.TB, n int) []string {
	tb.Helper()
	out := make([]string, n)
	for i := range out {
		out[i] = Addr(tb)
	}
	return out
}

// PortWith returns a free port p such that p+offset is free too (Redis
// Cluster listens on its port and on port+10000). Both lie below the
// ephemeral range.
func PortWith(tb testing.TB, offset int) int {
	tb.Helper()
	top := ephemeralLow() - offset
	if top-lowest < 1000 {
		tb.Fatalf("testaddr: no room below the ephemeral port range (starts at %d) for offset %d", ephemeralLow(), offset)
	}
	mu.Lock()
	defer mu.Unlock()
	for attempt := 0; attempt < 1000; attempt++ {
		p := lowest + rand.IntN(top-lowest)
		if given[p] || (offset != 0 && given[p+offset]) || !free(p) || (offset != 0 && !free(p+offset)) {
			continue
		}
		if !claim(p) || (offset != 0 && !claim(p+offset)) {
			continue
		}
		given[p] = true
		if offset != 0 {
			given[p+offset] = true
		}
		return p
	}
	tb.Fatal("testaddr: no free loopback port found")
	return 0
}

func free(p int) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(p))
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

// ephemeralLow is the first port of the kernel's ephemeral range (Linux;
// 32768 elsewhere, below the range of the BSDs and macOS).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil && n > lowest {
				return n
			}
		}
	}
	return 32768
}
