package packaging_test

import (
	"bufio"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testaddr"
)

// TestDefaultConfig checks that the packaged /etc/herald/herald.yaml is
// valid, and that a node started with it, as the unit starts it, drains
// and exits 0 on SIGTERM.
func TestDefaultConfig(t *testing.T) {
	t.Parallel()
	out := mustRun(t, nil, bin, "check-config", "herald.yaml")
	for _, want := range []string{"listen: :8000", "drain_timeout: 10s", "log_level: info"} {
		if !strings.Contains(out, want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	addr := testaddr.Addr(t)
	s := startServer(t, addr, []string{"HERALD_LISTEN=" + addr}, bin, "serve", "--config", "herald.yaml")
	s.stop(t)
}

// unitDirectives reads a systemd unit: each directive's values, in order.
func unitDirectives(t *testing.T, path string) map[string][]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d := map[string][]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == '[' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: not a directive: %q", path, line)
		}
		d[k] = append(d[k], v)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestUnit checks the systemd unit's contract: it runs the packaged binary
// with the packaged config as user herald, with the hardening in place, and
// gives the drain time to finish. systemd-analyze verify runs on the
// installed unit in TestDebInstall.
func TestUnit(t *testing.T) {
	t.Parallel()
	d := unitDirectives(t, "herald.service")
	for k, want := range map[string]string{
		"ExecStart":             "/usr/bin/herald serve --config /etc/herald/herald.yaml",
		"User":                  "herald",
		"Group":                 "herald",
		"NoNewPrivileges":       "yes",
		"ProtectSystem":         "strict",
		"ProtectHome":           "yes",
		"PrivateTmp":            "yes",
		"LimitNOFILE":           "1048576",
		"Restart":               "on-failure",
		"KillSignal":            "SIGTERM",
		"StateDirectory":        "herald",
		"CapabilityBoundingSet": "",
	} {
		if got := d[k]; len(got) != 1 || got[0] != want {
			t.Errorf("%s=%q, want %q", k, got, want)
		}
	}
	if _, ok := d["ExecReload"]; ok {
		t.Error("ExecReload: Herald cannot reload; a restart drains (see the unit's comment)")
	}
	stop, err := time.ParseDuration(d["TimeoutStopSec"][0])
	if err != nil {
		t.Fatal(err)
	}
	// The default config's drain window, plus serve's 5 s for closing, plus
	// margin.
	m := regexp.MustCompile(`(?m)^drain_timeout: (\S+)`).FindSubmatch(mustRead(t, "herald.yaml"))
	if m == nil {
		t.Fatal("herald.yaml sets no drain_timeout")
	}
	drain, err := time.ParseDuration(string(m[1]))
	if err != nil {
		t.Fatal(err)
	}
	if stop < drain+15*time.Second {
		t.Errorf("TimeoutStopSec=%v, want at least drain_timeout (%v) + 15s", stop, drain)
	}
}

// TestMaintainerScripts checks the scripts' syntax with sh -n.
func TestMaintainerScripts(t *testing.T) {
	t.Parallel()
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		mustRun(t, nil, "sh", "-n", "scripts/"+s)
		fi, err := os.Stat("scripts/" + s)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&0o111 == 0 {
			t.Errorf("scripts/%s is not executable", s)
		}
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
