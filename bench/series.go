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

// What `herald bench --compare` and `herald bench --cluster` share. Both
// run a series: every run (a bench scenario) on every target (a server, or
// a setup of nodes and broker) alternately, repeated, each run a bench
// child process against freshly started servers, again while other
// processes disturbed it, the results saved after every run.

// seriesOptions are the flags --compare and --cluster share.
type seriesOptions struct {
	Out          string
	HeraldBin    string
	HeraldConfig string
	Key          string
	Runs         string
	Repeat       int
	MaxOther     float64
	Retries      int
	RetryWait    time.Duration
	Pause        time.Duration
	Scale        float64
	Meta         []string
	Quiet        bool
	JSON         bool
	ReadyTimeout time.Duration

	args     []string
	runs     []compareRun
	benchBin string
}

// seriesFlags is how the shared flags of --compare and --cluster differ:
// the flag set, the runs, some defaults and the words of their help.
type seriesFlags struct {
	name   string       // the flag set's name
	usage  string       // the help before the flags; %s is the table of runs
	runs   []compareRun // what --runs picks from
	report string       // the JSON file the series writes

	maxOther                float64
	retryWait, readyTimeout time.Duration

	configHelp, keyHelp, runsHelp, repeatHelp, pauseHelp, jsonHelp, readyHelp string
}

