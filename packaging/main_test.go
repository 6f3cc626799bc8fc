package packaging_test

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// bin is the herald binary TestMain builds.
var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-packaging")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "herald")
	// The same flags as cmd/herald's tests, so the build cache serves both.
	out, err := exec.Command("go", "build", "-o", bin, "../cmd/herald").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// run runs a command to its end and returns its output (stdout and stderr).
func run(t *testing.T, env []string, name string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustRun is run that fails the test on an error.
func mustRun(t *testing.T, env []string, name string, args ...string) string {
	t.Helper()
	out, err := run(t, env, name, args...)
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return out
}

// syncBuffer collects a process's output while it runs.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// server is a herald process started by startServer.
type server struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan error
}

// startServer starts argv with env added and waits until /readyz at addr
// answers 200. The process is killed at the end of the test if still running.
func startServer(t *testing.T, addr string, env []string, argv ...string) *server {
	t.Helper()
	s := &server{cmd: exec.Command(argv[0], argv[1:]...), out: &syncBuffer{}, done: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = s.out, s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		_ = s.cmd.Process.Kill()
		<-s.done
		s.done <- nil
	})
	waitFor(t, 20*time.Second, func() error {
		select {
		case err := <-s.done:
			s.done <- err
			return errStop{fmt.Errorf("exited: %v\n%s", err, s.out)}
		default:
		}
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return err
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("/readyz: %s", resp.Status)
		}
		return nil
	})
	return s
}

// stop sends SIGTERM and checks that the process drains and exits 0.
func (s *server) stop(t *testing.T) {
	t.Helper()
	if err := s.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-s.done:
		s.done <- err
		if err != nil {
			t.Fatalf("exit: %v\n%s", err, s.out)
		}
	case <-time.After(30 * time.Second):
		t.Fatalf("no exit 30s after the signal\n%s", s.out)
	}
	if !strings.Contains(s.out.String(), "draining") {
		t.Errorf("no drain in the log:\n%s", s.out)
	}
}

// errStop ends waitFor at once.
type errStop struct{ error }

// waitFor polls fn until it returns nil, fails the test after timeout or
// when fn returns an errStop.
func waitFor(t *testing.T, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(25 * time.Millisecond)
	defer tick.Stop()
	for {
		err := fn()
		if err == nil {
			return
		}
		var stop errStop
		if errors.As(err, &stop) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		<-tick.C
	}
}
