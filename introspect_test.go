package herald_test

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
)

// TestIntrospectionOneNode: info, channels, connections, stats and
// disconnect by client id on a single node (memory broker). The 3-node
// versions over NATS, Redis and the embedded cluster are in cluster/.
func TestIntrospectionOneNode(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())

	var info struct {
		Nodes []herald.Info `json:"nodes"`
	}
	if code := ts.api(t, "info", struct{}{}, &info); code != 200 || len(info.Nodes) != 1 {
		t.Fatalf("info: %d %+v", code, info)
	}
	in := info.Nodes[0]
	if in.Node != ts.NodeID() || in.Broker != "memory" || in.Address != ts.addr || in.Unreachable || in.Goroutines == 0 {
		t.Fatalf("info: %+v", in)
	}

	alice := dial(t, ts, &client.Options{Token: token(t, "alice", time.Hour)})
	bob := dial(t, ts, &client.Options{Token: token(t, "bob", time.Hour)})
	for i := 0; i < 5; i++ {
		if _, err := alice.Subscribe(ctxT(t), fmt.Sprintf("intro:%d", i), client.SubscribeOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := bob.Subscribe(ctxT(t), "intro:0", client.SubscribeOptions{}); err != nil {
		t.Fatal(err)
	}

	// Channels, two at a time.
	got := map[string]int{}
	cursor := ""
	for pages := 1; ; pages++ {
		var out struct {
			Channels map[string]struct {
				N int `json:"num_clients"`
			} `json:"channels"`
			Cursor string `json:"cursor"`
		}
		ts.api(t, "channels", map[string]any{"pattern": "intro:*", "limit": 2, "cursor": cursor}, &out)
		for name, c := range out.Channels {
			got[name] = c.N
		}
		if out.Cursor == "" {
			if pages != 3 {
				t.Fatalf("5 channels in %d pages of 2", pages)
			}
			break
		}
		cursor = out.Cursor
	}
	if fmt.Sprint(got) != "map[intro:0:2 intro:1:1 intro:2:1 intro:3:1 intro:4:1]" {
		t.Fatalf("channels: %v", got)
	}
	var bad map[string]any
	if code := ts.api(t, "channels", map[string]any{"pattern": "["}, &bad); code != http.StatusBadRequest {
		t.Fatalf("bad pattern: %d %v", code, bad)
	}

	// Connections.
	connections := func(q map[string]any) herald.ConnectionsPage {
		var page herald.ConnectionsPage
		if code := ts.api(t, "connections", q, &page); code != 200 {
			t.Fatalf("connections %v: status %d", q, code)
		}
		return page
	}
	page := connections(map[string]any{"user": "alice"})
	if len(page.Connections) != 1 {
		t.Fatalf("alice's connections: %+v", page)
	}
	ci := page.Connections[0]
	if ci.Client != alice.ID() || ci.Node != ts.NodeID() || len(ci.Subscriptions) != 5 || ci.Codec == "" ||
		!strings.HasPrefix(ci.Remote, "127.0.0.1:") || ci.Transport != "websocket" {
		t.Fatalf("alice's connection: %+v", ci)
	}
	page = connections(map[string]any{"channel": "intro:0"})
	if len(page.Connections) != 2 {
		t.Fatalf("connections on intro:0: %+v", page)
	}
	page = connections(map[string]any{"channel": "intro:0", "limit": 1})
	if len(page.Connections) != 1 || page.Cursor == "" {
		t.Fatalf("first page of 1: %+v", page)
	}
	first := page.Connections[0].Client
	page = connections(map[string]any{"channel": "intro:0", "limit": 1, "cursor": page.Cursor})
	if len(page.Connections) != 1 || page.Connections[0].Client == first || page.Cursor != "" {
		t.Fatalf("second page of 1: %+v", page)
	}

	// Disconnect one client by id: the other stays.
	var empty struct{}
	if code := ts.api(t, "disconnect", map[string]any{"client": bob.ID(), "code": 4500}, &empty); code != 200 {
		t.Fatalf("disconnect: %d", code)
	}
	eventually(t, 5*time.Second, "bob disconnected", func() bool {
		page := connections(map[string]any{})
		return len(page.Connections) == 1 && page.Connections[0].Client == alice.ID()
	})
	var e map[string]any
	if code := ts.api(t, "disconnect", map[string]any{"user": "alice", "client": alice.ID()}, &e); code != http.StatusBadRequest {
		t.Fatalf("disconnect naming both user and client: %d %v", code, e)
	}

	// Per-second samples accumulate.
	ts.publish(t, "intro:1", seqData(1))
	eventually(t, 5*time.Second, "two samples", func() bool {
		var st struct {
			Nodes []herald.NodeSeries `json:"nodes"`
		}
		ts.api(t, "stats", struct{}{}, &st)
		return len(st.Nodes) == 1 && len(st.Nodes[0].Samples) >= 2 && st.Nodes[0].Samples[len(st.Nodes[0].Samples)-1].Connections == 1
	})
}
