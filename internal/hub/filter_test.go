package hub_test

import (
	"fmt"
	"net"
	"testing"

	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

func mustFilter(tb testing.TB, s string) *filter.Filter {
	tb.Helper()
	f, err := filter.Parse(s)
	if err != nil {
		tb.Fatal(err)
	}
	return f
}

// TestFilterEvaluatedOncePerDistinctFilter: 10 subscribers with 2 distinct
// filters (written in several ways) cost 2 evaluations per publication,
// and each subscriber gets only what its filter matches.
func TestFilterEvaluatedOncePerDistinctFilter(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 10, transport.Options{}, false)
	texts := []string{`kind == "a"`, `(kind=="a")`, `kind == "a" `, `price > 10`, `price>10.0`}
	subs := make([]*hub.Sub, len(peers))
	for i, p := range peers {
		subs[i] = &hub.Sub{Conn: p.c, Channel: "c"}
		h.AddFiltered(subs[i], mustFilter(t, texts[i%len(texts)]))
		h.Activate(subs[i], nil, 0)
	}
	pubs := []map[string]string{
		{"kind": "a", "price": "5"},  // first filter: 6 subscribers
		{"kind": "b", "price": "50"}, // second: 4
		{"kind": "a", "price": "11"}, // both: 10
		{"kind": "b"},                // none
	}
	for i, tags := range pubs {
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(i + 1), Data: protocol.Data("1"), Tags: tags}, "e")
	}
	st := h.Stats()
	if st.FilterEvals != 2*uint64(len(pubs)) {
		t.Errorf("%d filter evaluations for %d publications, want 2 per publication", st.FilterEvals, len(pubs))
	}
	if st.Delivered != 6+4+10 {
		t.Errorf("delivered %d, want 20", st.Delivered)
	}
	for i, s := range subs {
		last := h.Remove(s)
		if last != (i == len(subs)-1) {
			t.Fatalf("Remove %d: last %v", i, last)
		}
	}
	if h.NumChannels() != 0 || h.NumSubscriptions() != 0 {
		t.Fatalf("after removing all: %d channels, %d subscriptions", h.NumChannels(), h.NumSubscriptions())
	}
}

// TestFilterHeldPublications: publications held during recovery are
// checked for gaps over every offset, then filtered; unfiltered and
// filtered subscribers of one channel are counted together.
func TestFilterHeldPublications(t *testing.T) {
	var gaps int
	h := hub.New(hub.Options{OnGap: func(*hub.Sub) { gaps++ }})
	peers := newPeers(t, 2, transport.Options{}, false)
	plain := &hub.Sub{Conn: peers[0].c, Channel: "c"}
	filtered := &hub.Sub{Conn: peers[1].c, Channel: "c"}
	if !h.Add(plain) {
		t.Fatal("first Add not first")
	}
	if h.AddFiltered(filtered, mustFilter(t, `k in ("x")`)) {
		t.Fatal("second Add first")
	}
	for o := uint64(1); o <= 6; o++ {
		k := "y"
		if o%2 == 0 {
			k = "x"
		}
		h.Publish("c", &protocol.Publication{Offset: o, Data: protocol.Data("1"), Tags: map[string]string{"k": k}}, "e")
	}
	h.Activate(plain, nil, 0)
	if !h.Activate(filtered, nil, 2) {
		t.Fatal("Activate of the filtered subscriber failed")
	}
	// plain: 6; filtered: offsets 4 and 6 (2 was in its reply); no gap
	// although the filtered subscriber skips offsets 3 and 5.
	if d := h.Stats().Delivered; d != 6+2 || gaps != 0 {
		t.Fatalf("delivered %d (want 8), gaps %d", d, gaps)
	}
	if h.Remove(plain) {
		t.Fatal("last with the filtered subscriber left")
	}
	if !h.Remove(filtered) {
		t.Fatal("not last")
	}
}

// idleConns returns n connections on in-memory pipes that nothing serves:
// enough for subscribers that are never sent anything.
func idleConns(tb testing.TB, n int) []*transport.Conn {
	conns := make([]*transport.Conn, n)
	var ends []net.Conn
	for i := range conns {
		a, b := net.Pipe()
		ends = append(ends, a, b)
		conns[i] = transport.NewConn(a, &transport.Options{}, nopHandler{})
	}
	tb.Cleanup(func() {
		for _, e := range ends {
			e.Close()
		}
	})
	return conns
}

// BenchmarkFilteredFanOut: one channel with N filtered subscribers over D
// distinct filters, and a publication no filter matches, so what is
// measured is the filters' evaluation and the skipping of their
// subscribers: it grows with D, not N.
func BenchmarkFilteredFanOut(b *testing.B) {
	for _, n := range []int{1000, 10000} {
		conns := idleConns(b, n)
		for _, d := range []int{1, 10, 100} {
			b.Run(fmt.Sprintf("subs=%d/filters=%d", n, d), func(b *testing.B) {
				h := hub.New(hub.Options{})
				subs := make([]*hub.Sub, n)
				for i, c := range conns {
					subs[i] = &hub.Sub{Conn: c, Channel: "c"}
					f := mustFilter(b, fmt.Sprintf(`region == "r%d" and price > %d`, i%d, i%d))
					h.AddFiltered(subs[i], f)
					h.Activate(subs[i], nil, 0)
				}
				pub := &protocol.Publication{Channel: "c", Data: protocol.Data(`{"p":1}`), Tags: map[string]string{"region": "none", "price": "1000"}}
				b.ReportAllocs()
				for i := 0; b.Loop(); i++ {
					pub.Offset = uint64(i + 1)
					h.Publish("c", pub, "e")
				}
				b.ReportMetric(float64(h.Stats().FilterEvals)/float64(b.N), "evals/pub")
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N), "ns/pub")
				if h.Stats().Delivered != 0 {
					b.Fatal("a publication no filter matches was delivered")
				}
				for _, s := range subs {
					h.Remove(s)
				}
			})
		}
	}
}
