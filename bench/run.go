package bench

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"runtime"
	"slices"
	"sync"
	"time"
)

// run executes the scenario of o and returns its report. Progress lines go
// to logw.
func run(ctx context.Context, o *options, logw io.Writer) (*Report, error) {
	tgt, err := targetFor(o.Target)
	if err != nil {
		return nil, err
	}
	// Everything below is bounded: the whole run gets a deadline.
	total := o.Setup + o.Settle + o.Duration + o.Drain + time.Minute
	ctx, cancel := context.WithTimeout(ctx, total)
	defer cancel()
	deadline, _ := ctx.Deadline()

	r := &runner{o: o, tgt: tgt, logw: logw,
		api: newAPIClient(o.API, o.Key, o.Inflight+2)}
	defer r.api.Close()
	r.nodeAPIs = newNodeAPIs(o, r.api)
	defer func() {
		for _, a := range r.nodeAPIs {
			a.Close()
		}
	}()
	r.rep = &Report{
		Scenario: o.Scenario, Target: tgt.Name(), Command: o.commandLine(),
		Started: time.Now().UTC().Format(time.RFC3339),
		Params: Params{
			URL: o.URL, API: o.API, SpreadPublish: o.SpreadPublish, Conns: o.Conns, Channels: o.Channels,
			Rate: o.Rate, Duration: o.Duration.Seconds(), Messages: o.Messages, Size: o.Size,
			Payload: o.Payload, Compression: o.Compression, Delta: o.Delta,
			Procs: o.Procs, SourceIPs: len(o.sourceIPs), Concurrency: o.Concurrency,
		},
	}
	if o.Scenario == "fanout" || o.Scenario == "channels" {
		r.rep.Params.Publish, r.rep.Params.Batch, r.rep.Params.Inflight = o.Publish, o.Batch, o.Inflight
		if o.Rate == 0 {
			r.rep.Params.Window = o.Window
		}
	}
	r.findServer(ctx)

	if err := r.connect(ctx, deadline); err != nil {
		r.killAll()
		return nil, err
	}
	switch o.Scenario {
	case "connect":
		r.measure(r.connMark)
		r.rep.Server.RSS = r.rss()
		r.rep.Server.RSSMax = r.rep.Server.RSS
	case "idle":
		err = r.idle(ctx)
	case "fanout", "channels":
		err = r.publish(ctx)
	}
	if err != nil {
		r.killAll()
		return nil, err
	}
	if err := r.finish(ctx); err != nil {
		return nil, err
	}
	return r.rep, nil
}

// runner holds the state of one run.
type runner struct {
	o   *options
	tgt target
	api *apiClient
	// logMu serialises logf and warn: the progress goroutine logs while
	// the run does.
	logMu sync.Mutex
	logw  io.Writer
	rep   *Report
	// nodeAPIs tell the nodes' pids and clients (one: api).
	nodeAPIs   []*apiClient
	pids       []int // servers' processes: RSS and CPU are their sums
	brokerPIDs []int

	workers  []workerHandle
	subs     []int // subscribers per channel
	nsubs    int
	pubStart time.Time // first publish
	connMark mark      // CPU counters before connecting
}

func (r *runner) logf(format string, args ...any) {
	r.logMu.Lock()
	defer r.logMu.Unlock()
	fmt.Fprintf(r.logw, "bench: "+format+"\n", args...)
}

func (r *runner) warn(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	r.logMu.Lock()
	r.rep.Warnings = append(r.rep.Warnings, msg)
	r.logMu.Unlock()
	r.logf("warning: %s", msg)
}

// findServer finds the server's processes (one per node) for RSS and CPU
// readings, and the broker's.
func (r *runner) findServer(ctx context.Context) {
	pids := slices.Clone(r.o.serverPIDs)
	if len(pids) == 0 {
		for _, api := range r.nodeAPIs {
			ictx, cancel := context.WithTimeout(ctx, 5*time.Second)
			info, err := r.tgt.Info(ictx, api)
			cancel()
			switch {
			case err != nil:
				r.warn("no server RSS or CPU figures: API info at %s: %v", api.base, err)
			case info.PID == 0:
				r.warn("no server RSS or CPU figures: the API does not tell the server's pid (use --server-pid)")
			case !isLocal(api.base):
				r.warn("no server RSS or CPU figures: the API is not on this machine (use --server-pid)")
			default:
				if !slices.Contains(pids, info.PID) {
					pids = append(pids, info.PID)
				}
				continue
			}
			pids = nil
			break
		}
	}
	// A sum over some of the nodes would pass for the whole: all or none.
	for _, pid := range pids {
		if _, err := processRSS(pid); err != nil {
			r.warn("no server RSS or CPU figures: pid %d: %v", pid, err)
			pids = nil
			break
		}
	}
	r.pids = pids
	r.rep.Server = &ServerStats{}
	if len(pids) == 1 {
		r.rep.Server.PID = pids[0]
	} else if len(pids) > 1 {
		r.rep.Server.PIDs = pids
		for _, pid := range pids {
			r.rep.Server.Nodes = append(r.rep.Server.Nodes, NodeStats{PID: pid})
		}
	}
	for _, pid := range r.o.brokerPIDs {
		if _, err := processRSS(pid); err != nil {
			r.warn("no broker CPU figures: pid %d: %v", pid, err)
			return
		}
	}
	if len(r.o.brokerPIDs) > 0 {
		r.brokerPIDs = r.o.brokerPIDs
		r.rep.Broker = &BrokerStats{PIDs: r.brokerPIDs}
	}
}

