package bench

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// `herald bench --compare` runs the scenarios behind the performance goals
// against Herald and Centrifugo alternately, each run on a freshly
// started server with the same bench parameters, and prints the ratio
// table. Every bench run is a child process (`herald bench ... --json`), so
// each report carries the exact command that reproduces it.

const compareUsage = `herald bench --compare: Herald and Centrifugo side by side

Usage:
  herald bench --compare [flags]
  herald bench --show DIR/compare.json     print a saved comparison as a table

Each run starts a fresh server (Herald: HERALD-BIN serve --config
HERALD-CONFIG; Centrifugo: CENTRIFUGO exec PORT, see bench/peers/centrifugo.sh),
runs one bench scenario against it as a child process, and stops it. Runs
alternate between the two servers (the order flips on each repeat). The
results go to --out: one bench report per run (NAME.TARGET.N.json), its
progress log and the server's log, compare.json (every figure, parameter,
command, the machine) and compare.txt (the table).

Runs:
%s
Flags:
`

// compareRun is one scenario run against both servers.
type compareRun struct {
	Name string
	Args []string
	// Extra runs only when --runs names it.
	Extra bool
}

// compareRuns are the runs behind the performance goals (docs/BENCHMARKS.md).
// The file limit per process is 20,000 here: 15,000 idle connections take
// two client processes; source addresses spread the client ports.
var compareRuns = []compareRun{
	{Name: "idle-15k", Args: strings.Fields("--scenario idle --conns 15000 --procs 2 --source-ips 4 --duration 150s --settle 5s")},
	{Name: "fanout-1x1000-saturated", Args: strings.Fields("--scenario fanout --conns 1000 --channels 1 --rate 0 --duration 20s --settle 3s")},
	{Name: "fanout-1x5000-saturated", Args: strings.Fields("--scenario fanout --conns 5000 --channels 1 --rate 0 --duration 20s --settle 3s --source-ips 2")},
	{Name: "fanout-1x1000-rate100", Args: strings.Fields("--scenario fanout --conns 1000 --channels 1 --rate 100 --duration 30s --settle 3s")},
	{Name: "channels-10k-broadcast", Args: strings.Fields("--scenario channels --conns 10000 --rate 0 --batch 100 --inflight 8 --window 20000 --duration 20s --settle 5s --source-ips 4")},
	{Name: "channels-10k-publish", Args: strings.Fields("--scenario channels --conns 10000 --rate 0 --batch 1 --inflight 32 --window 20000 --duration 20s --settle 5s --source-ips 4")},
	{Name: "connect-10k", Args: strings.Fields("--scenario connect --conns 10000 --source-ips 4")},
	// A hot channel: one channel with history, 10 subscribers checking
	// offsets, one publication per API request from 32 concurrent clients.
	{Name: "hot-1x10", Extra: true, Args: strings.Fields(hotArgs)},
	// channels-10k-broadcast for 8 s: fewer publications than Herald's
	// memory broker holds within its 256 MiB history bound. Until da6dee4
	// the broker dropped whole streams beyond it, and the new epoch
	// disconnected their subscribers (3001) in the 20 s run.
	{Name: "channels-10k-broadcast-8s", Extra: true, Args: strings.Fields("--scenario channels --conns 10000 --rate 0 --batch 100 --inflight 8 --window 20000 --duration 8s --settle 5s --source-ips 4")},
}

// compareFigure is one row of the ratio table: a figure taken from one
// run's reports.
type compareFigure struct {
	Name  string
	Run   string
	Unit  string
	Lower bool   // lower is better
	Goal  string // the performance goal, empty for figures that are not goals
	get   func(*Report) (float64, bool)
	// met tells whether Herald meets the goal given both figures.
	met func(h, c float64) bool
}

