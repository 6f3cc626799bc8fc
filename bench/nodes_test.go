package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/protocol"
)

func TestURLForSpreadsEachChannel(t *testing.T) {
	urls := []string{"a", "b", "c"}
	for _, tc := range []struct{ conns, channels int }{
		{1000, 1}, {9, 3}, {12, 6}, {10000, 10000}, {7, 2}, {30, 4},
	} {
		perNode := map[string]int{}
		perChannel := map[int]map[string]int{}
		for i := 0; i < tc.conns; i++ {
			u := urlFor(urls, tc.channels, i)
			perNode[u]++
			c := i % tc.channels
			if perChannel[c] == nil {
				perChannel[c] = map[string]int{}
			}
			perChannel[c][u]++
		}
		// Each channel's subscribers: spread evenly (counts differ by at
		// most one), so every channel with 3+ subscribers is on every node.
		for c, m := range perChannel {
			if spread(urls, m) > 1 {
				t.Errorf("%d conns, %d channels: channel %d spread %v", tc.conns, tc.channels, c, m)
			}
		}
		// And so are all the connections.
		if spread(urls, perNode) > 1 {
			t.Errorf("%d conns, %d channels: nodes %v", tc.conns, tc.channels, perNode)
		}
	}
	if urlFor([]string{"x"}, 5, 17) != "x" {
		t.Error("one URL")
	}
}

// spread is the difference between the largest and the smallest count.
func spread(keys []string, m map[string]int) int {
	lo, hi := m[keys[0]], m[keys[0]]
	for _, k := range keys {
		lo, hi = min(lo, m[k]), max(hi, m[k])
	}
	return hi - lo
}

func TestURLListFlags(t *testing.T) {
	o, err := parseFlags([]string{"--url", "ws://127.0.0.1:1/ws, ws://127.0.0.1:2/ws,wss://h:3/ws",
		"--server-pid", "10,11, 12", "--broker-pid", "9"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.urls) != 3 || o.urls[1] != "ws://127.0.0.1:2/ws" || o.API != "http://127.0.0.1:1" {
		t.Errorf("urls %q, api %q", o.urls, o.API)
	}
	if fmt.Sprint(o.serverPIDs, o.brokerPIDs) != "[10 11 12] [9]" {
		t.Errorf("pids %v %v", o.serverPIDs, o.brokerPIDs)
	}
	apis := newNodeAPIs(o, nil)
	if len(apis) != 3 || apis[2].base != "https://h:3" {
		t.Errorf("node APIs %+v", apis)
	}
	for _, bad := range [][]string{
		{"--url", "ws://127.0.0.1:1/ws,http://x/ws"},
		{"--url", "ws://127.0.0.1:1/ws,"},
		{"--server-pid", "1,x"},
		{"--broker-pid", "-3"},
	} {
		if _, err := parseFlags(bad, io.Discard); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// sharedMemory lets several in-process servers share one memory broker, as
// nodes share NATS or Redis: every publication reaches every node.
type sharedMemory struct {
	*memory.Broker
	mu    sync.Mutex
	nodes []broker.Handler
}

func newSharedMemory() *sharedMemory {
	s := &sharedMemory{Broker: memory.New(memory.Config{})}
	_ = s.Broker.Start(context.Background(), fanoutHandler{s})
	return s
}

func (s *sharedMemory) handlers() []broker.Handler {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]broker.Handler(nil), s.nodes...)
}

type fanoutHandler struct{ s *sharedMemory }

func (f fanoutHandler) HandlePublication(ch string, p *protocol.Publication, epoch string) {
	for _, h := range f.s.handlers() {
		h.HandlePublication(ch, p, epoch)
	}
}

func (f fanoutHandler) HandleJoin(ch string, info *protocol.ClientInfo) {
	for _, h := range f.s.handlers() {
		h.HandleJoin(ch, info)
	}
}

func (f fanoutHandler) HandleLeave(ch string, info *protocol.ClientInfo) {
	for _, h := range f.s.handlers() {
		h.HandleLeave(ch, info)
	}
}

func (f fanoutHandler) HandleControl(data []byte) {
	for _, h := range f.s.handlers() {
		h.HandleControl(data)
	}
}

// node is one server's view of the shared broker.
type sharedNode struct {
	*sharedMemory
	h broker.Handler
}

func (n *sharedNode) Start(_ context.Context, h broker.Handler) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.h = h
	n.nodes = append(n.nodes, h)
	return nil
}

