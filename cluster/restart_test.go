package cluster_test

import (
	"fmt"
	"testing"
	"time"
)

// TestBrokerRestart restarts a private broker under a three-node cluster
// while clients are subscribed and publications keep coming: every client
// either recovers with no gap (same epoch, contiguous offsets) or is told
// recovered:false with a new epoch; never a silent gap.
//
// Redis runs without persistence, so it comes back empty: a new epoch. NATS
// is restarted once on its store (history survives, clients must lose
// nothing) and once on an empty store directory (a new epoch).
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		kind       string
		freshStore bool
		keeps      bool // the broker keeps its data across the restart
	}{
		{"redis without persistence", "redis", false, false},
		{"nats keeping its store", "nats", false, true},
		{"nats losing its store", "nats", true, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			var srv *privateServer
			if c.kind == "nats" {
				srv = startPrivateNATS(t, t.TempDir())
			} else {
				srv = startPrivateRedis(t)
			}
			be := srv.backend()
			cl := startCluster(t, 3, nodeConfig(t, be.yaml), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
			ch := "restart-" + randomHex(4)
			var subs []*subscriber
			for _, n := range cl.nodes {
				cl.lb.pin(n.i)
				for k := 0; k < 2; k++ {
					subs = append(subs, subscribe(t, fmt.Sprintf("client %d of %s", k, n.name), cl.lb.URL(), ch))
				}
			}
			cl.lb.unpin()
			p := startPublisher(t, cl.nodes[2].url(), ch, 300, 5*time.Millisecond)
			p.waitPublished(t, 100, 10*time.Second)
			restarted := time.Now()
			srv.restart(c.freshStore)
			p.finish(t, 60*time.Second, subs...)
			t.Logf("restart to the last delivery: %v; %d failed publish attempts; epochs %d",
				time.Since(restarted).Round(10*time.Millisecond), p.failures(), p.epochs())

			for _, s := range subs {
				if c.keeps {
					s.checkExact(t, p)
					continue
				}
				r, errs := s.check(p)
				for _, err := range errs {
					t.Error(err)
				}
				s.mu.Lock()
				t.Logf("%s: %d delivered, %d resubscribes (%d recovered, %d recovered:false), %d disconnects",
					s.name, len(r.delivered), r.resubscribe, r.recovered, r.lost, len(s.disconnect))
				s.mu.Unlock()
			}
			if !c.keeps && p.epochs() < 2 {
				t.Errorf("the broker lost its data but the publisher saw %d epoch(s)", p.epochs())
			}
			if c.keeps && p.epochs() != 1 {
				t.Errorf("the broker kept its data but the publisher saw %d epochs", p.epochs())
			}
		})
	}
}