var compareFigures = []compareFigure{
	{Name: "RSS per idle subscribed connection (15,000 conns, min sample)", Run: "idle-15k", Unit: "KiB", Lower: true,
		Goal: "<= 2 KiB, >= 20x below Centrifugo",
		get: func(r *Report) (float64, bool) {
			if r.Idle == nil || r.Idle.RSSPerConn <= 0 {
				return 0, false
			}
			return r.Idle.RSSPerConn, true
		},
		met: func(h, c float64) bool { return h <= 2 && h*20 <= c }},
	{Name: "fan-out 1 x 1,000 saturated", Run: "fanout-1x1000-saturated", Unit: "deliveries/s",
		Goal: ">= 3x Centrifugo", get: deliveryRate, met: func(h, c float64) bool { return h >= 3*c }},
	{Name: "fan-out 1 x 5,000 saturated", Run: "fanout-1x5000-saturated", Unit: "deliveries/s",
		Goal: ">= 3x Centrifugo", get: deliveryRate, met: func(h, c float64) bool { return h >= 3*c }},
	{Name: "latency p99, 1 x 1,000 at 100 msg/s", Run: "fanout-1x1000-rate100", Unit: "ms", Lower: true,
		Goal: "<= 20 ms", get: latencyP99, met: func(h, _ float64) bool { return h <= 20 }},
	{Name: "10,000 conns on 10,000 channels, broadcast API (100 channels/request)", Run: "channels-10k-broadcast", Unit: "publishes/s",
		Goal: ">= 50k/s end to end", get: deliveryRate, met: func(h, _ float64) bool { return h >= 50000 }},
	{Name: "connect + subscribe rate (10,000 conns)", Run: "connect-10k", Unit: "per s",
		Goal: ">= 10k/s", get: func(r *Report) (float64, bool) {
			if r.Connect == nil || r.Connect.Rate <= 0 {
				return 0, false
			}
			return r.Connect.Rate, true
		}, met: func(h, _ float64) bool { return h >= 10000 }},
	{Name: "hot channel: 1 channel with history x 10 subscribers, one publication per API request, 32 clients", Run: "hot-1x10", Unit: "publications/s",
		Goal: ">= 1.5x Centrifugo", get: publicationRate, met: func(h, c float64) bool { return h >= 1.5*c }},
	{Name: "server CPU per delivery, fan-out 1 x 1,000 saturated", Run: "fanout-1x1000-saturated", Unit: "us", Lower: true,
		Goal: "<= 2 us", get: cpuPerDelivery, met: func(h, _ float64) bool { return h <= 2 }},

	// Not goals: context for the rows above.
	{Name: "server CPU per delivery, fan-out 1 x 5,000 saturated", Run: "fanout-1x5000-saturated", Unit: "us", Lower: true, get: cpuPerDelivery},
	{Name: "latency p99, fan-out 1 x 1,000 saturated", Run: "fanout-1x1000-saturated", Unit: "ms", Lower: true, get: latencyP99},
	{Name: "latency p99, fan-out 1 x 5,000 saturated", Run: "fanout-1x5000-saturated", Unit: "ms", Lower: true, get: latencyP99},
	{Name: "latency p50, 1 x 1,000 at 100 msg/s", Run: "fanout-1x1000-rate100", Unit: "ms", Lower: true, get: func(r *Report) (float64, bool) {
		if r.Latency == nil || r.Latency.Count == 0 {
			return 0, false
		}
		return r.Latency.P50, true
	}},
	{Name: "10,000 conns on 10,000 channels, broadcast API, 8 s", Run: "channels-10k-broadcast-8s", Unit: "publishes/s", get: deliveryRate},
	{Name: "10,000 conns on 10,000 channels, one publish request per message", Run: "channels-10k-publish", Unit: "publishes/s", get: deliveryRate},
	{Name: "server CPU per connect + subscribe (10,000 conns)", Run: "connect-10k", Unit: "us", Lower: true, get: func(r *Report) (float64, bool) {
		c := r.Connect
		if c == nil || c.ServerCPU == nil || c.Connected == 0 {
			return 0, false
		}
		return round1(c.ServerCPU.Total * 1e6 / float64(c.Connected)), true
	}},
	{Name: "server RSS at 15,000 idle conns (end of hold)", Run: "idle-15k", Unit: "MiB", Lower: true, get: func(r *Report) (float64, bool) {
		if r.Server == nil || r.Server.RSS <= 0 {
			return 0, false
		}
		return round1(float64(r.Server.RSS) / 1024), true
	}},
}

