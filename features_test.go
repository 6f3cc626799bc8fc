package herald_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

func TestPresenceJoinLeave(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	var mu sync.Mutex
	var joins, leaves []string
	alice := dial(t, ts, &client.Options{Token: token(t, "alice", 0)})
	if _, err := alice.Subscribe(ctxT(t), "chat:1", client.SubscribeOptions{
		OnPublication: func(client.Publication) {},
		OnJoin:        func(i client.ClientInfo) { mu.Lock(); joins = append(joins, i.User); mu.Unlock() },
		OnLeave:       func(i client.ClientInfo) { mu.Lock(); leaves = append(leaves, i.User); mu.Unlock() },
	}); err != nil {
		t.Fatal(err)
	}
	bob := dial(t, ts, &client.Options{Token: token(t, "bob", 0)})
	if _, err := bob.Subscribe(ctxT(t), "chat:1", client.SubscribeOptions{OnPublication: func(client.Publication) {}}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "bob's join", func() bool {
		mu.Lock()
		defer mu.Unlock()
		for _, j := range joins {
			if j == "bob" {
				return true
			}
		}
		return false
	})
	members, err := alice.Presence(ctxT(t), "chat:1")
	if err != nil {
		t.Fatal(err)
	}
	users := map[string]bool{}
	for id, m := range members {
		if id != m.Client {
			t.Fatalf("presence key %q for client %q", id, m.Client)
		}
		users[m.User] = true
	}
	if len(members) != 2 || !users["alice"] || !users["bob"] {
		t.Fatalf("presence %+v", members)
	}
	if c, u, err := alice.PresenceStats(ctxT(t), "chat:1"); err != nil || c != 2 || u != 2 {
		t.Fatalf("stats %d %d %v", c, u, err)
	}
	var apiStats map[string]int
	ts.api(t, "presence_stats", map[string]string{"channel": "chat:1"}, &apiStats)
	if apiStats["num_clients"] != 2 {
		t.Fatalf("api presence_stats %v", apiStats)
	}
	// A client that goes away leaves presence and a leave is sent.
	bob.Close()
	eventually(t, 5*time.Second, "bob's leave", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(leaves) == 1 && leaves[0] == "bob"
	})
	eventually(t, 5*time.Second, "presence without bob", func() bool {
		m, err := alice.Presence(ctxT(t), "chat:1")
		return err == nil && len(m) == 1
	})
}

