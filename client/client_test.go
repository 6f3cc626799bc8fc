package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const secret = "client-test-secret"

func server(t *testing.T, mutate func(*herald.Config)) string {
	t.Helper()
	cfg := herald.Config{
		TokenSecret: secret, APIKeys: []string{"k"},
		Namespaces: []herald.Namespace{{HistorySize: 100, AllowSubscribe: true, AllowPublish: true}},
	}
	if mutate != nil {
		mutate(&cfg)
	}
	srv, err := herald.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = srv.Serve(ln); close(done) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})
	return ln.Addr().String()
}

func mint(t *testing.T, user string, ttl time.Duration) string {
	t.Helper()
	tok, err := auth.MintHS256(secret, auth.MintOptions{User: user, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// apiCall posts body to the server API method and fails the test unless it
// answers 200.
func apiCall(t *testing.T, addr, method, body string) {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://"+addr+"/api/"+method, strings.NewReader(body))
	req.Header.Set("Authorization", "apikey k")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("%s: status %d", method, resp.StatusCode)
	}
}

func apiDisconnect(t *testing.T, addr, user string, code int) {
	t.Helper()
	apiCall(t, addr, "disconnect", `{"user":"`+user+`","code":`+itoa(code)+`}`)
}

func apiPublish(t *testing.T, addr, ch, data string) {
	t.Helper()
	apiCall(t, addr, "publish", `{"channel":"`+ch+`","data":`+data+`}`)
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

func TestTerminalCodeStopsReconnecting(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	var dials atomic.Int32
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: mint(t, "eve", 0), ReconnectBase: time.Millisecond, ReconnectMax: 5 * time.Millisecond,
		OnState: func(s client.State) {
			if s == client.StateConnecting {
				dials.Add(1)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	before := dials.Load()
	apiDisconnect(t, addr, "eve", 4500)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client still running after a terminal code")
	}
	var te *client.TerminalError
	if !errors.As(c.Err(), &te) || te.Code != 4500 {
		t.Fatalf("Err = %v, want terminal 4500", c.Err())
	}
	if n := dials.Load() - before; n != 0 {
		t.Fatalf("%d reconnect attempts after a terminal code", n)
	}
	if _, err := c.Publish(context.Background(), "x", []byte("1"), nil); !errors.Is(err, client.ErrClosed) {
		t.Fatalf("publish on a closed client: %v", err)
	}
}

func TestRefusedAtDial(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	_, err := client.Dial(context.Background(), "ws://"+addr+"/ws", nil) // anonymous, not allowed
	var te *client.TerminalError
	if !errors.As(err, &te) || te.Code != protocol.DisconnectUnauthorized {
		t.Fatalf("anonymous dial: %v", err)
	}
	_, err = client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{Token: "garbage"})
	if !errors.As(err, &te) || te.Code != protocol.DisconnectInvalidToken {
		t.Fatalf("bad token dial: %v", err)
	}
}

func TestReconnectAndRecover(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: mint(t, "bob", 0), ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sub, err := c.Subscribe(context.Background(), "news", client.SubscribeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A publish in flight when the connection drops fails with
	// ErrDisconnected; retrying with the same idempotency key is safe.
	pub := func(s string) {
		for {
			_, err := c.Publish(context.Background(), "news", []byte(s), &client.PublishOptions{IdempotencyKey: s})
			if errors.Is(err, client.ErrDisconnected) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	pub(`1`)
	if p := <-sub.C; string(p.Data) != "1" || p.Offset != 1 {
		t.Fatalf("first: %+v", p)
	}
	apiDisconnect(t, addr, "bob", 4000)
	pub(`2`) // waits for the reconnection, then publishes
	pub(`3`)
	for _, want := range []string{"2", "3"} {
		select {
		case p := <-sub.C:
			if string(p.Data) != want {
				t.Fatalf("got %s, want %s", p.Data, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("missing %s after reconnect", want)
		}
	}
	if pos, ok := sub.Position(); !ok || pos.Offset != 3 {
		t.Fatalf("position %+v", pos)
	}
	if err := sub.Unsubscribe(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.C; ok {
		t.Fatal("C not closed after Unsubscribe")
	}
}

func TestTokenRefresh(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	var refreshed atomic.Int32
	var closing atomic.Bool
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: mint(t, "rita", 2*time.Second),
		GetToken: func(context.Context) (string, error) {
			refreshed.Add(1)
			return mint(t, "rita", 2*time.Second), nil
		},
		OnDisconnect: func(e client.DisconnectEvent) {
			if !closing.Load() {
				t.Errorf("disconnected: %+v", e)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// The connection must outlive several token lifetimes.
	deadline := time.Now().Add(10 * time.Second)
	for refreshed.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("only %d refreshes", refreshed.Load())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatalf("connection unusable after refreshes: %v", err)
	}
	closing.Store(true)
}

func TestExpiredTokenWithoutRefreshIsTerminal(t *testing.T) {
	t.Parallel()
	addr := server(t, func(c *herald.Config) { c.TokenExpiryGrace = time.Second })
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{Token: mint(t, "sam", 2*time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("connection outlived its token")
	}
	var te *client.TerminalError
	if !errors.As(c.Err(), &te) || te.Code != protocol.DisconnectTokenExpired {
		t.Fatalf("Err = %v", c.Err())
	}
}

func TestSubscriptionTokenAcrossReconnects(t *testing.T) {
	t.Parallel()
	addr := server(t, func(c *herald.Config) {
		c.Namespaces = append(c.Namespaces, herald.Namespace{Name: "priv", HistorySize: 10})
	})
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: mint(t, "pat", 0), ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var issued atomic.Int32
	subscribed := make(chan client.SubscribedEvent, 4)
	_, err = c.Subscribe(context.Background(), "priv:room", client.SubscribeOptions{
		GetToken: func(_ context.Context, ch, clientID string) (string, error) {
			issued.Add(1)
			return auth.MintHS256(secret, auth.MintOptions{User: "pat", Client: clientID, Channel: ch})
		},
		OnSubscribed:   func(e client.SubscribedEvent) { subscribed <- e },
		OnPublication:  func(client.Publication) {},
		OnUnsubscribed: func(err error) { t.Errorf("unsubscribed: %v", err) },
	})
	if err != nil {
		t.Fatal(err)
	}
	<-subscribed
	apiDisconnect(t, addr, "pat", 4000)
	select {
	case e := <-subscribed:
		if !e.WasRecovering {
			t.Fatalf("resubscribe did not recover: %+v", e)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("not resubscribed after a reconnect")
	}
	if issued.Load() != 2 {
		t.Fatalf("%d subscription tokens issued, want one per connection", issued.Load())
	}
}

func TestMissedRefreshReconnectsWithGetToken(t *testing.T) {
	t.Parallel()
	addr := server(t, func(c *herald.Config) { c.TokenExpiryGrace = time.Second })
	var calls atomic.Int32
	connects := make(chan struct{}, 4)
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: mint(t, "zed", 2*time.Second),
		GetToken: func(context.Context) (string, error) {
			// The first refresh attempt fails (the app is "asleep"), so the
			// token lapses and the server closes with 3502.
			if calls.Add(1) == 1 {
				return "", errors.New("offline")
			}
			return mint(t, "zed", time.Hour), nil
		},
		ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
		OnState: func(s client.State) {
			if s == client.StateConnected {
				connects <- struct{}{}
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	<-connects // the first connection
	select {
	case <-connects:
	case <-time.After(15 * time.Second):
		t.Fatalf("no reconnection after the token lapsed (Err %v)", c.Err())
	}
	if calls.Load() < 2 {
		t.Fatalf("GetToken called %d times", calls.Load())
	}
	if err := c.Ping(context.Background()); err != nil {
		t.Fatal(err)
	}
}
