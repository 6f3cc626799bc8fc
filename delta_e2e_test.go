package herald_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// deltaDocs returns n JSON documents of about 1 KiB, each the previous one
// with a few fields changed: the workload delta compression is for.
func deltaDocs(r *rand.Rand, n int) [][]byte {
	type item struct {
		ID    int     `json:"id"`
		Name  string  `json:"name"`
		Price float64 `json:"price"`
		Qty   int     `json:"qty"`
	}
	doc := struct {
		Seq     int    `json:"seq"`
		Updated int64  `json:"updated"`
		Status  string `json:"status"`
		Items   []item `json:"items"`
		Note    string `json:"note"`
	}{Status: "open", Note: strings.Repeat("unchanged text ", 8)}
	for i := range 12 {
		doc.Items = append(doc.Items, item{ID: i, Name: fmt.Sprintf("item-%02d", i), Price: float64(r.IntN(10000)) / 100, Qty: r.IntN(100)})
	}
	out := make([][]byte, n)
	for i := range out {
		doc.Seq = i + 1
		doc.Updated = 1_700_000_000_000 + int64(i)*250
		for k := r.IntN(3) + 1; k > 0; k-- {
			it := &doc.Items[r.IntN(len(doc.Items))]
			it.Price = float64(r.IntN(10000)) / 100
			it.Qty = r.IntN(100)
		}
		if r.IntN(10) == 0 {
			doc.Status = []string{"open", "held", "closed"}[r.IntN(3)]
		}
		out[i], _ = json.Marshal(doc)
	}
	return out
}

// deltaConfig is devConfig with a namespace "d" that has deltas on.
func deltaConfig() herald.Config {
	cfg := devConfig()
	d := cfg.Namespaces[0]
	d.Name, d.Delta = "d", true
	cfg.Namespaces = append(cfg.Namespaces, d)
	return cfg
}

type dataLog struct {
	mu   sync.Mutex
	data [][]byte
	offs []uint64
}

func (l *dataLog) on(p client.Publication) {
	l.mu.Lock()
	l.data = append(l.data, p.Data)
	l.offs = append(l.offs, p.Offset)
	l.mu.Unlock()
}

func (l *dataLog) len() int { l.mu.Lock(); defer l.mu.Unlock(); return len(l.data) }

// check fails unless the log holds exactly docs, in order.
func (l *dataLog) check(t *testing.T, who string, docs [][]byte) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.data) != len(docs) {
		t.Fatalf("%s: %d publications, want %d", who, len(l.data), len(docs))
	}
	for i := range docs {
		if !bytes.Equal(l.data[i], docs[i]) {
			t.Fatalf("%s: publication %d (offset %d): data differs from what was published", who, i, l.offs[i])
		}
	}
}

// TestDeltaSubscription: with the Go SDK, subscribers that ask for deltas
// in a namespace with deltas on get every publication's full data (the
// SDK applies the deltas), the server computes one delta per publication
// whatever the number of delta subscribers, and sends most publications
// as deltas; a subscriber that does not ask, and one in a namespace
// without deltas, get full publications. Then a delta subscriber loses
// its connection while publications go on: it recovers them and goes on
// with deltas, its data still equal to what was published.
func TestDeltaSubscription(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			ts := startServer(t, deltaConfig())
			const ch = "d:doc"
			var d1, d2, plain, other dataLog
			events := make(chan client.SubscribedEvent, 16)
			sub := func(c *client.Client, ch string, delta bool, l *dataLog) {
				t.Helper()
				if _, err := c.Subscribe(ctxT(t), ch, client.SubscribeOptions{Delta: delta, OnPublication: l.on, OnSubscribed: func(e client.SubscribedEvent) { events <- e }}); err != nil {
					t.Fatal(err)
				}
				if e := <-events; e.Delta != (delta && strings.HasPrefix(ch, "d:")) {
					t.Fatalf("%s: subscribed event Delta %v", ch, e.Delta)
				}
			}
			victim := dial(t, ts, &client.Options{Transport: tr, Token: token(t, "victim", time.Hour)})
			sub(victim, ch, true, &d1)
			sub(dial(t, ts, &client.Options{Transport: tr}), ch, true, &d2)
			sub(dial(t, ts, &client.Options{Transport: tr}), ch, false, &plain)
			sub(dial(t, ts, &client.Options{Transport: tr}), "nodelta", true, &other)

			docs := deltaDocs(rand.New(rand.NewPCG(1, 2)), 60)
			publish := func(from, to int) {
				for i := from; i < to; i++ {
					ts.publish(t, ch, json.RawMessage(docs[i]))
					ts.publish(t, "nodelta", json.RawMessage(docs[i]))
				}
			}
			publish(0, 30)
			eventually(t, 10*time.Second, "30 publications everywhere", func() bool {
				return d1.len() == 30 && d2.len() == 30 && plain.len() == 30 && other.len() == 30
			})
			// One delta per publication after the first, shared by both
			// delta subscribers.
			if n := metric(t, ts, "herald_deltas_total"); n != 29 {
				t.Fatalf("herald_deltas_total %v, want 29", n)
			}
			if n := metric(t, ts, "herald_delta_frames_total"); n != 2*29 {
				t.Fatalf("herald_delta_frames_total %v, want 58", n)
			}

			// Cut the victim's connection; publish while it is away.
			var res map[string]any
			if code := ts.api(t, "disconnect", map[string]any{"user": "victim", "code": 4000, "reason": "test cut"}, &res); code != 200 {
				t.Fatalf("disconnect: HTTP %d %v", code, res)
			}
			publish(30, 40)
			eventually(t, 10*time.Second, "the victim's resubscription", func() bool {
				select {
				case e := <-events:
					if !e.Recovered || !e.Delta {
						t.Fatalf("resubscribed: %+v", e)
					}
					return true
				default:
					return false
				}
			})
			publish(40, 60)
			eventually(t, 10*time.Second, "60 publications everywhere", func() bool {
				return d1.len() == 60 && d2.len() == 60 && plain.len() == 60 && other.len() == 60
			})
			d1.check(t, "delta subscriber that reconnected", docs)
			d2.check(t, "delta subscriber", docs)
			plain.check(t, "subscriber without deltas", docs)
			other.check(t, "namespace without deltas", docs)
			// d2 got 59 deltas; the victim fewer: the first live one after
			// its resubscription came full, then deltas again.
			n := metric(t, ts, "herald_delta_frames_total")
			if n < 59+40 || n > 59+57 {
				t.Fatalf("herald_delta_frames_total %v, want between 99 and 116", n)
			}
		})
	}
}

// TestDeltaBadFormat: a subscribe that asks for an unknown delta format
// is refused with 107 (bad request); the connection goes on, and the
// known format is granted.
func TestDeltaBadFormat(t *testing.T) {
	t.Parallel()
	ts := startServer(t, deltaConfig())
	r := dialRaw(t, ts)
	r.connect("")
	r.send(`{"id":2,"subscribe":{"channel":"d:x","delta":"vcdiff"}}`)
	if m := r.next(); m.Error == nil || m.Error.Code != protocol.ErrBadRequest {
		t.Fatalf("subscribe with delta vcdiff: %+v, want error 107", m)
	}
	r.send(`{"id":3,"subscribe":{"channel":"d:x","delta":"fossil"}}`)
	if m := r.next(); m.Error != nil || m.Subscribe == nil || !m.Subscribe.Delta {
		t.Fatalf("subscribe with delta fossil: %+v, want delta granted", m)
	}
}
