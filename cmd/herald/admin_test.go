package main_test

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/testaddr"
)

// adminLogin posts a password to base's admin login and returns the
// status.
func adminLoginStatus(t *testing.T, base, password string) int {
	t.Helper()
	resp, err := http.PostForm(base+"/admin/login", url.Values{"password": {password}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func getStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := (&http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}).Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// TestAdminDev: --dev turns the admin UI on with a generated password,
// printed at start; HERALD_ADMIN_PASSWORD chooses it instead.
func TestAdminDev(t *testing.T) {
	t.Parallel()
	p, addr := serve(t, nil, "--dev")
	re := regexp.MustCompile(`admin UI: +http://\S+/admin/ +password ([0-9a-f]{32})`)
	var m []string
	for deadline := time.Now().Add(5 * time.Second); m == nil; m = re.FindStringSubmatch(p.log()) {
		if time.Now().After(deadline) {
			t.Fatalf("no admin password printed:\n%s", p.log())
		}
		time.Sleep(10 * time.Millisecond)
	}
	base := "http://" + addr
	if code := adminLoginStatus(t, base, "not-the-password"); code != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", code)
	}
	if code := adminLoginStatus(t, base, m[1]); code != 200 {
		t.Fatalf("printed password: %d", code)
	}

	p, addr = serve(t, []string{"HERALD_ADMIN_PASSWORD=chosen-admin-password", "HERALD_ADMIN_SESSION_TTL=1h"}, "--dev")
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(p.log(), "admin UI:"); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no admin UI line:\n%s", p.log())
		}
	}
	if strings.Contains(p.log(), "chosen-admin-password") {
		t.Fatalf("a configured password was printed:\n%s", p.log())
	}
	resp, err := http.PostForm("http://"+addr+"/admin/login", url.Values{"password": {"chosen-admin-password"}})
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if cs := resp.Cookies(); resp.StatusCode != 200 || len(cs) != 1 || cs[0].MaxAge != 3600 {
		t.Fatalf("password from HERALD_ADMIN_PASSWORD, TTL from HERALD_ADMIN_SESSION_TTL: %d %v", resp.StatusCode, cs)
	}
}

// TestAdminListen: admin.listen serves the admin UI on its own address and
// takes it off the public listener; without a password there is no
// admin UI.
func TestAdminListen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	adminAddr := testaddr.Addr(t)
	cfg := filepath.Join(dir, "herald.yaml")
	os.WriteFile(cfg, []byte("api_keys: [k]\nadmin:\n  password: file-admin-password\n  listen: \""+adminAddr+"\"\n"), 0o600)
	_, addr := serve(t, nil, "--config", cfg)
	if code := getStatus(t, "http://"+addr+"/admin/login"); code != http.StatusNotFound {
		t.Fatalf("public listener /admin/login: %d", code)
	}
	deadline := time.Now().Add(5 * time.Second)
	for adminLoginStatus(t, "http://"+adminAddr, "file-admin-password") != 200 {
		if time.Now().After(deadline) {
			t.Fatal("no login on the admin listener")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if code := getStatus(t, "http://"+adminAddr+"/metrics"); code != http.StatusNotFound {
		t.Fatalf("admin listener /metrics: %d", code)
	}

	// check-config: the section with its default, the password hidden.
	out, err := run(t, nil, "check-config", cfg)
	if err != nil || !strings.Contains(out, "password: <redacted>") || !strings.Contains(out, "session_ttl: 12h0m0s") ||
		!strings.Contains(out, "listen: "+adminAddr) || strings.Contains(out, "file-admin-password") {
		t.Fatalf("check-config: %v\n%s", err, out)
	}
	noPassword := filepath.Join(dir, "nopw.yaml")
	os.WriteFile(noPassword, []byte("admin:\n  listen: \""+adminAddr+"\"\n"), 0o600)
	if out, err := run(t, nil, "check-config", noPassword); err == nil || !strings.Contains(out, "admin.password") {
		t.Fatalf("admin.listen without a password: %v %s", err, out)
	}
	short := filepath.Join(dir, "short.yaml")
	os.WriteFile(short, []byte("admin:\n  password: abc\n"), 0o600)
	if out, err := run(t, []string{"HERALD_ADMIN_PASSWORD="}, "check-config", short); err == nil {
		t.Fatalf("a 3-byte admin password accepted: %s", out)
	}
}
