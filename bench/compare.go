package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
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
	Out              string
	HeraldBin        string
	HeraldConfig     string
	Centrifugo       string
	HeraldPort       int
	CentrifugoPort   int
	Key              string
	Runs             string
	Repeat           int
	MaxOther         float64
	Retries          int
	RetryWait        time.Duration
	Pause            time.Duration
	Scale            float64
	Meta             []string
	Quiet            bool
	JSON             bool
	ReadyTimeout     time.Duration
	runs             []compareRun
	benchBin         string
	args             []string
	heraldConfigText string
}

func parseCompareFlags(args []string, errw io.Writer) (*compareOptions, error) {
	o := &compareOptions{args: args}
	fs := flag.NewFlagSet("bench --compare", flag.ContinueOnError)
	fs.SetOutput(errw)
	fs.Usage = func() {
		var runs strings.Builder
		for _, r := range compareRuns {
			extra := ""
			if r.Extra {
				extra = " (only with --runs)"
			}
			fmt.Fprintf(&runs, "  %-26s %s%s\n", r.Name, strings.Join(r.Args, " "), extra)
		}
		fmt.Fprintf(errw, compareUsage, runs.String())
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Out, "out", "", "results directory (default: a new one under the OS temp dir)")
	fs.StringVar(&o.HeraldBin, "herald-bin", "", "Herald binary to serve (default: this one)")
	fs.StringVar(&o.HeraldConfig, "herald-config", "bench/peers/herald-bench.yaml", "Herald config file")
	fs.StringVar(&o.Centrifugo, "centrifugo", "bench/peers/centrifugo.sh", "script run as SCRIPT install, SCRIPT config PORT and SCRIPT exec PORT")
	fs.IntVar(&o.HeraldPort, "herald-port", 27800, "Herald's port (127.0.0.1)")
	fs.IntVar(&o.CentrifugoPort, "centrifugo-port", 27801, "Centrifugo's port (127.0.0.1)")
	fs.StringVar(&o.Key, "key", "k", "API key of both servers")
	fs.StringVar(&o.Runs, "runs", "", "comma-separated run names (default: all)")
	fs.IntVar(&o.Repeat, "repeat", 1, "runs per server; a figure is the median")
	fs.Float64Var(&o.MaxOther, "max-other", 0, "run again while other processes used more than this many cores during the measurement (0: never)")
	fs.IntVar(&o.Retries, "retries", 3, "with --max-other: attempts per run")
	fs.DurationVar(&o.RetryWait, "retry-wait", 30*time.Second, "with --max-other: wait before running again")
	fs.DurationVar(&o.Pause, "pause", 3*time.Second, "pause between runs (sockets, memory and CPU settle)")
	fs.Float64Var(&o.Scale, "scale", 1, "multiply connection counts and durations (a smoke test: 0.05)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines on stderr")
	fs.BoolVar(&o.JSON, "json", false, "print compare.json instead of the table")
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", 20*time.Second, "wait for a server to be ready")
	fs.Func("meta", "KEY=VALUE recorded in compare.json (e.g. herald_commit=...; repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.Meta = append(o.Meta, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if o.Repeat < 1 || o.Retries < 1 || o.Scale <= 0 {
		return nil, errors.New("--repeat and --retries must be at least 1, --scale positive")
	}
	if o.Runs == "" {
		for _, r := range compareRuns {
			if !r.Extra {
				o.runs = append(o.runs, r)
			}
		}
	} else {
		for _, name := range strings.Split(o.Runs, ",") {
			i := slices.IndexFunc(compareRuns, func(r compareRun) bool { return r.Name == strings.TrimSpace(name) })
			if i < 0 {
				return nil, fmt.Errorf("--runs: unknown run %q", name)
			}
			o.runs = append(o.runs, compareRuns[i])
		}
	}
	if o.Scale != 1 {
		for i, r := range o.runs {
			o.runs[i] = compareRun{Name: r.Name, Args: scaleArgs(r.Args, o.Scale), Extra: r.Extra}
		}
	}
	return o, nil
}

