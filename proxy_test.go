package herald_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/protocol"
)

// TestProxy runs every hook against an application backend.
func TestProxy(t *testing.T) {
	t.Parallel()
	var refreshes atomic.Int32
	block := make(chan struct{})
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		if r.Header.Get("X-App-Key") != "sekret" {
			http.Error(w, "no", http.StatusUnauthorized)
			return
		}
		answer := func(v any) { _ = json.NewEncoder(w).Encode(v) }
		switch r.URL.Path {
		case "/connect":
			headers, _ := req["headers"].(map[string]any)
			switch headers["Cookie"] {
			case "session=alice":
				answer(map[string]any{"result": map[string]any{"user": "alice", "info": map[string]string{"name": "Alice"},
					"expire_at": time.Now().Add(2 * time.Second).Unix()}})
			case "session=banned":
				answer(map[string]any{"disconnect": map[string]any{"code": 4501, "reason": "banned"}})
			case "session=slow":
				<-block
			default:
				answer(map[string]any{"error": map[string]any{"code": 101, "message": "log in first"}})
			}
		case "/subscribe":
			if req["channel"] == "secret:x" {
				answer(map[string]any{"error": map[string]any{"code": 103, "message": "not for you"}})
				return
			}
			answer(map[string]any{"result": map[string]any{}})
		case "/publish":
			answer(map[string]any{"result": map[string]any{"data": map[string]any{"rewritten": req["data"]}}})
		case "/rpc":
			answer(map[string]any{"result": map[string]any{"data": map[string]any{"method": req["method"], "user": req["user"]}}})
		case "/refresh":
			refreshes.Add(1)
			answer(map[string]any{"result": map[string]any{"expire_at": time.Now().Add(2 * time.Second).Unix()}})
		}
	}))
	t.Cleanup(backend.Close)
	t.Cleanup(func() { close(block) }) // runs first: unblocks the slow handler
	cfg := herald.Config{
		APIKeys: []string{testAPIKey},
		Proxy: herald.ProxyConfig{
			ConnectURL: backend.URL + "/connect", SubscribeURL: backend.URL + "/subscribe", PublishURL: backend.URL + "/publish",
			RPCURL: backend.URL + "/rpc", RefreshURL: backend.URL + "/refresh", Timeout: 500 * time.Millisecond,
			Headers: map[string]string{"X-App-Key": "sekret"},
		},
		TokenRefreshNotice: time.Second,
		Namespaces: []herald.Namespace{
			{Name: "secret", ProxySubscribe: true, HistorySize: 10},
			{Name: "chat", ProxySubscribe: true, ProxyPublish: true, HistorySize: 10},
		},
	}
	ts := startServer(t, cfg)
	withCookie := func(c string) *rawConn {
		r := dialRawHeader(t, ts, http.Header{"Cookie": {c}})
		r.send(`{"id":1,"connect":{}}`)
		return r
	}
	// Refused by the application: its error, connection kept.
	if m := withCookie("session=nobody").next(); m.Error == nil || m.Error.Code != protocol.ErrUnauthorized {
		t.Fatalf("anonymous connect: %+v", m)
	}
	// Disconnect order.
	if code, _ := withCookie("session=banned").closeCode(); code != 4501 {
		t.Fatalf("banned: close %d", code)
	}
	// Timeout: a temporary 115.
	if m := withCookie("session=slow").next(); m.Error == nil || m.Error.Code != protocol.ErrTimeout || !m.Error.Temporary {
		t.Fatalf("slow backend: %+v", m.Error)
	}
	alice := withCookie("session=alice")
	m := alice.next()
	if m.Connect == nil || !m.Connect.Expires {
		t.Fatalf("alice: %+v", m.Error)
	}
	alice.send(`{"id":2,"subscribe":{"channel":"secret:x"}}`)
	if m := alice.next(); m.Error == nil || m.Error.Code != protocol.ErrPermissionDenied {
		t.Fatalf("proxy-refused subscribe: %+v", m)
	}
	alice.send(`{"id":3,"subscribe":{"channel":"chat:1"}}`)
	if m := alice.next(); m.Subscribe == nil {
		t.Fatalf("proxy-allowed subscribe: %+v", m.Error)
	}
	alice.send(`{"id":4,"publish":{"channel":"chat:1","data":{"text":"hi"}}}`)
	var sawPub, sawReply bool
	for !sawPub || !sawReply {
		m := alice.next()
		if m.Pub != nil {
			if string(m.Pub.Data) != `{"rewritten":{"text":"hi"}}` || m.Pub.Info == nil || m.Pub.Info.User != "alice" {
				t.Fatalf("publication %s %+v", m.Pub.Data, m.Pub.Info)
			}
			sawPub = true
		}
		if m.ID == 4 {
			sawReply = true
		}
	}
	alice.send(`{"id":5,"rpc":{"method":"whoami","data":{}}}`)
	if m := alice.next(); m.RPC == nil || string(m.RPC.Data) != `{"method":"whoami","user":"alice"}` {
		t.Fatalf("rpc: %+v", m)
	}
	// The connection outlives its 2s expiry through the refresh proxy.
	deadline := time.Now().Add(8 * time.Second)
	for refreshes.Load() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("%d refreshes", refreshes.Load())
		}
		time.Sleep(20 * time.Millisecond)
	}
	alice.send(`{"id":6,"ping":{}}`)
	for {
		m := alice.next()
		if m.Disconnect != nil {
			t.Fatalf("disconnected despite refreshes: %+v", m.Disconnect)
		}
		if m.ID == 6 {
			break
		}
	}
}

// TestProxyEndHooks: the disconnect and unsubscribe hooks are told when a
// subscription and a connection end, with the code and reason.
func TestProxyEndHooks(t *testing.T) {
	t.Parallel()
	calls := make(chan map[string]any, 10)
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req map[string]any
		_ = json.NewDecoder(r.Body).Decode(&req)
		req["path"] = r.URL.Path
		calls <- req
		_ = json.NewEncoder(w).Encode(map[string]any{"result": map[string]any{}})
	}))
	t.Cleanup(backend.Close)
	cfg := devConfig()
	cfg.Proxy = herald.ProxyConfig{DisconnectURL: backend.URL + "/disconnect", UnsubscribeURL: backend.URL + "/unsubscribe"}
	ts := startServer(t, cfg)
	r, client := connectRaw(t, ts, "hana")
	r.send(`{"id":2,"subscribe":{"channel":"hooks:a"}}`)
	r.next()
	var res herald.ActResult
	ts.api(t, "unsubscribe", map[string]any{"user": "hana", "channel": "hooks:a", "reason": "moved"}, &res)
	call := func() map[string]any {
		select {
		case c := <-calls:
			return c
		case <-time.After(10 * time.Second):
			t.Fatal("no proxy call")
			return nil
		}
	}
	if c := call(); c["path"] != "/unsubscribe" || c["channel"] != "hooks:a" || c["client"] != client || c["user"] != "hana" ||
		c["code"] != float64(protocol.UnsubscribeServer) || c["reason"] != "moved" {
		t.Fatalf("unsubscribe hook: %v", c)
	}
	ts.api(t, "disconnect", map[string]any{"client": client, "code": 4000, "reason": "bye"}, &res)
	if c := call(); c["path"] != "/disconnect" || c["client"] != client || c["user"] != "hana" || c["code"] != float64(4000) {
		t.Fatalf("disconnect hook: %v", c)
	}
}
