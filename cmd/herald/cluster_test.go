package main

import (
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/internal/testaddr"
)

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestEmbeddedClusterForms starts three embedded servers in this process:
// each returns once the JetStream cluster has a leader, and the client
// listener wants the token.
func TestEmbeddedClusterForms(t *testing.T) {
	t.Parallel()
	addrs := testaddr.Addrs(t, 3)
	var cfgs []clusterConfig
	for i := range addrs {
		cfgs = append(cfgs, clusterConfig{Listen: addrs[i], Peers: addrs, DataDir: t.TempDir(), Secret: "s3"})
	}
	embs := startEmbeddedAll(t, cfgs)
	leader := embs[0].metaLeader()
	for _, e := range embs {
		if l := e.metaLeader(); l == "" || l != leader {
			t.Errorf("meta leaders %q and %q", leader, l)
		}
	}
	if nc, err := natsgo.Connect(embs[0].url, natsgo.Timeout(2*time.Second), natsgo.NoReconnect()); err == nil {
		nc.Close()
		t.Error("client listener accepts a connection without the token")
	}
	nc, err := natsgo.Connect(embs[0].url, natsgo.Token(embs[0].token), natsgo.Timeout(2*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	nc.Close()
}

// startEmbeddedAll starts an embedded server for each configuration at
// once, as nodes starting together do, and stops them when the test ends.
// It fails the test unless every one finds the JetStream cluster.
func startEmbeddedAll(t *testing.T, cfgs []clusterConfig) []*embeddedNATS {
	t.Helper()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		embs []*embeddedNATS
	)
	for _, c := range cfgs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := startEmbedded(c.withDefaults(), time.Now().Add(30*time.Second), quietLog())
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				errs = append(errs, err)
				return
			}
			embs = append(embs, e)
		}()
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, e := range embs {
			e.stop()
		}
	})
	if len(errs) > 0 {
		t.Fatal(errs)
	}
	return embs
}

// TestEmbeddedStartupTimeout: a node whose peers never come has no leader
// (a majority of two is two) and fails with a clear error in time.
func TestEmbeddedStartupTimeout(t *testing.T) {
	t.Parallel()
	addrs := testaddr.Addrs(t, 3)
	c := clusterConfig{Listen: addrs[0], Peers: addrs[1:], DataDir: t.TempDir()}
	c = c.withDefaults()
	start := time.Now()
	_, err := startEmbedded(c, time.Now().Add(2*time.Second), quietLog())
	if err == nil || !strings.Contains(err.Error(), "majority of the 3 nodes") {
		t.Fatalf("error %v", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("gave up after %v", d)
	}
	// The listener is closed again: a new server can take the address.
	ln, err := net.Listen("tcp", addrs[0])
	if err != nil {
		t.Fatalf("cluster address still taken: %v", err)
	}
	ln.Close()
}
