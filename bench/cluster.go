package bench

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"
)

// `herald bench --cluster` measures cross-node fan-out: the same bench
// runs against one Herald node on the memory broker, against clusters of
// --nodes nodes on NATS and on Redis (the brokers already running on this
// machine), and against --nodes Centrifugo nodes on its Redis engine (the
// same Redis), alternately, each run on freshly started nodes under a
// broker prefix of its own. The subscribers are spread over the nodes
// (--url with every node's address), publishes go through the first
// node's API (or every node's, --spread-publish), and the broker process's
// CPU is measured beside the nodes'.

const clusterUsage = `herald bench --cluster: cross-node fan-out, memory vs NATS vs Redis vs Centrifugo on Redis

Usage:
  herald bench --cluster [flags]
  herald bench --show DIR/cluster.json     print a saved run as tables

Setups (--setups): memory is one node (HERALD-BIN serve --config
HERALD-CONFIG); nats and redis are --nodes nodes started with --broker
URL?prefix=RANDOM (a fresh prefix per run, whose streams or keys are deleted
afterwards) against the broker at --nats or --redis, whose process
(--nats-pid, --redis-pid; default: the nats-server or redis-server that pgrep
finds on the URL's port) is measured apart; centrifugo is --nodes Centrifugo
nodes on its Redis engine at --redis (CENTRIFUGO exec PORT with ENGINE=redis,
REDIS_ADDRESS, REDIS_PREFIX=RANDOM and KEY; see bench/peers/centrifugo.sh),
their keys deleted afterwards too. Each run starts fresh nodes, runs one
bench scenario as a child process (--url with every node, --api on the
first node, --server-pid with every node, --broker-pid), and stops them.
Runs alternate between the setups; the order rotates on each repeat.
Results in --out: one bench report per run (NAME.SETUP.N.json), its log,
the nodes' logs, cluster.json and cluster.txt (the tables, and the ratios
of the clusters to one memory node and to Centrifugo, against the goals).

Runs:
%s
Flags:
`

// clusterRuns are the cross-node runs of the scale-out issue.
var clusterRuns = []compareRun{
	{Name: "fanout-1x1000-rate100", Args: strings.Fields("--scenario fanout --conns 1000 --channels 1 --rate 100 --duration 20s --settle 3s")},
	{Name: "fanout-1x1000-saturated", Args: strings.Fields("--scenario fanout --conns 1000 --channels 1 --rate 0 --duration 20s --settle 3s")},
	{Name: "channels-10k-broadcast", Extra: true, Args: strings.Fields("--scenario channels --conns 10000 --rate 0 --batch 100 --inflight 8 --window 20000 --duration 8s --settle 5s --source-ips 4")},
	{Name: "hot-1x10", Extra: true, Args: strings.Fields(hotArgs)},
	// The same with the publish requests spread over every node.
	{Name: "hot-1x10-spread", Extra: true, Args: strings.Fields(hotArgs + " --spread-publish")},
	// One channel with 1,000 subscribers on each of 3 nodes: saturated,
	// and at a fixed rate for the latency.
	{Name: "fanout-1x3000-saturated", Extra: true, Args: strings.Fields("--scenario fanout --conns 3000 --channels 1 --rate 0 --duration 20s --settle 3s")},
	// The same with 32 publish requests in flight rather than 8: on a
	// shared machine a cluster's publish requests wait longer (each hop,
	// API, broker and back, waits for a core), and 8 of them bound the
	// publication rate before the nodes' fan-out does.
	{Name: "fanout-1x3000-saturated-32", Extra: true, Args: strings.Fields("--scenario fanout --conns 3000 --channels 1 --rate 0 --inflight 32 --duration 20s --settle 3s")},
	{Name: "fanout-1x3000-rate100", Extra: true, Args: strings.Fields("--scenario fanout --conns 3000 --channels 1 --rate 100 --duration 20s --settle 3s")},
	// Connect + subscribe, the clients spread over the nodes.
	{Name: "connect-10k", Extra: true, Args: strings.Fields("--scenario connect --conns 10000 --source-ips 4")},
}

// clusterGoal is what the clusters' figures in a run are held to: at
// least VsMemory times one memory node's, at least VsCentrifugo times
// Centrifugo's on the same number of nodes (0: no goal).
type clusterGoal struct{ VsMemory, VsCentrifugo float64 }

// clusterGoals are the scale-out goals (docs/BENCHMARKS.md): cross-node
// fan-out at 70 % of one node and 3x Centrifugo, a hot channel at 1.5x
// Centrifugo.
var clusterGoals = map[string]clusterGoal{
	"fanout-1x1000-saturated":    {VsMemory: 0.7, VsCentrifugo: 3},
	"fanout-1x3000-saturated":    {VsMemory: 0.7, VsCentrifugo: 3},
	"fanout-1x3000-saturated-32": {VsMemory: 0.7, VsCentrifugo: 3},
	"hot-1x10":                   {VsCentrifugo: 1.5},
	"hot-1x10-spread":            {VsCentrifugo: 1.5},
}

