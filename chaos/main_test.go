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
