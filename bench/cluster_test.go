package bench

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/heraldhq/herald/internal/testaddr"
)

func TestClusterFlags(t *testing.T) {
	o, err := parseClusterFlags([]string{"--setups", "redis,memory", "--runs", "channels-10k-broadcast", "--scale", "0.1"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(o.setups, []string{"redis", "memory"}) || len(o.runs) != 1 || !slices.Contains(o.runs[0].Args, "1000") {
		t.Errorf("%+v", o)
	}
	o, err = parseClusterFlags(nil, io.Discard)
	if err != nil || len(o.setups) != 4 || len(o.runs) != 2 {
		t.Errorf("defaults: %v %+v", err, o)
	}
	for _, bad := range [][]string{{"--setups", "kafka"}, {"--runs", "nope"}, {"--nodes", "0"}} {
		if _, err := parseClusterFlags(bad, io.Discard); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	for _, r := range clusterRuns {
		if _, err := parseFlags(append(slices.Clone(r.Args), "--url", "ws://a:1/ws,ws://b:2/ws"), io.Discard); err != nil {
			t.Errorf("run %s: %v", r.Name, err)
		}
	}
	if got := withPrefix("nats://h:4222", "p"); got != "nats://h:4222?prefix=p" {
		t.Error(got)
	}
	if got := withPrefix("redis://h/1?sharded_pubsub=true", "p"); got != "redis://h/1?sharded_pubsub=true&prefix=p" {
		t.Error(got)
	}
}

// TestClusterNodes checks how each setup's nodes are started: Herald with
// --broker and the run's prefix, Centrifugo through its script on its Redis
// engine under the prefix, each node on its own port with its own URLs.
func TestClusterNodes(t *testing.T) {
	o, err := parseClusterFlags([]string{"--port", "30000", "--key", "sekret", "--centrifugo", "peers/c.sh",
		"--redis", "redis://127.0.0.1:6380", "--herald-bin", "hb"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	mem := newClusterSetup(o, "memory")
	n := mem.node(o, "c.yaml", 0, "P")
	if mem.nodes != 1 || mem.target != "herald" || mem.broker != "" ||
		strings.Join(n.argv, " ") != "hb serve --config c.yaml --listen 127.0.0.1:30000" ||
		n.url != "ws://127.0.0.1:30000/ws" || n.ready != "http://127.0.0.1:30000/readyz" ||
		!slices.Equal(n.env, []string{"HERALD_API_KEY=sekret"}) {
		t.Errorf("memory: %+v %+v", mem, n)
	}
	rd := newClusterSetup(o, "redis")
	n = rd.node(o, "c.yaml", 2, "P")
	if rd.nodes != 3 || rd.kind != "redis" || rd.cleanupKind() != "redis" ||
		strings.Join(n.argv, " ") != "hb serve --config c.yaml --listen 127.0.0.1:30002 --broker redis://127.0.0.1:6380?prefix=P" {
		t.Errorf("redis: %+v %+v", rd, n)
	}
	if ns := newClusterSetup(o, "nats"); ns.kind != "nats" || ns.broker != "nats://127.0.0.1:4222" || ns.cleanupKind() != "nats" {
		t.Errorf("nats: %+v", ns)
	}
	cf := newClusterSetup(o, "centrifugo")
	n = cf.node(o, "c.yaml", 1, "P")
	if cf.nodes != 3 || cf.target != "centrifugo" || cf.kind != "redis" || cf.broker != "redis://127.0.0.1:6380" ||
		cf.cleanupKind() != "centrifugo" ||
		strings.Join(n.argv, " ") != "peers/c.sh exec 30001" ||
		n.url != "ws://127.0.0.1:30001/connection/websocket" || n.ready != "http://127.0.0.1:30001/health" ||
		!slices.Equal(n.env, []string{"KEY=sekret", "ENGINE=redis", "REDIS_ADDRESS=redis://127.0.0.1:6380", "REDIS_PREFIX=P"}) {
		t.Errorf("centrifugo: %+v %+v", cf, n)
	}
	// Every cluster run parses with the Centrifugo target too.
	for _, r := range clusterRuns {
		if _, err := parseFlags(append(slices.Clone(r.Args), "--target", "centrifugo",
			"--url", "ws://a:1/connection/websocket,ws://b:2/connection/websocket"), io.Discard); err != nil {
			t.Errorf("run %s: %v", r.Name, err)
		}
	}
}

// TestClusterRatios checks the ratio table: each Herald cluster over one
// memory node and over Centrifugo, in deliveries/s or connects/s, against
// the goals, a goal unmet when the Herald runs had issues.
func TestClusterRatios(t *testing.T) {
	fan := func(setup string, rate float64, lost uint64) ClusterRunResult {
		return ClusterRunResult{Name: "fanout-1x3000-saturated", Setup: setup, Report: &Report{Scenario: "fanout",
			Delivery: &DeliveryStats{Rate: rate, Lost: lost, Expected: 1000, ServerCPUPerDelivery: 1.5},
			Connect:  &ConnectStats{Requested: 1000, Connected: 1000, Rate: 5000}}}
	}
	conn := func(setup string, rate float64) ClusterRunResult {
		return ClusterRunResult{Name: "connect-10k", Setup: setup, Report: &Report{Scenario: "connect",
			Connect: &ConnectStats{Requested: 100, Connected: 100, Rate: rate, Latency: Latency{Count: 100, P50: 2, P99: 9},
				ServerCPU: &CPU{Total: 0.01}}}}
	}
	runs := []ClusterRunResult{
		fan("memory", 1000000, 0), fan("nats", 600000, 0), fan("redis", 800000, 3), fan("centrifugo", 200000, 0),
		conn("memory", 9000), conn("redis", 6000), conn("centrifugo", 4000),
	}
	info := map[string]ClusterSetup{"memory": {Nodes: 1}, "nats": {Nodes: 3}, "redis": {Nodes: 3}, "centrifugo": {Nodes: 3}}
	rows := clusterRows(runs, []string{"memory", "nats", "redis", "centrifugo"}, info)
	ratios := clusterRatios(rows)
	type want struct {
		run, setup, vs string
		ratio          float64
		goal           float64
		met            bool
	}
	wants := []want{
		{"fanout-1x3000-saturated", "nats", "memory", 0.6, 0.7, false},
		{"fanout-1x3000-saturated", "nats", "centrifugo", 3, 3, true},
		{"fanout-1x3000-saturated", "redis", "memory", 0.8, 0.7, false}, // lost deliveries
		{"fanout-1x3000-saturated", "redis", "centrifugo", 4, 3, false},
		{"connect-10k", "redis", "memory", 0.667, 0, false},
		{"connect-10k", "redis", "centrifugo", 1.5, 0, false},
	}
	if len(ratios) != len(wants) {
		t.Fatalf("%d ratios: %+v", len(ratios), ratios)
	}
	for i, w := range wants {
		r := ratios[i]
		if r.Run != w.run || r.Setup != w.setup || r.Versus != w.vs || r.Ratio != w.ratio {
			t.Errorf("ratio %d: %+v, want %+v", i, r, w)
		}
		if w.goal == 0 {
			if r.Goal != nil || r.GoalMet != nil || r.Figure != "connects/s" {
				t.Errorf("ratio %d: %+v has a goal", i, r)
			}
			continue
		}
		if r.Goal == nil || *r.Goal != w.goal || r.GoalMet == nil || *r.GoalMet != w.met || r.Figure != "deliveries/s" {
			t.Errorf("ratio %d: %+v, want goal %v met %v", i, r, w.goal, w.met)
		}
	}
	var crow ClusterRow
	for _, r := range rows {
		if r.Run == "connect-10k" && r.Setup == "redis" {
			crow = r
		}
	}
	if crow.ConnectRate == nil || *crow.ConnectRate != 6000 || crow.ConnectCPU == nil || *crow.ConnectCPU != 100 ||
		crow.P99 == nil || *crow.P99 != 9 {
		t.Errorf("connect row %+v", crow)
	}
	c := &Cluster{Rows: rows, Ratios: ratios, Runs: runs, Setups: info, Params: CompareParams{Runs: map[string][]string{}}}
	var b strings.Builder
	if err := c.writeText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"connects/s", "6000", "nodes us/connect", "ratios", "fanout-1x3000-saturated  nats   centrifugo  deliveries/s  3      >= 3    yes"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

func TestClusterRows(t *testing.T) {
	fan := func(setup string, rate, brokerCores float64, lost uint64) ClusterRunResult {
		r := &Report{
			Delivery: &DeliveryStats{Rate: rate, Lost: lost, Expected: 1000, ServerCPUPerDelivery: 1.5},
			Latency:  &Latency{Count: 1, P50: 1, P99: 4},
			Server:   &ServerStats{CPU: &CPU{Cores: 1.2}, Nodes: []NodeStats{{PID: 1, CPU: &CPU{Cores: 0.5}}, {PID: 2, CPU: &CPU{Cores: 0.7}}}},
		}
		if brokerCores > 0 {
			r.Broker = &BrokerStats{PIDs: []int{9}, CPU: &CPU{Cores: brokerCores}, Share: brokerCores / (brokerCores + 1.2)}
		}
		return ClusterRunResult{Name: "fanout-1x1000-saturated", Setup: setup, Report: r}
	}
	runs := []ClusterRunResult{
		fan("memory", 800000, 0, 0), fan("nats", 300000, 0.3, 0), fan("nats", 500000, 0.2, 5), fan("nats", 400000, 0.4, 0),
		{Name: "fanout-1x1000-saturated", Setup: "redis", Error: "boom"},
	}
	info := map[string]ClusterSetup{"memory": {Nodes: 1}, "nats": {Nodes: 3}, "redis": {Nodes: 3}}
	rows := clusterRows(runs, []string{"memory", "nats", "redis"}, info)
	if len(rows) != 3 {
		t.Fatalf("%d rows", len(rows))
	}
	n := rows[1]
	if n.Setup != "nats" || n.Runs != 3 || *n.Rate != 400000 || *n.BrokerCores != 0.3 || n.Lost != 5 || len(n.Issues) != 1 {
		t.Errorf("nats row: %+v", n)
	}
	if rows[0].BrokerCores != nil || rows[2].Runs != 0 || rows[2].Rate != nil {
		t.Errorf("rows: %+v", rows)
	}
	c := &Cluster{Rows: rows, Runs: runs, Setups: info, Params: CompareParams{Runs: map[string][]string{}}}
	var b strings.Builder
	if err := c.writeText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"400000", "20.0%", "0.50/0.70", "FAILED: boom", "issue: fanout-1x1000-saturated on nats"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, b.String())
		}
	}
}

// TestClusterEndToEnd runs `herald bench --cluster` with the test binary
// as the bench and the nodes (see TestMain): a memory node, a "nats" setup
// of one node that ignores --broker, and a "centrifugo" setup of one fake
// Centrifugo node behind a stand-in for bench/peers/centrifugo.sh, with
// this process playing the brokers.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and bench processes")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(childEnv, "1")
	dir := t.TempDir()
	script := filepath.Join(dir, "centrifugo.sh")
	err = os.WriteFile(script, []byte(`#!/bin/sh
case "$1" in
install) echo "`+exe+`" ;;
config) echo '{"http_api":{"key":"'"$KEY"'"},"engine":{"type":"'"$ENGINE"'","redis":{"prefix":"'"$REDIS_PREFIX"'"}}}' >"`+dir+`/config-$2.json"; echo "`+dir+`/config-$2.json" ;;
exec) [ "$ENGINE" = redis ] && [ -n "$REDIS_PREFIX" ] && [ -n "$REDIS_ADDRESS" ] && exec "`+exe+`" fake-centrifugo "$2" ;;
esac
`), 0o755)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfg, []byte("allow_anonymous: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	o, err := parseClusterFlags([]string{"--out", out, "--herald-config", cfg, "--setups", "memory,nats,centrifugo",
		"--nodes", "1", "--port", itoa(testaddr.Port(t)), "--nats-pid", itoa(os.Getpid()), "--redis-pid", itoa(os.Getpid()),
		"--centrifugo", script,
		"--runs", "fanout-1x1000-saturated", "--scale", "0.02", "--pause", "0s", "--max-other", "0",
		"--meta", "herald_commit=test"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var cleaned []string
	o.cleanup = func(_ context.Context, kind, url, prefix string) error {
		mu.Lock()
		defer mu.Unlock()
		cleaned = append(cleaned, kind+" "+url+" "+prefix)
		return nil
	}
	var log strings.Builder
	c, err := runCluster(t.Context(), o, &log)
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if len(c.Runs) != 3 || len(c.Rows) != 3 {
		t.Fatalf("%d runs, %d rows", len(c.Runs), len(c.Rows))
	}
	for _, r := range c.Runs {
		if r.Error != "" || r.Report == nil || r.Report.Delivery == nil || r.Report.Delivery.Lost != 0 {
			t.Errorf("run %s on %s: %q %+v", r.Name, r.Setup, r.Error, r.Report)
		}
	}
	nats, cent := c.Runs[1], c.Runs[2]
	if nats.Setup != "nats" || nats.Report.Broker == nil || nats.Report.Broker.CPU == nil ||
		!strings.Contains(nats.Command, "--broker-pid") || len(cleaned) != 2 ||
		cleaned[0] != "nats nats://127.0.0.1:4222 "+nats.Prefix {
		t.Errorf("nats run %+v, cleaned %q", nats, cleaned)
	}
	if cent.Setup != "centrifugo" || cent.Report.Target != "centrifugo" || cent.Report.Broker == nil ||
		!strings.Contains(cent.Command, "--target centrifugo") || !strings.Contains(cent.Command, "/connection/websocket") ||
		cent.Prefix == "" || cent.Prefix == nats.Prefix || cleaned[1] != "centrifugo redis://127.0.0.1:6379 "+cent.Prefix {
		t.Errorf("centrifugo run %+v, cleaned %q", cent, cleaned)
	}
	if cs := c.Setups["centrifugo"]; cs.Version != "fake 0.0.0" || !strings.Contains(cs.Config, `"key":"K"`) ||
		!strings.Contains(cs.Command, "KEY=K ENGINE=redis REDIS_ADDRESS=redis://127.0.0.1:6379 REDIS_PREFIX=PREFIX "+script+" exec") {
		t.Errorf("centrifugo setup %+v", cs)
	}
	if len(c.Ratios) != 2 || c.Ratios[0].Versus != "memory" || c.Ratios[1].Versus != "centrifugo" ||
		c.Ratios[0].Goal == nil || *c.Ratios[0].Goal != 0.7 || c.Ratios[0].Figure != "deliveries/s" {
		t.Errorf("ratios %+v", c.Ratios)
	}
	if !strings.Contains(c.Setups["nats"].Command, "nats://127.0.0.1:4222?prefix=PREFIX") {
		t.Errorf("setup %+v", c.Setups["nats"])
	}
	var shown, direct strings.Builder
	if err := show(filepath.Join(out, "cluster.json"), &shown); err != nil {
		t.Fatal(err)
	}
	_ = c.writeText(&direct)
	if shown.String() != direct.String() {
		t.Errorf("--show differs:\n%s\nwant\n%s", shown.String(), direct.String())
	}
	t.Logf("\n%s", direct.String())
}

func TestParseCleanupArgs(t *testing.T) {
	for _, c := range []struct {
		args []string
		kind string // "" for an error
	}{
		{[]string{"nats://127.0.0.1:4222", "scale-1-2"}, "nats"},
		{[]string{"redis://127.0.0.1:6379", "scale-1-2"}, "redis"},
		{[]string{"rediss://h:6380/0", "p"}, "redis"},
		{[]string{"nats://127.0.0.1:4222"}, ""},
		{[]string{"http://127.0.0.1:4222", "p"}, ""},
		{[]string{"redis://127.0.0.1:6379", ""}, ""},
		{[]string{"redis://127.0.0.1:6379", "*"}, ""},
		{[]string{"redis://127.0.0.1:6379", "a:b"}, ""},
		{[]string{"redis://127.0.0.1:6379?prefix=x", "x"}, ""},
	} {
		kind, url, prefix, err := parseCleanupArgs(c.args)
		if c.kind == "" {
			if err == nil {
				t.Errorf("%q: no error, want one", c.args)
			}
			continue
		}
		if err != nil || kind != c.kind || url != c.args[0] || prefix != c.args[1] {
			t.Errorf("%q: %q %q %q %v, want %q", c.args, kind, url, prefix, err, c.kind)
		}
	}
}
