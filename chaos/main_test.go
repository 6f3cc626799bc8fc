package chaos

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"go.uber.org/goleak"
)

// bin is the herald binary, brokenBin the one built with the
// herald_broken_recovery tag (recovery skips its history read); TestMain
// builds both.
var bin, brokenBin string

// TestMain also builds nats-server from the version go.mod requires, for
// the NATS engine's 3-server cluster, unless HERALD_TEST_NATS_SERVER names
// a binary: nats-server before 2.10.20 can accept two conditional appends
// with the same expected sequence at once in a replicated stream
// (nats-server#4320, #5794), which this suite caught as two publications
// given one offset, and which Herald therefore refuses (broker/nats).

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-chaos-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin, brokenBin = filepath.Join(dir, "herald"), filepath.Join(dir, "herald-broken")
	for _, b := range []struct{ out, tags string }{{bin, ""}, {brokenBin, "herald_broken_recovery"}} {
		out, err := exec.Command("go", "build", "-tags", b.tags, "-o", b.out, "github.com/heraldhq/herald/cmd/herald").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build herald (tags %q): %v\n%s", b.tags, err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
	}
	if os.Getenv("HERALD_TEST_NATS_SERVER") == "" {
		ns := filepath.Join(dir, "nats-server")
		out, err := exec.Command("go", "build", "-o", ns, "github.com/nats-io/nats-server/v2").CombinedOutput()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build nats-server: %v\n%s", err, out)
			os.RemoveAll(dir)
			os.Exit(1)
		}
		os.Setenv("HERALD_TEST_NATS_SERVER", ns)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Every goroutine a test started (proxies, clients, workload,
		// process waiters) must have ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}
