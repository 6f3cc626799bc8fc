package packaging_test

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testaddr"
)

// buildDeb builds the package of bin with mkdeb and returns its path.
func buildDeb(t *testing.T) string {
	t.Helper()
	out := mustRun(t, nil, "go", "-C", "mkdeb", "run", ".",
		"-version", herald.Version, "-arch", runtime.GOARCH, "-binary", bin, "-out", t.TempDir())
	lines := strings.Split(strings.TrimSpace(out), "\n")
	return lines[len(lines)-1]
}

// TestDebPackage builds the package and reads it back with dpkg-deb.
func TestDebPackage(t *testing.T) {
	t.Parallel()
	deb := buildDeb(t)
	if want := fmt.Sprintf("herald_%s_%s.deb", herald.Version, runtime.GOARCH); filepath.Base(deb) != want {
		t.Errorf("package %s, want %s", filepath.Base(deb), want)
	}
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		t.Skip("dpkg-deb not found: the package's contents are not checked (apt-get install dpkg)")
	}
	fields := mustRun(t, nil, "dpkg-deb", "--field", deb, "Package", "Version", "Architecture")
	for _, want := range []string{"Package: herald", "Version: " + herald.Version, "Architecture: " + runtime.GOARCH} {
		if !strings.Contains(fields, want) {
			t.Errorf("control lacks %q:\n%s", want, fields)
		}
	}
	contents := mustRun(t, nil, "dpkg-deb", "--contents", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/herald",
		"-rw-r--r-- root/root .* ./usr/lib/systemd/system/herald.service",
		"-rw-r--r-- root/root .* ./etc/herald/herald.yaml",
	} {
		if !matchLine(contents, want) {
			t.Errorf("contents lack %q:\n%s", want, contents)
		}
	}
	if got := mustRun(t, nil, "dpkg-deb", "--info", deb, "conffiles"); strings.TrimSpace(got) != "/etc/herald/herald.yaml" {
		t.Errorf("conffiles: %q", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		got := mustRun(t, nil, "dpkg-deb", "--info", deb, s)
		if want := string(mustRead(t, "scripts/"+s)); got != want {
			t.Errorf("%s differs from scripts/%s", s, s)
		}
	}
}