func deliveryRate(r *Report) (float64, bool) {
	if r.Delivery == nil || r.Delivery.Rate <= 0 {
		return 0, false
	}
	return r.Delivery.Rate, true
}

// publicationRate is the rate of publications delivered to every
// subscriber of their channel: deliveries/s over subscribers per channel.
func publicationRate(r *Report) (float64, bool) {
	d, ok := deliveryRate(r)
	if !ok || r.Params.Conns <= 0 || r.Params.Channels <= 0 || r.Params.Conns < r.Params.Channels {
		return 0, false
	}
	return math.Round(d / float64(r.Params.Conns/r.Params.Channels)), true
}

func latencyP99(r *Report) (float64, bool) {
	if r.Latency == nil || r.Latency.Count == 0 {
		return 0, false
	}
	return r.Latency.P99, true
}

func cpuPerDelivery(r *Report) (float64, bool) {
	if r.Delivery == nil || r.Delivery.ServerCPUPerDelivery <= 0 {
		return 0, false
	}
	return r.Delivery.ServerCPUPerDelivery, true
}

// compareOptions are the flags of --compare.
type compareOptions struct {
	seriesOptions
	Centrifugo     string
	HeraldPort     int
	CentrifugoPort int

	heraldConfigText string
}

var compareFlags = seriesFlags{
	name: "bench --compare", usage: compareUsage, runs: compareRuns, report: "compare.json",
	maxOther: 0, retryWait: 30 * time.Second, readyTimeout: 20 * time.Second,
	configHelp: "Herald config file",
	keyHelp:    "API key of both servers",
	runsHelp:   "comma-separated run names (default: all)",
	repeatHelp: "runs per server; a figure is the median",
	pauseHelp:  "pause between runs (sockets, memory and CPU settle)",
	jsonHelp:   "print compare.json instead of the table",
	readyHelp:  "wait for a server to be ready",
}

