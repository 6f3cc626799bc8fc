package cluster_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testaddr"
)

const (
	apiKey      = "k"
	tokenSecret = "cluster-test-secret"
	// presenceTTL is the nodes' presence_ttl: entries of a dead node must
	// be gone within it.
	presenceTTL = 3 * time.Second
)

// nodeConfig is the config file of every node: anonymous clients may
// subscribe and publish anywhere, channels keep their history, presence is
// on, a user may hold two connections, namespace "d" has delta compression
// on, and brokerYAML (a broker section, or "") is appended.
func nodeConfig(t *testing.T, brokerYAML string) string {
	t.Helper()
	cfg := fmt.Sprintf(`api_keys: [%s]
token_secret: %s
allow_anonymous: true
presence_ttl: %s
drain_timeout: 1s
max_connections_per_user: 2
log_level: debug
namespaces:
  - name: ""
    history_size: 100000
    history_ttl: 10m
    presence: true
    allow_subscribe: true
    allow_anonymous_subscribe: true
    allow_publish: true
  - name: acked
    history_size: 1000
    history_ttl: 10m
    allow_subscribe: true
    allow_anonymous_subscribe: true
    allow_publish: true
    ack: true
    ack_timeout: 200ms
  - name: d
    history_size: 1000
    history_ttl: 10m
    allow_subscribe: true
    allow_anonymous_subscribe: true
    allow_publish: true
    delta: true
`, apiKey, tokenSecret, presenceTTL) + brokerYAML
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// node is one `herald serve` process.
type node struct {
	*process
	i    int
	addr string // HTTP and WebSocket address
}

func (n *node) url() string { return "ws://" + n.addr + "/ws" }

// testCluster is a set of nodes and a balancer in front of them.
type testCluster struct {
	t     *testing.T
	nodes []*node
	lb    *balancer
}

// startCluster starts n nodes with the config file cfg and the extra
// serve arguments args(i), all at once, and waits until every node is
// ready (at most ready).
func startCluster(t *testing.T, n int, cfg string, ready time.Duration, args func(i int) []string) *testCluster {
	t.Helper()
	return startClusterEnv(t, n, cfg, ready, nil, args)
}

// startClusterEnv is startCluster with env added to the nodes' environment.
func startClusterEnv(t *testing.T, n int, cfg string, ready time.Duration, env []string, args func(i int) []string) *testCluster {
	t.Helper()
	c := &testCluster{t: t}
	var addrs []string
	for i := 0; i < n; i++ {
		nd := &node{i: i, addr: testaddr.Addr(t)}
		a := append([]string{"serve", "--config", cfg, "--listen", nd.addr}, args(i)...)
		nd.process = startProcessEnv(t, fmt.Sprintf("node %d (%s)", i, nd.addr), bin, env, a...)
		c.nodes = append(c.nodes, nd)
		addrs = append(addrs, nd.addr)
	}
	for _, nd := range c.nodes {
		nd.waitReady(t, ready)
	}
	c.lb = newBalancer(t, addrs)
	return c
}

var httpc = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (n *node) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	checkFor(t, timeout, n.name+" ready", func() error {
		if n.exited() {
			t.Fatalf("%s exited: %v\n%s", n.name, n.Err(), tail(n.out.String(), 4000))
		}
		resp, err := httpc.Get("http://" + n.addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("status %d", resp.StatusCode)
		}
		return nil
	})
}

// api calls the node's server API and decodes the answer into out.
func (n *node) api(method string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+n.addr+"/api/"+method, bytes.NewReader(b))
	req.Header.Set("Authorization", "apikey "+apiKey)
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e bytes.Buffer
		_, _ = e.ReadFrom(resp.Body)
		return fmt.Errorf("%s on %s: status %d: %s", method, n.name, resp.StatusCode, e.String())
	}
	return json.NewDecoder(resp.Body).Decode(out)
}

// presence returns the sorted client ids in ch's presence, read on n.
func (n *node) presence(ch string) ([]string, error) {
	var out struct {
		Presence map[string]json.RawMessage `json:"presence"`
	}
	if err := n.api("presence", map[string]string{"channel": ch}, &out); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(out.Presence))
	for id := range out.Presence {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

type apiPub struct {
	Offset uint64          `json:"offset"`
	Data   json.RawMessage `json:"data"`
}

// history returns ch's whole retained history, read on n.
func (n *node) history(ch string) ([]apiPub, string, error) {
	var out struct {
		Publications []apiPub `json:"publications"`
		Epoch        string   `json:"epoch"`
	}
	err := n.api("history", map[string]any{"channel": ch, "limit": -1}, &out)
	return out.Publications, out.Epoch, err
}

// samePresence waits until every live node reports exactly want in ch's
// presence.
func (c *testCluster) samePresence(t *testing.T, ch string, want []string, timeout time.Duration) {
	t.Helper()
	want = slices.Sorted(slices.Values(want))
	checkFor(t, timeout, "presence of "+ch+" on every node", func() error {
		for _, n := range c.nodes {
			if n.exited() {
				continue
			}
			got, err := n.presence(ch)
			if err != nil {
				return err
			}
			if strings.Join(got, ",") != strings.Join(want, ",") {
				return fmt.Errorf("%s sees %v, want %v", n.name, got, want)
			}
		}
		return nil
	})
}
