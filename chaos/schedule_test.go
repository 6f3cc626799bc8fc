package chaos

import (
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/faultnet"
	"github.com/heraldhq/herald/internal/testproc"
)

// step is one fault of a schedule: what, on which target, held for how
// long, then healed; then a pause before the next one.
type step struct {
	Kind   string
	Target int
	Hold   time.Duration
	Pause  time.Duration
	Param  int // latency in ms, or bandwidth in bytes/s
}

func (s step) String() string {
	p := ""
	if s.Param > 0 {
		p = fmt.Sprintf(" param=%d", s.Param)
	}
	return fmt.Sprintf("%s target=%d hold=%v pause=%v%s", s.Kind, s.Target, s.Hold, s.Pause, p)
}

// faultKinds are the faults an engine can be given.
func faultKinds(engine string) []string {
	kinds := []string{"kill-node", "pause-node", "client-latency", "client-reset", "client-blackhole", "slow-clients"}
	switch engine {
	case "nats", "redis":
		kinds = append(kinds, "kill-broker", "pause-broker", "broker-latency", "broker-reset", "broker-blackhole", "broker-slow")
	case "rediscluster":
		kinds = append(kinds, "kill-broker", "pause-broker")
	}
	return kinds
}

// newSchedule draws the faults of a run of about d from seed.
func newSchedule(seed uint64, engine string, d time.Duration) []step {
	rng := rand.New(rand.NewPCG(seed, 1))
	kinds := faultKinds(engine)
	var steps []step
	var total time.Duration
	for total < d {
		s := step{Kind: kinds[rng.IntN(len(kinds))], Target: rng.IntN(3),
			Hold:  time.Duration(500+rng.IntN(5500)) * time.Millisecond,
			Pause: time.Duration(500+rng.IntN(2500)) * time.Millisecond}
		switch s.Kind {
		case "client-latency", "broker-latency":
			s.Param = 20 + rng.IntN(300)
		case "slow-clients":
			s.Param = 2000 + rng.IntN(6000)
			s.Hold += 3 * time.Second
		case "broker-slow":
			s.Param = 20000 + rng.IntN(100000)
		case "client-reset", "broker-reset":
			s.Hold = 0
		}
		steps = append(steps, s)
		total += s.Hold + s.Pause
	}
	return steps
}

// apply starts the fault of s and returns what heals it.
func (e *env) apply(s step) func() {
	i := s.Target
	n := e.nodes[i]
	j := i % max(len(e.brokers), 1)
	switch s.Kind {
	case "kill-node":
		e.h.addFault(s.Kind, "SIGKILL %s", n.name)
		e.killNode(i)
		return func() { e.h.addFault("heal", "restart %s", n.name); e.restartNode(i) }
	case "pause-node":
		e.h.addFault(s.Kind, "SIGSTOP %s", n.name)
		e.pauseNode(i, true)
		return func() { e.h.addFault("heal", "SIGCONT %s", n.name); e.pauseNode(i, false) }
	case "kill-broker":
		b := e.brokers[j]
		e.h.addFault(s.Kind, "SIGKILL %s", b.P.Name)
		b.P.Kill()
		e.paused[b] = false
		return func() { e.h.addFault("heal", "restart %s", b.P.Name); b.Start() }
	case "pause-broker":
		b := e.brokers[j]
		e.h.addFault(s.Kind, "SIGSTOP %s", b.P.Name)
		e.pauseBroker(j, true)
		return func() { e.h.addFault("heal", "SIGCONT %s", b.P.Name); e.pauseBroker(j, false) }
	case "client-latency":
		e.h.addFault(s.Kind, "%dms between clients and %s", s.Param, n.name)
		n.front.SetFaults(faultnet.Faults{Latency: time.Duration(s.Param) * time.Millisecond})
		return func() { e.h.addFault("heal", "clients to %s", n.name); n.front.SetFaults(faultnet.Faults{}) }
	case "client-reset":
		k := n.front.Reset(-1)
		e.h.addFault(s.Kind, "reset %d client connections of %s", k, n.name)
		return func() {}
	case "client-blackhole":
		e.h.addFault(s.Kind, "clients cannot reach %s", n.name)
		n.front.SetFaults(faultnet.Faults{Blackhole: true})
		return func() { e.h.addFault("heal", "clients reach %s", n.name); n.front.SetFaults(faultnet.Faults{}) }
	case "slow-clients":
		e.h.addFault(s.Kind, "slow clients get %d bytes/s", s.Param)
		e.slow.SetFaults(faultnet.Faults{Bandwidth: s.Param})
		return func() { e.h.addFault("heal", "slow clients at full speed"); e.slow.SetFaults(faultnet.Faults{}) }
	case "broker-latency":
		e.h.addFault(s.Kind, "%dms between %s and its broker", s.Param, n.name)
		n.brokerLink.SetFaults(faultnet.Faults{Latency: time.Duration(s.Param) * time.Millisecond})
		return func() { e.h.addFault("heal", "%s to its broker", n.name); n.brokerLink.SetFaults(faultnet.Faults{}) }
	case "broker-reset":
		k := n.brokerLink.Reset(-1)
		e.h.addFault(s.Kind, "reset %d broker connections of %s", k, n.name)
		return func() {}
	case "broker-blackhole":
		e.h.addFault(s.Kind, "%s partitioned from its broker (its clients still reach it)", n.name)
		n.brokerLink.SetFaults(faultnet.Faults{Blackhole: true})
		return func() {
			e.h.addFault("heal", "%s reaches its broker", n.name)
			n.brokerLink.SetFaults(faultnet.Faults{})
		}
	case "broker-slow":
		e.h.addFault(s.Kind, "%s gets %d bytes/s to its broker", n.name, s.Param)
		n.brokerLink.SetFaults(faultnet.Faults{Bandwidth: s.Param})
		return func() {
			e.h.addFault("heal", "%s to its broker at full speed", n.name)
			n.brokerLink.SetFaults(faultnet.Faults{})
		}
	}
	e.t.Fatalf("unknown fault %q", s.Kind)
	return nil
}

