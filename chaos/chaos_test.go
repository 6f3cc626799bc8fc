package chaos

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"
)

// TestChaos runs one short schedule per engine (CHAOS_SHORT of faults,
// default 20s) and fails on any violation, printing the seed to re-run it
// with, the fault timeline and the first violation in context.
func TestChaos(t *testing.T) {
	t.Parallel()
	d := envDuration(t, "CHAOS_SHORT", 20*time.Second)
	for _, engine := range enginesToRun(t) {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			r := run(t, runOpts{engine: engine, bin: bin, seed: seedFor(t), duration: d, subs: 4, slow: 2, pace: 60 * time.Millisecond})
			t.Logf("%s (faults %s; %v)", strings.TrimSpace(r.report[:strings.IndexByte(r.report, '\n')+1]), faultSummary(r.faults), r.ran.Round(time.Second))
			if len(r.violations) > 0 {
				t.Errorf("%s", r.report)
			}
		})
	}
}

func faultSummary(m map[string]int) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