// Close detaches the node; the shared broker stays for the others.
func (n *sharedNode) Close(context.Context) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for i, h := range n.nodes {
		if h == n.h {
			n.nodes = append(n.nodes[:i], n.nodes[i+1:]...)
			break
		}
	}
	return nil
}

// startNodes runs n in-process servers sharing one broker and returns their
// WebSocket URLs.
func startNodes(t *testing.T, n int) []string {
	t.Helper()
	shared := newSharedMemory()
	var urls []string
	for i := 0; i < n; i++ {
		urls = append(urls, startServer(t, &sharedNode{sharedMemory: shared}))
	}
	return urls
}

// TestFanoutTwoNodes spreads the subscribers over two servers that share a
// broker, publishes through the first one's API, and checks that every
// subscriber on either node got every message; the servers' figures are
// summed over the given pids and the "broker" pid is reported apart.
func TestFanoutTwoNodes(t *testing.T) {
	urls := startNodes(t, 2)
	self, parent := os.Getpid(), os.Getppid()
	rep := runBench(t, strings.Join(urls, ","), "--scenario", "fanout", "--conns", "20", "--channels", "2",
		"--rate", "0", "--messages", "100", "--duration", "20s", "--inflight", "4", "--window", "20",
		"--server-pid", fmt.Sprintf("%d,%d", self, parent), "--broker-pid", fmt.Sprint(self))
	checkDelivery(t, rep, 100, 10)
	s := rep.Server
	if s.NumClients != 20 || fmt.Sprint(s.NodeClients) != "[10 10]" {
		t.Errorf("clients %d, by node %v; want 20, [10 10]", s.NumClients, s.NodeClients)
	}
	if len(s.PIDs) != 2 || len(s.Nodes) != 2 || s.CPU == nil || s.Nodes[0].CPU == nil || s.RSS == 0 {
		t.Fatalf("server figures: %+v", s)
	}
	if got := s.Nodes[0].CPU.Total + s.Nodes[1].CPU.Total; got < s.CPU.Total-0.001 || got > s.CPU.Total+0.001 {
		t.Errorf("nodes' CPU %.3f, sum %.3f", got, s.CPU.Total)
	}
	b := rep.Broker
	if b == nil || b.CPU == nil || b.Share <= 0 || b.Share >= 1 || rep.Delivery.BrokerCPUPerDelivery <= 0 {
		t.Errorf("broker figures: %+v %+v", b, rep.Delivery)
	}
	var out strings.Builder
	_ = rep.writeText(&out)
	if !strings.Contains(out.String(), "2 nodes, pids") || !strings.Contains(out.String(), "of servers + broker") {
		t.Errorf("table lacks the nodes or the broker:\n%s", out.String())
	}

	// Without --server-pid, the pids come from each node's API: both
	// servers are this process, so one pid.
	rep = runBench(t, strings.Join(urls, ","), "--scenario", "fanout", "--conns", "9", "--channels", "1",
		"--rate", "500", "--messages", "50", "--duration", "20s", "--publish", "client")
	checkDelivery(t, rep, 50, 9)
	if rep.Server.PID != self || rep.Server.NumClients != 9 || fmt.Sprint(rep.Server.NodeClients) != "[5 4]" {
		t.Errorf("server: %+v", rep.Server)
	}
}