// runOpts are a run's settings.
type runOpts struct {
	engine   string
	bin      string
	seed     uint64
	duration time.Duration // of the fault schedule
	subs     int
	slow     int
	pace     time.Duration
}

// result is what a run found.
type result struct {
	seed       uint64
	engine     string
	faults     map[string]int
	stats      checkStats
	violations []violation
	report     string
	ran        time.Duration
}

// run starts an engine, runs the workload under the schedule of o.seed,
// heals, waits for every client to catch up, checks presence and the
// whole history, and returns what it found. It fails t only when the
// harness itself cannot go on.
func run(t *testing.T, o runOpts) result {
	t.Helper()
	began := time.Now()
	h := newHistory()
	e := startEnv(t, h, o.engine, o.bin)
	sched := newSchedule(o.seed, o.engine, o.duration)
	w, err := startWorkload(e, o.seed, o.subs, o.slow, o.pace)
	if err != nil {
		t.Fatalf("workload: %v", err)
	}
	defer w.close()
	faults := map[string]int{}
	for _, s := range sched {
		healFn := e.apply(s)
		faults[s.Kind]++
		time.Sleep(s.Hold)
		healFn()
		time.Sleep(s.Pause)
	}
	h.addFault("heal", "everything")
	e.heal()
	errs := w.finish()
	for _, err := range errs {
		h.addViolation(violation{T: h.clock.now(), Kind: "harness", Index: -1, Msg: err})
	}
	converge(e, w)
	checkPresence(e, w)
	w.close()
	st, vs := check(h)
	r := result{seed: o.seed, engine: o.engine, faults: faults, stats: st, violations: vs, ran: time.Since(began)}
	r.report = report(o, h, sched, st, vs)
	return r
}

// converge reads each channel's final history, then waits until every
// subscriber stands at its end; once they do, it reads again (a publish
// whose reply was lost may land late) until nothing moves.
func converge(e *env, w *workload) {
	h := e.h
	for round := 0; round < 5; round++ {
		changed := false
		for _, ch := range channels {
			var f finalChannel
			err := testproc.WaitFor(60*time.Second, func() error {
				var err error
				f, err = e.nodes[round%3].finalHistory(ch)
				return err
			})
			if err != nil {
				h.addViolation(violation{T: h.clock.now(), Kind: "harness", Index: -1, Msg: fmt.Sprintf("final history of %s: %v", ch, err)})
				return
			}
			if prev, ok := h.Final[ch]; !ok || prev.Pos != f.Pos {
				changed = true
			}
			h.Final[ch] = f
		}
		if !changed && round > 0 {
			return
		}
		// One deadline for all: a stalled stream must not hold the
		// others' check back.
		deadline := time.Now().Add(60 * time.Second)
		for _, s := range w.subs {
			for _, ch := range channels {
				st, want := s.streams[ch], h.Final[ch].Pos
				err := testproc.WaitFor(max(time.Until(deadline), 0), func() error {
					if p := st.position(); p.Epoch != want.Epoch || p.Offset < want.Offset {
						return fmt.Errorf("at %s/%d", p.Epoch, p.Offset)
					}
					return nil
				})
				if err != nil {
					h.addViolation(violation{T: h.clock.now(), Kind: "stalled", Stream: st, Index: len(st.events()) - 1,
						Msg: fmt.Sprintf("never reached the end of the stream %s/%d after the faults healed: %v", want.Epoch, want.Offset, err)})
				}
			}
		}
	}
}

