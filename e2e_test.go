package herald_test

import (
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

func TestPubSubManyClients(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"epoll", "goroutine"} {
		for _, binary := range []bool{false, true} {
			name := engine + "/json"
			if binary {
				name = engine + "/msgpack"
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				cfg := devConfig()
				cfg.Engine = engine
				ts := startServer(t, cfg)
				const clients, msgs = 20, 100
				var mu sync.Mutex
				got := make([][]int, clients)
				for i := 0; i < clients; i++ {
					c := dial(t, ts, &client.Options{Binary: binary})
					i := i
					_, err := c.Subscribe(ctxT(t), "room:1", client.SubscribeOptions{OnPublication: func(p client.Publication) {
						mu.Lock()
						got[i] = append(got[i], seqOf(t, p.Data))
						mu.Unlock()
					}})
					if err != nil {
						t.Fatal(err)
					}
				}
				pub := dial(t, ts, nil)
				for i := 1; i <= msgs; i++ {
					if i%2 == 0 {
						ts.publish(t, "room:1", seqData(i))
					} else if _, err := pub.Publish(ctxT(t), "room:1", []byte(`{"seq":`+itoa(i)+`}`), nil); err != nil {
						t.Fatal(err)
					}
				}
				eventually(t, 10*time.Second, "every client to get every message", func() bool {
					mu.Lock()
					defer mu.Unlock()
					for _, g := range got {
						if len(g) < msgs {
							return false
						}
					}
					return true
				})
				mu.Lock()
				defer mu.Unlock()
				for i, g := range got {
					for j, seq := range g {
						if seq != j+1 {
							t.Fatalf("client %d message %d has seq %d", i, j, seq)
						}
					}
				}
			})
		}
	}
}

func itoa(i int) string {
	b := []byte{}
	if i == 0 {
		return "0"
	}
	for i > 0 {
		b = append([]byte{byte('0' + i%10)}, b...)
		i /= 10
	}
	return string(b)
}

// TestRecoveryUnderRandomDisconnects publishes 1,000 sequence-numbered
// messages while the subscriber's connection is cut 50 times; the
// subscriber must see every message once, in order.
func TestRecoveryUnderRandomDisconnects(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			testRecoveryUnderRandomDisconnects(t, tr)
		})
	}
}

func testRecoveryUnderRandomDisconnects(t *testing.T, transport string) {
	ts := startServer(t, devConfig())
	const total, cuts = 1000, 50
	var mu sync.Mutex
	var seqs []int
	recovered, resubscribed := 0, 0
	sub := dial(t, ts, &client.Options{Token: token(t, "victim", 0), Transport: transport})
	_, err := sub.Subscribe(ctxT(t), "feed:1", client.SubscribeOptions{
		OnPublication: func(p client.Publication) {
			mu.Lock()
			seqs = append(seqs, seqOf(t, p.Data))
			mu.Unlock()
		},
		OnSubscribed: func(e client.SubscribedEvent) {
			mu.Lock()
			resubscribed++
			if e.WasRecovering && e.Recovered {
				recovered++
			}
			if e.WasRecovering && !e.Recovered {
				t.Errorf("recovery failed at %+v", e.Position)
			}
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	// Cut the connection 50 times at random points; after each cut a few
	// messages are published while the client is away, then the test waits
	// for it to come back before the next cut.
	cutAt := map[int]bool{}
	for len(cutAt) < cuts {
		at := 1 + rand.IntN(total-20)
		if !cutAt[at-4] && !cutAt[at-3] && !cutAt[at-2] && !cutAt[at-1] && !cutAt[at+1] && !cutAt[at+2] && !cutAt[at+3] && !cutAt[at+4] {
			cutAt[at] = true
		}
	}
	subscribes := func() int { mu.Lock(); defer mu.Unlock(); return resubscribed }
	waitFor := -1
	for i := 1; i <= total; i++ {
		if cutAt[i] {
			waitFor = subscribes() + 1
			var res map[string]any
			if code := ts.api(t, "disconnect", map[string]any{"user": "victim", "code": 4000, "reason": "test cut"}, &res); code != 200 {
				t.Fatalf("disconnect: HTTP %d %v", code, res)
			}
		}
		ts.publish(t, "feed:1", seqData(i))
		if waitFor > 0 && (cutAt[i-3] || i == total) {
			eventually(t, 10*time.Second, "resubscription after a cut", func() bool { return subscribes() >= waitFor })
			waitFor = -1
		}
	}
	eventually(t, 30*time.Second, "all messages", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(seqs) >= total
	})
	mu.Lock()
	defer mu.Unlock()
	for i, s := range seqs {
		if s != i+1 {
			t.Fatalf("message %d has seq %d (gap or duplicate)", i, s)
		}
	}
	if len(seqs) != total {
		t.Fatalf("%d messages, want %d", len(seqs), total)
	}
	if recovered != cuts {
		t.Fatalf("%d recoveries, want one per cut (%d)", recovered, cuts)
	}
	t.Logf("%d messages, %d subscribes, %d recovered", len(seqs), resubscribed, recovered)
}

func TestRecoveryOutsideWindow(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr, func(t *testing.T) {
			t.Parallel()
			testRecoveryOutsideWindow(t, tr)
		})
	}
}

