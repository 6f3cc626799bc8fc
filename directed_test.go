package herald_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/protocol"
)

// connectRaw opens a raw connection with a token for user and returns it
// and its client id.
func connectRaw(t *testing.T, ts *testServer, user string) (*rawConn, string) {
	t.Helper()
	r := dialRaw(t, ts)
	res := r.connect(token(t, user, time.Hour))
	return r, res.Client
}

// nextPush reads messages until a push for which match is true.
func (r *rawConn) nextPush(match func(*protocol.ServerMessage) bool) *protocol.ServerMessage {
	r.t.Helper()
	for i := 0; i < 100; i++ {
		m := r.next()
		if m.ID == 0 && match(m) {
			return m
		}
	}
	r.t.Fatal("no such push in 100 messages")
	return nil
}

func privateConfig() herald.Config {
	cfg := devConfig()
	// "private:" channels: nobody may subscribe by themselves.
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "private", HistorySize: 100, HistoryTTL: time.Hour})
	return cfg
}

// TestAPISubscribeUnsubscribe: the API subscribes a user's connection to a
// channel it may not subscribe to by itself: a subscribe push with the
// position comes first, then live publications; the API unsubscribes it:
// an unsubscribe push with the code, and no more publications.
func TestAPISubscribeUnsubscribe(t *testing.T) {
	t.Parallel()
	ts := startServer(t, privateConfig())
	r, _ := connectRaw(t, ts, "ann")
	ts.publish(t, "private:a", seqData(1))

	var res herald.ActResult
	if code := ts.api(t, "subscribe", map[string]any{"user": "ann", "channel": "private:a"}, &res); code != 200 || res.Connections != 1 {
		t.Fatalf("subscribe: %d %+v", code, res)
	}
	m := r.next()
	if m.Subscribe == nil || m.Subscribe.Channel != "private:a" || !m.Subscribe.Recoverable || m.Subscribe.Offset != 1 {
		t.Fatalf("first message after the API subscribe: %+v", m)
	}
	ts.publish(t, "private:a", seqData(2))
	if m := r.next(); m.Pub == nil || m.Pub.Offset != 2 || m.Pub.Channel != "private:a" {
		t.Fatalf("publication after the subscribe push: %+v", m)
	}

	if code := ts.api(t, "unsubscribe", map[string]any{"user": "ann", "channel": "private:a", "reason": "bye"}, &res); code != 200 || res.Connections != 1 {
		t.Fatalf("unsubscribe: %d %+v", code, res)
	}
	m = r.next()
	if u := m.Unsubscribe; u == nil || u.Channel != "private:a" || u.Code != protocol.UnsubscribeServer || u.Reason != "bye" {
		t.Fatalf("unsubscribe push: %+v", m)
	}
	// Nothing more of the channel: a message sent after a publication
	// arrives first.
	ts.publish(t, "private:a", seqData(3))
	ts.api(t, "send", map[string]any{"user": "ann", "data": map[string]string{"k": "v"}}, &res)
	if m := r.next(); m.Message == nil || string(m.Message.Data) != `{"k":"v"}` {
		t.Fatalf("after unsubscribing, got %+v, want the message push", m)
	}
	// A second unsubscribe reaches nobody.
	var e struct {
		Error *protocol.Error `json:"error"`
	}
	if code := ts.api(t, "unsubscribe", map[string]any{"user": "ann", "channel": "private:a"}, &e); code != http.StatusNotFound || e.Error.Code != protocol.ErrNotFound {
		t.Fatalf("unsubscribe of a channel nobody has: %d %+v", code, e)
	}
}