// TestDebInstall installs the package with dpkg, runs the service as its
// user with its config, upgrades, removes and purges it. It needs root and
// dpkg, and leaves the machine as it found it: it deletes the herald user
// and /var/lib/herald afterwards if it created them.
func TestDebInstall(t *testing.T) {
	t.Parallel()
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("TestDebInstall needs root on Linux: run go test ./packaging/ as root (make test-package)")
	}
	for _, cmd := range []string{"dpkg", "dpkg-query", "setpriv", "useradd"} {
		if _, err := exec.LookPath(cmd); err != nil {
			t.Skipf("TestDebInstall needs %s: %v", cmd, err)
		}
	}
	if out, err := run(t, nil, "dpkg-query", "--show", "--showformat=${Status}", "herald"); err == nil && strings.Contains(out, "installed") {
		t.Skipf("a herald package is installed on this machine (%s): not replacing it", out)
	}
	deb := buildDeb(t)

	_, userErr := user.Lookup("herald")
	_, dirErr := os.Stat("/var/lib/herald")
	t.Cleanup(func() {
		if out, err := run(t, nil, "dpkg-query", "--show", "--showformat=${Status}", "herald"); err == nil && out != "" && !strings.Contains(out, "not-installed") {
			if out, err := dpkg(t, "--purge", "herald"); err != nil {
				t.Errorf("cleanup: dpkg --purge: %v\n%s", err, out)
			}
		}
		if userErr != nil {
			if out, err := run(t, nil, "userdel", "herald"); err != nil {
				t.Errorf("cleanup: userdel herald: %v\n%s", err, out)
			}
		}
		if dirErr != nil {
			os.RemoveAll("/var/lib/herald")
		}
	})

	if out, err := dpkg(t, "--install", deb); err != nil {
		t.Fatalf("dpkg --install: %v\n%s", err, out)
	}

	u, err := user.Lookup("herald")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	if uid >= 1000 || u.HomeDir != "/var/lib/herald" {
		t.Errorf("user herald: uid %d, home %s; want a system user with home /var/lib/herald", uid, u.HomeDir)
	}
	if shell := strings.TrimSpace(mustRun(t, nil, "getent", "passwd", "herald")); !strings.HasSuffix(shell, ":/usr/sbin/nologin") {
		t.Errorf("getent passwd herald: %s", shell)
	}
	checkFile(t, "/usr/bin/herald", 0o755, "root", "root")
	checkFile(t, "/usr/lib/systemd/system/herald.service", 0o644, "root", "root")
	checkFile(t, "/etc/herald/herald.yaml", 0o640, "root", "herald")
	checkFile(t, "/var/lib/herald", 0o750|os.ModeDir, "herald", "herald")
	if out := mustRun(t, nil, "dpkg-query", "--show", "--showformat=${Conffiles}", "herald"); !strings.Contains(out, "/etc/herald/herald.yaml") {
		t.Errorf("conffiles: %q", out)
	}
	if out := mustRun(t, nil, "/usr/bin/herald", "version"); !strings.HasPrefix(out, "herald "+herald.Version+" ") {
		t.Errorf("herald version: %q", out)
	}

	t.Run("systemd-analyze verify", func(t *testing.T) {
		if _, err := exec.LookPath("systemd-analyze"); err != nil {
			t.Skip("systemd-analyze not found: the unit is not verified (apt-get install systemd)")
		}
		mustRun(t, nil, "systemd-analyze", "verify", "/usr/lib/systemd/system/herald.service")
	})

	// As the unit runs it: user herald (its groups only, no new
	// privileges), the packaged binary and config; the listen address from
	// the environment, as /etc/default/herald could set it.
	asHerald := []string{"setpriv", "--reuid=herald", "--regid=herald", "--init-groups", "--no-new-privs", "--"}
	addr := testaddr.Addr(t)
	env := []string{"HERALD_LISTEN=" + addr}
	mustRun(t, env, asHerald[0], append(asHerald[1:], "/usr/bin/herald", "check-config", "/etc/herald/herald.yaml")...)
	s := startServer(t, addr, env, append(asHerald, "/usr/bin/herald", "serve", "--config", "/etc/herald/herald.yaml")...)
	if st, err := os.Stat(fmt.Sprintf("/proc/%d", s.cmd.Process.Pid)); err != nil {
		t.Error(err)
	} else if got := st.Sys().(*syscall.Stat_t).Uid; int(got) != uid {
		t.Errorf("the server runs as uid %d, want herald's %d", got, uid)
	}
	if out := mustRun(t, env, asHerald[0], append(asHerald[1:], "/usr/bin/herald", "health", "--config", "/etc/herald/herald.yaml")...); strings.TrimSpace(out) != "ready" {
		t.Errorf("herald health: %q", out)
	}
	// Data the service writes, which neither remove nor purge may delete.
	mustRun(t, nil, asHerald[0], append(asHerald[1:], "sh", "-c", "echo data > /var/lib/herald/keep")...)
	s.stop(t)

	// An upgrade (here the same version again) keeps an edited config.
	f, err := os.OpenFile("/etc/herald/herald.yaml", os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintln(f, "# edited by the administrator")
	f.Close()
	if out, err := dpkg(t, "--install", deb); err != nil {
		t.Fatalf("dpkg --install again: %v\n%s", err, out)
	}
	if !strings.Contains(string(mustRead(t, "/etc/herald/herald.yaml")), "# edited by the administrator") {
		t.Error("reinstall replaced the edited config")
	}
	checkFile(t, "/etc/herald/herald.yaml", 0o640, "root", "herald")

	if out, err := dpkg(t, "--remove", "herald"); err != nil {
		t.Fatalf("dpkg --remove: %v\n%s", err, out)
	}
	checkGone(t, "/usr/bin/herald", "/usr/lib/systemd/system/herald.service")
	checkKept(t, "/etc/herald/herald.yaml", "/var/lib/herald/keep")

	if out, err := dpkg(t, "--purge", "herald"); err != nil {
		t.Fatalf("dpkg --purge: %v\n%s", err, out)
	}
	checkGone(t, "/etc/herald/herald.yaml", "/etc/herald")
	checkKept(t, "/var/lib/herald/keep")
	if _, err := user.Lookup("herald"); err != nil {
		t.Errorf("purge deleted the user: %v", err)
	}
	if out, err := run(t, nil, "dpkg-statoverride", "--list", "/etc/herald/herald.yaml"); err == nil {
		t.Errorf("purge left the statoverride: %s", out)
	}
}

// dpkg runs dpkg, waiting while another dpkg or apt holds the lock.
func dpkg(t *testing.T, args ...string) (string, error) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		cmd := exec.Command("dpkg", args...)
		cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
		b, err := cmd.CombinedOutput()
		out := string(b)
		if err == nil || !strings.Contains(out, "lock") || time.Now().After(deadline) {
			return out, err
		}
		t.Logf("dpkg %s: waiting for the lock: %s", strings.Join(args, " "), out)
		<-tick.C
	}
}

func checkFile(t *testing.T, path string, mode os.FileMode, owner, group string) {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Error(err)
		return
	}
	st := fi.Sys().(*syscall.Stat_t)
	u, _ := user.LookupId(strconv.Itoa(int(st.Uid)))
	g, _ := user.LookupGroupId(strconv.Itoa(int(st.Gid)))
	if fi.Mode() != mode || u == nil || u.Username != owner || g == nil || g.Name != group {
		t.Errorf("%s: %v uid %d gid %d, want %v %s:%s", path, fi.Mode(), st.Uid, st.Gid, mode, owner, group)
	}
}

func checkGone(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s is still there (%v)", p, err)
		}
	}
}

func checkKept(t *testing.T, paths ...string) {
	t.Helper()
	for _, p := range paths {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s is gone: %v", p, err)
		}
	}
}

// matchLine reports whether a line of text matches the regular expression.
func matchLine(text, expr string) bool {
	re := regexp.MustCompile("(?m)^" + expr + "$")
	return re.MatchString(text)
}