// scaleArgs multiplies --conns, --window and --duration by f (at least 2
// connections and one second).
func scaleArgs(args []string, f float64) []string {
	out := slices.Clone(args)
	for i := 0; i+1 < len(out); i++ {
		switch out[i] {
		case "--conns", "--window":
			n, err := strconv.Atoi(out[i+1])
			if err == nil {
				out[i+1] = strconv.Itoa(max(int(float64(n)*f), 2))
			}
		case "--duration":
			d, err := time.ParseDuration(out[i+1])
			if err == nil {
				out[i+1] = max(time.Duration(float64(d)*f), time.Second).Round(100 * time.Millisecond).String()
			}
		}
	}
	return out
}

// Comparison is compare.json.
type Comparison struct {
	Started  string                 `json:"started"`
	Finished string                 `json:"finished"`
	Command  string                 `json:"command"`
	Machine  MachineInfo            `json:"machine"`
	Meta     map[string]string      `json:"meta,omitempty"`
	Servers  map[string]ServerSetup `json:"servers"`
	Params   CompareParams          `json:"params"`
	Rows     []CompareRow           `json:"rows"`
	Runs     []CompareRunResult     `json:"runs"`
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

// compareMain runs `herald bench --compare`.
func compareMain(args []string, stdout, stderr io.Writer) error {
	o, err := parseCompareFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logw := stderr
	if o.Quiet {
		logw = io.Discard
	}
	cmp, err := runCompare(ctx, o, logw)
	if cmp == nil {
		return err
	}
	if o.JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(cmp); e != nil {
			return e
		}
	} else if e := cmp.writeText(stdout); e != nil {
		return e
	}
	return err
}

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
	var err error
	if o.benchBin == "" {
		if o.benchBin, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if o.HeraldBin == "" {
		o.HeraldBin = o.benchBin
	}
	if o.Out == "" {
		if o.Out, err = os.MkdirTemp("", "herald-compare-"); err != nil {
			return nil, err
		}
	} else if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, err
	}
	cfgText, err := os.ReadFile(o.HeraldConfig)
	if err != nil {
		return nil, fmt.Errorf("--herald-config: %w", err)
	}
	o.heraldConfigText = string(cfgText)
	heraldCfg, _ := filepath.Abs(o.HeraldConfig)

	cmp := &Comparison{
		Started: time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(append([]string{"herald", "bench", "--compare"}, o.args...)),
		Machine: machineInfo(),
		Meta:    map[string]string{},
		Servers: map[string]ServerSetup{},
		Params:  CompareParams{Repeat: o.Repeat, MaxOther: o.MaxOther, Scale: o.Scale, Runs: map[string][]string{}},
	}
	if o.MaxOther > 0 {
		cmp.Params.Retries = o.Retries
	}
	for _, m := range o.Meta {
		k, v, _ := strings.Cut(m, "=")
		cmp.Meta[k] = v
	}
	for _, r := range o.runs {
		cmp.Params.Runs[r.Name] = r.Args
	}

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
		Command: "HERALD_API_KEY=K " + commandLine(servers["herald"].argv), Binary: o.HeraldBin,
		Version: strings.TrimSpace(string(hver)), ConfigFile: heraldCfg, Config: o.heraldConfigText, URL: servers["herald"].url,
	}
	cmp.Servers["centrifugo"] = ServerSetup{
		Command: "KEY=K " + commandLine(servers["centrifugo"].argv) + "   # exec " + cbin + " --config " + ccfg,
		Binary:  cbin, Version: strings.TrimSpace(string(cver)), ConfigFile: ccfg,
		Config: redactKey(string(ccfgText), o.Key), URL: servers["centrifugo"].url,
	}

	save := func() {
		cmp.Finished = time.Now().UTC().Format(time.RFC3339)
		cmp.Rows = compareRows(cmp.Runs)
		if b, err := json.MarshalIndent(cmp, "", "  "); err == nil {
			_ = os.WriteFile(filepath.Join(o.Out, "compare.json"), append(b, '\n'), 0o644)
		}
		var t bytes.Buffer
		_ = cmp.writeText(&t)
		_ = os.WriteFile(filepath.Join(o.Out, "compare.txt"), t.Bytes(), 0o644)
	}
	logf("results in %s", o.Out)
	var firstErr error
	for rep := 1; rep <= o.Repeat; rep++ {
		order := []string{"herald", "centrifugo"}
		if rep%2 == 0 {
			order = []string{"centrifugo", "herald"}
		}
		for _, run := range o.runs {
			for _, tname := range order {
				if ctx.Err() != nil {
					save()
					return cmp, ctx.Err()
				}
				res := compareOne(ctx, o, servers[tname], run, rep, logf)
				if res.Error != "" && firstErr == nil {
					firstErr = fmt.Errorf("%s on %s: %s", run.Name, tname, res.Error)
				}
				if res.nofile != "" {
					s := cmp.Servers[tname]
					s.NoFile = res.nofile
					cmp.Servers[tname] = s
				}
				cmp.Runs = append(cmp.Runs, res.CompareRunResult)
				save()
			}
		}
	}
	save()
	logf("wrote %s and %s", filepath.Join(o.Out, "compare.json"), filepath.Join(o.Out, "compare.txt"))
	return cmp, firstErr
}