// TestAPISubscribeSurvivesReconnect: a channel the API subscribed a user to
// comes back when the client reconnects and sends its position in
// connect.subs, recovering what it missed, though the namespace does not
// let clients subscribe by themselves.
func TestAPISubscribeSurvivesReconnect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, privateConfig())
	r, _ := connectRaw(t, ts, "bob")
	var res herald.ActResult
	ts.api(t, "subscribe", map[string]any{"user": "bob", "channel": "private:b"}, &res)
	sub := r.next().Subscribe
	if sub == nil {
		t.Fatal("no subscribe push")
	}
	r.nc.Close()
	ts.publish(t, "private:b", seqData(1))
	ts.publish(t, "private:b", seqData(2))

	r2 := dialRaw(t, ts)
	b, _ := json.Marshal(map[string]any{"id": 1, "connect": map[string]any{"token": token(t, "bob", time.Hour),
		"subs": map[string]any{"private:b": map[string]any{"recover": true, "epoch": sub.Epoch, "offset": sub.Offset}}}})
	r2.send(string(b))
	m := r2.next()
	if m.Connect == nil {
		t.Fatalf("connect: %+v", m)
	}
	got := m.Connect.Subs["private:b"]
	if got == nil || !got.Recovered || len(got.Publications) != 2 {
		t.Fatalf("resubscribed with %+v, want recovered with 2 publications", got)
	}

	// Another user may not bring the channel back the same way.
	r3 := dialRaw(t, ts)
	b, _ = json.Marshal(map[string]any{"id": 1, "connect": map[string]any{"token": token(t, "eve", time.Hour),
		"subs": map[string]any{"private:b": map[string]any{"recover": true, "epoch": sub.Epoch, "offset": sub.Offset}}}})
	r3.send(string(b))
	if m := r3.next(); m.Error == nil || m.Error.Code != protocol.ErrPermissionDenied {
		t.Fatalf("another user's connect with the channel: %+v", m)
	}
}

// TestAPISendRefreshDisconnect: send reaches every connection of a user or
// one client; refresh with expired closes with 3502; disconnect by client;
// unknown users and clients get 404 with error 114.
func TestAPISendRefreshDisconnect(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	r1, c1 := connectRaw(t, ts, "cid")
	r2, _ := connectRaw(t, ts, "cid")
	var res herald.ActResult
	if code := ts.api(t, "send", map[string]any{"user": "cid", "b64data": "AAEC"}, &res); code != 200 || res.Connections != 2 {
		t.Fatalf("send to user: %d %+v", code, res)
	}
	for _, r := range []*rawConn{r1, r2} {
		if m := r.next(); m.Message == nil || string(m.Message.Data) != "\x00\x01\x02" {
			t.Fatalf("message push: %+v", m)
		}
	}
	if code := ts.api(t, "send", map[string]any{"client": c1, "data": "hi"}, &res); code != 200 || res.Connections != 1 {
		t.Fatalf("send to client: %d %+v", code, res)
	}
	if m := r1.next(); m.Message == nil || string(m.Message.Data) != `"hi"` {
		t.Fatalf("message push to the client: %+v", m)
	}

	// refresh with expired closes the connection as expired (3502).
	if code := ts.api(t, "refresh", map[string]any{"client": c1, "expired": true}, &res); code != 200 {
		t.Fatalf("refresh: %d", code)
	}
	if code, push := r1.closeCode(); code != protocol.DisconnectTokenExpired || push == nil {
		t.Fatalf("refresh expired: close %d push %+v", code, push)
	}
	if code := ts.api(t, "disconnect", map[string]any{"user": "cid", "code": 4001}, &res); code != 200 || res.Connections != 1 {
		t.Fatalf("disconnect: %d %+v", code, res)
	}
	if code, _ := r2.closeCode(); code != 4001 {
		t.Fatalf("disconnect: close %d", code)
	}

	for _, body := range []map[string]any{
		{"user": "nobody", "data": 1},
		{"client": "no-such-client", "data": 1},
	} {
		var e struct {
			Error *protocol.Error `json:"error"`
		}
		if code := ts.api(t, "send", body, &e); code != http.StatusNotFound || e.Error == nil || e.Error.Code != protocol.ErrNotFound {
			t.Fatalf("send %v: %d %+v", body, code, e.Error)
		}
	}
	for _, body := range []map[string]any{
		{"data": 1},                             // no target
		{"user": "a", "client": "b", "data": 1}, // two targets
		{"user": "a"},                           // no data
		{"user": "a", "b64data": "%%"},          // bad base64
	} {
		var e struct {
			Error *protocol.Error `json:"error"`
		}
		if code := ts.api(t, "send", body, &e); code != http.StatusBadRequest {
			t.Fatalf("send %v: %d %+v", body, code, e.Error)
		}
	}
}