// newNodeAPIs returns the API clients that tell the nodes' pids and client
// counts: the --api one for one node, each URL's host's for several.
func newNodeAPIs(o *options, api *apiClient) []*apiClient {
	if len(o.urls) == 1 {
		return []*apiClient{api}
	}
	var out []*apiClient
	seen := map[string]bool{}
	for _, u := range o.urls {
		base, _ := apiBase(u) // checked by validate
		if seen[base] {
			continue
		}
		seen[base] = true
		out = append(out, newAPIClient(base, o.Key, 2))
	}
	return out
}

func isLocal(api string) bool {
	u, err := url.Parse(api)
	if err != nil {
		return false
	}
	host := u.Hostname()
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// rss is the sum of the servers' RSS (0 if one cannot be read).
func (r *runner) rss() int64 {
	var sum int64
	for _, pid := range r.pids {
		v, _ := processRSS(pid)
		if v == 0 {
			return 0
		}
		sum += v
	}
	return sum
}

// minRSS samples the server's RSS n times, every gap, and returns the
// smallest sample and all of them.
func (r *runner) minRSS(ctx context.Context, n int, gap time.Duration) (int64, []int64) {
	var samples []int64
	best := int64(0)
	for i := 0; i < n; i++ {
		if i > 0 && !sleepCtx(ctx, gap) {
			break
		}
		v := r.rss()
		if v == 0 {
			continue
		}
		samples = append(samples, v)
		if best == 0 || v < best {
			best = v
		}
	}
	return best, samples
}

func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// every calls fn every period on its own goroutine until the returned stop
// function is called; stop waits for it.
func every(period time.Duration, fn func()) (stop func()) {
	quit := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(period)
		defer t.Stop()
		for {
			select {
			case <-quit:
				return
			case <-t.C:
				fn()
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() {
			close(quit)
			<-done
		})
	}
}

func (r *runner) progress() progress {
	var p progress
	for _, w := range r.workers {
		wp := w.progress()
		p.Delivered += wp.Delivered
		p.Other += wp.Other
		p.Wire += wp.Wire
		p.Conns += wp.Conns
		p.CPU += wp.CPU
	}
	return p
}

// mark is the CPU counters at the start of a measured phase.
type mark struct {
	t      time.Time
	srv    []cpuSample // by r.pids
	broker []cpuSample // by r.brokerPIDs
	bench  time.Duration
	busy   time.Duration
	busyOK bool
}

func (r *runner) mark() mark {
	m := mark{t: time.Now(), srv: sampleCPUs(r.pids), broker: sampleCPUs(r.brokerPIDs), bench: r.benchCPU()}
	m.busy, m.busyOK = machineBusy()
	return m
}

// measure fills the report's CPU figures for the phase since m: the
// server's, the bench's, and the machine's. It returns the phase's length.
func (r *runner) measure(m mark) time.Duration {
	wall := time.Since(m.t)
	srv := sampleCPUs(r.pids)
	brk := sampleCPUs(r.brokerPIDs)
	r.rep.Server.CPU = sumCPU(m.srv, srv, wall)
	for i := range r.rep.Server.Nodes {
		n := &r.rep.Server.Nodes[i]
		n.CPU = cpuBetween(m.srv[i], srv[i], wall)
		n.RSS, _ = processRSS(n.PID)
	}
	if b := r.rep.Broker; b != nil {
		b.CPU = sumCPU(m.broker, brk, wall)
		b.RSS = 0
		for _, pid := range r.brokerPIDs {
			v, _ := processRSS(pid)
			b.RSS += v
		}
		if b.CPU != nil && r.rep.Server.CPU != nil && b.CPU.Total+r.rep.Server.CPU.Total > 0 {
			b.Share = round3(b.CPU.Total / (b.CPU.Total + r.rep.Server.CPU.Total))
		}
	}
	bench := r.benchCPU() - m.bench
	if bench > 0 {
		// Only the total is known: child processes report user + system.
		r.rep.BenchCPU = &CPU{Total: round3(bench.Seconds()), Cores: round3(bench.Seconds() / wall.Seconds())}
	}
	if busy, ok := machineBusy(); ok && m.busyOK && wall > 0 {
		other := busy - m.busy - bench
		if c := r.rep.Server.CPU; c != nil {
			other -= time.Duration(c.Total * float64(time.Second))
		}
		if b := r.rep.Broker; b != nil && b.CPU != nil {
			other -= time.Duration(b.CPU.Total * float64(time.Second))
		}
		mc := &Machine{
			Cores: runtime.NumCPU(),
			Busy:  round3((busy - m.busy).Seconds() / wall.Seconds()),
			Other: round3(max(other, 0).Seconds() / wall.Seconds()),
		}
		r.rep.Machine = mc
		if mc.Other > 0.2 {
			r.warn("other processes used %.2f cores during the measurement: figures are disturbed", mc.Other)
		}
	}
	return wall
}

// benchCPU is the CPU time of the bench process and its workers.
func (r *runner) benchCPU() time.Duration {
	return selfCPU() + time.Duration(r.progress().CPU)
}

// connect starts the workers and waits for their connections.
func (r *runner) connect(ctx context.Context, deadline time.Time) error {
	o := r.o
	r.rep.Server.RSSBaseline, _ = r.minRSS(ctx, 3, 300*time.Millisecond)
	r.connMark = r.mark()
	cpu0, brk0, t0 := r.connMark.srv, r.connMark.broker, r.connMark.t
	setupCtx, cancel := context.WithTimeout(ctx, o.Setup)
	defer cancel()
	for j := 0; j < o.Procs; j++ {
		cfg := workerConfig{
			Target: o.Target, URLs: o.urls,
			Lo: j * o.Conns / o.Procs, Hi: (j + 1) * o.Conns / o.Procs,
			Channels: o.Channels, Prefix: o.Prefix, SourceIP: o.sourceIPs,
			Concurrency: o.Concurrency, Timeout: o.ConnTimeout, ReadBuffer: o.ReadBuffer,
			Compression: o.Compression, Delta: o.Delta, Deadline: deadline.UnixNano(),
		}
		var (
			w   workerHandle
			err error
		)
		if o.Procs == 1 {
			w, err = startLocal(setupCtx, cfg)
		} else {
			w, err = startRemote(cfg)
		}
		if err != nil {
			return err
		}
		r.workers = append(r.workers, w)
	}
	stop := every(time.Second, func() {
		r.logf("connecting: %d/%d open", r.progress().Conns, o.Conns)
	})
	failed := map[int]bool{}
	cs := &ConnectStats{Requested: o.Conns}
	var lat HistSnapshot
	var first, last int64
	var rerr error
	for _, w := range r.workers {
		rep, err := w.ready(setupCtx)
		if err != nil {
			rerr = err
			break
		}
		cs.Connected += rep.Connected
		for _, i := range rep.Failed {
			failed[i] = true
		}
		for k, v := range rep.Errors {
			if cs.Errors == nil {
				cs.Errors = map[string]int{}
			}
			cs.Errors[k] += v
		}
		lat.Merge(rep.ConnLat)
		if first == 0 || rep.Start < first {
			first = rep.Start
		}
		last = max(last, rep.End)
	}
	stop()
	if rerr != nil {
		return fmt.Errorf("connecting: %w", rerr)
	}
	cs.Failed = o.Conns - cs.Connected
	cs.Elapsed = round3(time.Duration(last - first).Seconds())
	if last > first {
		cs.Rate = round1(float64(cs.Connected) / time.Duration(last-first).Seconds())
	}
	cs.Latency = lat.Summary()
	cs.ServerCPU = sumCPU(cpu0, sampleCPUs(r.pids), time.Since(t0))
	cs.BrokerCPU = sumCPU(brk0, sampleCPUs(r.brokerPIDs), time.Since(t0))
	r.rep.Connect = cs
	r.logf("connected %d/%d in %.2fs (%.0f/s)", cs.Connected, o.Conns, cs.Elapsed, cs.Rate)
	if cs.Connected == 0 {
		return fmt.Errorf("no connection succeeded: %s", fmtMap(cs.Errors))
	}
	if cs.Failed > 0 {
		r.warn("%d connections failed", cs.Failed)
	}
	r.subs = make([]int, o.Channels)
	for i := 0; i < o.Conns; i++ {
		if !failed[i] {
			r.subs[i%o.Channels]++
			r.nsubs++
		}
	}
	ictx, icancel := context.WithTimeout(ctx, 5*time.Second)
	for _, api := range r.nodeAPIs {
		if info, err := r.tgt.Info(ictx, api); err == nil {
			r.rep.Server.NumClients += info.NumClients
			if len(r.nodeAPIs) > 1 {
				r.rep.Server.NodeClients = append(r.rep.Server.NodeClients, info.NumClients)
			}
		}
	}
	icancel()
	return nil
}

func (r *runner) killAll() {
	for _, w := range r.workers {
		w.kill()
	}
}
