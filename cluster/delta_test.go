package cluster_test

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// deltaLog records what a delta subscriber was given: the data of each
// publication by offset, in order, and its subscribed events.
type deltaLog struct {
	name string
	c    *client.Client

	mu   sync.Mutex
	offs []uint64
	data [][]byte
	subs []client.SubscribedEvent
}

func (l *deltaLog) last() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.offs) == 0 {
		return 0
	}
	return l.offs[len(l.offs)-1]
}

// subscribeDelta connects a client to url and subscribes it to ch with
// delta compression asked for.
func subscribeDelta(t *testing.T, name, url, ch string) *deltaLog {
	t.Helper()
	l := &deltaLog{name: name}
	l.c = dial(t, url, nil)
	_, err := l.c.Subscribe(ctxTimeout(t, 10*time.Second), ch, client.SubscribeOptions{
		Delta: true,
		OnSubscribed: func(e client.SubscribedEvent) {
			l.mu.Lock()
			l.subs = append(l.subs, e)
			l.mu.Unlock()
		},
		OnPublication: func(p client.Publication) {
			l.mu.Lock()
			l.offs = append(l.offs, p.Offset)
			l.data = append(l.data, bytes.Clone(p.Data))
			l.mu.Unlock()
		},
	})
	if err != nil {
		t.Fatalf("%s: subscribe %s: %v", name, ch, err)
	}
	return l
}

// testDeltas: delta subscribers on every node of a channel that clients
// of all three nodes publish into at once (so that the broker appends
// them in groups) get every publication's exact data, in offset order,
// and the nodes send most of them as deltas. A delta subscriber of node 0
// loses its connection halfway and reconnects to another node: it
// recovers what it missed and goes on, its data still exact.
func testDeltas(t *testing.T, c *testCluster) {
	ch := "d:doc-" + randomHex(4)
	var logs []*deltaLog
	for _, n := range c.nodes {
		logs = append(logs, subscribeDelta(t, "delta subscriber on "+n.name, n.url(), ch))
	}
	c.lb.pin(0)
	mover := subscribeDelta(t, "delta subscriber moved from node 0", c.lb.URL(), ch)
	c.lb.unpin()
	logs = append(logs, mover)
	for _, l := range logs {
		l.mu.Lock()
		granted := len(l.subs) == 1 && l.subs[0].Delta
		l.mu.Unlock()
		if !granted {
			t.Fatalf("%s: deltas not granted: %+v", l.name, l.subs)
		}
	}
	before := make([]float64, len(c.nodes))
	for i, n := range c.nodes {
		before[i], _ = n.metric("herald_delta_frames_total", "")
	}

	// Documents of about 1 KiB that differ from one another in a few
	// bytes: what delta compression is for.
	body := strings.Repeat("the same text in every document; ", 32)
	const each = 100
	published := make(map[string]bool)
	var pmu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, len(c.nodes))
	var halfway sync.Once
	half := make(chan struct{})
	var count int
	for i, n := range c.nodes {
		pc := dial(t, n.url(), nil)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= each; k++ {
				data := fmt.Appendf(nil, `{"from":%d,"k":%d,"price":%d.%02d,"body":%q}`, i, k, 100+(i*7+k*13)%50, (k*37)%100, body)
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := pc.Publish(ctx, ch, data, nil)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("publisher on %s: publish %d: %v", n.name, k, err)
					return
				}
				pmu.Lock()
				published[string(data)] = true
				count++
				if count == len(c.nodes)*each/2 {
					halfway.Do(func() { close(half) })
				}
				pmu.Unlock()
			}
		}()
	}
	<-half
	c.lb.setDown(0, true)
	defer c.lb.setDown(0, false)
	c.lb.cut(0)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := uint64(len(c.nodes) * each)
	checkFor(t, 15*time.Second, "every publication at every delta subscriber", func() error {
		for _, l := range logs {
			if off := l.last(); off != total {
				return fmt.Errorf("%s at offset %d, want %d", l.name, off, total)
			}
		}
		return nil
	})

	first := logs[0]
	for _, l := range logs {
		l.mu.Lock()
		offs, data, subs := l.offs, l.data, l.subs
		l.mu.Unlock()
		if len(offs) != int(total) {
			t.Fatalf("%s: %d publications, want %d", l.name, len(offs), total)
		}
		seen := make(map[string]bool)
		for i, off := range offs {
			if off != uint64(i+1) {
				t.Fatalf("%s: offset %d at position %d", l.name, off, i+1)
			}
			if !published[string(data[i])] {
				t.Fatalf("%s: offset %d: data is not a published document (%d bytes): %.80q", l.name, off, len(data[i]), data[i])
			}
			if seen[string(data[i])] {
				t.Fatalf("%s: offset %d: a document given twice", l.name, off)
			}
			seen[string(data[i])] = true
			if l != first && !bytes.Equal(data[i], first.data[i]) {
				t.Fatalf("%s: offset %d: data differs from %s's", l.name, off, first.name)
			}
		}
		if l != mover && len(subs) != 1 {
			// A delta the client cannot apply makes it subscribe again.
			t.Fatalf("%s: subscribed events %+v, want one", l.name, subs)
		}
		if l == mover {
			if len(subs) < 2 || !subs[len(subs)-1].Recovered || !subs[len(subs)-1].Delta {
				t.Fatalf("%s: subscribed events %+v, want a recovered resubscription with deltas", l.name, subs)
			}
		}
	}
	if n := c.lb.count(); n[0] != 0 {
		t.Errorf("connections per node %v: the moved subscriber is still on node 0", n)
	}
	// Each node has at least one delta subscriber for the whole run: it
	// sends most publications to it as deltas (the first, every 100th of
	// the channel and one after a gap go full).
	for i, n := range c.nodes {
		after, ok := n.metric("herald_delta_frames_total", "")
		if !ok {
			t.Fatalf("%s: no herald_delta_frames_total", n.name)
		}
		got := after - before[i]
		if got < float64(total)*2/3 {
			t.Errorf("%s: %v publication frames sent as deltas, want most of %d", n.name, got, total)
		}
		t.Logf("%s: %v publication frames sent as deltas", n.name, got)
	}
}