func parseCompareFlags(args []string, errw io.Writer) (*compareOptions, error) {
	o := &compareOptions{}
	err := o.parse(args, errw, compareFlags, func(fs *flag.FlagSet) {
		fs.StringVar(&o.Centrifugo, "centrifugo", "bench/peers/centrifugo.sh", "script run as SCRIPT install, SCRIPT config PORT and SCRIPT exec PORT")
		fs.IntVar(&o.HeraldPort, "herald-port", 27800, "Herald's port (127.0.0.1)")
		fs.IntVar(&o.CentrifugoPort, "centrifugo-port", 27801, "Centrifugo's port (127.0.0.1)")
	}, func() error {
		if o.Repeat < 1 || o.Retries < 1 || o.Scale <= 0 {
			return errors.New("--repeat and --retries must be at least 1, --scale positive")
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return o, nil
}

// Comparison is compare.json.
type Comparison struct {
	SeriesHeader
	Servers map[string]ServerSetup `json:"servers"`
	Params  CompareParams          `json:"params"`
	Rows    []CompareRow           `json:"rows"`
	Runs    []CompareRunResult     `json:"runs"`
}

// MachineInfo describes where the comparison ran.
type MachineInfo struct {
	Cores    int    `json:"cores"`
	CPU      string `json:"cpu,omitempty"`
	MemTotal string `json:"mem_total,omitempty"`
	Kernel   string `json:"kernel,omitempty"`
	GoBench  string `json:"bench_go_version"`
	// NoFile is the open-file limit (soft/hard) of the bench, which its
	// servers and workers inherit.
	NoFile string `json:"nofile,omitempty"`
	// PortRange is the ephemeral port range of client sockets.
	PortRange string `json:"ip_local_port_range,omitempty"`
}

// ServerSetup is how one server was run.
type ServerSetup struct {
	Command    string `json:"command"`
	Binary     string `json:"binary"`
	Version    string `json:"version,omitempty"`
	ConfigFile string `json:"config_file,omitempty"`
	Config     string `json:"config,omitempty"`
	URL        string `json:"url"`
	// NoFile is the server process's open-file limit as /proc showed it.
	NoFile string `json:"nofile,omitempty"`
}

// CompareParams are the comparison's own settings.
type CompareParams struct {
	Repeat   int                 `json:"repeat"`
	MaxOther float64             `json:"max_other_cores,omitempty"`
	Retries  int                 `json:"retries,omitempty"`
	Scale    float64             `json:"scale"`
	Runs     map[string][]string `json:"runs"` // bench arguments shared by both servers
}

// CompareRow is one figure of the ratio table.
type CompareRow struct {
	Figure      string   `json:"figure"`
	Run         string   `json:"run"`
	Unit        string   `json:"unit"`
	LowerBetter bool     `json:"lower_is_better"`
	Goal        string   `json:"goal,omitempty"`
	Herald      *float64 `json:"herald"`
	Centrifugo  *float64 `json:"centrifugo"`
	// Ratio is Herald's figure over Centrifugo's; Advantage is how many
	// times better Herald is (below 1: worse), whichever way is better.
	Ratio     *float64  `json:"ratio,omitempty"`
	Advantage *float64  `json:"herald_advantage,omitempty"`
	GoalMet   *bool     `json:"goal_met,omitempty"`
	HeraldAll []float64 `json:"herald_values,omitempty"`
	CentAll   []float64 `json:"centrifugo_values,omitempty"`
	// Issues are what went wrong in the runs behind a figure (lost or
	// duplicated deliveries, failed or dropped connections): a goal is not
	// met on a run with issues.
	HeraldIssues []string `json:"herald_issues,omitempty"`
	CentIssues   []string `json:"centrifugo_issues,omitempty"`
}

// CompareRunResult is one bench run (the chosen attempt).
type CompareRunResult struct {
	Name     string `json:"name"`
	Target   string `json:"target"`
	Repeat   int    `json:"repeat"`
	Attempts int    `json:"attempts"`
	Command  string `json:"command"`
	File     string `json:"report_file,omitempty"`
	Error    string `json:"error,omitempty"`
	// Interference: other processes' cores, the bench's and the server's
	// during the measured phase (from the report).
	OtherCores  float64 `json:"other_cores"`
	BenchCores  float64 `json:"bench_cores"`
	ServerCores float64 `json:"server_cores"`
	Report      *Report `json:"report,omitempty"`
}

func (r *CompareRunResult) outcome() (string, float64) { return r.Error, r.OtherCores }
func (r *CompareRunResult) setAttempts(n int)          { r.Attempts = n }

// compareServer starts one server for one run.
type compareServer struct {
	target string
	port   int
	url    string
	ready  string // readiness URL
	argv   []string
	env    []string
}

func runCompare(ctx context.Context, o *compareOptions, logw io.Writer) (*Comparison, error) {
	logf := func(format string, args ...any) { fmt.Fprintf(logw, "compare: "+format+"\n", args...) }
	cfgText, heraldCfg, err := o.prepare("herald-compare-")
	if err != nil {
		return nil, err
	}
	o.heraldConfigText = string(cfgText)

	cmp := &Comparison{SeriesHeader: o.header("compare"), Servers: map[string]ServerSetup{}, Params: o.params()}

	// Centrifugo: install (cached) and write its config once, to record them.
	logf("installing Centrifugo if needed: %s install", o.Centrifugo)
	cbin, err := scriptOutput(ctx, o.Centrifugo, []string{"KEY=" + o.Key}, "install")
	if err != nil {
		return nil, fmt.Errorf("centrifugo install: %w", err)
	}
	ccfg, err := scriptOutput(ctx, o.Centrifugo, []string{"KEY=" + o.Key}, "config", strconv.Itoa(o.CentrifugoPort))
	if err != nil {
		return nil, fmt.Errorf("centrifugo config: %w", err)
	}
	ccfgText, _ := os.ReadFile(ccfg)
	cver, _ := exec.CommandContext(ctx, cbin, "version").Output()
	hver, _ := exec.CommandContext(ctx, o.HeraldBin, "version").Output()

	servers := map[string]*compareServer{
		"herald": {
			target: "herald", port: o.HeraldPort,
			url:   fmt.Sprintf("ws://127.0.0.1:%d/ws", o.HeraldPort),
			ready: fmt.Sprintf("http://127.0.0.1:%d/readyz", o.HeraldPort),
			argv:  []string{o.HeraldBin, "serve", "--config", heraldCfg, "--listen", fmt.Sprintf("127.0.0.1:%d", o.HeraldPort)},
			env:   []string{"HERALD_API_KEY=" + o.Key},
		},
		"centrifugo": {
			target: "centrifugo", port: o.CentrifugoPort,
			url:   fmt.Sprintf("ws://127.0.0.1:%d/connection/websocket", o.CentrifugoPort),
			ready: fmt.Sprintf("http://127.0.0.1:%d/health", o.CentrifugoPort),
			argv:  []string{o.Centrifugo, "exec", strconv.Itoa(o.CentrifugoPort)},
			env:   []string{"KEY=" + o.Key},
		},
	}
	cmp.Servers["herald"] = ServerSetup{
		Command: envPrefix("HERALD_BROKER") + "HERALD_API_KEY=K " + commandLine(servers["herald"].argv), Binary: o.HeraldBin,
		Version: strings.TrimSpace(string(hver)), ConfigFile: heraldCfg, Config: o.heraldConfigText, URL: servers["herald"].url,
	}
	cmp.Servers["centrifugo"] = ServerSetup{
		Command: envPrefix("ENGINE") + "KEY=K " + commandLine(servers["centrifugo"].argv) + "   # exec " + cbin + " --config " + ccfg,
		Binary:  cbin, Version: strings.TrimSpace(string(cver)), ConfigFile: ccfg,
		Config: redactKey(string(ccfgText), o.Key), URL: servers["centrifugo"].url,
	}

	save := func() {
		cmp.Finished = time.Now().UTC().Format(time.RFC3339)
		cmp.Rows = compareRows(cmp.Runs)
		o.save("compare", cmp, cmp.writeText)
	}
	// The order flips on each repeat.
	err = o.runSeries(ctx, "compare", []string{"herald", "centrifugo"}, logf, save, func(run compareRun, tname string, rep int) string {
		res := compareOne(ctx, o, servers[tname], run, rep, logf)
		if res.nofile != "" {
			s := cmp.Servers[tname]
			s.NoFile = res.nofile
			cmp.Servers[tname] = s
		}
		cmp.Runs = append(cmp.Runs, res.CompareRunResult)
		return res.Error
	})
	return cmp, err
}

type compareResult struct {
	CompareRunResult
	nofile string
}

// compareOne runs one scenario against one fresh server, again while other
// processes disturbed it (--max-other), and keeps the least disturbed
// attempt.
func compareOne(ctx context.Context, o *compareOptions, srv *compareServer, run compareRun, rep int, logf func(string, ...any)) compareResult {
	return retry(ctx, &o.seriesOptions, run.Name+" on "+srv.target, logf, func(attempt int) compareResult {
		return compareAttempt(ctx, o, srv, run, rep, attempt, logf)
	})
}

func compareAttempt(ctx context.Context, o *compareOptions, srv *compareServer, run compareRun, rep, attempt int, logf func(string, ...any)) (res compareResult) {
	base := attemptBase(run.Name, srv.target, rep, attempt)
	res.Name, res.Target, res.Repeat = run.Name, srv.target, rep
	fail := func(err error) compareResult {
		res.Error = err.Error()
		logf("%s on %s: %v", run.Name, srv.target, err)
		return res
	}
	if !sleepCtx(ctx, o.Pause) {
		return fail(ctx.Err())
	}
	if err := portFree(srv.port); err != nil {
		return fail(err)
	}
	slog, err := os.Create(filepath.Join(o.Out, base+".server.log"))
	if err != nil {
		return fail(err)
	}
	p, err := startServerProc(srv.argv, srv.env, slog)
	if err != nil {
		return fail(fmt.Errorf("start server: %w", err))
	}
	defer p.stop()
	pid := p.cmd.Process.Pid
	if err := waitReady(ctx, srv.ready, o.ReadyTimeout, p.exited); err != nil {
		return fail(fmt.Errorf("server not ready (see %s.server.log): %w", base, err))
	}
	res.nofile = processNoFile(pid)

	args := append(slices.Clone(run.Args), "--target", srv.target, "--url", srv.url, "--key", o.Key,
		"--server-pid", strconv.Itoa(pid), "--json")
	bo, err := parseFlags(args, io.Discard)
	if err != nil {
		return fail(err)
	}
	res.Command = bo.commandLine()
	logf("%s on %s (pid %d): %s", run.Name, srv.target, pid, res.Command)
	r, file, err := o.bench(ctx, base, args, func() error {
		if p.running() {
			return nil
		}
		return fmt.Errorf("the server exited during the run (see %s.server.log)", base)
	})
	if r != nil {
		res.File = file
		res.Report = r
		if r.Machine != nil {
			res.OtherCores = r.Machine.Other
		}
		if r.BenchCPU != nil {
			res.BenchCores = r.BenchCPU.Cores
		}
		if r.Server != nil && r.Server.CPU != nil {
			res.ServerCores = r.Server.CPU.Cores
		}
	}
	if err != nil {
		return fail(err)
	}
	logf("%s on %s: %s", run.Name, srv.target, summaryLine(res.Report))
	return res
}

// runResult is a run's result column: its error, or the summary of its
// report.
func runResult(errText string, r *Report) string {
	switch {
	case errText != "":
		return "FAILED: " + errText
	case r != nil:
		return summaryLine(r)
	}
	return "ok"
}

// summaryLine is a run's main figures on one line.
func summaryLine(r *Report) string {
	var parts []string
	if c := r.Connect; c != nil {
		parts = append(parts, fmt.Sprintf("connect %d/%d %.0f/s", c.Connected, c.Requested, c.Rate))
	}
	if i := r.Idle; i != nil {
		parts = append(parts, fmt.Sprintf("rss/conn %.2f KiB", i.RSSPerConn))
	}
	if d := r.Delivery; d != nil {
		parts = append(parts, fmt.Sprintf("delivered %.0f/s lost %d dup %d ooo %d, cpu/delivery %.2f us", d.Rate, d.Lost, d.Duplicates, d.OutOfOrder, d.ServerCPUPerDelivery))
	}
	if l := r.Latency; l != nil && l.Count > 0 {
		parts = append(parts, fmt.Sprintf("p50 %s p99 %s", fmtMS(l.P50), fmtMS(l.P99)))
	}
	if b := r.Broker; b != nil && b.CPU != nil {
		parts = append(parts, fmt.Sprintf("broker %.2f cores (%.0f%%)", b.CPU.Cores, b.Share*100))
	}
	if m := r.Machine; m != nil {
		parts = append(parts, fmt.Sprintf("other %.2f cores", m.Other))
	}
	return strings.Join(parts, "; ")
}

// envPrefix returns "NAME=VALUE " if the environment, which the servers
// inherit, sets NAME (HERALD_BROKER puts Herald on a broker, ENGINE
// Centrifugo on its Redis engine), else "".
func envPrefix(name string) string {
	if v := os.Getenv(name); v != "" {
		return name + "=" + strconv.Quote(v) + " "
	}
	return ""
}