// TestAPIHistoryRemoveAndBatch: history_remove starts a new epoch (a
// client recovering from the old one is told it was not recovered); batch
// answers each command in order, errors included.
func TestAPIHistoryRemoveAndBatch(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	epoch, _ := ts.publish(t, "hr:1", seqData(1))
	var out struct {
		Replies []struct {
			Result json.RawMessage `json:"result"`
			Error  *protocol.Error `json:"error"`
		} `json:"replies"`
	}
	body := map[string]any{"commands": []map[string]any{
		{"method": "history_remove", "params": map[string]any{"channel": "hr:1"}},
		{"method": "publish", "params": map[string]any{"channel": "hr:1", "data": map[string]int{"n": 2}}},
		{"method": "nope"},
		{"method": "publish", "params": map[string]any{"channel": "bad name"}},
		{"method": "history", "params": map[string]any{"channel": "hr:1", "limit": 10}},
	}}
	if code := ts.api(t, "batch", body, &out); code != 200 || len(out.Replies) != 5 {
		t.Fatalf("batch: %d %+v", code, out)
	}
	if out.Replies[0].Error != nil || out.Replies[1].Error != nil || out.Replies[4].Error != nil {
		t.Fatalf("batch replies: %+v", out.Replies)
	}
	if out.Replies[2].Error == nil || out.Replies[2].Error.Code != protocol.ErrMethodNotFound ||
		out.Replies[3].Error == nil || out.Replies[3].Error.Code != protocol.ErrInvalidChannel {
		t.Fatalf("batch errors: %+v %+v", out.Replies[2].Error, out.Replies[3].Error)
	}
	var h protocol.HistoryResult
	if err := json.Unmarshal(out.Replies[4].Result, &h); err != nil {
		t.Fatal(err)
	}
	if h.Epoch == epoch || len(h.Publications) != 1 || h.Publications[0].Offset != 1 {
		t.Fatalf("history after history_remove: epoch %s (was %s), %d publications", h.Epoch, epoch, len(h.Publications))
	}
	r := dialRaw(t, ts)
	r.connect("")
	r.send(`{"id":2,"subscribe":{"channel":"hr:1","recover":true,"epoch":"` + epoch + `","offset":1}}`)
	if m := r.next(); m.Subscribe == nil || !m.Subscribe.WasRecovering || m.Subscribe.Recovered {
		t.Fatalf("recovering from the removed epoch: %+v", m)
	}
	var e struct {
		Error *protocol.Error `json:"error"`
	}
	if code := ts.api(t, "batch", map[string]any{"commands": []map[string]any{}}, &e); code != http.StatusBadRequest {
		t.Fatalf("empty batch: %d", code)
	}
}

// TestPersonalChannel: with personal set, every connection of a user is
// subscribed at connect to "NS:#USER", and a publication there reaches it.
func TestPersonalChannel(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "me", Personal: true, HistorySize: 10, HistoryTTL: time.Minute})
	ts := startServer(t, cfg)
	r := dialRaw(t, ts)
	res := r.connect(token(t, "dana", time.Hour))
	if s := res.Subs["me:#dana"]; s == nil || !s.Recoverable {
		t.Fatalf("connect result subs: %+v", res.Subs)
	}
	ts.publish(t, "me:#dana", seqData(1))
	if m := r.next(); m.Pub == nil || m.Pub.Channel != "me:#dana" {
		t.Fatalf("personal publication: %+v", m)
	}
	anon := dialRaw(t, ts)
	if res := anon.connect(""); len(res.Subs) != 0 {
		t.Fatalf("anonymous connection subscribed to %+v", res.Subs)
	}
}
