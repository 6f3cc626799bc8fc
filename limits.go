package herald

import (
	"sync"
	"time"
)

// ipLimiter counts open connections per remote IP.
type ipLimiter struct {
	max int
	mu  sync.Mutex
	n   map[string]int
}

// acquire reserves a connection slot for ip; false if the IP is at its
// limit.
func (l *ipLimiter) acquire(ip string) bool {
	if l.max <= 0 {
		return true
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] >= l.max {
		return false
	}
	if l.n == nil {
		l.n = make(map[string]int)
	}
	l.n[ip]++
	return true
}

func (l *ipLimiter) release(ip string) {
	if l.max <= 0 {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.n[ip] <= 1 {
		delete(l.n, ip)
	} else {
		l.n[ip]--
	}
}

// bucket is a token bucket for one connection's commands. It is used from
// the connection's reader only, so it needs no lock.
type bucket struct {
	tokens  float32
	refused int32 // commands refused in a row
	last    int64 // unix nanoseconds
}

// allow takes a token if there is one.
func (b *bucket) allow(now time.Time, rate float64, burst int) bool {
	n := now.UnixNano()
	if b.last == 0 {
		b.tokens, b.last = float32(burst), n
	}
	b.tokens += float32(float64(n-b.last) / 1e9 * rate)
	b.last = n
	if b.tokens > float32(burst) {
		b.tokens = float32(burst)
	}
	if b.tokens < 1 {
		b.refused++
		return false
	}
	b.tokens--
	b.refused = 0
	return true
}
