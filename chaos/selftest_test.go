package chaos

import (
	"testing"
	"time"
)

// TestCheckerCatchesBrokenBuild runs a short schedule against a herald
// built with the herald_broken_recovery tag, whose recovering subscribes
// skip their history read and claim they recovered: the checker must
// report it (the churn alone makes clients recover every few seconds).
func TestCheckerCatchesBrokenBuild(t *testing.T) {
	t.Parallel()
	r := run(t, runOpts{engine: "redis", bin: brokenBin, seed: seedFor(t), duration: 10 * time.Second, subs: 3, slow: 0, pace: 50 * time.Millisecond})
	caught := map[string]int{}
	for _, v := range r.violations {
		caught[v.Kind]++
	}
	t.Logf("broken build: %d violations %v", len(r.violations), caught)
	// Which promise shows the broken recovery first depends on the
	// schedule: a silent gap, an acknowledged publication never
	// delivered, or, after the broker lost its data, recovered:true into
	// a new epoch.
	if caught["silent-gap"]+caught["lost"]+caught["silent-epoch"] == 0 {
		t.Fatalf("the checker did not catch a server that skips the history read on recovery (want silent-gap, lost or silent-epoch violations):\n%s", r.report)
	}
}
