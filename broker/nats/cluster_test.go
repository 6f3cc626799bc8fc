package nats_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/faultnet"
	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/protocol"
)

// startNATSCluster runs three embedded NATS servers with JetStream,
// clustered over routes on loopback, and returns their client URLs once
// the JetStream cluster has a metadata leader.
func startNATSCluster(t *testing.T) []string {
	t.Helper()
	urls, _ := startNATSClusterRoutes(t, false)
	return urls
}

// startNATSClusterRoutes is startNATSCluster; with viaProxies every route
// between the servers goes through a faultnet proxy in front of its
// server's route port (one proxy per server, returned in server order),
// so that a test can slow down replication.
func startNATSClusterRoutes(t *testing.T, viaProxies bool) ([]string, []*faultnet.Proxy) {
	t.Helper()
	var routePorts []int
	for i := 0; i < 3; i++ {
		routePorts = append(routePorts, testaddr.Port(t))
	}
	routeAddrs := make([]string, len(routePorts))
	var proxies []*faultnet.Proxy
	for i, p := range routePorts {
		routeAddrs[i] = "127.0.0.1:" + strconv.Itoa(p)
		if viaProxies {
			proxy, err := faultnet.New(routeAddrs[i])
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(proxy.Close)
			proxies = append(proxies, proxy)
			routeAddrs[i] = proxy.Addr()
		}
	}
	var routes []*url.URL
	for _, a := range routeAddrs {
		routes = append(routes, &url.URL{Scheme: "nats-route", Host: a})
	}
	var urls []string
	var servers []*natsserver.Server
	for i, p := range routePorts {
		cluster := natsserver.ClusterOpts{Name: "c", Host: "127.0.0.1", Port: p}
		if viaProxies {
			// Told to the other servers, which connect there.
			cluster.Advertise = routeAddrs[i]
		}
		s, err := natsserver.NewServer(&natsserver.Options{
			ServerName: "n" + strconv.Itoa(i), Host: "127.0.0.1", Port: -1,
			JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true,
			Cluster: cluster,
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
	return urls, proxies
}

// setLatency makes every proxy in ps delay what it forwards by d (0: no
// delay).
func setLatency(ps []*faultnet.Proxy, d time.Duration) {
	for _, p := range ps {
		p.SetFaults(faultnet.Faults{Latency: d})
	}
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

// countingHandler counts log records whose message contains sub.
type countingHandler struct {
	sub string
	n   *atomic.Int64
}

func (h countingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h countingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.sub) {
		h.n.Add(1)
	}
	return nil
}
func (h countingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h countingHandler) WithGroup(string) slog.Handler      { return h }

// TestHistoryReadsInCluster reads a channel's history through each server
// of a NATS cluster, many times and at once, with replicated streams.
// Every read makes a consumer whose pull subject the other servers learn
// of on another route connection than the create answer; a pull that
// finds no responder yet must be retried, not fail the read.
func TestHistoryReadsInCluster(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	prefix := randomPrefix("chist")
	var retries atomic.Int64
	log := slog.New(countingHandler{sub: "no responder", n: &retries})
	var bs []*natsbroker.Broker
	for _, u := range urls {
		// Reads are what this test checks, not the bound on a leader's
		// answer (TestPublishDuringLeaderElection): a loaded machine may
		// take longer than the default 2 s.
		b, err := natsbroker.New(natsbroker.Config{Servers: []string{u}, Prefix: prefix, Replicas: 3, Logger: log, LeaderTimeout: 15 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = b.Start(c, nil)
		cancel()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			_ = b.Close(c)
		})
		bs = append(bs, b)
	}
	const n = 20
	ch := "hist-" + randomPrefix("c")
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Hour}
	for i := 1; i <= n; i++ {
		mustPublish(t, bs[i%len(bs)], ch, i, opts)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 3*len(bs)*30)
	for _, b := range bs {
		for w := 0; w < 3; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := 0; k < 30; k++ {
					c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
					pubs, pos, err := b.History(c, ch, broker.HistoryOptions{Limit: -1})
					cancel()
					switch {
					case err != nil:
						errs <- err
					case len(pubs) != n || pos.Offset != n:
						errs <- fmt.Errorf("history has %d publications at offset %d, want %d", len(pubs), pos.Offset, n)
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d reads; %d pulls found no responder and were retried", 3*len(bs)*30, retries.Load())
}

// TestPublishThroughStepDown: in a three-server cluster with replicated
// streams, the leaders of the history and idempotency streams step down
// (as they do when a server restarts or the cluster rebalances) and
// publishes with idempotency keys are made right then, at once, each with
// the 3 s deadline of the server API call that led to this test. A
// publish that finds no leader waits a little for the new one (no server
// answered, so nothing was stored and trying again is safe); it may fail
// with broker.ErrUnavailable if the election takes longer than
// LeaderTimeout (a loaded machine), and is then retried with its key, as
// a client does. It must never run into its deadline (recreating the
// stream under it), fail otherwise, or be taken for a duplicate.
func TestPublishThroughStepDown(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	prefix := randomPrefix("stepdown")
	b := newBroker(t, natsbroker.Config{Servers: urls[:1], Prefix: prefix, Replicas: 3}, nil)
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Hour, IdempotencyKey: "warm-up"}
	mustPublish(t, b, "stepdown-warm", 0, opts)
	if err := b.Ready(ctx(t)); err != nil {
		t.Fatalf("Ready: %v", err)
	}

	nc, err := natsgo.Connect(urls[1])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	for _, s := range []string{"-history", "-idempotency"} {
		if _, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+prefix+s, nil, 10*time.Second); err != nil {
			t.Fatalf("step down %s: %v", prefix+s, err)
		}
	}
	const n = 30
	errs := make(chan error, n)
	for k := 0; k < n; k++ {
		go func() {
			o := broker.PublishOptions{IdempotencyKey: fmt.Sprintf("key-%d", k)}
			if k%2 == 0 {
				o.HistorySize, o.HistoryTTL = 100, time.Hour
			}
			var dup bool
			var err error
			for attempt := 0; attempt < 10; attempt++ {
				c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
				_, dup, err = b.Publish(c, fmt.Sprintf("stepdown-%d", k), &protocol.Publication{Data: protocol.Data(`{}`)}, o)
				cancel()
				if !errors.Is(err, broker.ErrUnavailable) {
					break
				}
			}
			if err == nil && dup {
				err = errors.New("a first publish reported as a duplicate")
			}
			errs <- err
		}()
	}
	for k := 0; k < n; k++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}

// TestPublishWhileStreamRecreated: three nodes, each on its own server of
// a NATS cluster with replicated streams, find the idempotency stream
// gone (deleted underneath them) as they publish with idempotency keys,
// all at once, each call with the 3 s deadline of a server API call. No
// publish may wait for the stream's re-creation, which several nodes
// attempting at once can leave unanswered: a call fails at once with a
// retryable error (broker.ErrUnavailable) while the stream is recreated
// in the background, or succeeds; retried with its key, it succeeds.
func TestPublishWhileStreamRecreated(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	prefix := randomPrefix("recreate")
	var bs []*natsbroker.Broker
	for _, u := range urls {
		bs = append(bs, newBroker(t, natsbroker.Config{Servers: []string{u}, Prefix: prefix, Replicas: 3}, nil))
	}
	nc, err := natsgo.Connect(urls[0])
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Request("$JS.API.STREAM.DELETE."+prefix+"-idempotency", nil, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	const perNode = 5
	errs := make(chan error, perNode*len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		for k := 0; k < perNode; k++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := broker.PublishOptions{IdempotencyKey: fmt.Sprintf("key-%d-%d", i, k)}
				if k%2 == 0 {
					o.HistorySize, o.HistoryTTL = 100, time.Hour
				}
				var err error
				for attempt := 0; attempt < 50; attempt++ {
					c, cancel := context.WithTimeout(context.Background(), 3*time.Second)
					_, _, err = b.Publish(c, fmt.Sprintf("recreate-%d-%d", i, k), &protocol.Publication{Data: protocol.Data(`{}`)}, o)
					cancel()
					if err == nil {
						break
					}
					if errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, broker.ErrUnavailable) {
						err = fmt.Errorf("attempt %d ran into its deadline: %w", attempt, err)
						break
					}
					time.Sleep(100 * time.Millisecond) // a client's retry pause
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

// TestIdempotentClaimsDuringSlowReplication: two nodes publish with one
// idempotency key at once while the replicated streams are slow to
// replicate. The server refuses the second claim while the first is
// being replicated, before either is stored; the second node must wait
// for the first claim rather than spend its attempts: one publication,
// both nodes told its position, one of them as a duplicate.
func TestIdempotentClaimsDuringSlowReplication(t *testing.T) {
	t.Parallel()
	urls, routes := startNATSClusterRoutes(t, true)
	prefix := randomPrefix("slowidem")
	// Both nodes on the server that leads the streams: its refusals and
	// reads are answered at once, while its writes wait for the slow
	// replication.
	var bs [2]*natsbroker.Broker
	for i := range bs {
		bs[i] = newBroker(t, natsbroker.Config{Servers: []string{urls[0]}, Prefix: prefix, Replicas: 3, LeaderTimeout: 20 * time.Second}, nil)
	}
	leadOn(t, urls[0], prefix+"-idempotency", "n0")
	leadOn(t, urls[0], prefix+"-history", "n0")
	ch := "slow:idem"
	mustPublish(t, bs[0], ch, 0, withHistory) // the channel's history exists
	setLatency(routes, 400*time.Millisecond)
	t.Cleanup(func() { setLatency(routes, 0) })
	opts := withHistory
	opts.IdempotencyKey, opts.IdempotencyWindow = "once", time.Minute
	type result struct {
		pos protocol.StreamPosition
		dup bool
		err error
	}
	res := make([]result, len(bs))
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			pos, dup, err := b.Publish(c, ch, &protocol.Publication{Data: protocol.Data(`"once"`)}, opts)
			res[i] = result{pos, dup, err}
		}()
	}
	wg.Wait()
	for i, r := range res {
		if r.err != nil {
			t.Fatalf("node %d: %v", i, r.err)
		}
	}
	if res[0].pos != res[1].pos || res[0].dup == res[1].dup {
		t.Fatalf("results %+v and %+v: want one position, one of them a duplicate", res[0], res[1])
	}
	setLatency(routes, 0)
	pubs, _, err := bs[0].History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 2 || string(pubs[1].Data) != `"once"` {
		t.Fatalf("history holds %d publications, want the first and one \"once\"", len(pubs))
	}
}

// TestCursorWritesDuringSlowReplication: several nodes move one user's
// cursor at once while the replicated streams are slow to replicate; the
// server refuses a write while another is being replicated. Every
// SetCursor succeeds and the cursor ends at the furthest position.
func TestCursorWritesDuringSlowReplication(t *testing.T) {
	t.Parallel()
	urls, routes := startNATSClusterRoutes(t, true)
	prefix := randomPrefix("slowcurs")
	const nodes = 3
	var bs [nodes]*natsbroker.Broker
	for i := range bs {
		bs[i] = newBroker(t, natsbroker.Config{Servers: []string{urls[0]}, Prefix: prefix, Replicas: 3, LeaderTimeout: 20 * time.Second}, nil)
	}
	leadOn(t, urls[0], prefix+"-cursors", "n0")
	if err := bs[0].SetCursor(ctx(t), "u", "c", broker.StreamPosition{Epoch: "E", Offset: 1}, time.Minute); err != nil {
		t.Fatal(err)
	}
	setLatency(routes, 400*time.Millisecond)
	t.Cleanup(func() { setLatency(routes, 0) })
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	for i, b := range bs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			errs[i] = b.SetCursor(c, "u", "c", broker.StreamPosition{Epoch: "E", Offset: uint64(10 + i)}, time.Minute)
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("node %d: %v", i, err)
		}
	}
	setLatency(routes, 0)
	pos, ok, err := bs[0].Cursor(ctx(t), "u", "c")
	if err != nil || !ok || pos.Offset != 10+nodes-1 {
		t.Fatalf("cursor %+v, %v, %v; want offset %d", pos, ok, err, 10+nodes-1)
	}
}
