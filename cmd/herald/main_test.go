package main_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/protocol"
)

var bin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "herald-bin")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "herald")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		fmt.Fprintf(os.Stderr, "build: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type proc struct {
	cmd    *exec.Cmd
	mu     sync.Mutex
	stderr strings.Builder
	stdout chan string
	done   chan error
}

func (p *proc) log() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.stderr.String()
}

// start runs the binary with args; stdout lines arrive on p.stdout.
func start(t *testing.T, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{cmd: exec.Command(bin, args...), stdout: make(chan string, 10000), done: make(chan error, 1)}
	p.cmd.Env = append(os.Environ(), env...)
	out, _ := p.cmd.StdoutPipe()
	errp, _ := p.cmd.StderrPipe()
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			p.stdout <- sc.Text()
		}
	}()
	go func() {
		defer wg.Done()
		b := make([]byte, 4096)
		for {
			n, err := errp.Read(b)
			p.mu.Lock()
			p.stderr.Write(b[:n])
			p.mu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	go func() {
		wg.Wait()
		p.done <- p.cmd.Wait()
		close(p.stdout)
	}()
	t.Cleanup(func() {
		_ = p.cmd.Process.Kill()
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
		}
	})
	return p
}

func (p *proc) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-p.done:
		p.done <- err
		return err
	case <-time.After(d):
		t.Fatalf("process did not exit in %v; stderr:\n%s", d, p.log())
		return nil
	}
}

func (p *proc) line(t *testing.T) string {
	t.Helper()
	select {
	case l, ok := <-p.stdout:
		if !ok {
			t.Fatalf("process ended; stderr:\n%s", p.log())
		}
		return l
	case <-time.After(10 * time.Second):
		t.Fatalf("no output line; stderr:\n%s", p.log())
		return ""
	}
}

