package nats_test

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	natsbroker "github.com/heraldhq/herald/broker/nats"
)

// startNATSCluster runs three embedded NATS servers with JetStream,
// clustered over routes on loopback, and returns their client URLs once
// the JetStream cluster has a metadata leader.
func startNATSCluster(t *testing.T) []string {
	t.Helper()
	var routePorts []int
	for i := 0; i < 3; i++ {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		routePorts = append(routePorts, ln.Addr().(*net.TCPAddr).Port)
		ln.Close()
	}
	var routes []*url.URL
	for _, p := range routePorts {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: "127.0.0.1:" + strconv.Itoa(p)})
	}
	var urls []string
	var servers []*natsserver.Server
	for i, p := range routePorts {
		s, err := natsserver.NewServer(&natsserver.Options{
			ServerName: "n" + strconv.Itoa(i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: natsserver.ClusterOpts{Name: "c", Host: "127.0.0.1", Port: p},
			Routes:  routes,
		})
		if err != nil {
			t.Fatal(err)
		}
		s.Start()
		t.Cleanup(func() {
			s.Shutdown()
			s.WaitForShutdown()
		})
		if !s.ReadyForConnections(10 * time.Second) {
			t.Fatal("embedded NATS server not ready")
		}
		servers = append(servers, s)
		urls = append(urls, s.ClientURL())
	}
	brokertestEventually(t, 30*time.Second, "a JetStream meta leader", func() bool {
		for _, s := range servers {
			info, err := s.Jsz(&natsserver.JSzOptions{})
			if err != nil || info.Meta == nil || info.Meta.Leader == "" || !s.JetStreamIsCurrent() {
				return false
			}
		}
		return true
	})
	return urls
}

func brokertestEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConcurrentStartInCluster starts three brokers at once, each on its
// own server of a NATS cluster, with replicated streams, as three Herald
// nodes starting together do. The server may leave all but one of the
// concurrent stream creations unanswered; every Start must still succeed,
// well before its deadline.
func TestConcurrentStartInCluster(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	prefix := randomPrefix("cstart")
	var wg sync.WaitGroup
	errs := make([]error, len(urls))
	took := make([]time.Duration, len(urls))
	for i, u := range urls {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b, err := natsbroker.New(natsbroker.Config{Servers: []string{u}, Prefix: prefix, Replicas: 3})
			if err != nil {
				errs[i] = err
				return
			}
			ctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
			defer cancel()
			start := time.Now()
			errs[i] = b.Start(ctx, nil)
			took[i] = time.Since(start)
			if errs[i] == nil {
				c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				_ = b.Close(c)
			}
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("broker %d: Start after %v: %v", i, took[i], err)
		}
	}
	t.Logf("Start took %v", took)
}
