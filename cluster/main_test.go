package cluster_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/testproc"
)

// bin is the herald binary, built once by TestMain.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-cluster-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/heraldhq/herald/cmd/herald").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build herald: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		// Every goroutine a test started (balancers, clients, process
		// waiters) must have ended.
		if err := goleak.Find(); err != nil {
			fmt.Fprintf(os.Stderr, "goleak: %v\n", err)
			code = 1
		}
	}
	os.Exit(code)
}

// The helpers below are those of internal/testproc, which the chaos
// suite shares.

// unavailable fails the test in CI (CI=true), where the dependency must be
// there, and skips it elsewhere.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	testproc.Unavailable(t, format, args...)
}

// checkFor polls cond every 20ms until it returns nil, and fails the test
// with cond's last error when timeout passes first.
func checkFor(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	testproc.CheckFor(t, timeout, what, cond)
}

func randomHex(n int) string { return testproc.RandomHex(n) }

func tail(s string, n int) string { return testproc.Tail(s, n) }

// process is a child process whose output is kept for failure messages.
// It is killed when the test ends.
type process struct {
	*testproc.Process
	name string
	cmd  *exec.Cmd
	out  output
	done <-chan struct{} // closed when the process has exited
}

// output is what a process wrote so far.
type output struct{ p *testproc.Process }

func (o output) String() string { return o.p.Output() }

// startProcess runs path with args. The process is SIGKILLed and waited
// for when the test ends; its output is logged if the test failed (or
// always, with HERALD_CLUSTER_LOGS set), and written whole to a file in
// the directory HERALD_CLUSTER_LOG_DIR names, if set.
func startProcess(t *testing.T, name, path string, args ...string) *process {
	t.Helper()
	return startProcessEnv(t, name, path, nil, args...)
}

// startProcessEnv is startProcess with env added to the test's environment.
func startProcessEnv(t *testing.T, name, path string, env []string, args ...string) *process {
	t.Helper()
	p := testproc.Start(t, testproc.Logs{Always: "HERALD_CLUSTER_LOGS", Dir: "HERALD_CLUSTER_LOG_DIR"}, name, path, env, args...)
	return &process{Process: p, name: name, cmd: p.Cmd, out: output{p}, done: p.Done()}
}

// kill sends SIGKILL and waits for the process to exit.
func (p *process) kill() { p.Kill() }

func (p *process) exited() bool { return p.Exited() }