// hotArgs is the hot channel run: one channel with history (the config's
// default namespace), 10 subscribers that check the offsets are gap-free
// and in order, one publication per API request from 32 concurrent
// clients, as fast as they go.
const hotArgs = "--scenario fanout --conns 10 --channels 1 --rate 0 --batch 1 --inflight 32 --window 5000 --duration 15s --settle 2s"

var clusterSetupNames = []string{"memory", "nats", "redis", "centrifugo"}

// clusterOptions are the flags of --cluster.
type clusterOptions struct {
	seriesOptions
	Setups   string
	Nodes    int
	Port     int
	NATS     string
	Redis    string
	NATSPID  int
	RedisPID int
	// Centrifugo is the script that installs and runs Centrifugo.
	Centrifugo string

	setups []string
	// cleanup deletes what a run left in the broker under its prefix
	// (tests replace it).
	cleanup func(ctx context.Context, kind, brokerURL, prefix string) error
}

var clusterFlags = seriesFlags{
	name: "bench --cluster", usage: clusterUsage, runs: clusterRuns, report: "cluster.json",
	maxOther: 0.3, retryWait: 20 * time.Second, readyTimeout: 30 * time.Second,
	configHelp: "config file of every node",
	keyHelp:    "API key of the nodes",
	runsHelp:   "comma-separated run names (default: all but the extra ones)",
	repeatHelp: "runs per setup; a figure is the median",
	pauseHelp:  "pause between runs",
	jsonHelp:   "print cluster.json instead of the tables",
	readyHelp:  "wait for the nodes to be ready",
}