// serve starts `herald serve` and waits until it is ready.
func serve(t *testing.T, env []string, args ...string) (*proc, string) {
	t.Helper()
	addr := testaddr.Addr(t)
	p := start(t, env, append([]string{"serve", "--listen", addr}, args...)...)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, addr
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("server not ready; stderr:\n%s", p.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func run(t *testing.T, env []string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if err != nil {
		return out.String() + errb.String(), err
	}
	return out.String(), nil
}

func TestSIGTERMDrain(t *testing.T) {
	t.Parallel()
	p, addr := serve(t, []string{"HERALD_API_KEY=k", "HERALD_DRAIN_TIMEOUT=3s"}, "--dev")
	const n = 8
	var mu sync.Mutex
	events := map[int]client.DisconnectEvent{}
	for i := 0; i < n; i++ {
		i := i
		c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{OnDisconnect: func(e client.DisconnectEvent) {
			mu.Lock()
			if _, seen := events[i]; !seen {
				events[i] = e
			}
			mu.Unlock()
		}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := c.Subscribe(context.Background(), "room:1", client.SubscribeOptions{OnPublication: func(client.Publication) {}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := p.wait(t, 15*time.Second); err != nil {
		t.Fatalf("exit: %v; stderr:\n%s", err, p.log())
	}
	// The server exits once every close handshake is done; each client
	// reports its disconnect on its own goroutine, which may come later.
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		got := len(events)
		mu.Unlock()
		if got == n || time.Now().After(deadline) {
			break
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for i := 0; i < n; i++ {
		e, ok := events[i]
		if !ok || e.Code != protocol.DisconnectShutdown || !e.Reconnect || e.ReconnectAfter > 3*time.Second {
			t.Errorf("client %d: %+v (seen %v)", i, e, ok)
		}
	}
	if !strings.Contains(p.log(), "draining") {
		t.Errorf("no drain log line:\n%s", p.log())
	}
}

// TestDemoFlow is the README's first minute: sub, pub, kill sub, publish
// ten, resume with --recover and get exactly those ten, then live ones.
func TestDemoFlow(t *testing.T) {
	t.Parallel()
	_, addr := serve(t, []string{"HERALD_API_KEY=k"}, "--dev")
	url := "ws://" + addr + "/ws"
	api := "http://" + addr
	state := filepath.Join(t.TempDir(), "pos.json")
	sub := start(t, nil, "sub", "--url", url, "--recover", state, "room:1")
	waitSubscribed(t, api, "room:1", 1)
	if out, err := run(t, nil, "pub", "--url", url, "room:1", `{"text":"hi"}`); err != nil {
		t.Fatalf("pub: %v %s", err, out)
	}
	var line struct {
		Channel string          `json:"channel"`
		Offset  uint64          `json:"offset"`
		Epoch   string          `json:"epoch"`
		Data    json.RawMessage `json:"data"`
	}
	if err := json.Unmarshal([]byte(sub.line(t)), &line); err != nil || string(line.Data) != `{"text":"hi"}` || line.Offset != 1 || line.Epoch == "" {
		t.Fatalf("first line %+v %v", line, err)
	}
	_ = sub.cmd.Process.Signal(syscall.SIGINT)
	if err := sub.wait(t, 10*time.Second); err != nil {
		t.Fatalf("sub exit: %v", err)
	}
	for i := 1; i <= 10; i++ {
		if out, err := run(t, nil, "pub", "--api", api, "--key", "k", "room:1", fmt.Sprintf(`{"n":%d}`, i)); err != nil {
			t.Fatalf("api pub: %v %s", err, out)
		}
	}
	sub2 := start(t, nil, "sub", "--url", url, "--recover", state, "room:1")
	for i := 1; i <= 10; i++ {
		if err := json.Unmarshal([]byte(sub2.line(t)), &line); err != nil || string(line.Data) != fmt.Sprintf(`{"n":%d}`, i) || line.Offset != uint64(i+1) {
			t.Fatalf("recovered line %d: %+v %v", i, line, err)
		}
	}
	waitSubscribed(t, api, "room:1", 1)
	if out, err := run(t, nil, "pub", "--url", url, "room:1", `"live"`); err != nil {
		t.Fatalf("pub: %v %s", err, out)
	}
	if err := json.Unmarshal([]byte(sub2.line(t)), &line); err != nil || string(line.Data) != `"live"` || line.Offset != 12 {
		t.Fatalf("live line %+v %v", line, err)
	}
}

func waitSubscribed(t *testing.T, api, ch string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		req, _ := http.NewRequest("POST", api+"/api/channels", strings.NewReader(`{}`))
		req.Header.Set("Authorization", "apikey k")
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			var out struct {
				Channels map[string]struct {
					N int `json:"num_clients"`
				} `json:"channels"`
			}
			_ = json.NewDecoder(resp.Body).Decode(&out)
			resp.Body.Close()
			if out.Channels[ch].N >= n {
				return
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("no %d subscribers on %s", n, ch)
}

func TestTerminalRefusalExits(t *testing.T) {
	t.Parallel()
	// Without --dev anonymous connections are refused: sub must stop with a
	// non-zero exit rather than retry.
	cfg := filepath.Join(t.TempDir(), "herald.yaml")
	os.WriteFile(cfg, []byte("token_secret: s3cret\napi_keys: [k]\nnamespaces:\n  - name: \"\"\n    allow_subscribe: true\n"), 0o600)
	_, addr := serve(t, nil, "--config", cfg)
	url := "ws://" + addr + "/ws"
	for _, c := range []struct {
		name string
		args []string
	}{
		{"anonymous", []string{"sub", "--url", url, "news"}},
		{"bad token", []string{"sub", "--url", url, "--token", "x.y.z", "news"}},
	} {
		out, err := run(t, nil, c.args...)
		ee, ok := err.(*exec.ExitError)
		if !ok || ee.ExitCode() != 3 {
			t.Errorf("%s: exit %v, want code 3; output %s", c.name, err, out)
		}
	}
	tok, err := run(t, nil, "token", "--secret", "s3cret", "--user", "alice", "--ttl", "1m")
	if err != nil {
		t.Fatal(err)
	}
	sub := start(t, nil, "sub", "--url", url, "--token", strings.TrimSpace(tok), "news")
	waitSubscribed(t, "http://"+addr, "news", 1)
	if out, err := run(t, nil, "pub", "--api", "http://"+addr, "--key", "k", "news", `{"a":1}`); err != nil {
		t.Fatalf("api pub: %v %s", err, out)
	}
	if l := sub.line(t); !strings.Contains(l, `"data":{"a":1}`) {
		t.Fatalf("authenticated sub printed %q", l)
	}
	// Alice may subscribe but not publish (allow_publish is off).
	out, err := run(t, nil, "pub", "--url", url, "--token", strings.TrimSpace(tok), "news", `1`)
	if err == nil || !strings.Contains(out, "103") {
		t.Fatalf("publish to a read-only namespace: %v %s", err, out)
	}
}

func TestCheckConfig(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	good := filepath.Join(dir, "good.yaml")
	os.WriteFile(good, []byte("listen: \":9000\"\nping_interval: 15s\nnamespaces:\n  - name: chat\n    history_size: 50\n    history_ttl: 10m\n    slow_policy: drop\n"), 0o600)
	out, err := run(t, []string{"HERALD_PONG_TIMEOUT=3s"}, "check-config", good)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"listen: :9000", "ping_interval: 15s", "pong_timeout: 3s", "slow_policy: drop", "drain_timeout: 10s", "history_size: 50"} {
		if !strings.Contains(out, want) {
			t.Errorf("effective config lacks %q:\n%s", want, out)
		}
	}
	jsonFile := filepath.Join(dir, "c.json")
	os.WriteFile(jsonFile, []byte(`{"listen":":9001","namespaces":[{"name":"a","presence":true}]}`), 0o600)
	if out, err := run(t, nil, "check-config", jsonFile); err != nil || !strings.Contains(out, "listen: :9001") {
		t.Fatalf("json config: %v %s", err, out)
	}
	for name, body := range map[string]string{
		"unknown key":  "lisen: x\n",
		"bad policy":   "namespaces:\n  - name: a\n    slow_policy: maybe\n",
		"duplicate ns": "namespaces:\n  - name: a\n  - name: a\n",
		"bad duration": "ping_interval: soon\n",
	} {
		f := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".yaml")
		os.WriteFile(f, []byte(body), 0o600)
		if out, err := run(t, nil, "check-config", f); err == nil {
			t.Errorf("%s accepted:\n%s", name, out)
		}
	}
}

func TestEchoEndpoint(t *testing.T) {
	t.Parallel()
	_, addr := serve(t, nil, "--dev", "--echo")
	nc, _, _, err := ws.Dial(context.Background(), "ws://"+addr+"/ws/echo")
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if err := wsutil.WriteClientBinary(nc, []byte{1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	b, op, err := wsutil.ReadServerData(nc)
	if err != nil || op != ws.OpBinary || string(b) != "\x01\x02\x03" {
		t.Fatalf("echo: %v %v %q", err, op, b)
	}
	_, addr2 := serve(t, nil, "--dev")
	resp, err := http.Get("http://" + addr2 + "/ws/echo")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode == http.StatusSwitchingProtocols || strings.Contains(string(body), "Upgrade") {
		t.Fatalf("echo endpoint served without --echo: %d", resp.StatusCode)
	}
}