type compareResult struct {
	CompareRunResult
	nofile string
}

// compareOne runs one scenario against one fresh server, again while other
// processes disturbed it (--max-other), and keeps the least disturbed
// attempt.
func compareOne(ctx context.Context, o *compareOptions, srv *compareServer, run compareRun, rep int, logf func(string, ...any)) compareResult {
	var best compareResult
	for attempt := 1; attempt <= o.Retries; attempt++ {
		if attempt > 1 {
			logf("%s on %s: other processes used %.2f cores; again in %s (attempt %d/%d)",
				run.Name, srv.target, best.OtherCores, o.RetryWait, attempt, o.Retries)
			if !sleepCtx(ctx, o.RetryWait) {
				break
			}
		}
		res := compareAttempt(ctx, o, srv, run, rep, attempt, logf)
		if attempt == 1 || (res.Error == "" && (best.Error != "" || res.OtherCores < best.OtherCores)) {
			best = res
		}
		best.Attempts = attempt
		if o.MaxOther <= 0 || (res.Error == "" && res.OtherCores <= o.MaxOther) || ctx.Err() != nil {
			break
		}
	}
	return best
}

func compareAttempt(ctx context.Context, o *compareOptions, srv *compareServer, run compareRun, rep, attempt int, logf func(string, ...any)) (res compareResult) {
	base := fmt.Sprintf("%s.%s.%d", run.Name, srv.target, rep)
	if attempt > 1 {
		base += fmt.Sprintf(".attempt%d", attempt)
	}
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
	defer slog.Close()
	cmd := exec.Command(srv.argv[0], srv.argv[1:]...)
	cmd.Env = append(os.Environ(), srv.env...)
	cmd.Stdout, cmd.Stderr = slog, slog
	// Its own process group: a Ctrl-C reaches the bench, which finishes,
	// and then this process stops the server.
	cmd.SysProcAttr = ownProcessGroup()
	if err := cmd.Start(); err != nil {
		return fail(fmt.Errorf("start server: %w", err))
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	defer stopServer(cmd, exited)
	pid := cmd.Process.Pid
	if err := waitReady(ctx, srv.ready, o.ReadyTimeout, exited); err != nil {
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
	blog, err := os.Create(filepath.Join(o.Out, base+".log"))
	if err != nil {
		return fail(err)
	}
	defer blog.Close()
	var out bytes.Buffer
	bcmd := exec.CommandContext(ctx, o.benchBin, append([]string{"bench"}, args...)...)
	bcmd.Stdout, bcmd.Stderr = &out, blog
	// The bench bounds itself. When the comparison is interrupted it is
	// interrupted too, and finishes early with what it has.
	bcmd.Cancel = func() error { return bcmd.Process.Signal(os.Interrupt) }
	bcmd.WaitDelay = 2 * time.Minute
	berr := bcmd.Run()
	select {
	case <-exited:
		berr = errors.Join(berr, fmt.Errorf("the server exited during the run (see %s.server.log)", base))
	default:
	}
	if out.Len() > 0 {
		file := filepath.Join(o.Out, base+".json")
		_ = os.WriteFile(file, out.Bytes(), 0o644)
		var r Report
		if err := json.Unmarshal(out.Bytes(), &r); err == nil {
			res.File = file
			res.Report = &r
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
	}
	if berr != nil {
		return fail(fmt.Errorf("bench: %w (see %s.log)", berr, base))
	}
	if res.Report == nil {
		return fail(fmt.Errorf("bench printed no report (see %s.log)", base))
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