func parseClusterFlags(args []string, errw io.Writer) (*clusterOptions, error) {
	o := &clusterOptions{cleanup: cleanupBroker}
	err := o.parse(args, errw, clusterFlags, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Setups, "setups", strings.Join(clusterSetupNames, ","), "comma-separated: memory (one node), nats, redis, centrifugo (Centrifugo on its Redis engine)")
		fs.IntVar(&o.Nodes, "nodes", 3, "nodes of the nats, redis and centrifugo setups")
		fs.IntVar(&o.Port, "port", 27900, "node i listens on 127.0.0.1:PORT+i")
		fs.StringVar(&o.NATS, "nats", "nats://127.0.0.1:4222", "NATS server (with JetStream) of the nats setup")
		fs.StringVar(&o.Redis, "redis", "redis://127.0.0.1:6379", "Redis of the redis setup")
		fs.IntVar(&o.NATSPID, "nats-pid", 0, "the NATS server's process (default: pgrep -x nats-server, on the URL's port)")
		fs.IntVar(&o.RedisPID, "redis-pid", 0, "the Redis server's process (default: pgrep -x redis-server, on the URL's port)")
		fs.StringVar(&o.Centrifugo, "centrifugo", "bench/peers/centrifugo.sh", "script run as SCRIPT install, SCRIPT config PORT and SCRIPT exec PORT (the centrifugo setup)")
	}, func() error {
		if o.Repeat < 1 || o.Retries < 1 || o.Scale <= 0 || o.Nodes < 1 {
			return errors.New("--repeat, --retries and --nodes must be at least 1, --scale positive")
		}
		for _, s := range strings.Split(o.Setups, ",") {
			s = strings.TrimSpace(s)
			if !slices.Contains(clusterSetupNames, s) {
				return fmt.Errorf("--setups: unknown setup %q (memory, nats, redis, centrifugo)", s)
			}
			if !slices.Contains(o.setups, s) {
				o.setups = append(o.setups, s)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Cluster is cluster.json.
type Cluster struct {
	SeriesHeader
	Setups map[string]ClusterSetup `json:"setups"`
	Params CompareParams           `json:"params"`
	Rows   []ClusterRow            `json:"cluster_rows"`
	Ratios []ClusterRatio          `json:"ratios,omitempty"`
	Runs   []ClusterRunResult      `json:"runs"`
}

// ClusterRatio is a Herald cluster's figure in one run over one memory
// node's or over Centrifugo's (Versus), and the goal it is held to.
type ClusterRatio struct {
	Run    string  `json:"run"`
	Setup  string  `json:"setup"`
	Versus string  `json:"versus"`
	Figure string  `json:"figure"` // deliveries/s or connects/s
	Ratio  float64 `json:"ratio"`
	// Goal is the least ratio the goals ask for; GoalMet is false too
	// when the Herald runs had issues (lost deliveries, failed
	// connections).
	Goal    *float64 `json:"goal,omitempty"`
	GoalMet *bool    `json:"goal_met,omitempty"`
}

// ClusterSetup is how one setup's nodes were run.
type ClusterSetup struct {
	Nodes      int    `json:"nodes"`
	Command    string `json:"command"` // node 0's, with PREFIX for the run's broker prefix
	Binary     string `json:"binary"`
	Version    string `json:"version,omitempty"`
	ConfigFile string `json:"config_file"`
	Config     string `json:"config"`
	Broker     string `json:"broker,omitempty"`
	// BrokerProcess is the broker's command line as /proc showed it.
	BrokerProcess string `json:"broker_process,omitempty"`
}

// ClusterRow is one setup's figures in one run: medians over the repeats,
// except the check counts, which are sums.
type ClusterRow struct {
	Run               string    `json:"run"`
	Setup             string    `json:"setup"`
	Nodes             int       `json:"nodes"`
	Runs              int       `json:"runs"`
	Rate              *float64  `json:"deliveries_per_s"`
	P50               *float64  `json:"latency_p50_ms"`
	P99               *float64  `json:"latency_p99_ms"`
	ServerCores       *float64  `json:"server_cores"`
	ServerPerDelivery *float64  `json:"server_cpu_per_delivery_us"`
	BrokerCores       *float64  `json:"broker_cores,omitempty"`
	BrokerShare       *float64  `json:"broker_share,omitempty"`
	BrokerPerDelivery *float64  `json:"broker_cpu_per_delivery_us,omitempty"`
	BenchCores        *float64  `json:"bench_cores"`
	OtherCores        *float64  `json:"other_cores"`
	ConnectRate       *float64  `json:"connects_per_s,omitempty"`
	ConnectCPU        *float64  `json:"server_cpu_per_connect_us,omitempty"`
	Lost              uint64    `json:"lost"`
	Duplicates        uint64    `json:"duplicates"`
	OutOfOrder        uint64    `json:"out_of_order"`
	LostConns         int       `json:"lost_conns"`
	FailedPublishes   uint64    `json:"failed_publishes"`
	Issues            []string  `json:"issues,omitempty"`
	ValuesRate        []float64 `json:"deliveries_per_s_values,omitempty"`
}

// ClusterRunResult is one bench run (the chosen attempt).
type ClusterRunResult struct {
	Name     string `json:"name"`
	Setup    string `json:"setup"`
	Repeat   int    `json:"repeat"`
	Attempts int    `json:"attempts"`
	Prefix   string `json:"broker_prefix,omitempty"`
	Command  string `json:"command"`
	File     string `json:"report_file,omitempty"`
	Error    string `json:"error,omitempty"`
	// OtherCores is other processes' CPU during the measured phase.
	OtherCores float64 `json:"other_cores"`
	Report     *Report `json:"report,omitempty"`
}

func (r *ClusterRunResult) outcome() (string, float64) { return r.Error, r.OtherCores }
func (r *ClusterRunResult) setAttempts(n int)          { r.Attempts = n }

// clusterSetup is one setup's way to start its nodes.
type clusterSetup struct {
	name   string
	target string // the bench's --target: herald or centrifugo
	nodes  int
	kind   string // the broker: "nats", "redis", "" for memory
	broker string // the broker's URL without the prefix
	pid    int    // the broker's process, 0: find it per run
}

// clusterNode is how one node of a setup runs.
type clusterNode struct {
	argv, env []string
	url       string // the client WebSocket URL
	ready     string // the readiness URL
}

func newClusterSetup(o *clusterOptions, name string) *clusterSetup {
	s := &clusterSetup{name: name, target: "herald", nodes: o.Nodes}
	switch name {
	case "memory":
		s.nodes = 1
	case "nats":
		s.kind, s.broker, s.pid = "nats", o.NATS, o.NATSPID
	case "redis":
		s.kind, s.broker, s.pid = "redis", o.Redis, o.RedisPID
	case "centrifugo":
		s.target = "centrifugo"
		s.kind, s.broker, s.pid = "redis", o.Redis, o.RedisPID
	}
	return s
}

func runCluster(ctx context.Context, o *clusterOptions, logw io.Writer) (*Cluster, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "cluster: "+format+"\n", args...) }
	cfgText, cfgPath, err := o.prepare("herald-cluster-")
	if err != nil {
		return nil, err
	}
	hver, _ := exec.CommandContext(ctx, o.HeraldBin, "version").Output()

	c := &Cluster{SeriesHeader: o.header("cluster"), Setups: map[string]ClusterSetup{}, Params: o.params()}
	setups := map[string]*clusterSetup{}
	for _, name := range o.setups {
		s := newClusterSetup(o, name)
		setups[name] = s
		n0 := s.node(o, cfgPath, 0, "PREFIX")
		cs := ClusterSetup{
			Nodes: s.nodes, Binary: o.HeraldBin, Version: strings.TrimSpace(string(hver)),
			ConfigFile: cfgPath, Config: string(cfgText), Broker: s.broker,
			Command: strings.Join(n0.env, " ") + " " + commandLine(n0.argv),
		}
		if s.target == "centrifugo" {
			// Install (cached) and write node 0's config once, to record them.
			logf("installing Centrifugo if needed: %s install", o.Centrifugo)
			env := centrifugoEnv(o.Key, s.broker, "PREFIX")
			cbin, err := scriptOutput(ctx, o.Centrifugo, env, "install")
			if err != nil {
				return nil, fmt.Errorf("centrifugo install: %w", err)
			}
			ccfg, err := scriptOutput(ctx, o.Centrifugo, env, "config", strconv.Itoa(o.Port))
			if err != nil {
				return nil, fmt.Errorf("centrifugo config: %w", err)
			}
			ccfgText, _ := os.ReadFile(ccfg)
			cver, _ := exec.CommandContext(ctx, cbin, "version").Output()
			cs.Binary, cs.Version, cs.ConfigFile = cbin, strings.TrimSpace(string(cver)), ccfg
			cs.Config = redactKey(string(ccfgText), o.Key)
		}
		cs.Command = strings.ReplaceAll(cs.Command, "KEY="+o.Key+" ", "KEY=K ")
		if s.broker != "" {
			pid, err := brokerPID(s)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			cs.BrokerProcess = fmt.Sprintf("pid %d: %s", pid, processCmdline(pid))
		}
		c.Setups[name] = cs
	}

	save := func() {
		c.Finished = time.Now().UTC().Format(time.RFC3339)
		c.Rows = clusterRows(c.Runs, o.setups, c.Setups)
		c.Ratios = clusterRatios(c.Rows)
		o.save("cluster", c, c.writeText)
	}
	err = o.runSeries(ctx, "cluster", o.setups, logf, save, func(run compareRun, name string, rep int) string {
		res := clusterOne(ctx, o, setups[name], cfgPath, run, rep, logf)
		c.Runs = append(c.Runs, res)
		return res.Error
	})
	return c, err
}

// node is how node i of the setup runs, under the broker prefix prefix.
// Herald nodes take the API key in HERALD_API_KEY; Centrifugo nodes run
// as CENTRIFUGO exec PORT, configured by the script's environment.
func (s *clusterSetup) node(o *clusterOptions, cfg string, i int, prefix string) clusterNode {
	addr := nodeAddr(o, i)
	if s.target == "centrifugo" {
		return clusterNode{
			argv:  []string{o.Centrifugo, "exec", strconv.Itoa(o.Port + i)},
			env:   centrifugoEnv(o.Key, s.broker, prefix),
			url:   "ws://" + addr + "/connection/websocket",
			ready: "http://" + addr + "/health",
		}
	}
	argv := []string{o.HeraldBin, "serve", "--config", cfg, "--listen", addr}
	if s.broker != "" {
		argv = append(argv, "--broker", withPrefix(s.broker, prefix))
	}
	return clusterNode{
		argv:  argv,
		env:   []string{"HERALD_API_KEY=" + o.Key},
		url:   "ws://" + addr + "/ws",
		ready: "http://" + addr + "/readyz",
	}
}

// centrifugoEnv configures bench/peers/centrifugo.sh for a node of a
// Centrifugo cluster: its Redis engine at redisURL, keys and channels
// under prefix.
func centrifugoEnv(key, redisURL, prefix string) []string {
	return []string{"KEY=" + key, "ENGINE=redis", "REDIS_ADDRESS=" + redisURL, "REDIS_PREFIX=" + prefix}
}

func nodeAddr(o *clusterOptions, i int) string { return fmt.Sprintf("127.0.0.1:%d", o.Port+i) }

// withPrefix adds prefix=P to a broker URL's query.
func withPrefix(broker, prefix string) string {
	sep := "?"
	if strings.Contains(broker, "?") {
		sep = "&"
	}
	return broker + sep + "prefix=" + prefix
}

// clusterOne runs one scenario on one setup, again while other processes
// disturbed it (--max-other), and keeps the least disturbed attempt.
func clusterOne(ctx context.Context, o *clusterOptions, s *clusterSetup, cfg string, run compareRun, rep int, logf func(string, ...any)) ClusterRunResult {
	return retry(ctx, &o.seriesOptions, run.Name+" on "+s.name, logf, func(attempt int) ClusterRunResult {
		return clusterAttempt(ctx, o, s, cfg, run, rep, attempt, logf)
	})
}

func clusterAttempt(ctx context.Context, o *clusterOptions, s *clusterSetup, cfg string, run compareRun, rep, attempt int, logf func(string, ...any)) (res ClusterRunResult) {
	base := attemptBase(run.Name, s.name, rep, attempt)
	res.Name, res.Setup, res.Repeat = run.Name, s.name, rep
	fail := func(err error) ClusterRunResult {
		res.Error = err.Error()
		logf("%s on %s: %v", run.Name, s.name, err)
		return res
	}
	if !sleepCtx(ctx, o.Pause) {
		return fail(ctx.Err())
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "benchcl" + hex.EncodeToString(b[:])
	if s.broker != "" {
		res.Prefix = prefix
	}

	var nodes []*serverProc
	defer func() {
		// Stop every node at once, then clean the broker up.
		done := make(chan struct{}, len(nodes))
		for _, n := range nodes {
			go func() { n.stop(); done <- struct{}{} }()
		}
		for range nodes {
			<-done
		}
		if s.broker != "" {
			cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
			defer cancel()
			if err := o.cleanup(cctx, s.cleanupKind(), s.broker, prefix); err != nil {
				logf("%s on %s: cleaning up prefix %s: %v", run.Name, s.name, prefix, err)
			}
		}
	}()
	var urls, readys, pids []string
	for i := 0; i < s.nodes; i++ {
		if err := portFree(o.Port + i); err != nil {
			return fail(err)
		}
		nd := s.node(o, cfg, i, prefix)
		lf, err := os.Create(filepath.Join(o.Out, fmt.Sprintf("%s.node%d.log", base, i)))
		if err != nil {
			return fail(err)
		}
		n, err := startServerProc(nd.argv, nd.env, lf)
		if err != nil {
			return fail(fmt.Errorf("start node %d: %w", i, err))
		}
		nodes = append(nodes, n)
		urls = append(urls, nd.url)
		readys = append(readys, nd.ready)
		pids = append(pids, strconv.Itoa(n.cmd.Process.Pid))
	}
	for i, n := range nodes {
		if err := waitReady(ctx, readys[i], o.ReadyTimeout, n.exited); err != nil {
			return fail(fmt.Errorf("node %d not ready (see %s.node%d.log): %w", i, base, i, err))
		}
	}
	args := append(slices.Clone(run.Args), "--target", s.target, "--url", strings.Join(urls, ","), "--api", "http://"+nodeAddr(o, 0),
		"--key", o.Key, "--server-pid", strings.Join(pids, ","), "--json")
	if s.broker != "" {
		pid, err := brokerPID(s)
		if err != nil {
			return fail(err)
		}
		args = append(args, "--broker-pid", strconv.Itoa(pid))
	}
	bo, err := parseFlags(args, io.Discard)
	if err != nil {
		return fail(err)
	}
	res.Command = bo.commandLine()
	logf("%s on %s (%d nodes, pids %s): %s", run.Name, s.name, s.nodes, strings.Join(pids, ","), res.Command)
	report, file, err := o.bench(ctx, base, args, func() error {
		var exited []error
		for i, n := range nodes {
			if !n.running() {
				exited = append(exited, fmt.Errorf("node %d exited during the run (see %s.node%d.log)", i, base, i))
			}
		}
		return errors.Join(exited...)
	})
	if report != nil {
		res.File, res.Report = file, report
		if report.Machine != nil {
			res.OtherCores = report.Machine.Other
		}
	}
	if err != nil {
		return fail(err)
	}
	logf("%s on %s: %s", run.Name, s.name, summaryLine(res.Report))
	return res
}

// brokerPID returns the setup's broker process: --nats-pid or
// --redis-pid, or the one process pgrep finds with the server's name whose
// command line names the URL's port (other servers may run beside it).
func brokerPID(s *clusterSetup) (int, error) {
	if s.pid != 0 {
		if _, err := processRSS(s.pid); err != nil {
			return 0, fmt.Errorf("broker pid %d: %w", s.pid, err)
		}
		return s.pid, nil
	}
	name, port := "nats-server", "4222"
	if s.kind == "redis" {
		name, port = "redis-server", "6379"
	}
	u, err := url.Parse(strings.Split(s.broker, ",")[0])
	if err == nil && u.Port() != "" {
		port = u.Port()
	}
	out, _ := exec.Command("pgrep", "-x", name).Output()
	var all, onPort []int
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		all = append(all, pid)
		for _, a := range strings.Fields(processCmdline(pid)) {
			if a == port || strings.HasSuffix(a, ":"+port) {
				onPort = append(onPort, pid)
				break
			}
		}
	}
	switch {
	case len(onPort) == 1:
		return onPort[0], nil
	case len(all) == 1 && len(onPort) == 0:
		return all[0], nil
	}
	return 0, fmt.Errorf("pgrep -x %s: %d processes (%v), %d on port %s: give --%s-pid", name, len(all), all, len(onPort), port, s.kind)
}

// processCmdline is a process's command line, arguments joined by spaces.
func processCmdline(pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// cleanupKind is what cleanupBroker deletes after a run of the setup: a
// Herald broker's layout (nats, redis) or Centrifugo's keys (centrifugo).
func (s *clusterSetup) cleanupKind() string {
	if s.target == "centrifugo" {
		return "centrifugo"
	}
	return s.kind
}

// cleanupMain runs `herald bench --cleanup-broker URL PREFIX`: it deletes
// what nodes started with --broker URL?prefix=PREFIX left in the broker
// (bench/peers/scale.sh runs it after each run's nodes stopped).
func cleanupMain(args []string) error {
	kind, brokerURL, prefix, err := parseCleanupArgs(args)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	return cleanupBroker(ctx, kind, brokerURL, prefix)
}

// parseCleanupArgs checks --cleanup-broker's arguments, URL and PREFIX,
// and says which broker the URL's scheme names.
func parseCleanupArgs(args []string) (kind, brokerURL, prefix string, err error) {
	if len(args) != 2 {
		return "", "", "", errors.New("usage: herald bench --cleanup-broker URL PREFIX (nats://... or redis://...)")
	}
	brokerURL, prefix = args[0], args[1]
	switch {
	case strings.HasPrefix(brokerURL, "nats://"):
		kind = "nats"
	case strings.HasPrefix(brokerURL, "redis://"), strings.HasPrefix(brokerURL, "rediss://"):
		kind = "redis"
	default:
		return "", "", "", fmt.Errorf("--cleanup-broker: %q is neither a nats:// nor a redis:// URL", brokerURL)
	}
	if prefix == "" || strings.ContainsAny(prefix, "*?[]: ") || strings.Contains(brokerURL, "?") {
		return "", "", "", fmt.Errorf("--cleanup-broker: the prefix %q must be non-empty, without wildcards, and apart from the URL", prefix)
	}
	return kind, brokerURL, prefix, nil
}

// cleanupBroker deletes what the nodes of one run created in the broker
// under prefix (the layouts of broker/nats and broker/redis, or every
// Redis key that starts with the prefix for Centrifugo, whose prefixes
// are as unique as Herald's).
func cleanupBroker(ctx context.Context, kind, brokerURL, prefix string) error {
	pattern := prefix + ":*"
	switch kind {
	case "centrifugo":
		pattern = prefix + "*"
		kind = "redis"
	}
	switch kind {
	case "nats":
		nc, err := natsgo.Connect(brokerURL, natsgo.Timeout(5*time.Second), natsgo.NoReconnect())
		if err != nil {
			return err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		var errs []error
		for _, s := range []string{"history", "presence", "idempotency", "cursors"} {
			if err := js.DeleteStream(ctx, prefix+"-"+s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				errs = append(errs, fmt.Errorf("delete stream %s-%s: %w", prefix, s, err))
			}
		}
		return errors.Join(errs...)
	case "redis":
		opt, err := goredis.ParseURL(brokerURL)
		if err != nil {
			return err
		}
		c := goredis.NewClient(opt)
		defer c.Close()
		iter := c.Scan(ctx, 0, pattern, 1000).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			return err
		}
		for len(keys) > 0 {
			n := min(len(keys), 500)
			if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
				return err
			}
			keys = keys[n:]
		}
	}
	return nil
}

// clusterRows computes the tables: per run and setup, the median of each
// figure over the repeats, and the sum of the check counts.
func clusterRows(runs []ClusterRunResult, setups []string, info map[string]ClusterSetup) []ClusterRow {
	var names []string
	for _, r := range runs {
		if !slices.Contains(names, r.Name) {
			names = append(names, r.Name)
		}
	}
	var rows []ClusterRow
	for _, name := range names {
		for _, setup := range setups {
			row := ClusterRow{Run: name, Setup: setup, Nodes: info[setup].Nodes}
			vals := map[string][]float64{}
			add := func(k string, v float64, ok bool) {
				if ok {
					vals[k] = append(vals[k], v)
				}
			}
			found := false
			for _, r := range runs {
				if r.Name != name || r.Setup != setup {
					continue
				}
				found = true
				rep := r.Report
				if rep == nil || r.Error != "" {
					continue
				}
				row.Runs++
				if d := rep.Delivery; d != nil {
					add("rate", d.Rate, d.Rate > 0)
					add("srvpd", d.ServerCPUPerDelivery, d.ServerCPUPerDelivery > 0)
					add("brkpd", d.BrokerCPUPerDelivery, d.BrokerCPUPerDelivery > 0)
					row.Lost += d.Lost
					row.Duplicates += d.Duplicates
					row.OutOfOrder += d.OutOfOrder
					row.LostConns += d.LostConns
				}
				if l := rep.Latency; l != nil && l.Count > 0 {
					add("p50", l.P50, true)
					add("p99", l.P99, true)
				}
				if s := rep.Server; s != nil && s.CPU != nil {
					add("srv", s.CPU.Cores, true)
				}
				if b := rep.Broker; b != nil && b.CPU != nil {
					add("brk", b.CPU.Cores, true)
					add("share", b.Share, true)
				}
				if c := rep.BenchCPU; c != nil {
					add("bench", c.Cores, true)
				}
				if m := rep.Machine; m != nil {
					add("other", m.Other, true)
				}
				if p := rep.Publish; p != nil {
					row.FailedPublishes += p.Failed
				}
				if cs := rep.Connect; cs != nil && cs.Rate > 0 && rep.Scenario == "connect" {
					add("conn", cs.Rate, true)
					if l := cs.Latency; l.Count > 0 && (rep.Latency == nil || rep.Latency.Count == 0) {
						add("p50", l.P50, true) // dial to subscribe reply
						add("p99", l.P99, true)
					}
					if cs.ServerCPU != nil && cs.Connected > 0 {
						add("connpc", cs.ServerCPU.Total*1e6/float64(cs.Connected), true)
					}
				}
				if is := runIssues(rep); is != "" {
					row.Issues = append(row.Issues, is)
				}
			}
			if !found {
				continue
			}
			med := func(k string) *float64 {
				if len(vals[k]) == 0 {
					return nil
				}
				return ptr(median(vals[k]))
			}
			row.Rate, row.P50, row.P99 = med("rate"), med("p50"), med("p99")
			row.ServerCores, row.ServerPerDelivery = med("srv"), med("srvpd")
			row.BrokerCores, row.BrokerShare, row.BrokerPerDelivery = med("brk"), med("share"), med("brkpd")
			row.BenchCores, row.OtherCores = med("bench"), med("other")
			row.ConnectRate, row.ConnectCPU = med("conn"), med("connpc")
			row.ValuesRate = vals["rate"]
			rows = append(rows, row)
		}
	}
	return rows
}

// clusterRatios computes, for each run, each Herald cluster's figure
// (connects/s in a connect run, else deliveries/s) over one memory node's
// and over Centrifugo's, with the goals of clusterGoals.
func clusterRatios(rows []ClusterRow) []ClusterRatio {
	type key struct{ run, setup string }
	byKey := map[key]ClusterRow{}
	var runs []string
	for _, r := range rows {
		byKey[key{r.Run, r.Setup}] = r
		if !slices.Contains(runs, r.Run) {
			runs = append(runs, r.Run)
		}
	}
	figure := func(r ClusterRow) (string, *float64) {
		if r.ConnectRate != nil {
			return "connects/s", r.ConnectRate
		}
		return "deliveries/s", r.Rate
	}
	var out []ClusterRatio
	for _, run := range runs {
		goal := clusterGoals[run]
		for _, setup := range []string{"nats", "redis"} {
			h, ok := byKey[key{run, setup}]
			if !ok {
				continue
			}
			name, hv := figure(h)
			if hv == nil || *hv <= 0 {
				continue
			}
			for _, vs := range []string{"memory", "centrifugo"} {
				v, ok := byKey[key{run, vs}]
				if !ok {
					continue
				}
				_, vv := figure(v)
				if vv == nil || *vv <= 0 {
					continue
				}
				r := ClusterRatio{Run: run, Setup: setup, Versus: vs, Figure: name, Ratio: roundSig(*hv / *vv)}
				g := goal.VsMemory
				if vs == "centrifugo" {
					g = goal.VsCentrifugo
				}
				if g > 0 {
					r.Goal = ptr(g)
					r.GoalMet = ptr(*hv / *vv >= g && len(h.Issues) == 0)
				}
				out = append(out, r)
			}
		}
	}
	return out
}

// writeText prints one table per run (a row per setup), then every run.
func (c *Cluster) writeText(w io.Writer) error {
	fmt.Fprintf(w, "Herald cross-node fan-out, %s\n", c.Started)
	if v := c.Meta["herald_commit"]; v != "" {
		fmt.Fprintf(w, "herald commit %s\n", v)
	}
	m := c.Machine
	fmt.Fprintf(w, "machine: %d cores (%s), %s, kernel %s; nodes, broker and load generator share the cores\n",
		m.Cores, m.CPU, m.MemTotal, m.Kernel)
	var names []string
	for k := range c.Setups {
		names = append(names, k)
	}
	slices.SortFunc(names, func(a, b string) int {
		return slices.Index(clusterSetupNames, a) - slices.Index(clusterSetupNames, b)
	})
	for _, k := range names {
		s := c.Setups[k]
		fmt.Fprintf(w, "%s: %d node(s): %s\n", k, s.Nodes, s.Command)
		if s.BrokerProcess != "" {
			fmt.Fprintf(w, "  broker %s\n", s.BrokerProcess)
		}
	}
	if c.Params.Scale != 1 && c.Params.Scale != 0 {
		fmt.Fprintf(w, "SCALED by %g: connection counts and durations differ from the run names\n", c.Params.Scale)
	}
	if c.Params.Repeat > 1 {
		fmt.Fprintf(w, "figures are medians of %d runs per setup; lost, dup, ooo and lost conns are sums\n", c.Params.Repeat)
	}
	run := ""
	var tw *tabwriter.Writer
	flush := func() error {
		if tw != nil {
			return tw.Flush()
		}
		return nil
	}
	for _, r := range c.Rows {
		if r.Run != run {
			if err := flush(); err != nil {
				return err
			}
			run = r.Run
			fmt.Fprintf(w, "\n%s: %s\n", run, strings.Join(c.Params.Runs[run], " "))
			tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
			if strings.HasPrefix(run, "connect") {
				fmt.Fprintln(tw, "setup\tnodes\tconnects/s\tp50 ms\tp99 ms\tnodes cores\tnodes us/connect\tbroker cores\tbroker share\tbench cores\tother cores\tlost conns\truns\t")
			} else {
				fmt.Fprintln(tw, "setup\tnodes\tdeliveries/s\tp50 ms\tp99 ms\tnodes cores\tnodes us/deliv\tbroker cores\tbroker share\tbroker us/deliv\tbench cores\tother cores\tlost\tdup\tooo\tlost conns\truns\t")
			}
		}
		pct := "-"
		if r.BrokerShare != nil {
			pct = strconv.FormatFloat(*r.BrokerShare*100, 'f', 1, 64) + "%"
		}
		if strings.HasPrefix(run, "connect") {
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", r.Setup, r.Nodes,
				fmtFigure(r.ConnectRate), fmtFigure(r.P50), fmtFigure(r.P99), fmtFigure(r.ServerCores), fmtFigure(r.ConnectCPU),
				fmtFigure(r.BrokerCores), pct, fmtFigure(r.BenchCores), fmtFigure(r.OtherCores), r.LostConns, r.Runs)
			continue
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t\n", r.Setup, r.Nodes,
			fmtFigure(r.Rate), fmtFigure(r.P50), fmtFigure(r.P99), fmtFigure(r.ServerCores), fmtFigure(r.ServerPerDelivery),
			fmtFigure(r.BrokerCores), pct, fmtFigure(r.BrokerPerDelivery), fmtFigure(r.BenchCores), fmtFigure(r.OtherCores),
			r.Lost, r.Duplicates, r.OutOfOrder, r.LostConns, r.Runs)
	}
	if err := flush(); err != nil {
		return err
	}
	for _, r := range c.Rows {
		for _, is := range r.Issues {
			fmt.Fprintf(w, "issue: %s on %s: %s\n", r.Run, r.Setup, is)
		}
	}
	if len(c.Ratios) > 0 {
		fmt.Fprintln(w, "\nratios (medians over medians; a goal is not met on a run with issues):")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "run\tsetup\tover\tfigure\tratio\tgoal\tmet")
		for _, r := range c.Ratios {
			goal, met := "-", ""
			if r.Goal != nil {
				goal = ">= " + strconv.FormatFloat(*r.Goal, 'g', 3, 64)
			}
			if r.GoalMet != nil {
				met = "no"
				if *r.GoalMet {
					met = "yes"
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Run, r.Setup, r.Versus, r.Figure,
				strconv.FormatFloat(r.Ratio, 'g', 3, 64), goal, met)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintln(w, "\nruns (node cores: each node's CPU; the first node serves the publish API):")
	tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "run\tsetup\trepeat\tattempts\tprefix\tnode cores\tresult")
	for _, r := range c.Runs {
		result := runResult(r.Error, r.Report)
		nodes := "-"
		if rep := r.Report; rep != nil && rep.Server != nil {
			var parts []string
			for _, n := range rep.Server.Nodes {
				if n.CPU != nil {
					parts = append(parts, strconv.FormatFloat(n.CPU.Cores, 'f', 2, 64))
				}
			}
			if len(parts) > 0 {
				nodes = strings.Join(parts, "/")
			} else if rep.Server.CPU != nil {
				nodes = strconv.FormatFloat(rep.Server.CPU.Cores, 'f', 2, 64)
			}
		}
		prefix := r.Prefix
		if prefix == "" {
			prefix = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Name, r.Setup, r.Repeat, r.Attempts, prefix, nodes, result)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, r := range c.Runs {
		if r.Report == nil {
			continue
		}
		for _, wmsg := range r.Report.Warnings {
			fmt.Fprintf(w, "warning: %s on %s (repeat %d): %s\n", r.Name, r.Setup, r.Repeat, wmsg)
		}
	}
	return nil
}
