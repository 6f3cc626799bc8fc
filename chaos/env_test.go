package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/faultnet"
	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/internal/testproc"
)

// logEnv: HERALD_CHAOS_LOGS set logs every child's output;
// HERALD_CHAOS_LOG_DIR names a directory that keeps it whole.
var logEnv = testproc.Logs{Always: "HERALD_CHAOS_LOGS", Dir: "HERALD_CHAOS_LOG_DIR"}

const (
	apiKey = "k"
	// presenceTTL is the nodes' presence_ttl.
	presenceTTL = 3 * time.Second
)

// The engines a schedule runs over.
var engines = []string{"nats", "redis", "rediscluster", "embedded"}

// nodeConfig is every node's config file: anonymous clients subscribe and
// publish anywhere; channels keep history, and have presence; the "drop"
// namespace uses the drop slow-client policy, the others disconnect; the
// outbound queue is small, so that a slow client overflows it quickly.
func nodeConfig(t *testing.T, brokerYAML string) string {
	t.Helper()
	ns := func(name, policy string) string {
		return fmt.Sprintf(`  - name: %q
    history_size: 100000
    history_ttl: 10m
    presence: true
    allow_subscribe: true
    allow_anonymous_subscribe: true
    allow_publish: true
    slow_policy: %s
`, name, policy)
	}
	cfg := fmt.Sprintf(`api_keys: [%s]
token_secret: chaos-secret
allow_anonymous: true
presence_ttl: %s
drain_timeout: 1s
queue_max_bytes: 65536
log_level: info
namespaces:
`, apiKey, presenceTTL) + ns("", "disconnect") + ns("drop", "drop") + brokerYAML
	path := filepath.Join(t.TempDir(), "herald.yaml")
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const (
	natsTuning  = "broker:\n  nats:\n    reconnect_wait: 100ms\n    connect_timeout: 2s\n    request_timeout: 3s\n"
	redisTuning = "broker:\n  redis:\n    dial_timeout: 1s\n    health_check_interval: 1s\n"
)

// node is one `herald serve` process, restartable with the same
// arguments. Clients reach it through front; it reaches its broker
// through brokerLink (nil where the engine gives no single link to cut).
type node struct {
	i          int
	name       string
	addr       string
	args       []string
	proc       *testproc.Process
	front      *faultnet.Proxy
	brokerLink *faultnet.Proxy
	paused     bool
}

// env is a running cluster of one engine with its proxies.
type env struct {
	t       *testing.T
	h       *history
	engine  string
	bin     string
	nodes   []*node
	brokers []*testproc.Server // broker servers that faults may hit
	lb      *faultnet.Proxy    // clients' balancer over the nodes' fronts
	slow    *faultnet.Proxy    // slow clients' balancer, throttled at times
	paused  map[*testproc.Server]bool
}

func newProxy(t *testing.T, backends ...string) *faultnet.Proxy {
	t.Helper()
	p, err := faultnet.New(backends...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

// startEnv starts the brokers of engine, three nodes of bin over them and
// the proxies.
func startEnv(t *testing.T, h *history, engine, bin string) *env {
	t.Helper()
	e := &env{t: t, h: h, engine: engine, bin: bin, paused: map[*testproc.Server]bool{}}
	brokerAddr := make([]string, 3) // what node i's broker link leads to
	var yaml string
	switch engine {
	case "nats":
		e.brokers = testproc.StartNATSCluster(t, logEnv, 3)
		for i, s := range e.brokers {
			brokerAddr[i] = s.Addr()
		}
		yaml = natsTuning
	case "redis":
		s := testproc.RedisServer(t, logEnv, 0)
		s.Start()
		e.brokers = []*testproc.Server{s}
		for i := range brokerAddr {
			brokerAddr[i] = s.Addr()
		}
		yaml = redisTuning
	case "rediscluster":
		e.brokers = testproc.StartRedisCluster(t, logEnv)
		yaml = redisTuning
	case "embedded":
	default:
		t.Fatalf("unknown engine %q", engine)
	}
	cfg := nodeConfig(t, yaml)
	routes := testaddr.Addrs(t, 3)
	cname := "chaos" + testproc.RandomHex(4)
	for i := 0; i < 3; i++ {
		n := &node{i: i, addr: testaddr.Addr(t)}
		n.name = fmt.Sprintf("node %d (%s)", i, n.addr)
		n.args = []string{"serve", "--config", cfg, "--listen", n.addr}
		switch engine {
		case "nats":
			n.brokerLink = newProxy(t, brokerAddr[i])
			n.args = append(n.args, "--broker", "nats://"+n.brokerLink.Addr()+"?prefix=chaos&replicas=3")
		case "redis":
			n.brokerLink = newProxy(t, brokerAddr[i])
			n.args = append(n.args, "--broker", "redis://"+n.brokerLink.Addr()+"?prefix=chaos")
		case "rediscluster":
			// Redis Cluster redirects clients to each master's own
			// address, so no proxy can stand for a node's link to it.
			var seeds []string
			for _, s := range e.brokers {
				seeds = append(seeds, s.Addr())
			}
			n.args = append(n.args, "--broker", "redis+cluster://"+strings.Join(seeds, ",")+"?prefix=chaos")
		case "embedded":
			n.args = append(n.args, "--cluster-listen", routes[i], "--cluster-peers", strings.Join(routes, ","),
				"--cluster-name", cname, "--data-dir", t.TempDir())
		}
		e.nodes = append(e.nodes, n)
	}
	for _, n := range e.nodes {
		n.start(t, e.bin)
	}
	var fronts []string
	for _, n := range e.nodes {
		n.waitReady(t, 90*time.Second)
		n.front = newProxy(t, n.addr)
		fronts = append(fronts, n.front.Addr())
	}
	e.lb = newProxy(t, fronts...)
	e.slow = newProxy(t, fronts...)
	return e
}

func (n *node) start(t *testing.T, bin string) {
	n.proc = testproc.Start(t, logEnv, n.name, bin, nil, n.args...)
	n.paused = false
}

var httpc = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

func (n *node) ready() error {
	if n.proc.Exited() {
		return fmt.Errorf("%s exited: %v", n.name, n.proc.Err())
	}
	resp, err := httpc.Get("http://" + n.addr + "/readyz")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: /readyz status %d", n.name, resp.StatusCode)
	}
	return nil
}

func (n *node) waitReady(t *testing.T, timeout time.Duration) {
	t.Helper()
	testproc.CheckFor(t, timeout, n.name+" ready", func() error {
		if n.proc.Exited() {
			t.Fatalf("%s exited: %v\n%s", n.name, n.proc.Err(), testproc.Tail(n.proc.Output(), 4000))
		}
		return n.ready()
	})
}

// api calls the server API at addr (a node or its front) and decodes the
// answer into out.
func api(ctx context.Context, addr, method string, body, out any) error {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequestWithContext(ctx, "POST", "http://"+addr+"/api/"+method, bytes.NewReader(b))
	req.Header.Set("Authorization", "apikey "+apiKey)
	resp, err := httpc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		var e bytes.Buffer
		_, _ = e.ReadFrom(resp.Body)
		return fmt.Errorf("%s: status %d: %s", method, resp.StatusCode, strings.TrimSpace(e.String()))
	}
	var raw bytes.Buffer
	if _, err := raw.ReadFrom(resp.Body); err != nil {
		return err
	}
	var wrapped struct {
		Error *struct {
			Code    int    `json:"code"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal(raw.Bytes(), &wrapped) == nil && wrapped.Error != nil {
		return fmt.Errorf("%s: error %d: %s", method, wrapped.Error.Code, wrapped.Error.Message)
	}
	return json.Unmarshal(raw.Bytes(), out)
}

// presence returns the sorted client ids in ch's presence, read on n.
func (n *node) presence(ch string) ([]string, error) {
	var out struct {
		Presence map[string]json.RawMessage `json:"presence"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := api(ctx, n.addr, "presence", map[string]string{"channel": ch}, &out); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(out.Presence))
	for id := range out.Presence {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	return ids, nil
}

// finalHistory reads ch's whole history on n.
func (n *node) finalHistory(ch string) (finalChannel, error) {
	var out struct {
		Publications []struct {
			Offset uint64          `json:"offset"`
			Data   json.RawMessage `json:"data"`
		} `json:"publications"`
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := api(ctx, n.addr, "history", map[string]any{"channel": ch, "limit": -1}, &out); err != nil {
		return finalChannel{}, err
	}
	f := finalChannel{Pos: pos{Epoch: out.Epoch, Offset: out.Offset}, Pubs: map[uint64]string{}}
	for _, p := range out.Publications {
		f.Pubs[p.Offset] = dataID(p.Data)
	}
	return f, nil
}

// dataID is the id in a publication's data, {"id":ID,...}.
func dataID(data []byte) string {
	var d struct {
		ID string `json:"id"`
	}
	if err := json.Unmarshal(data, &d); err != nil || d.ID == "" {
		return "?" + string(data)
	}
	return d.ID
}

// killNode SIGKILLs node i and takes it out of the balancers.
func (e *env) killNode(i int) {
	n := e.nodes[i]
	e.lb.SetDown(i, true)
	e.slow.SetDown(i, true)
	n.proc.Kill()
	n.paused = false
}

// restartNode starts node i again if it is dead, waits until it is ready
// and puts it back into the balancers.
func (e *env) restartNode(i int) {
	n := e.nodes[i]
	if n.proc.Exited() {
		n.start(e.t, e.bin)
	}
	if err := testproc.WaitFor(90*time.Second, n.ready); err != nil {
		e.t.Fatalf("%s did not come back: %v\n%s", n.name, err, testproc.Tail(n.proc.Output(), 4000))
	}
	e.lb.SetDown(i, false)
	e.slow.SetDown(i, false)
}

func (e *env) pauseNode(i int, pause bool) {
	n := e.nodes[i]
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	if err := n.proc.Signal(sig); err == nil {
		n.paused = pause
	}
}

func (e *env) pauseBroker(j int, pause bool) {
	s := e.brokers[j]
	sig := syscall.SIGCONT
	if pause {
		sig = syscall.SIGSTOP
	}
	if err := s.P.Signal(sig); err == nil {
		e.paused[s] = pause
	}
}

// heal ends every fault: proxies forward freely, paused processes go on,
// dead ones start again, every node is ready and in the balancers.
func (e *env) heal() {
	for _, p := range e.proxies() {
		p.SetFaults(faultnet.Faults{})
	}
	for j, s := range e.brokers {
		if e.paused[s] {
			e.pauseBroker(j, false)
		}
		if s.P.Exited() {
			s.Start()
		}
	}
	for i, n := range e.nodes {
		if n.paused {
			e.pauseNode(i, false)
		}
	}
	for i := range e.nodes {
		e.restartNode(i)
	}
}

func (e *env) proxies() []*faultnet.Proxy {
	ps := []*faultnet.Proxy{e.lb, e.slow}
	for _, n := range e.nodes {
		ps = append(ps, n.front)
		if n.brokerLink != nil {
			ps = append(ps, n.brokerLink)
		}
	}
	return ps
}
