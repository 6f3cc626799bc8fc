//go:build chaos_long

package chaos

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestChaosLong is `make chaos` (built with the chaos_long tag only, so
// that `go test ./...` neither runs nor skips it): per engine, schedules of CHAOS_SCHEDULE
// (default 2m) each on a fresh cluster, one after the other for
// CHAOS_DURATION (default 30m), or CHAOS_COUNT schedules. Schedule k runs
// seed CHAOS_SEED+k (CHAOS_SEED random unless set). It ends with one
// table row per engine (the docs/guarantees.md table).
func TestChaosLong(t *testing.T) {
	total := envDuration(t, "CHAOS_DURATION", 30*time.Minute)
	each := envDuration(t, "CHAOS_SCHEDULE", 2*time.Minute)
	count := 0
	if v := os.Getenv("CHAOS_COUNT"); v != "" {
		var err error
		if count, err = strconv.Atoi(v); err != nil || count < 1 {
			t.Fatalf("CHAOS_COUNT=%q: want a positive number", v)
		}
	}
	base := seedFor(t)
	for _, engine := range enginesToRun(t) {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			start := time.Now()
			sum := result{engine: engine, faults: map[string]int{}}
			var seeds []string
			for k := 0; ; k++ {
				if count > 0 && k >= count || count == 0 && time.Since(start) >= total {
					break
				}
				seed := base + uint64(k)
				var r result
				t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
					r = run(t, runOpts{engine: engine, bin: bin, seed: seed, duration: each, subs: 6, slow: 2, pace: 40 * time.Millisecond})
					t.Logf("%s", strings.TrimSpace(r.report[:strings.IndexByte(r.report, '\n')+1]))
					if len(r.violations) > 0 {
						t.Errorf("%s", r.report)
					}
				})
				seeds = append(seeds, strconv.FormatUint(seed, 10))
				for k, n := range r.faults {
					sum.faults[k] += n
				}
				sum.stats.Publications += r.stats.Publications
				sum.stats.Deliveries += r.stats.Deliveries
				sum.stats.Gaps += r.stats.Gaps
				sum.violations = append(sum.violations, r.violations...)
			}
			t.Logf("TABLE | %s | %s | %d | %d | %d | %d | %v, %d schedules, seeds %s |", engine, faultSummary(sum.faults),
				sum.stats.Publications, sum.stats.Deliveries, sum.stats.Gaps, len(sum.violations),
				time.Since(start).Round(time.Second), len(seeds), strings.Join(seeds, ","))
		})
	}
}
