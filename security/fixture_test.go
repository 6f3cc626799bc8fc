package security_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	secret   = "security-suite-secret"
	apiKey   = "security-suite-key"
	audience = "herald-tests"
	issuer   = "https://auth.example.com"
)

// keys used by the suite, generated once.
var keys = func() (k struct {
	rsa   *rsa.PrivateKey
	ec    *ecdsa.PrivateKey
	ed    ed25519.PrivateKey
	rsaPM string
	ecPM  string
	edPM  string
}) {
	k.rsa, _ = rsa.GenerateKey(rand.Reader, 2048)
	k.ec, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, k.ed, _ = ed25519.GenerateKey(rand.Reader)
	pemOf := func(pub any) string {
		b, _ := x509.MarshalPKIXPublicKey(pub)
		return string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: b}))
	}
	k.rsaPM, k.ecPM, k.edPM = pemOf(&k.rsa.PublicKey), pemOf(&k.ec.PublicKey), pemOf(k.ed.Public())
	return k
}()

// baseConfig is a production-like config: no anonymous connections,
// tokens with audience and issuer, namespaces of each kind.
func baseConfig() herald.Config {
	return herald.Config{
		APIKeys: []string{apiKey},
		Token: auth.VerifierConfig{
			HMACSecret: secret, RSAPublicKey: keys.rsaPM, ECDSAPublicKey: keys.ecPM, Ed25519PublicKey: keys.edPM,
			Audience: audience, Issuer: issuer,
		},
		AllowedOrigins: []string{"https://app.example.com", "https://*.example.org"},
		Namespaces: []herald.Namespace{
			{Name: "news", AllowSubscribe: true, HistorySize: 1000, HistoryTTL: time.Hour},
			{Name: "ro", AllowSubscribe: true, HistorySize: 10, Presence: true},
			{Name: "user", UserLimited: true, AllowSubscribe: true, AllowPublish: true, HistorySize: 10, Presence: true},
			{Name: "priv", HistorySize: 10, Presence: true},
			{Name: "chat", AllowSubscribe: true, AllowPublish: true, HistorySize: 10, Presence: true},
		},
	}
}

func token(t testing.TB, user string, mut func(*auth.MintOptions)) string {
	t.Helper()
	o := auth.MintOptions{User: user, TTL: time.Hour, Audience: audience, Issuer: issuer}
	if mut != nil {
		mut(&o)
	}
	tok, err := auth.MintHS256(secret, o)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// fixture is a server with a well-behaved subscriber that receives a
// steady stream of publications for the whole test.
type fixture struct {
	t    *testing.T
	srv  *herald.Server
	addr string

	mu       sync.Mutex
	received []int
	sent     int
	stop     chan struct{}
	wg       sync.WaitGroup // the server
	pubWG    sync.WaitGroup // the publisher
}

func newFixture(t *testing.T, cfg herald.Config) *fixture {
	t.Helper()
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, srv: srv, addr: ln.Addr().String(), stop: make(chan struct{})}
	f.wg.Add(1)
	go func() { defer f.wg.Done(); _ = srv.Serve(ln) }()

	c, err := client.Dial(context.Background(), f.wsURL(), &client.Options{Token: token(t, "bystander", nil)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Subscribe(context.Background(), "news:feed", client.SubscribeOptions{OnPublication: func(p client.Publication) {
		var v struct{ Seq int }
		_ = json.Unmarshal(p.Data, &v)
		f.mu.Lock()
		f.received = append(f.received, v.Seq)
		f.mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	f.pubWG.Add(1)
	go func() {
		defer f.pubWG.Done()
		for i := 1; ; i++ {
			select {
			case <-f.stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			if code := f.api("publish", map[string]any{"channel": "news:feed", "data": map[string]int{"seq": i}}, nil); code != 200 {
				t.Errorf("bystander publish: HTTP %d", code)
				return
			}
			f.mu.Lock()
			f.sent = i
			f.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		// Let the stream run long enough to overlap the test's traffic.
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			f.mu.Lock()
			n := f.sent
			f.mu.Unlock()
			if n >= 20 {
				break
			}
		}
		close(f.stop)
		f.pubWG.Wait()
		// The bystander must have every publication, in order.
		deadline := time.Now().Add(10 * time.Second)
		for {
			f.mu.Lock()
			done := len(f.received) >= f.sent
			f.mu.Unlock()
			if done || time.Now().After(deadline) {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		f.mu.Lock()
		for i, seq := range f.received {
			if seq != i+1 {
				t.Errorf("bystander: message %d has seq %d", i, seq)
				break
			}
		}
		if len(f.received) < f.sent || f.sent < 5 {
			t.Errorf("bystander got %d of %d publications", len(f.received), f.sent)
		}
		f.mu.Unlock()
		c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		f.wg.Wait()
	})
	return f
}

func (f *fixture) wsURL() string { return "ws://" + f.addr + "/ws" }

func (f *fixture) api(method string, body any, out any) int {
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest("POST", "http://"+f.addr+"/api/"+method, strings.NewReader(string(b)))
	req.Header.Set("Authorization", "apikey "+apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(raw, out)
	}
	return resp.StatusCode
}

// raw is a hand-driven client.
type raw struct {
	t  *testing.T
	nc net.Conn
}

func (f *fixture) dial(t *testing.T, header http.Header) (*raw, error) {
	d := ws.Dialer{Header: ws.HandshakeHeaderHTTP(header), Timeout: 5 * time.Second}
	nc, _, _, err := d.Dial(context.Background(), f.wsURL())
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { nc.Close() })
	return &raw{t: t, nc: nc}, nil
}

func (f *fixture) mustDial(t *testing.T) *raw {
	t.Helper()
	r, err := f.dial(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (r *raw) send(format string, args ...any) {
	r.t.Helper()
	if err := wsutil.WriteClientText(r.nc, []byte(fmt.Sprintf(format, args...))); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) writeRaw(b []byte) {
	r.t.Helper()
	if _, err := r.nc.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

// reply reads messages until the reply with id.
func (r *raw) reply(id uint64) *protocol.ServerMessage {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		data, err := wsutil.ReadServerText(r.nc)
		if err != nil {
			r.t.Fatalf("waiting for reply %d: %v", id, err)
		}
		var m protocol.ServerMessage
		if err := json.Unmarshal(data, &m); err != nil {
			r.t.Fatal(err)
		}
		if m.ID == id {
			return &m
		}
	}
}

// closed reads until the close frame and returns its code (0 if the
// socket ended without one).
func (r *raw) closed() ws.StatusCode {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		f, err := ws.ReadFrame(r.nc)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				r.t.Fatal("connection still open")
			}
			return 0
		}
		if f.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code
		}
	}
}

func (r *raw) connect(tok string) *protocol.ConnectResult {
	r.t.Helper()
	r.send(`{"id":1,"connect":{"token":%q}}`, tok)
	m := r.reply(1)
	if m.Connect == nil {
		r.t.Fatalf("connect refused: %+v", m.Error)
	}
	return m.Connect
}

// wantError sends a command and expects error code.
func (r *raw) wantError(id uint64, code uint32, format string, args ...any) {
	r.t.Helper()
	r.send(format, args...)
	m := r.reply(id)
	if m.Error == nil || m.Error.Code != code {
		r.t.Errorf("%s: reply %+v error %+v, want error %d", fmt.Sprintf(format, args...), m, m.Error, code)
	}
}
