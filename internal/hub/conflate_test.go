package hub_test

import (
	"math"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// readPubs reads publication pushes from p's far end until fn returns
// false.
func readPubs(t *testing.T, p *peer, fn func(*protocol.Publication) bool) {
	t.Helper()
	for {
		_ = p.far.SetReadDeadline(time.Now().Add(10 * time.Second))
		f, err := ws.ReadFrame(p.far)
		if err != nil {
			t.Fatal(err)
		}
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage(f.Payload, &m); err != nil {
			t.Fatalf("decode %q: %v", f.Payload, err)
		}
		if m.Pub == nil {
			continue
		}
		if !fn(m.Pub) {
			return
		}
	}
}

func conflateSub(c *transport.Conn, cf *hub.Conflate) *hub.Sub {
	s := &hub.Sub{Conn: c, Channel: "c", Policy: hub.PolicyConflate}
	s.SetConflate(cf)
	return s
}

func keyedPub(o uint64, key string, pad string) *protocol.Publication {
	return &protocol.Publication{Channel: "c", Offset: o, Tags: map[string]string{"key": key},
		Data: protocol.Data(`{"o":` + strconv.FormatUint(o, 10) + `,"pad":"` + pad + `"}`)}
}

// TestConflateReplacesPerKey: a subscriber whose peer reads nothing falls
// behind; from then on it keeps only the newest publication per key. When
// the peer reads again it receives, in offset order, each key's newest
// publication last, and every publication either reached it or is counted
// in the Skipped of a later one of its key. What was kept aside never
// exceeded the number of keys.
func TestConflateReplacesPerKey(t *testing.T) {
	var slow atomic.Int32
	h := hub.New(hub.Options{OnSlow: func(*hub.Sub) { slow.Add(1) }})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := conflateSub(peers[0].c, &hub.Conflate{Key: "key", Behind: 4})
	h.Add(s)
	h.Activate(s, nil, 0)
	const keys, n = 5, 3000
	pad := strings.Repeat("x", 4<<10)
	last := map[string]uint64{}
	for o := uint64(1); o <= n; o++ {
		k := "k" + strconv.Itoa(int(o%keys))
		h.Publish("c", keyedPub(o, k, pad), "e")
		last[k] = o
	}
	st := h.Stats()
	if st.Conflated == 0 {
		t.Fatal("nothing conflated: the subscriber never fell behind")
	}
	if st.ConflatePendingMax > keys {
		t.Fatalf("%d publications kept aside, more than the %d keys", st.ConflatePendingMax, keys)
	}
	if f, _ := s.Conn.QueueLen(); f > 4 {
		t.Fatalf("%d frames queued, want at most Behind (4)", f)
	}
	got := map[string]uint64{}
	var prev, count, skipped uint64
	readPubs(t, peers[0], func(p *protocol.Publication) bool {
		if p.Offset <= prev {
			t.Fatalf("offset %d after %d", p.Offset, prev)
		}
		prev = p.Offset
		got[p.Tags["key"]] = p.Offset
		count++
		skipped += uint64(p.Skipped)
		return p.Offset < n
	})
	for k, o := range last {
		if got[k] != o {
			t.Fatalf("key %s: last received offset %d, want %d", k, got[k], o)
		}
	}
	if count+skipped != n {
		t.Fatalf("received %d + skipped %d != published %d", count, skipped, n)
	}
	if skipped != h.Stats().Conflated {
		t.Fatalf("Skipped adds up to %d, hub counted %d", skipped, h.Stats().Conflated)
	}
	if slow.Load() != 0 {
		t.Fatal("conflating subscriber closed as slow")
	}
	// Drained, the subscriber is back on the common path: a publication
	// goes out as is.
	h.Publish("c", keyedPub(n+1, "k1", "y"), "e")
	readPubs(t, peers[0], func(p *protocol.Publication) bool {
		if p.Offset != n+1 || p.Skipped != 0 {
			t.Fatalf("after drain: offset %d skipped %d", p.Offset, p.Skipped)
		}
		return false
	})
	h.Remove(s)
}

// TestConflateWholeChannel: without a key the channel is one key: a
// subscriber behind keeps one publication at most.
func TestConflateWholeChannel(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := conflateSub(peers[0].c, &hub.Conflate{Behind: 2})
	h.Add(s)
	h.Activate(s, nil, 0)
	pad := strings.Repeat("x", 4<<10)
	const n = 2000
	for o := uint64(1); o <= n; o++ {
		h.Publish("c", keyedPub(o, strconv.Itoa(int(o)), pad), "e")
	}
	if st := h.Stats(); st.ConflatePendingMax != 1 || st.Conflated == 0 {
		t.Fatalf("pending max %d conflated %d, want 1 and some", st.ConflatePendingMax, st.Conflated)
	}
	var count, skipped uint64
	readPubs(t, peers[0], func(p *protocol.Publication) bool {
		count++
		skipped += uint64(p.Skipped)
		return p.Offset < n
	})
	if count+skipped != n {
		t.Fatalf("received %d + skipped %d != %d", count, skipped, n)
	}
	h.Remove(s)
}

// TestConflateMaxKeys: a subscriber behind that would keep more keys than
// MaxKeys is closed as slow; memory stays bounded by MaxKeys.
func TestConflateMaxKeys(t *testing.T) {
	var slow atomic.Int32
	h := hub.New(hub.Options{OnSlow: func(s *hub.Sub) { slow.Add(1); s.Conn.Close(3002, "", nil, true) }})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := conflateSub(peers[0].c, &hub.Conflate{Key: "key", MaxKeys: 10, Behind: 2})
	h.Add(s)
	h.Activate(s, nil, 0)
	pad := strings.Repeat("x", 4<<10)
	for o := uint64(1); o <= 2000; o++ {
		h.Publish("c", keyedPub(o, strconv.Itoa(int(o%20)), pad), "e")
	}
	if slow.Load() == 0 {
		t.Fatal("20 keys past MaxKeys 10: not closed as slow")
	}
	if m := h.Stats().ConflatePendingMax; m > 10 {
		t.Fatalf("kept %d publications aside, past MaxKeys 10", m)
	}
	h.Remove(s)
}

// TestConflateKeepsUp: a conflating subscriber that keeps up gets every
// publication unmarked, and nothing is kept aside for it.
func TestConflateKeepsUp(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := conflateSub(peers[0].c, &hub.Conflate{Key: "key"})
	h.Add(s)
	h.Activate(s, nil, 0)
	for o := uint64(1); o <= 50; o++ {
		h.Publish("c", keyedPub(o, "a", "x"), "e")
		readPubs(t, peers[0], func(p *protocol.Publication) bool {
			if p.Offset != o || p.Skipped != 0 {
				t.Fatalf("got offset %d skipped %d, want %d unmarked", p.Offset, p.Skipped, o)
			}
			return false
		})
	}
	if st := h.Stats(); st.Conflated != 0 || st.ConflatePendingMax != 0 || st.Delivered != 50 {
		t.Fatalf("stats %+v", st)
	}
	h.Remove(s)
}

// TestConflateFastPathAllocs: fan-out to conflating subscribers that keep
// up allocates no more than to subscribers of the default policy.
func TestConflateFastPathAllocs(t *testing.T) {
	allocs := func(policy hub.Policy) float64 {
		h := hub.New(hub.Options{})
		// The epoll engine: the goroutine engine starts a goroutine per
		// flush, whose allocations would count too.
		peers := newPeersOn(t, "epoll", 20, transport.Options{QueueMaxMessages: 1 << 20, QueueMaxBytes: 1 << 30}, false)
		for _, p := range peers {
			s := &hub.Sub{Conn: p.c, Channel: "c", Policy: policy}
			if policy == hub.PolicyConflate {
				s.SetConflate(&hub.Conflate{Key: "key", Behind: 1 << 20})
			}
			h.Add(s)
			h.Activate(s, nil, 0)
		}
		pub := keyedPub(1, "a", "x")
		o := uint64(0)
		// Mallocs counts the allocations of every goroutine: the
		// connections' writers add some now and then (queue segments while
		// a peer's socket is full). Those only add, so the least of several
		// measurements is closest to the fan-out's own.
		least := math.Inf(1)
		var ms runtime.MemStats
		for range 5 {
			runtime.ReadMemStats(&ms)
			before := ms.Mallocs
			for range 200 {
				o++
				pub.Offset = o
				h.Publish("c", pub, "e")
			}
			runtime.ReadMemStats(&ms)
			least = min(least, float64(ms.Mallocs-before)/200)
		}
		return least
	}
	plain, conflate := allocs(hub.PolicyDisconnect), allocs(hub.PolicyConflate)
	// An allocation of its own per fan-out or per subscriber would add 1
	// or 20; the writers' noise is a fraction of one. Under the race
	// detector sync.Pool drops some of what is put back, which adds up to
	// about one per fan-out at random to either side: there only an
	// allocation per subscriber is told from the noise.
	tolerance := 0.5
	if raceDetector {
		tolerance = 3
	}
	if conflate > plain+tolerance {
		t.Fatalf("%.2f allocations per fan-out to conflating subscribers, %.2f to others", conflate, plain)
	}
	if testing.Verbose() {
		t.Logf("%.2f allocations per fan-out to conflating subscribers, %.2f to others", conflate, plain)
	}
}

// TestConflateRate: with Rate a subscriber gets at most Rate publications
// per second per key, the newest last, and what it did not get is counted
// in Skipped.
func TestConflateRate(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := conflateSub(peers[0].c, &hub.Conflate{Key: "key", Rate: 20})
	h.Add(s)
	h.Activate(s, nil, 0)
	start := time.Now()
	const n = 200
	for o := uint64(1); o <= n; o++ {
		h.Publish("c", keyedPub(o, "a", "x"), "e")
	}
	var count, skipped uint64
	readPubs(t, peers[0], func(p *protocol.Publication) bool {
		count++
		skipped += uint64(p.Skipped)
		return p.Offset < n
	})
	elapsed := time.Since(start)
	if count+skipped != n {
		t.Fatalf("received %d + skipped %d != %d", count, skipped, n)
	}
	// An upper bound that only a broken cap can exceed (a loaded machine
	// makes elapsed longer, never the bound tighter).
	if max := uint64(elapsed.Seconds()*20) + 1; count > max {
		t.Fatalf("received %d in %v, more than 20/s allows (%d)", count, elapsed, max)
	}
	h.Remove(s)
}

func TestConflateReduce(t *testing.T) {
	c := &hub.Conflate{Key: "key"}
	var pubs []*protocol.Publication
	for o, k := range []string{"a", "b", "a", "c", "a", "b"} {
		pubs = append(pubs, keyedPub(uint64(o+1), k, ""))
	}
	pubs[1].Skipped = 2 // already stood for two older ones
	got := c.Reduce(pubs)
	var desc []string
	for _, p := range got {
		desc = append(desc, p.Tags["key"]+strconv.FormatUint(p.Offset, 10)+"/"+strconv.Itoa(int(p.Skipped)))
	}
	if want := "c4/0 a5/2 b6/3"; strings.Join(desc, " ") != want {
		t.Fatalf("Reduce: %s, want %s", strings.Join(desc, " "), want)
	}
	if pubs[4].Skipped != 0 {
		t.Fatal("Reduce modified its input")
	}
	if got := (&hub.Conflate{}).Reduce(pubs); len(got) != 1 || got[0].Offset != 6 || got[0].Skipped != 7 {
		t.Fatalf("whole channel: %d publications, last skipped %d", len(got), got[0].Skipped)
	}
}