func TestIdempotentPublish(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	c := dial(t, ts, nil)
	var mu sync.Mutex
	var got []client.Publication
	if _, err := c.Subscribe(ctxT(t), "idem:1", client.SubscribeOptions{OnPublication: func(p client.Publication) {
		mu.Lock()
		got = append(got, p)
		mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	p1, err := c.Publish(ctxT(t), "idem:1", []byte(`{"seq":1}`), &client.PublishOptions{IdempotencyKey: "order-17"})
	if err != nil {
		t.Fatal(err)
	}
	p2, err := c.Publish(ctxT(t), "idem:1", []byte(`{"seq":1}`), &client.PublishOptions{IdempotencyKey: "order-17"})
	if err != nil || p2 != p1 {
		t.Fatalf("retry: %+v %v, want %+v", p2, err, p1)
	}
	var res struct {
		Offset uint64 `json:"offset"`
	}
	for i := 0; i < 2; i++ {
		ts.api(t, "publish", map[string]any{"channel": "idem:1", "data": map[string]int{"seq": 2}, "idempotency_key": "order-18"}, &res)
		if res.Offset != p1.Offset+1 {
			t.Fatalf("api publish %d got offset %d", i, res.Offset)
		}
	}
	ts.publish(t, "idem:1", seqData(3))
	eventually(t, 5*time.Second, "3 publications", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 3 })
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 3 {
		t.Fatalf("%d publications delivered, want 3", len(got))
	}
	for i, p := range got {
		if seqOf(t, p.Data) != i+1 {
			t.Fatalf("publication %d: %s", i, p.Data)
		}
	}
}

// TestSlowClient fills a subscriber's queue under each policy while fast
// subscribers must get everything.
func TestSlowClient(t *testing.T) {
	t.Parallel()
	for _, policy := range []string{"disconnect", "drop"} {
		t.Run(policy, func(t *testing.T) {
			t.Parallel()
			cfg := devConfig()
			cfg.Namespaces[0].SlowPolicy = policy
			// Room for 32 of the 32 KiB messages: the fast clients (Go
			// SDK in this process, slow under -race) keep up, and the slow
			// one, which never reads, overflows: 25 MiB are published,
			// more than loopback socket buffers hold.
			cfg.QueueMaxBytes = 1 << 20
			cfg.QueueMaxMessages = 64
			// The slow client answers no ping while it does not read: no
			// ping in the test's time, or a slow run ends it with 3004.
			cfg.PingInterval = 10 * time.Minute
			ts := startServer(t, cfg)
			const fast, msgs = 3, 800
			var mu sync.Mutex
			counts := make([]int, fast)
			for i := 0; i < fast; i++ {
				c := dial(t, ts, nil)
				i := i
				if _, err := c.Subscribe(ctxT(t), "slow:1", client.SubscribeOptions{OnPublication: func(p client.Publication) {
					mu.Lock()
					if seqOf(t, p.Data) == counts[i]+1 {
						counts[i]++
					}
					mu.Unlock()
				}}); err != nil {
					t.Fatal(err)
				}
			}
			slow := dialRaw(t, ts)
			slow.connect("")
			slow.send(`{"id":2,"subscribe":{"channel":"slow:1"}}`)
			if m := slow.next(); m.Subscribe == nil {
				t.Fatalf("slow subscribe: %+v", m)
			}
			pad := strings.Repeat("x", 32<<10)
			for i := 1; i <= msgs; i++ {
				ts.api(t, "publish", map[string]any{"channel": "slow:1", "data": json.RawMessage(`{"seq":` + itoa(i) + `,"pad":"` + pad + `"}`)}, nil)
			}
			eventually(t, 20*time.Second, "fast clients to get every message in order", func() bool {
				mu.Lock()
				defer mu.Unlock()
				for _, n := range counts {
					if n != msgs {
						return false
					}
				}
				return true
			})
			switch policy {
			case "disconnect":
				// The slow client reads its backlog: the server has closed it,
				// with 3002 if the close frame fitted in the socket buffer
				// (and its disconnect push, if that fitted, says 3002 too).
				code, push, ok := slow.tryCloseCode()
				if ok && (code != protocol.DisconnectSlow || push == nil || !push.Reconnect) {
					t.Fatalf("slow client: close %d push %+v", code, push)
				}
				if push != nil && (push.Code != protocol.DisconnectSlow || !push.Reconnect) {
					t.Fatalf("slow client: disconnect push %+v (close frame seen: %v)", push, ok)
				}
			case "drop":
				// The slow client is still connected; reading now it sees
				// increasing offsets with a jump marked gap.
				var last uint64
				gaps := 0
				for last < msgs {
					m := slow.next()
					if m.Pub == nil {
						continue
					}
					if m.Pub.Offset <= last {
						t.Fatalf("offset %d after %d", m.Pub.Offset, last)
					}
					if m.Pub.Offset != last+1 {
						if !m.Pub.Gap {
							t.Fatalf("jump from %d to %d without gap mark", last, m.Pub.Offset)
						}
						gaps++
					}
					last = m.Pub.Offset
				}
				if gaps == 0 {
					t.Fatal("no publication was dropped: the queue never filled")
				}
			}
			body := metrics(t, ts)
			if policy == "disconnect" && !regexp.MustCompile(`(?m)^herald_slow_disconnects_total [1-9]`).MatchString(body) {
				m := regexp.MustCompile(`(?m)^herald_slow_disconnects_total .*$`).FindString(body)
				t.Errorf("metrics do not count the slow disconnect: %q", m)
			}
		})
	}
}

func metrics(t testing.TB, ts *testServer) string {
	resp, err := http.Get("http://" + ts.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestDrain shuts a server down with clients connected: each gets 3000 with
// a reconnect hint within the drain window, after every queued message.
func TestDrain(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.DrainTimeout = 2 * time.Second
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv}
	ln := listen(t)
	ts.addr = ln.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()

	const n = 10
	var mu sync.Mutex
	events := map[int]client.DisconnectEvent{}
	received := make([]int, n)
	for i := 0; i < n; i++ {
		i := i
		c := dial(t, ts, &client.Options{OnDisconnect: func(e client.DisconnectEvent) {
			mu.Lock()
			if _, ok := events[i]; !ok {
				events[i] = e
			}
			mu.Unlock()
		}})
		if _, err := c.Subscribe(ctxT(t), "drain:1", client.SubscribeOptions{OnPublication: func(client.Publication) {
			mu.Lock()
			received[i]++
			mu.Unlock()
		}}); err != nil {
			t.Fatal(err)
		}
	}
	for i := 1; i <= 200; i++ {
		ts.publish(t, "drain:1", seqData(i))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; err != herald.ErrServerClosed {
		t.Fatalf("Serve returned %v", err)
	}
	t.Logf("drain took %v", time.Since(start))
	// Shutdown returns once the server is done; each client reports its
	// disconnect when it has read the close, which may come just after.
	eventually(t, 5*time.Second, "every client's disconnect event", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(events) == n
	})
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		e, ok := events[i]
		if !ok || e.Code != protocol.DisconnectShutdown || !e.Reconnect || e.ReconnectAfter > cfg.DrainTimeout {
			t.Errorf("client %d: disconnect %+v (seen %v)", i, e, ok)
		}
		if received[i] != 200 {
			t.Errorf("client %d got %d of 200 messages before the drain", i, received[i])
		}
	}
	resp, err := http.Get("http://" + ts.addr + "/readyz")
	if err == nil {
		resp.Body.Close()
		t.Fatalf("listener still open after Shutdown: %d", resp.StatusCode)
	}
}
