package herald_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

const (
	testSecret = "test-secret"
	testAPIKey = "test-key"
)

type testServer struct {
	*herald.Server
	addr string
	done chan error
}

// devConfig is what `herald serve --dev` configures, with test keys.
func devConfig() herald.Config {
	return herald.Config{
		AllowAnonymous:             true,
		UnknownNamespacesAsDefault: true,
		APIKeys:                    []string{testAPIKey},
		TokenSecret:                testSecret,
		Namespaces: []herald.Namespace{{
			HistorySize: 1000, HistoryTTL: time.Hour, Presence: true, JoinLeave: true,
			AllowSubscribe: true, AllowAnonymousSubscribe: true, AllowPublish: true,
		}},
	}
}

func startServer(t testing.TB, cfg herald.Config) *testServer {
	t.Helper()
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, addr: ln.Addr().String(), done: make(chan error, 1)}
	go func() { ts.done <- srv.Serve(ln) }()
	t.Cleanup(func() { ts.stop(t) })
	return ts
}

func (ts *testServer) stop(t testing.TB) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := ts.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := <-ts.done; err != nil && err != herald.ErrServerClosed {
		t.Errorf("Serve: %v", err)
	}
	ts.done <- herald.ErrServerClosed // stop is idempotent
}

func (ts *testServer) wsURL() string { return "ws://" + ts.addr + "/ws" }

// api calls the server HTTP API and decodes the JSON answer into out.
func (ts *testServer) api(t testing.TB, method string, body any, out any) int {
	t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/api/"+method, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "apikey "+testAPIKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("api %s: decode %q: %v", method, raw, err)
		}
	}
	return resp.StatusCode
}

func (ts *testServer) publish(t testing.TB, ch string, data any) (string, uint64) {
	t.Helper()
	b, _ := json.Marshal(data)
	var res struct {
		Epoch  string `json:"epoch"`
		Offset uint64 `json:"offset"`
	}
	if code := ts.api(t, "publish", map[string]any{"channel": ch, "data": json.RawMessage(b)}, &res); code != 200 {
		t.Fatalf("publish: HTTP %d", code)
	}
	return res.Epoch, res.Offset
}

func token(t testing.TB, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.MintHS256(testSecret, auth.MintOptions{User: user, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func dial(t testing.TB, ts *testServer, opts *client.Options) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if opts == nil {
		opts = &client.Options{}
	}
	if opts.ReconnectBase == 0 {
		opts.ReconnectBase = 20 * time.Millisecond
		opts.ReconnectMax = 200 * time.Millisecond
	}
	c, err := client.Dial(ctx, ts.wsURL(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func eventually(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func seqData(i int) map[string]int { return map[string]int{"seq": i} }

func seqOf(t testing.TB, data []byte) int {
	var v struct {
		Seq *int `json:"seq"`
	}
	if err := json.Unmarshal(data, &v); err != nil || v.Seq == nil {
		t.Fatalf("bad payload %q", data)
	}
	return *v.Seq
}

// herald_ns returns a namespace open to anonymous reading (unless private),
// without history or presence, and read-only for clients.
func herald_ns(name string, private bool) herald.Namespace {
	return herald.Namespace{Name: name, AllowSubscribe: !private, AllowAnonymousSubscribe: !private}
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return ln
}

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }
