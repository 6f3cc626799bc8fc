package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testaddr"
)

// TestEmbeddedCluster: three `herald serve --cluster-listen` processes form
// a cluster with no broker of their own; node 0 is killed with SIGKILL
// while publications flow through node 2; the other two keep serving, the
// dead node's clients recover elsewhere with no gap, history published
// before the kill is still there, and new subscriptions work.
func TestEmbeddedCluster(t *testing.T) {
	t.Parallel()
	routes := testaddr.Addrs(t, 3)
	name := "t" + randomHex(4)
	c := startCluster(t, 3, nodeConfig(t, ""), 60*time.Second, func(i int) []string {
		return []string{"--cluster-listen", routes[i], "--cluster-peers", strings.Join(routes, ","),
			"--cluster-name", name, "--data-dir", t.TempDir()}
	})
	for _, n := range c.nodes {
		if out := n.out.String(); !strings.Contains(out, "JetStream cluster ready") || !strings.Contains(out, "replicas=3") {
			t.Fatalf("%s did not start in embedded cluster mode with 3 replicas:\n%s", n.name, tail(out, 3000))
		}
	}

	ch := "embedded-" + randomHex(4)
	var subs []*subscriber
	for _, n := range c.nodes {
		c.lb.pin(n.i)
		for k := 0; k < 2; k++ {
			subs = append(subs, subscribe(t, fmt.Sprintf("client %d of %s", k, n.name), c.lb.URL(), ch))
		}
	}
	c.lb.unpin()
	p := startPublisher(t, c.nodes[2].url(), ch, 300, 5*time.Millisecond)
	p.waitPublished(t, 100, 20*time.Second)
	before := p.published()
	c.nodes[0].kill()
	killed := time.Now()
	c.lb.setDown(0, true)

	p.finish(t, 60*time.Second, subs...)
	t.Logf("last delivery %v after the kill; %d failed publish attempts", time.Since(killed).Round(10*time.Millisecond), p.failures())
	for _, s := range subs[:2] {
		if r := s.checkExact(t, p); r.recovered < 1 {
			t.Errorf("%s did not resubscribe with recovery", s.name)
		}
	}
	for _, s := range subs[2:] {
		s.checkExact(t, p)
	}

	// History published before the kill is readable from both survivors.
	for _, n := range c.nodes[1:] {
		pubs, _, err := n.history(ch)
		if err != nil {
			t.Fatalf("history on %s: %v", n.name, err)
		}
		if len(pubs) != p.total {
			t.Fatalf("history on %s has %d publications, want %d", n.name, len(pubs), p.total)
		}
		for i, pub := range pubs[:before] {
			var d struct {
				N int `json:"n"`
			}
			if err := json.Unmarshal(pub.Data, &d); err != nil || pub.Offset != uint64(i+1) || d.N != i+1 {
				t.Fatalf("history on %s: publication %d is offset %d %s", n.name, i, pub.Offset, pub.Data)
			}
		}
	}

	// A new subscriber on node 1 gets what is published on node 2 now.
	late := subscribe(t, "late client of node 1", c.nodes[1].url(), ch)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pos, err := p.c.Publish(ctx, ch, []byte(`{"n":0}`), nil)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 10*time.Second, "the late subscriber's publication", func() error {
		if got := late.position(); got != pos {
			return fmt.Errorf("at %+v, want %+v", got, pos)
		}
		return nil
	})

	// SIGTERM drains Herald, then stops the embedded NATS server.
	n := c.nodes[1]
	if err := n.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case <-n.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit after SIGTERM", n.name)
	}
	out := n.out.String()
	drained, stopped := strings.Index(out, "herald node stopped"), strings.Index(out, "embedded NATS stopped")
	if n.Err() != nil || drained < 0 || stopped < drained {
		t.Fatalf("%s: exit %v; herald stopped at %d, NATS stopped at %d in its log", n.name, n.Err(), drained, stopped)
	}
}

// TestEmbeddedClusterReadyMeansUsable: three embedded-cluster nodes start
// together; as soon as /readyz answers ready on all three, each node takes
// API publishes with idempotency keys (a first use of the idempotency
// stream), all at once, and every one succeeds. Readiness means the
// broker's streams are usable from the node, and no publish waits for a
// stream being created.
func TestEmbeddedClusterReadyMeansUsable(t *testing.T) {
	t.Parallel()
	routes := testaddr.Addrs(t, 3)
	name := "t" + randomHex(4)
	// Started one after the other, as by hand in three terminals: the
	// first two form the JetStream cluster and wait for the third to
	// create the replicated streams.
	cfg := nodeConfig(t, "")
	c := &testCluster{t: t}
	for i := range routes {
		nd := &node{i: i, addr: testaddr.Addr(t)}
		nd.process = startProcess(t, fmt.Sprintf("node %d (%s)", i, nd.addr), bin, "serve", "--config", cfg, "--listen", nd.addr,
			"--cluster-listen", routes[i], "--cluster-peers", strings.Join(routes, ","), "--cluster-name", name, "--data-dir", t.TempDir())
		c.nodes = append(c.nodes, nd)
		if i < len(routes)-1 {
			time.Sleep(2 * time.Second) // the pause between starting the nodes
		}
	}
	for _, nd := range c.nodes {
		nd.waitReady(t, 60*time.Second)
	}
	const perNode = 10
	errs := make(chan error, perNode*len(c.nodes))
	var wg sync.WaitGroup
	for _, n := range c.nodes {
		for k := 0; k < perNode; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var res struct {
					Offset uint64 `json:"offset"`
				}
				ch := fmt.Sprintf("ready-%d-%d", n.i, k)
				err := n.api("publish", map[string]any{"channel": ch, "data": map[string]int{"n": k},
					"idempotency_key": fmt.Sprintf("key-%d-%d", n.i, k)}, &res)
				if err == nil && res.Offset != 1 {
					err = fmt.Errorf("publish to %s on %s: offset %d, want 1", ch, n.name, res.Offset)
				}
				errs <- err
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}
