package redis

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/protocol"
)

// TestCatchUpOffReader: after the pub/sub connection is replaced, every
// channel catches up from history. One channel's catch-up is held up (a
// slow history read); meanwhile another channel's live publications must
// be delivered, and the held-up channel's own live publications wait for
// its catch-up and follow it in offset order, with no gap and no
// duplicate at the seam.
func TestCatchUpOffReader(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raw := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer raw.Close()
	if err := raw.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Redis at %s: %v", addr, err)
		}
		t.Skipf("no Redis at %s (set HERALD_TEST_REDIS): %v (skipping; with CI=true this fails)", addr, err)
	}
	prefix := brokertest.Channel(t, "catchup")
	prefix = "heraldtest-" + prefix[2:14]
	const slow, fast = "slow", "fast"
	defer func() {
		for _, ch := range []string{slow, fast} {
			k := keysFor(prefix, ch)
			raw.Del(context.Background(), k.meta(), k.stream())
		}
	}()
	b, err := New(Config{Addrs: []string{addr}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{}, 1)
	release := make(chan struct{})
	b.testCatchUpHook = func(ch string) {
		if ch != slow {
			return
		}
		select {
		case entered <- struct{}{}:
			<-release
		default:
		}
	}
	rec := brokertest.NewRecorder()
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	released := false
	defer func() {
		if !released {
			close(release)
		}
		_ = b.Close(context.Background())
	}()
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	publish := func(ch string, n int) {
		t.Helper()
		if _, _, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, n))}, opts); err != nil {
			t.Fatal(err)
		}
	}
	for _, ch := range []string{slow, fast} {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		publish(ch, 1)
	}
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(15 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 15s", what)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitFor("the first publications", func() bool { return len(rec.Pubs(slow)) == 1 && len(rec.Pubs(fast)) == 1 })

	// The connection is lost: the reader replaces it, resubscribes both
	// channels and has them catch up; the slow channel's catch-up stalls.
	s := b.subs[""]
	s.mu.Lock()
	ps := s.ps
	s.mu.Unlock()
	_ = ps.Close()
	select {
	case <-entered:
	case <-time.After(15 * time.Second):
		t.Fatal("the slow channel's catch-up did not start")
	}
	publish(slow, 2)
	publish(fast, 2)
	publish(fast, 3)
	waitFor("the fast channel's live publications while the slow channel catches up", func() bool { return len(rec.Pubs(fast)) == 3 })
	publish(slow, 3)
	close(release)
	released = true
	waitFor("the slow channel's publications after its catch-up", func() bool { return len(rec.Pubs(slow)) == 3 })
	for _, ch := range []string{slow, fast} {
		pubs := rec.Pubs(ch)
		for i, p := range pubs {
			if p.Offset != uint64(i+1) {
				t.Fatalf("%s: publication %d has offset %d (offsets %v)", ch, i, p.Offset, offsets(pubs))
			}
		}
	}
	// Nothing more comes: no duplicate after the seam.
	publish(slow, 4)
	waitFor("the slow channel's next publication", func() bool { return len(rec.Pubs(slow)) >= 4 })
	if pubs := rec.Pubs(slow); len(pubs) != 4 || pubs[3].Offset != 4 {
		t.Fatalf("slow: offsets %v, want 1 2 3 4", offsets(pubs))
	}
}

func offsets(pubs []*protocol.Publication) []uint64 {
	var out []uint64
	for _, p := range pubs {
		out = append(out, p.Offset)
	}
	return out
}

// outageRecorder records the outage calls among what it is handed.
type outageRecorder struct {
	*brokertest.Recorder
	mu    sync.Mutex
	calls []string
}

func (r *outageRecorder) HandleBrokerDown() { r.add("down") }
func (r *outageRecorder) HandleBrokerUp()   { r.add("up") }
func (r *outageRecorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *outageRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// TestOutageReported: when the pub/sub connection is lost and replaced,
// a handler that implements broker.OutageHandler is told down, then up.
func TestOutageReported(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	prefix := brokertest.Channel(t, "outage")
	prefix = "heraldtest-" + prefix[2:14]
	b, err := New(Config{Addrs: []string{addr}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	rec := &outageRecorder{Recorder: brokertest.NewRecorder()}
	if err := b.Start(ctx, rec); err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("no Redis at %s: %v", addr, err)
		}
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()
	if err := b.Subscribe(ctx, "room"); err != nil {
		t.Fatal(err)
	}
	s := b.subs[""]
	s.mu.Lock()
	ps := s.ps
	s.mu.Unlock()
	_ = ps.Close()
	deadline := time.Now().Add(15 * time.Second)
	for got := rec.get(); len(got) < 2; got = rec.get() {
		if time.Now().After(deadline) {
			t.Fatalf("outage calls %v, want down then up", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := rec.get(); got[0] != "down" || got[1] != "up" {
		t.Fatalf("outage calls %v, want down then up", got)
	}
}
