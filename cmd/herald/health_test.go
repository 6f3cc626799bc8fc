package main_test

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heraldhq/herald/internal/testaddr"
)

// exitCode is the process's exit status, 0 for a nil error.
func exitCode(t *testing.T, err error) int {
	t.Helper()
	var ee *exec.ExitError
	if err == nil {
		return 0
	}
	if !errors.As(err, &ee) {
		t.Fatal(err)
	}
	return ee.ExitCode()
}

func TestHealth(t *testing.T) {
	t.Parallel()
	_, addr := serve(t, nil)
	dir := t.TempDir()
	cfg := filepath.Join(dir, "herald.yaml")
	if err := os.WriteFile(cfg, []byte("listen: "+addr+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, port, _ := strings.Cut(addr, ":")
	wildcard := filepath.Join(dir, "wildcard.yaml")
	if err := os.WriteFile(wildcard, []byte("listen: \":"+port+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	unavailable := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable) // as /readyz while draining
	}))
	defer unavailable.Close()

	for _, tc := range []struct {
		name string
		env  []string
		args []string
		code int
		out  string
	}{
		{"url", nil, []string{"--url", "http://" + addr + "/readyz"}, 0, "ready"},
		{"HERALD_LISTEN", []string{"HERALD_LISTEN=" + addr}, nil, 0, "ready"},
		{"config", nil, []string{"--config", cfg}, 0, "ready"},
		{"wildcard listen probes loopback", nil, []string{"--config", wildcard}, 0, "ready"},
		{"draining", nil, []string{"--url", unavailable.URL + "/readyz"}, 1, "503 Service Unavailable"},
		{"nobody listens", nil, []string{"--url", "http://" + testaddr.Addr(t) + "/readyz"}, 1, "not ready"},
		{"bad listen", []string{"HERALD_LISTEN=nowhere"}, nil, 1, "listen address"},
		{"usage", nil, []string{"extra"}, 2, "usage"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out, err := run(t, tc.env, append([]string{"health"}, tc.args...)...)
			if code := exitCode(t, err); code != tc.code || !strings.Contains(out, tc.out) {
				t.Errorf("exit %d, want %d; output %q, want it to contain %q", code, tc.code, out, tc.out)
			}
		})
	}
}
