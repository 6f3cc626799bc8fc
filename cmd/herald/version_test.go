package main_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestVersionStamped builds the binary as make release does and checks
// that `herald version` reports what -ldflags -X stamped.
func TestVersionStamped(t *testing.T) {
	t.Parallel()
	stamped := filepath.Join(t.TempDir(), "herald")
	ldflags := "-X main.version=9.8.7-test -X main.commit=0123456789ab -X main.date=2026-01-02T03:04:05Z"
	if out, err := exec.Command("go", "build", "-ldflags", ldflags, "-o", stamped, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(stamped, "version").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "herald 9.8.7-test (commit 0123456789ab, built 2026-01-02T03:04:05Z, go"
	if !strings.HasPrefix(string(out), want) {
		t.Errorf("version: %q, want it to start with %q", out, want)
	}
}

func TestVersionUnstamped(t *testing.T) {
	t.Parallel()
	out, err := run(t, nil, "version")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out, "herald ") || !strings.Contains(out, "go1.") {
		t.Errorf("version: %q", out)
	}
}