// parse parses args: the shared flags, and the caller's, which own adds.
// Then check validates them, and the runs are picked and scaled.
func (o *seriesOptions) parse(args []string, errw io.Writer, fl seriesFlags, own func(*flag.FlagSet), check func() error) error {
	o.args = args
	fs := flag.NewFlagSet(fl.name, flag.ContinueOnError)
	fs.SetOutput(errw)
	fs.Usage = func() {
		width := 0
		for _, r := range fl.runs {
			width = max(width, len(r.Name)+1)
		}
		var runs strings.Builder
		for _, r := range fl.runs {
			extra := ""
			if r.Extra {
				extra = " (only with --runs)"
			}
			fmt.Fprintf(&runs, "  %-*s %s%s\n", width, r.Name, strings.Join(r.Args, " "), extra)
		}
		fmt.Fprintf(errw, fl.usage, runs.String())
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Out, "out", "", "results directory (default: a new one under the OS temp dir)")
	fs.StringVar(&o.HeraldBin, "herald-bin", "", "Herald binary to serve (default: this one)")
	fs.StringVar(&o.HeraldConfig, "herald-config", "bench/peers/herald-bench.yaml", fl.configHelp)
	fs.StringVar(&o.Key, "key", "k", fl.keyHelp)
	fs.StringVar(&o.Runs, "runs", "", fl.runsHelp)
	fs.IntVar(&o.Repeat, "repeat", 1, fl.repeatHelp)
	fs.Float64Var(&o.MaxOther, "max-other", fl.maxOther, "run again while other processes used more than this many cores during the measurement (0: never)")
	fs.IntVar(&o.Retries, "retries", 3, "with --max-other: attempts per run")
	fs.DurationVar(&o.RetryWait, "retry-wait", fl.retryWait, "with --max-other: wait before running again")
	fs.DurationVar(&o.Pause, "pause", 3*time.Second, fl.pauseHelp)
	fs.Float64Var(&o.Scale, "scale", 1, "multiply connection counts and durations (a smoke test: 0.05)")
	fs.BoolVar(&o.Quiet, "quiet", false, "no progress lines on stderr")
	fs.BoolVar(&o.JSON, "json", false, fl.jsonHelp)
	fs.DurationVar(&o.ReadyTimeout, "ready-timeout", fl.readyTimeout, fl.readyHelp)
	fs.Func("meta", "KEY=VALUE recorded in "+fl.report+" (e.g. herald_commit=...; repeatable)", func(s string) error {
		if !strings.Contains(s, "=") {
			return errors.New("want KEY=VALUE")
		}
		o.Meta = append(o.Meta, s)
		return nil
	})
	own(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if err := check(); err != nil {
		return err
	}
	runs, err := pickRuns(fl.runs, o.Runs, o.Scale)
	if err != nil {
		return err
	}
	o.runs = runs
	return nil
}

// pickRuns selects runs by name (default: all but the extra ones) and
// scales them.
func pickRuns(all []compareRun, names string, scale float64) ([]compareRun, error) {
	var out []compareRun
	if names == "" {
		for _, r := range all {
			if !r.Extra {
				out = append(out, r)
			}
		}
	} else {
		for _, name := range strings.Split(names, ",") {
			i := slices.IndexFunc(all, func(r compareRun) bool { return r.Name == strings.TrimSpace(name) })
			if i < 0 {
				return nil, fmt.Errorf("--runs: unknown run %q", name)
			}
			out = append(out, all[i])
		}
	}
	if scale != 1 {
		for i, r := range out {
			out[i] = compareRun{Name: r.Name, Args: scaleArgs(r.Args, scale), Extra: r.Extra}
		}
	}
	return out, nil
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

// flagError is what a command returns for an error of its flags: nil
// for -help, which printed the help.
func flagError(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// options returns the shared options of the options that embed them.
func (o *seriesOptions) options() *seriesOptions { return o }

// SeriesHeader is what compare.json and cluster.json start with.
type SeriesHeader struct {
	Started  string            `json:"started"`
	Finished string            `json:"finished"`
	Command  string            `json:"command"`
	Machine  MachineInfo       `json:"machine"`
	Meta     map[string]string `json:"meta,omitempty"`
}

// header starts a series' report, for `herald bench --MODE`.
func (o *seriesOptions) header(mode string) SeriesHeader {
	return SeriesHeader{
		Started: time.Now().UTC().Format(time.RFC3339),
		Command: commandLine(append([]string{"herald", "bench", "--" + mode}, o.args...)),
		Machine: machineInfo(),
		Meta:    o.meta(),
	}
}

// seriesReport is a series' result: compare.json or cluster.json.
type seriesReport interface {
	*Comparison | *Cluster
	writeText(w io.Writer) error
}

// seriesMain parses args with parse, runs the series with run until it
// ends or SIGINT or SIGTERM interrupts it, prints what it has (as JSON
// with --json, else as tables), and returns run's error.
func seriesMain[O interface{ options() *seriesOptions }, R seriesReport](args []string, stdout, stderr io.Writer,
	parse func([]string, io.Writer) (O, error), run func(context.Context, O, io.Writer) (R, error)) error {
	o, err := parse(args, stderr)
	if err != nil {
		return flagError(err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	logw := stderr
	if o.options().Quiet {
		logw = io.Discard
	}
	r, err := run(ctx, o, logw)
	if r == nil {
		return err
	}
	if o.options().JSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if e := enc.Encode(r); e != nil {
			return e
		}
	} else if e := r.writeText(stdout); e != nil {
		return e
	}
	return err
}

// prepare finds the binaries (the bench is this one; Herald is
// --herald-bin, by default this one too), makes the results directory
// (--out, by default a new one under the OS temp dir named after
// tempPattern) and reads --herald-config, whose text and absolute path it
// returns.
func (o *seriesOptions) prepare(tempPattern string) (cfgText []byte, cfgPath string, err error) {
	if o.benchBin == "" {
		if o.benchBin, err = os.Executable(); err != nil {
			return nil, "", err
		}
	}
	if o.HeraldBin == "" {
		o.HeraldBin = o.benchBin
	}
	if o.Out == "" {
		if o.Out, err = os.MkdirTemp("", tempPattern); err != nil {
			return nil, "", err
		}
	} else if err := os.MkdirAll(o.Out, 0o755); err != nil {
		return nil, "", err
	}
	cfgText, err = os.ReadFile(o.HeraldConfig)
	if err != nil {
		return nil, "", fmt.Errorf("--herald-config: %w", err)
	}
	cfgPath, _ = filepath.Abs(o.HeraldConfig)
	return cfgText, cfgPath, nil
}

// meta is --meta as a map.
func (o *seriesOptions) meta() map[string]string {
	m := map[string]string{}
	for _, kv := range o.Meta {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	return m
}

// params are the series' own settings, as its report records them.
func (o *seriesOptions) params() CompareParams {
	p := CompareParams{Repeat: o.Repeat, MaxOther: o.MaxOther, Scale: o.Scale, Runs: map[string][]string{}}
	if o.MaxOther > 0 {
		p.Retries = o.Retries
	}
	for _, r := range o.runs {
		p.Runs[r.Name] = r.Args
	}
	return p
}

// save writes v as NAME.json and its tables as NAME.txt to --out.
func (o *seriesOptions) save(name string, v any, writeText func(io.Writer) error) {
	if b, err := json.MarshalIndent(v, "", "  "); err == nil {
		_ = os.WriteFile(filepath.Join(o.Out, name+".json"), append(b, '\n'), 0o644)
	}
	var t bytes.Buffer
	_ = writeText(&t)
	_ = os.WriteFile(filepath.Join(o.Out, name+".txt"), t.Bytes(), 0o644)
}

// runSeries runs every run on every target, --repeat times, the order of
// the targets rotating on each repeat so that none always runs first or
// after another one. one runs a run on a target and returns its error
// text; save is called after each and at the end, whose files (NAME.json,
// NAME.txt) are logged. runSeries stops early, returning ctx.Err(), when
// ctx is done; otherwise it returns the first run's error.
func (o *seriesOptions) runSeries(ctx context.Context, name string, targets []string, logf func(string, ...any), save func(), one func(run compareRun, target string, rep int) string) error {
	logf("results in %s", o.Out)
	var firstErr error
	for rep := 1; rep <= o.Repeat; rep++ {
		k := (rep - 1) % len(targets)
		order := append(slices.Clone(targets[k:]), targets[:k]...)
		for _, run := range o.runs {
			for _, target := range order {
				if ctx.Err() != nil {
					save()
					return ctx.Err()
				}
				if e := one(run, target, rep); e != "" && firstErr == nil {
					firstErr = fmt.Errorf("%s on %s: %s", run.Name, target, e)
				}
				save()
			}
		}
	}
	save()
	logf("wrote %s and %s", filepath.Join(o.Out, name+".json"), filepath.Join(o.Out, name+".txt"))
	return firstErr
}

// attempted is what retry reads and writes in a run's result.
type attempted interface {
	outcome() (errText string, otherCores float64)
	setAttempts(n int)
}

// retry runs attempt (n from 1), again while other processes used more
// than --max-other cores during the measurement, up to --retries times,
// and keeps the least disturbed attempt, with the number of attempts
// made. what names the run in the progress lines.
func retry[R any, P interface {
	*R
	attempted
}](ctx context.Context, o *seriesOptions, what string, logf func(string, ...any), attempt func(n int) R) R {
	var best R
	for n := 1; n <= o.Retries; n++ {
		bestErr, bestOther := P(&best).outcome()
		if n > 1 {
			logf("%s: other processes used %.2f cores; again in %s (attempt %d/%d)", what, bestOther, o.RetryWait, n, o.Retries)
			if !sleepCtx(ctx, o.RetryWait) {
				break
			}
		}
		res := attempt(n)
		resErr, resOther := P(&res).outcome()
		if n == 1 || (resErr == "" && (bestErr != "" || resOther < bestOther)) {
			best = res
		}
		P(&best).setAttempts(n)
		if o.MaxOther <= 0 || (resErr == "" && resOther <= o.MaxOther) || ctx.Err() != nil {
			break
		}
	}
	return best
}

// attemptBase is the base name of an attempt's files: RUN.TARGET.REPEAT,
// and .attemptN after the first attempt.
func attemptBase(run, target string, rep, attempt int) string {
	base := fmt.Sprintf("%s.%s.%d", run, target, rep)
	if attempt > 1 {
		base += fmt.Sprintf(".attempt%d", attempt)
	}
	return base
}

// bench runs the bench with args as a child process, its report (stdout)
// saved as BASE.json and its progress lines (stderr) as BASE.log in --out.
// When it has ended, exited tells which servers ended during the run. It
// returns the report and its file whenever the bench printed one, even
// with an error.
func (o *seriesOptions) bench(ctx context.Context, base string, args []string, exited func() error) (rep *Report, file string, err error) {
	blog, err := os.Create(filepath.Join(o.Out, base+".log"))
	if err != nil {
		return nil, "", err
	}
	defer blog.Close()
	var out bytes.Buffer
	bcmd := exec.CommandContext(ctx, o.benchBin, append([]string{"bench"}, args...)...)
	bcmd.Stdout, bcmd.Stderr = &out, blog
	// The bench bounds itself. When the series is interrupted it is
	// interrupted too, and finishes early with what it has.
	bcmd.Cancel = func() error { return bcmd.Process.Signal(os.Interrupt) }
	bcmd.WaitDelay = 2 * time.Minute
	berr := bcmd.Run()
	berr = errors.Join(berr, exited())
	if out.Len() > 0 {
		f := filepath.Join(o.Out, base+".json")
		_ = os.WriteFile(f, out.Bytes(), 0o644)
		var r Report
		if err := json.Unmarshal(out.Bytes(), &r); err == nil {
			rep, file = &r, f
		}
	}
	if berr != nil {
		return rep, file, fmt.Errorf("bench: %w (see %s.log)", berr, base)
	}
	if rep == nil {
		return nil, "", fmt.Errorf("bench printed no report (see %s.log)", base)
	}
	return rep, file, nil
}
