// Package testproc runs the child processes of Herald's multi-process
// tests (herald nodes, nats-server, redis-server) and holds the small
// helpers those tests share: polling a condition with a deadline, failing
// or skipping when a dependency is missing, and waiting for a broker to
// answer. It is imported by tests only.
package testproc

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Unavailable fails the test in CI (CI=true), where the dependency must be
// there, and skips it elsewhere.
func Unavailable(tb testing.TB, format string, args ...any) {
	tb.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatal(msg)
	}
	tb.Skip(msg + " (skipping; with CI=true this fails)")
}

// CheckFor polls cond every 20ms until it returns nil, and fails the test
// with cond's last error when timeout passes first.
func CheckFor(tb testing.TB, timeout time.Duration, what string, cond func() error) {
	tb.Helper()
	if err := WaitFor(timeout, cond); err != nil {
		tb.Fatalf("%s: not within %v: %v", what, timeout, err)
	}
}

// WaitFor polls cond every 20ms until it returns nil and returns nil, or
// returns cond's last error once timeout has passed.
func WaitFor(timeout time.Duration, cond func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// RandomHex returns 2n random hex digits.
func RandomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Tail returns the last n bytes of s, marked as cut if it was longer.
func Tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "…" + s[len(s)-n:]
}

// LookPath finds the binary name in PATH, or at fallback; without either
// the test is Unavailable.
func LookPath(tb testing.TB, name, fallback string) string {
	tb.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if fallback != "" {
		if _, err := os.Stat(fallback); err == nil {
			return fallback
		}
	}
	Unavailable(tb, "%s not found in PATH", name)
	return ""
}

// Process is a child process whose output is kept for failure messages.
type Process struct {
	Name string
	Cmd  *exec.Cmd
	out  lockedBuffer
	done chan struct{} // closed when the process has exited
	err  error         // its exit status, set before done closes
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Logs name the environment variables that ask for a child's output:
// with Always set, it is logged when the test ends (otherwise only if the
// test failed); Dir names a directory to write it to whole.
type Logs struct{ Always, Dir string }

// Start runs path with args, and env added to the test's environment. The
// process is SIGKILLed (and sent SIGCONT, in case it was stopped) and
// waited for when the test ends; its output is logged and kept as logs
// say.
func Start(tb testing.TB, logs Logs, name, path string, env []string, args ...string) *Process {
	tb.Helper()
	p := &Process{Name: name, Cmd: exec.Command(path, args...), done: make(chan struct{})}
	if env != nil {
		p.Cmd.Env = append(os.Environ(), env...)
	}
	p.Cmd.Stdout, p.Cmd.Stderr = &p.out, &p.out
	dieWithTest(p.Cmd)
	if err := p.Cmd.Start(); err != nil {
		tb.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.Cmd.Wait()
		close(p.done)
	}()
	tb.Cleanup(func() {
		p.Kill()
		if d := os.Getenv(logs.Dir); logs.Dir != "" && d != "" {
			_ = os.WriteFile(filepath.Join(d, strings.NewReplacer(" ", "_", "(", "", ")", "", ":", "_", "/", "_").Replace(p.Name)+".log"), []byte(p.Output()), 0o644)
		}
		if tb.Failed() || (logs.Always != "" && os.Getenv(logs.Always) != "") {
			tb.Logf("--- output of %s:\n%s", p.Name, Tail(p.Output(), 6000))
		}
	})
	return p
}

// Output is everything the process wrote so far.
func (p *Process) Output() string { return p.out.String() }

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is the process's exit status, once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Kill sends SIGKILL (and SIGCONT, in case it was stopped) and waits for
// the process to exit.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = p.Cmd.Process.Signal(syscall.SIGKILL)
	_ = p.Cmd.Process.Signal(syscall.SIGCONT)
	<-p.done
}

// Signal sends sig to the process, if it still runs.
func (p *Process) Signal(sig os.Signal) error {
	if p.Exited() {
		return fmt.Errorf("%s has exited", p.Name)
	}
	return p.Cmd.Process.Signal(sig)
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}