// checkPresence waits, at most presence_ttl and a margin, until every
// node lists exactly the live subscribers' connections in each channel.
func checkPresence(e *env, w *workload) {
	h := e.h
	var want []string
	for _, s := range w.subs {
		want = append(want, s.client().ID())
	}
	sort.Strings(want)
	for _, ch := range channels {
		err := testproc.WaitFor(presenceTTL+3*time.Second, func() error {
			for _, n := range e.nodes {
				got, err := n.presence(ch)
				if err != nil {
					return err
				}
				if !slices.Equal(got, want) {
					var ghost, missing []string
					for _, id := range got {
						if !slices.Contains(want, id) {
							ghost = append(ghost, id)
						}
					}
					for _, id := range want {
						if !slices.Contains(got, id) {
							missing = append(missing, id)
						}
					}
					return fmt.Errorf("%s lists %d: ghosts %v, missing %v", n.name, len(got), ghost, missing)
				}
			}
			return nil
		})
		if err != nil {
			h.addViolation(violation{T: h.clock.now(), Kind: "presence", Index: -1,
				Msg: fmt.Sprintf("presence of %s not the live connections within %v of healing: %v", ch, presenceTTL+3*time.Second, err)})
		}
	}
}

// report is a run's summary, and for a failing run the seed, the fault
// timeline and the first violation with the events around it.
func report(o runOpts, h *history, sched []step, st checkStats, vs []violation) string {
	var b strings.Builder
	fmt.Fprintf(&b, "engine %s seed %d (rerun: CHAOS_SEED=%d CHAOS_ENGINES=%s): %d publications acknowledged (%d never), %d deliveries checked, %d gaps signalled, %s, %d violations\n",
		o.engine, o.seed, o.seed, o.engine, st.Publications, st.Unacked, st.Deliveries, st.Gaps, st.Linearizable, len(vs))
	if len(vs) == 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "schedule:\n")
	for _, s := range sched {
		fmt.Fprintf(&b, "  %s\n", s)
	}
	fmt.Fprintf(&b, "fault timeline:\n")
	for _, f := range h.Faults {
		fmt.Fprintf(&b, "  %s\n", f)
	}
	kinds := map[string]int{}
	for _, v := range vs {
		kinds[v.Kind]++
	}
	fmt.Fprintf(&b, "violations by kind: %s\n", faultSummary(kinds))
	v := vs[0]
	fmt.Fprintf(&b, "first violation: %s\n", v)
	if v.Stream != nil {
		ev := v.Stream.events()
		i := v.Index
		if i < 0 || i >= len(ev) {
			i = len(ev) - 1
		}
		fmt.Fprintf(&b, "events of %s in %s around it:\n", v.Stream.Name, v.Stream.Channel)
		for k := max(0, i-10); k <= min(len(ev)-1, i+5); k++ {
			mark := "  "
			if k == i {
				mark = "> "
			}
			fmt.Fprintf(&b, "  %s%d %s\n", mark, k, ev[k])
		}
	}
	fmt.Fprintf(&b, "faults within 10s before it:\n")
	for _, f := range h.Faults {
		if f.T <= v.T && f.T >= v.T-int64(10*time.Second) {
			fmt.Fprintf(&b, "  %s\n", f)
		}
	}
	if len(vs) > 1 {
		fmt.Fprintf(&b, "all violations (%d):\n", len(vs))
		for _, v := range vs[:min(len(vs), 20)] {
			fmt.Fprintf(&b, "  %s\n", v)
		}
	}
	return b.String()
}

// envDuration reads a duration variable, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		t.Fatalf("%s=%q: %v", name, v, err)
	}
	return d
}

// seedFor returns CHAOS_SEED if set, otherwise a fresh random seed.
func seedFor(t *testing.T) uint64 {
	t.Helper()
	if v := os.Getenv("CHAOS_SEED"); v != "" {
		s, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			t.Fatalf("CHAOS_SEED=%q: %v", v, err)
		}
		return s
	}
	return rand.Uint64() >> 12 // short enough to type
}

// enginesToRun is CHAOS_ENGINES (comma-separated) or every engine.
func enginesToRun(t *testing.T) []string {
	t.Helper()
	v := os.Getenv("CHAOS_ENGINES")
	if v == "" {
		return engines
	}
	var out []string
	for _, e := range strings.Split(v, ",") {
		if !slices.Contains(engines, e) {
			t.Fatalf("CHAOS_ENGINES: unknown engine %q (want %v)", e, engines)
		}
		out = append(out, e)
	}
	return out
}
