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
	if err != nil || len(o.setups) != 3 || len(o.runs) != 2 {
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
// as the bench and the nodes (see TestMain): a memory node, and a "nats"
// setup of one node that ignores --broker, with this process playing the
// broker.
func TestClusterEndToEnd(t *testing.T) {
	if testing.Short() {
		t.Skip("starts servers and bench processes")
	}
	t.Setenv(childEnv, "1")
	dir := t.TempDir()
	cfg := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfg, []byte("allow_anonymous: true\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	o, err := parseClusterFlags([]string{"--out", out, "--herald-config", cfg, "--setups", "memory,nats",
		"--nodes", "1", "--port", itoa(testaddr.Port(t)), "--nats-pid", itoa(os.Getpid()),
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
	if len(c.Runs) != 2 || len(c.Rows) != 2 {
		t.Fatalf("%d runs, %d rows", len(c.Runs), len(c.Rows))
	}
	for _, r := range c.Runs {
		if r.Error != "" || r.Report == nil || r.Report.Delivery == nil || r.Report.Delivery.Lost != 0 {
			t.Errorf("run %s on %s: %q %+v", r.Name, r.Setup, r.Error, r.Report)
		}
	}
	nats := c.Runs[1]
	if nats.Setup != "nats" || nats.Report.Broker == nil || nats.Report.Broker.CPU == nil ||
		!strings.Contains(nats.Command, "--broker-pid") || len(cleaned) != 1 ||
		cleaned[0] != "nats nats://127.0.0.1:4222 "+nats.Prefix {
		t.Errorf("nats run %+v, cleaned %q", nats, cleaned)
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