func testRecoveryOutsideWindow(t *testing.T, transport string) {
	cfg := devConfig()
	cfg.Namespaces[0].HistorySize = 10
	ts := startServer(t, cfg)
	c := dial(t, ts, &client.Options{Transport: transport})
	ts.publish(t, "w:1", seqData(1))
	s, err := c.Subscribe(ctxT(t), "w:1", client.SubscribeOptions{OnPublication: func(client.Publication) {}})
	if err != nil {
		t.Fatal(err)
	}
	pos, ok := s.Position()
	if !ok || pos.Offset != 1 {
		t.Fatalf("position %+v %v", pos, ok)
	}
	c.Close()
	for i := 2; i <= 30; i++ {
		ts.publish(t, "w:1", seqData(i))
	}
	events := make(chan client.SubscribedEvent, 1)
	c2 := dial(t, ts, &client.Options{Transport: transport})
	var got []int
	var mu sync.Mutex
	_, err = c2.Subscribe(ctxT(t), "w:1", client.SubscribeOptions{
		Since:         &pos,
		OnSubscribed:  func(e client.SubscribedEvent) { events <- e },
		OnPublication: func(p client.Publication) { mu.Lock(); got = append(got, seqOf(t, p.Data)); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	e := <-events
	if !e.WasRecovering || e.Recovered || e.Position.Offset != 30 {
		t.Fatalf("event %+v: want was_recovering, not recovered, offset 30", e)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 0 {
		t.Fatalf("got %d publications with a failed recovery", len(got))
	}

	// Within the window: exactly the missed ones.
	c3 := dial(t, ts, &client.Options{Transport: transport})
	from := e.Position
	from.Offset = 25
	var got3 []int
	var mu3 sync.Mutex
	events3 := make(chan client.SubscribedEvent, 1)
	if _, err := c3.Subscribe(ctxT(t), "w:1", client.SubscribeOptions{
		Since:         &from,
		OnSubscribed:  func(e client.SubscribedEvent) { events3 <- e },
		OnPublication: func(p client.Publication) { mu3.Lock(); got3 = append(got3, seqOf(t, p.Data)); mu3.Unlock() },
	}); err != nil {
		t.Fatal(err)
	}
	if e := <-events3; !e.Recovered {
		t.Fatalf("recovery within the window failed: %+v", e)
	}
	mu3.Lock()
	defer mu3.Unlock()
	if len(got3) != 5 || got3[0] != 26 || got3[4] != 30 {
		t.Fatalf("recovered %v, want 26..30", got3)
	}

	// Epoch changed: not recovered.
	c4 := dial(t, ts, &client.Options{Transport: transport})
	bad := from
	bad.Epoch = "other"
	events4 := make(chan client.SubscribedEvent, 1)
	if _, err := c4.Subscribe(ctxT(t), "w:1", client.SubscribeOptions{Since: &bad, OnSubscribed: func(e client.SubscribedEvent) { events4 <- e }, OnPublication: func(client.Publication) {}}); err != nil {
		t.Fatal(err)
	}
	if e := <-events4; e.Recovered || !e.WasRecovering {
		t.Fatalf("recovered across an epoch change: %+v", e)
	}
}
