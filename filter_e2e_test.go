package herald_test

import (
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// publishTagged publishes seqData(i) into ch with tags through the server
// API.
func (ts *testServer) publishTagged(t testing.TB, ch string, i int, tags map[string]string) uint64 {
	t.Helper()
	b, _ := json.Marshal(seqData(i))
	var res struct {
		Offset uint64 `json:"offset"`
	}
	if code := ts.api(t, "publish", map[string]any{"channel": ch, "data": json.RawMessage(b), "tags": tags}, &res); code != 200 {
		t.Fatalf("publish: HTTP %d", code)
	}
	return res.Offset
}

type seqs struct {
	mu  sync.Mutex
	got []int
}

func (s *seqs) on(t testing.TB) func(client.Publication) {
	return func(p client.Publication) { s.mu.Lock(); s.got = append(s.got, seqOf(t, p.Data)); s.mu.Unlock() }
}

func (s *seqs) get() []int { s.mu.Lock(); defer s.mu.Unlock(); return slices.Clone(s.got) }

// TestFilteredSubscription: with the Go SDK, a filtered subscriber gets
// exactly the live publications its filter matches, and the same filter
// applies to what it recovers; the skipped offsets are not taken for a
// gap; an unfiltered subscriber of the channel gets everything; a filter
// that does not parse is refused with code 118.
func TestFilteredSubscription(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, devConfig())
			c := dial(t, ts, &client.Options{Transport: tr})
			const ch = "f:1"
			const flt = `kind == "a" and n >= 3 or kind in ("z")`
			match := func(i int) bool { return i%3 == 0 && i >= 3 || i == 10 }
			tags := func(i int) map[string]string {
				k := "b"
				if i%3 == 0 {
					k = "a"
				}
				if i == 10 {
					k = "z"
				}
				return map[string]string{"kind": k, "n": strconv.Itoa(i)}
			}
			var all, some seqs
			events := make(chan client.SubscribedEvent, 4)
			c0 := dial(t, ts, &client.Options{Transport: tr})
			if _, err := c0.Subscribe(ctxT(t), ch, client.SubscribeOptions{OnPublication: all.on(t)}); err != nil {
				t.Fatal(err)
			}
			s, err := c.Subscribe(ctxT(t), ch, client.SubscribeOptions{Filter: flt, OnPublication: some.on(t), OnSubscribed: func(e client.SubscribedEvent) { events <- e }})
			if err != nil {
				t.Fatal(err)
			}
			if e := <-events; !e.Filtered {
				t.Fatalf("subscribed event %+v: not filtered", e)
			}
			// The same filter spelled otherwise.
			c3 := dial(t, ts, &client.Options{Transport: tr})
			var same seqs
			if _, err := c3.Subscribe(ctxT(t), ch, client.SubscribeOptions{Filter: `(kind=="a" && n>=3.0) || kind in ("z")`, OnPublication: same.on(t)}); err != nil {
				t.Fatal(err)
			}
			var want []int
			for i := 1; i <= 12; i++ {
				ts.publishTagged(t, ch, i, tags(i))
				if match(i) {
					want = append(want, i)
				}
			}
			eventually(t, 10*time.Second, "every publication", func() bool { return len(all.get()) == 12 })
			eventually(t, 10*time.Second, "the matching publications", func() bool { return len(some.get()) >= len(want) })
			if got := some.get(); !slices.Equal(got, want) {
				t.Fatalf("filtered subscriber got %v, want %v", got, want)
			}
			eventually(t, 10*time.Second, "the matching publications, same filter", func() bool { return len(same.get()) >= len(want) })
			if got := same.get(); !slices.Equal(got, want) {
				t.Fatalf("subscriber with the same filter got %v, want %v", got, want)
			}
			// Two subscriptions, one filter: one evaluation per publication.
			if n := metric(t, ts, "herald_filter_evaluations_total"); n != 12 {
				t.Errorf("herald_filter_evaluations_total %v after 12 publications, want 12", n)
			}
			if len(events) != 0 {
				t.Fatalf("the filtered subscriber subscribed again (%+v): a skipped offset taken for a gap", <-events)
			}

			// Recovery from offset 2 applies the filter.
			c2 := dial(t, ts, &client.Options{Transport: tr})
			var rec seqs
			ev2 := make(chan client.SubscribedEvent, 1)
			from, _ := s.Position()
			from.Offset = 2
			if _, err := c2.Subscribe(ctxT(t), ch, client.SubscribeOptions{Filter: flt, Since: &from, OnPublication: rec.on(t), OnSubscribed: func(e client.SubscribedEvent) { ev2 <- e }}); err != nil {
				t.Fatal(err)
			}
			if e := <-ev2; !e.Recovered || !e.Filtered {
				t.Fatalf("recovery %+v: want recovered and filtered", e)
			}
			eventually(t, 10*time.Second, "the recovered publications", func() bool { return len(rec.get()) >= len(want) })
			if got := rec.get(); !slices.Equal(got, want) {
				t.Fatalf("recovered %v, want %v", got, want)
			}

			// History with the filter.
			pubs, _, err := c2.History(ctxT(t), ch, client.HistoryOptions{Limit: -1, Filter: flt})
			if err != nil {
				t.Fatal(err)
			}
			var hist []int
			for _, p := range pubs {
				hist = append(hist, seqOf(t, p.Data))
			}
			if !slices.Equal(hist, want) {
				t.Fatalf("history with the filter: %v, want %v", hist, want)
			}
			_, _, err = c2.History(ctxT(t), ch, client.HistoryOptions{Filter: `n >`})
			var he *protocol.Error
			if !errors.As(err, &he) || he.Code != protocol.ErrBadFilter {
				t.Fatalf("history with a bad filter: %v, want error %d", err, protocol.ErrBadFilter)
			}

			// A bad filter is refused with 118, and the connection lives on.
			_, err = c2.Subscribe(ctxT(t), "f:2", client.SubscribeOptions{Filter: `kind == `})
			var pe *protocol.Error
			if !errors.As(err, &pe) || pe.Code != protocol.ErrBadFilter {
				t.Fatalf("bad filter: %v, want error %d", err, protocol.ErrBadFilter)
			}
			if _, err := c2.Subscribe(ctxT(t), "f:2", client.SubscribeOptions{}); err != nil {
				t.Fatalf("subscribe after a refused filter: %v", err)
			}
		})
	}
}
