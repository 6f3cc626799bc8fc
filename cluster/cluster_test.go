package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/protocol"
)

// TestNATS runs three nodes on the shared NATS server.
func TestNATS(t *testing.T) {
	t.Parallel()
	testBroker(t, sharedNATS)
}

// TestRedis runs three nodes on the shared Redis.
func TestRedis(t *testing.T) {
	t.Parallel()
	testBroker(t, sharedRedis)
}

func testBroker(t *testing.T, newBackend func(*testing.T) backend) {
	t.Run("cluster", func(t *testing.T) {
		t.Parallel()
		be := newBackend(t)
		c := startCluster(t, 3, nodeConfig(t, be.yaml), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
		// The subtests share the cluster; only the reconnect test uses
		// the balancer.
		t.Run("exchange", func(t *testing.T) { t.Parallel(); testExchange(t, c) })
		t.Run("presence", func(t *testing.T) { t.Parallel(); testPresence(t, c) })
		t.Run("reconnect to another node", func(t *testing.T) { t.Parallel(); testReconnectElsewhere(t, c) })
		t.Run("connections per user", func(t *testing.T) { t.Parallel(); testUserLimit(t, c) })
		t.Run("acknowledged elsewhere", func(t *testing.T) { t.Parallel(); testAckedElsewhere(t, c) })
		t.Run("deltas", func(t *testing.T) { t.Parallel(); testDeltas(t, c) })
	})
	t.Run("node killed", func(t *testing.T) {
		t.Parallel()
		be := newBackend(t)
		c := startCluster(t, 3, nodeConfig(t, be.yaml), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
		testNodeKilled(t, c)
	})
}

// testExchange: a client on each node publishes while all three are
// subscribed; each receives every publication, in the same offset order,
// and each publisher's own in the order it published them.
func testExchange(t *testing.T, c *testCluster) {
	ch := "exchange-" + randomHex(4)
	var subs []*subscriber
	for _, n := range c.nodes {
		subs = append(subs, subscribe(t, "client on "+n.name, n.url(), ch))
	}
	const each = 30
	var wg sync.WaitGroup
	errs := make(chan error, len(subs))
	for i, s := range subs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := 1; k <= each; k++ {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, err := s.c.Publish(ctx, ch, fmt.Appendf(nil, `{"n":%d}`, (i+1)*1000+k), nil)
				cancel()
				if err != nil {
					errs <- fmt.Errorf("%s: publish %d: %v", s.name, k, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	total := each * len(subs)
	checkFor(t, 10*time.Second, "every publication everywhere", func() error {
		for _, s := range subs {
			if pos := s.position(); pos.Offset != uint64(total) {
				return fmt.Errorf("%s at offset %d, want %d", s.name, pos.Offset, total)
			}
		}
		return nil
	})
	var first []int
	for i, s := range subs {
		s.mu.Lock()
		events := append([]event(nil), s.events...)
		s.mu.Unlock()
		var seq []int
		for k, e := range events {
			if e.sub != nil {
				if k != 0 {
					t.Errorf("%s resubscribed: %+v", s.name, *e.sub)
				}
				continue
			}
			if e.off != uint64(len(seq)+1) {
				t.Fatalf("%s: offset %d at position %d", s.name, e.off, len(seq)+1)
			}
			seq = append(seq, e.n)
		}
		if i == 0 {
			first = seq
			last := map[int]int{}
			for _, n := range seq {
				from, k := n/1000, n%1000
				if k != last[from]+1 {
					t.Fatalf("publisher %d: publication %d after %d", from, k, last[from])
				}
				last[from] = k
			}
			if len(seq) != total {
				t.Fatalf("%d publications, want %d", len(seq), total)
			}
		} else if !slices.Equal(seq, first) {
			t.Fatalf("%s received another order than %s:\n%v\n%v", s.name, subs[0].name, seq, first)
		}
	}
}

// testPresence: every node reports the same members, wherever they are
// connected, and a member that leaves is gone from every node's answer.
func testPresence(t *testing.T, c *testCluster) {
	ch := "presence-" + randomHex(4)
	var subs []*subscriber
	var ids []string
	for _, n := range c.nodes {
		for k := 0; k < 2; k++ {
			s := subscribe(t, fmt.Sprintf("client %d on %s", k, n.name), n.url(), ch)
			subs = append(subs, s)
			ids = append(ids, s.c.ID())
		}
	}
	c.samePresence(t, ch, ids, 5*time.Second)
	// Stats agree with the list.
	for _, n := range c.nodes {
		var st struct {
			N int `json:"num_clients"`
		}
		if err := n.api("presence_stats", map[string]string{"channel": ch}, &st); err != nil || st.N != len(ids) {
			t.Errorf("%s: presence_stats %d, %v; want %d", n.name, st.N, err, len(ids))
		}
	}
	subs[2].c.Close() // the first client of node 1 leaves
	defer func() {
		if t.Failed() {
			for i, s := range subs {
				s.mu.Lock()
				t.Logf("%s: id %s then %s, disconnects %+v", s.name, ids[i], s.c.ID(), s.disconnect)
				s.mu.Unlock()
			}
		}
	}()
	c.samePresence(t, ch, append(append([]string(nil), ids[:2]...), ids[3:]...), 5*time.Second)
}

// testReconnectElsewhere: a client of node 0 loses its connection while
// publications flow; the balancer sends it to another node, where it
// recovers with no gap and no duplicate.
func testReconnectElsewhere(t *testing.T, c *testCluster) {
	ch := "reconnect-" + randomHex(4)
	c.lb.pin(0)
	s := subscribe(t, "client of node 0", c.lb.URL(), ch)
	c.lb.unpin()
	before := s.c.ID()
	p := startPublisher(t, c.nodes[2].url(), ch, 400, 3*time.Millisecond)
	p.waitPublished(t, 100, 10*time.Second)
	c.lb.setDown(0, true)
	defer c.lb.setDown(0, false)
	c.lb.cut(0)
	p.finish(t, 20*time.Second, s)
	r := s.checkExact(t, p)
	if r.recovered < 1 || s.c.ID() == before {
		t.Errorf("the client did not reconnect: %d recovered resubscribes, id %s (was %s)", r.recovered, s.c.ID(), before)
	}
	if n := c.lb.count(); n[0] != 0 || n[1]+n[2] != 1 {
		t.Errorf("connections per node %v, want the client on node 1 or 2", n)
	}
	t.Logf("reconnected to another node; %d publications, %d resubscribes (%d recovered), %d failed publish attempts",
		len(r.delivered), r.resubscribe, r.recovered, p.failures())
}

// testUserLimit: with max_connections_per_user 2, a user connected to
// nodes 0 and 1 is refused with 3009 on node 2; once one connection
// closes, node 2 accepts the user.
func testUserLimit(t *testing.T, c *testCluster) {
	user := "limited-" + randomHex(4)
	tok, err := auth.MintHS256(tokenSecret, auth.MintOptions{User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOptions()
	opts.Token = tok
	c0 := dial(t, c.nodes[0].url(), opts)
	dial(t, c.nodes[1].url(), opts)
	if code, _ := rawConnect(t, c.nodes[2].addr, tok); code != protocol.DisconnectConnectionLimit {
		t.Fatalf("third connection of %s, on another node: code %d, want %d", user, code, protocol.DisconnectConnectionLimit)
	}
	c0.Close()
	checkFor(t, presenceTTL+2*time.Second, "a slot freed on node 2", func() error {
		if code, ok := rawConnect(t, c.nodes[2].addr, tok); !ok {
			return fmt.Errorf("refused with %d", code)
		}
		return nil
	})
}

// rawConnect connects to addr with a plain WebSocket and sends connect
// with tok. It returns ok if the server answered the connect, or the code
// it closed the connection with.
func rawConnect(t *testing.T, addr, tok string) (code uint32, ok bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d := ws.Dialer{Protocols: []string{protocol.SubprotocolJSON}}
	nc, _, _, err := d.Dial(ctx, "ws://"+addr+"/ws")
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer nc.Close()
	if err := wsutil.WriteClientText(nc, fmt.Appendf(nil, `{"id":1,"connect":{"token":%q}}`, tok)); err != nil {
		t.Fatal(err)
	}
	_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(nc)
		if err != nil {
			t.Fatalf("reading from %s: %v", addr, err)
		}
		if f.Header.Masked {
			ws.Cipher(f.Payload, f.Header.Mask, 0)
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			c, _ := ws.ParseCloseFrameData(f.Payload)
			return uint32(c), false
		case ws.OpText:
			var m protocol.ServerMessage
			if err := protocol.JSON.DecodeServerMessage(f.Payload, &m); err != nil {
				t.Fatal(err)
			}
			if m.Connect != nil {
				return 0, true
			}
			if m.Disconnect != nil {
				return m.Disconnect.Code, false
			}
		}
	}
}

// testNodeKilled: node 0 is killed with SIGKILL while publications flow
// through node 2. Its clients reconnect through the balancer to the other
// nodes and recover with no gap and no duplicate, and its presence
// entries disappear within presence_ttl.
func testNodeKilled(t *testing.T, c *testCluster) {
	ch := "kill-" + randomHex(4)
	var subs, victims []*subscriber
	var ids, dead []string
	for _, n := range c.nodes {
		c.lb.pin(n.i)
		for k := 0; k < 2; k++ {
			s := subscribe(t, fmt.Sprintf("client %d of %s", k, n.name), c.lb.URL(), ch)
			subs = append(subs, s)
			ids = append(ids, s.c.ID())
			if n.i == 0 {
				victims = append(victims, s)
				dead = append(dead, s.c.ID())
			}
		}
	}
	c.lb.unpin()
	c.samePresence(t, ch, ids, 5*time.Second)

	p := startPublisher(t, c.nodes[2].url(), ch, 400, 3*time.Millisecond)
	p.waitPublished(t, 100, 10*time.Second)
	c.nodes[0].kill()
	killed := time.Now()
	c.lb.setDown(0, true)

	// The dead node's entries vanish from what the others report. The
	// clients come back under new ids meanwhile.
	var gone time.Duration
	checkFor(t, presenceTTL+time.Second, "presence entries of the killed node gone", func() error {
		for _, n := range c.nodes[1:] {
			got, err := n.presence(ch)
			if err != nil {
				return err
			}
			for _, id := range dead {
				if slices.Contains(got, id) {
					return fmt.Errorf("%s still lists %s", n.name, id)
				}
			}
		}
		gone = time.Since(killed)
		return nil
	})
	t.Logf("presence entries of the killed node gone %v after SIGKILL (presence_ttl %v)", gone.Round(10*time.Millisecond), presenceTTL)

	p.finish(t, 30*time.Second, subs...)
	for _, s := range subs {
		r := s.checkExact(t, p)
		if slices.Contains(victims, s) && r.recovered < 1 {
			t.Errorf("%s did not resubscribe with recovery", s.name)
		}
	}
	var now []string
	for _, s := range subs {
		now = append(now, s.c.ID())
	}
	c.samePresence(t, ch, now, 5*time.Second)
	t.Logf("%d publications, %d failed publish attempts", p.total, p.failures())
}
