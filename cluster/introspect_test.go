package cluster_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/testaddr"
)

// queryTimeout is the nodes' query_timeout in the introspection tests.
const queryTimeout = time.Second

// TestIntrospection asks each engine's 3-node cluster, through any node,
// for its nodes, channels and connections, disconnects a client on another
// node by its id, and kills a node with SIGKILL: the others list it as
// unreachable within the query timeout.
func TestIntrospection(t *testing.T) {
	t.Parallel()
	extra := fmt.Sprintf("query_timeout: %s\n", queryTimeout)
	t.Run("nats", func(t *testing.T) {
		t.Parallel()
		be := sharedNATS(t)
		c := startCluster(t, 3, nodeConfig(t, be.yaml+extra), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
		testIntrospection(t, c)
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		be := sharedRedis(t)
		c := startCluster(t, 3, nodeConfig(t, be.yaml+extra), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
		testIntrospection(t, c)
	})
	t.Run("embedded", func(t *testing.T) {
		t.Parallel()
		routes := testaddr.Addrs(t, 3)
		name := "t" + randomHex(4)
		c := startCluster(t, 3, nodeConfig(t, extra), 60*time.Second, func(i int) []string {
			return []string{"--cluster-listen", routes[i], "--cluster-peers", strings.Join(routes, ","),
				"--cluster-name", name, "--data-dir", t.TempDir()}
		})
		testIntrospection(t, c)
	})
}

type infoAnswer struct {
	Nodes []herald.Info `json:"nodes"`
}

func (n *node) info() ([]herald.Info, error) {
	var out infoAnswer
	err := n.api("info", struct{}{}, &out)
	return out.Nodes, err
}

func testIntrospection(t *testing.T, c *testCluster) {
	// Every node learns of the others from their samples.
	checkFor(t, 10*time.Second, "every node listing the 3 nodes", func() error {
		for _, n := range c.nodes {
			nodes, err := n.info()
			if err != nil {
				return err
			}
			if len(nodes) != 3 {
				return fmt.Errorf("%s lists %d nodes", n.name, len(nodes))
			}
			for _, in := range nodes {
				if in.Unreachable || in.Version == "" || in.Broker == "" || in.Address == "" || in.PID == 0 {
					return fmt.Errorf("%s lists %+v", n.name, in)
				}
			}
		}
		return nil
	})

	// On each node i: user u-i subscribed to "shared-X" and "only-i-X";
	// and user "multi" connected twice, on nodes 0 and 2, to "multi-X".
	x := randomHex(4)
	shared := "shared-" + x
	var clients []*client.Client
	for _, n := range c.nodes {
		cl := dialUser(t, n.url(), fmt.Sprintf("u-%d-%s", n.i, x))
		clients = append(clients, cl)
		subscribeAll(t, cl, shared, fmt.Sprintf("only-%d-%s", n.i, x))
	}
	multi := "multi-" + x
	m0 := dialUser(t, c.nodes[0].url(), multi)
	m2 := dialUser(t, c.nodes[2].url(), multi)
	subscribeAll(t, m0, multi)
	subscribeAll(t, m2, multi)

	// Channels: summed over nodes, filtered, page by page.
	all := map[string]int{}
	cursor := ""
	pages := 0
	for {
		var out struct {
			Channels map[string]struct {
				N int `json:"num_clients"`
			} `json:"channels"`
			Cursor      string   `json:"cursor"`
			Unreachable []string `json:"unreachable_nodes"`
		}
		if err := c.nodes[1].api("channels", map[string]any{"pattern": "*-" + x, "cursor": cursor, "limit": 2}, &out); err != nil {
			t.Fatal(err)
		}
		pages++
		if len(out.Unreachable) > 0 {
			t.Fatalf("channels: nodes unreachable: %v", out.Unreachable)
		}
		if len(out.Channels) > 2 {
			t.Fatalf("page of %d channels with limit 2", len(out.Channels))
		}
		for name, v := range out.Channels {
			if _, dup := all[name]; dup {
				t.Fatalf("channel %s on two pages", name)
			}
			all[name] = v.N
		}
		if out.Cursor == "" {
			break
		}
		cursor = out.Cursor
	}
	want := map[string]int{shared: 3, multi: 2, "only-0-" + x: 1, "only-1-" + x: 1, "only-2-" + x: 1}
	if fmt.Sprint(all) != fmt.Sprint(want) || pages != 3 {
		t.Fatalf("channels over %d pages: %v, want %v over 3", pages, all, want)
	}

	// Connections: by user across nodes, by channel, by client, by
	// address, and page by page.
	conns := func(q map[string]any) herald.ConnectionsPage {
		t.Helper()
		var out herald.ConnectionsPage
		if err := c.nodes[1].api("connections", q, &out); err != nil {
			t.Fatal(err)
		}
		return out
	}
	byUser := conns(map[string]any{"user": multi})
	if len(byUser.Connections) != 2 || byUser.Connections[0].Node == byUser.Connections[1].Node {
		t.Fatalf("connections of %s: %+v, want one on each of two nodes", multi, byUser.Connections)
	}
	for _, ci := range byUser.Connections {
		if ci.User != multi || !slices.Equal(ci.Subscriptions, []string{multi}) || ci.Transport != "websocket" ||
			ci.Codec == "" || !strings.HasPrefix(ci.Remote, "127.0.0.1:") || time.Since(ci.ConnectedAt) > time.Minute {
			t.Fatalf("connection %+v", ci)
		}
	}
	if got := conns(map[string]any{"channel": shared}); len(got.Connections) != 3 {
		t.Fatalf("connections subscribed to %s: %d, want 3", shared, len(got.Connections))
	}
	one := conns(map[string]any{"client": clients[2].ID()})
	if len(one.Connections) != 1 || one.Connections[0].Client != clients[2].ID() || one.Connections[0].Node != nodeOf(t, c.nodes[2]) {
		t.Fatalf("connection %s: %+v", clients[2].ID(), one.Connections)
	}
	if got := conns(map[string]any{"remote": "10.255."}); len(got.Connections) != 0 {
		t.Fatalf("connections from 10.255.*: %+v", got.Connections)
	}
	seen := map[string]bool{}
	cursor = ""
	for {
		page := conns(map[string]any{"channel": shared, "limit": 1, "cursor": cursor})
		for _, ci := range page.Connections {
			if seen[ci.Client] {
				t.Fatalf("client %s on two pages", ci.Client)
			}
			seen[ci.Client] = true
		}
		if page.Cursor == "" {
			break
		}
		cursor = page.Cursor
	}
	if len(seen) != 3 {
		t.Fatalf("paged through %d connections of %s, want 3", len(seen), shared)
	}

	// Disconnect a client on node 2 through node 0, by its id.
	if err := c.nodes[0].api("disconnect", map[string]any{"client": clients[2].ID(), "code": 4501, "reason": "bye"}, &struct{}{}); err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, "client disconnected by id", func() error {
		if got := conns(map[string]any{"client": clients[2].ID()}); len(got.Connections) != 0 {
			return fmt.Errorf("still connected: %+v", got.Connections)
		}
		return nil
	})
	if got := conns(map[string]any{"channel": shared}); len(got.Connections) != 2 {
		t.Fatalf("after disconnecting one: %d connections on %s, want 2", len(got.Connections), shared)
	}

	// A node killed with SIGKILL is listed as unreachable.
	dead := nodeOf(t, c.nodes[0])
	c.nodes[0].kill()
	start := time.Now()
	nodes, err := c.nodes[1].info()
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	if took > queryTimeout+2*time.Second {
		t.Errorf("info took %v with a node dead (query timeout %v)", took, queryTimeout)
	}
	var found bool
	for _, in := range nodes {
		switch {
		case in.Node == dead:
			found = true
			if !in.Unreachable || in.LastSeen == nil {
				t.Errorf("killed node listed as %+v", in)
			}
		case in.Unreachable:
			t.Errorf("live node listed unreachable: %+v", in)
		}
	}
	if !found || len(nodes) != 3 {
		t.Fatalf("after SIGKILL of %s: %+v", dead, nodes)
	}
	t.Logf("info with a dead node answered in %v (query timeout %v)", took.Round(time.Millisecond), queryTimeout)
}

// nodeOf returns n's node id, from its own info.
func nodeOf(t *testing.T, n *node) string {
	t.Helper()
	var out struct {
		Nodes []herald.Info `json:"nodes"`
	}
	if err := n.api("info", struct{}{}, &out); err != nil {
		t.Fatal(err)
	}
	for _, in := range out.Nodes {
		if in.Address == n.addr {
			return in.Node
		}
	}
	t.Fatalf("%s not in its own info: %+v", n.name, out.Nodes)
	return ""
}

func dialUser(t *testing.T, url, user string) *client.Client {
	t.Helper()
	tok, err := auth.MintHS256(tokenSecret, auth.MintOptions{User: user, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	opts := clientOptions()
	opts.Token = tok
	opts.ReconnectMax = time.Hour // a client disconnected on purpose stays away
	return dial(t, url, opts)
}

func subscribeAll(t *testing.T, cl *client.Client, channels ...string) {
	t.Helper()
	for _, ch := range channels {
		if _, err := cl.Subscribe(ctxTimeout(t, 10*time.Second), ch, client.SubscribeOptions{}); err != nil {
			t.Fatalf("subscribe %s: %v", ch, err)
		}
	}
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}
