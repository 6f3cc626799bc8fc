package herald_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	id    string
	data  string
	retry string
}

// sseStream reads events like a browser's EventSource: it remembers the
// last event id.
type sseStream struct {
	resp   *http.Response
	events chan sseEvent
}

func openSSE(t *testing.T, ts *testServer, query, lastID string) (*sseStream, int) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+ts.addr+"/sse?"+query, nil)
	req.Header.Set("Accept", "text/event-stream")
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		resp.Body.Close()
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	st := &sseStream{resp: resp, events: make(chan sseEvent, 10000)}
	go func() {
		defer close(st.events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.data != "" {
					st.events <- ev
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, ":"):
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "retry: "):
				ev.retry = line[7:]
			case strings.HasPrefix(line, "data: "):
				ev.data = line[6:]
			}
		}
	}()
	t.Cleanup(func() {
		resp.Body.Close()
		for range st.events {
		}
	})
	return st, 200
}

// next returns the next message and the event id the browser holds after
// it (the last id seen so far, passed in and out as *last).
func (st *sseStream) next(t *testing.T, last *string) (*protocol.ServerMessage, bool) {
	t.Helper()
	select {
	case ev, ok := <-st.events:
		if !ok {
			return nil, false
		}
		if ev.id != "" {
			*last = ev.id
		}
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage([]byte(ev.data), &m); err != nil {
			t.Fatalf("event %q: %v", ev.data, err)
		}
		return &m, true
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return nil, false
}

// TestSSERecovery: a bare EventSource-like reader of two channels gets the
// connect reply and live publications; the server ends its stream; it
// reconnects with the last event id it saw and gets exactly what was
// published meanwhile, in order, then live publications again.
func TestSSERecovery(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	ts.publish(t, "sse:a", seqData(0)) // before: not delivered
	q := "channel=sse:a&channel=sse:b&token=" + url.QueryEscape(token(t, "eve", 0))
	st, code := openSSE(t, ts, q, "")
	if code != 200 {
		t.Fatalf("GET /sse: HTTP %d", code)
	}
	last := ""
	m, _ := st.next(t, &last)
	if m.Connect == nil || len(m.Connect.Subs) != 2 || last == "" {
		t.Fatalf("first event %+v (id %q), want the connect reply with an id", m, last)
	}
	got := map[string][]int{}
	take := func(st *sseStream, n int) {
		for len(got["sse:a"])+len(got["sse:b"]) < n {
			m, ok := st.next(t, &last)
			if !ok {
				t.Fatalf("stream ended after %v", got)
			}
			if m.Pub != nil {
				got[m.Pub.Channel] = append(got[m.Pub.Channel], seqOf(t, m.Pub.Data))
			}
		}
	}
	for i := 1; i <= 5; i++ {
		ts.publish(t, "sse:a", seqData(i))
		ts.publish(t, "sse:b", seqData(i))
	}
	take(st, 10)
	// The server ends the stream (as a deploy would): the disconnect
	// event, then the end of the response.
	var res map[string]any
	if code := ts.api(t, "disconnect", map[string]any{"user": "eve", "code": 3007, "reason": "test"}, &res); code != 200 {
		t.Fatalf("disconnect: HTTP %d", code)
	}
	for {
		m, ok := st.next(t, &last)
		if !ok {
			break
		}
		if m.Disconnect != nil && m.Disconnect.Code != 3007 {
			t.Fatalf("disconnect %+v", m.Disconnect)
		}
	}
	for i := 6; i <= 10; i++ {
		ts.publish(t, "sse:a", seqData(i))
		if i%2 == 0 {
			ts.publish(t, "sse:b", seqData(i/2+3)) // 6, 7, 8
		}
	}
	st2, code := openSSE(t, ts, q, last)
	if code != 200 {
		t.Fatalf("reconnect: HTTP %d", code)
	}
	m, _ = st2.next(t, &last)
	if m.Connect == nil {
		t.Fatalf("first event after the reconnect %+v", m)
	}
	for ch, r := range m.Connect.Subs {
		if !r.WasRecovering || !r.Recovered || len(r.Publications) != 0 {
			t.Fatalf("%s: %+v: want recovered, with the publications as events", ch, r)
		}
	}
	take(st2, 18)
	ts.publish(t, "sse:a", seqData(11))
	take(st2, 19)
	for ch, n := range map[string]int{"sse:a": 11, "sse:b": 8} {
		seqs := got[ch]
		if len(seqs) != n {
			t.Fatalf("%s: %v, want 1..%d", ch, seqs, n)
		}
		for i, s := range seqs {
			if s != i+1 {
				t.Fatalf("%s: %v: gap or duplicate", ch, seqs)
			}
		}
	}
}

// TestSSEBadRequests: what a bad SSE request gets.
func TestSSEBadRequests(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	for _, tc := range []struct{ name, query, last string }{
		{"no channel", "", ""},
		{"twice the same", "channel=a&channel=a", ""},
		{"id for another channel count", "channel=a&channel=b", "e:1"},
		{"bad offset", "channel=a", "e:!"},
		{"no offset", "channel=a", "e"},
	} {
		if _, code := openSSE(t, ts, tc.query, tc.last); code != 400 {
			t.Errorf("%s: HTTP %d, want 400", tc.name, code)
		}
	}
	// A refused connect (anonymous, where anonymous connections are not
	// allowed) ends the stream after the error.
	cfg := devConfig()
	cfg.AllowAnonymous = false
	ts2 := startServer(t, cfg)
	st, code := openSSE(t, ts2, "channel=a", "")
	if code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	last := ""
	for {
		m, ok := st.next(t, &last)
		if !ok {
			break
		}
		if m.Disconnect == nil || m.Disconnect.Reconnect {
			t.Fatalf("got %+v, want a final disconnect", m)
		}
	}
}

// TestSameOffsetsOnEveryTransport: one channel's publications reach a
// WebSocket, an HTTP-streaming and an SSE subscriber with the same
// offsets.
func TestSameOffsetsOnEveryTransport(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	var mu sync.Mutex
	offsets := map[string][]uint64{}
	for _, tr := range transports {
		c := dial(t, ts, &client.Options{Transport: tr})
		if _, err := c.Subscribe(ctxT(t), "same:1", client.SubscribeOptions{OnPublication: func(p client.Publication) {
			mu.Lock()
			offsets[tr] = append(offsets[tr], p.Offset)
			mu.Unlock()
		}}); err != nil {
			t.Fatal(err)
		}
	}
	st, code := openSSE(t, ts, "channel=same:1", "")
	if code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	last := ""
	if m, _ := st.next(t, &last); m.Connect == nil {
		t.Fatalf("first event %+v", m)
	}
	const n = 20
	for i := 1; i <= n; i++ {
		ts.publish(t, "same:1", seqData(i))
	}
	var sse []uint64
	for len(sse) < n {
		m, ok := st.next(t, &last)
		if !ok {
			t.Fatal("SSE stream ended")
		}
		if m.Pub != nil {
			sse = append(sse, m.Pub.Offset)
		}
	}
	eventually(t, 10*time.Second, "every transport's publications", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(offsets[client.TransportWebSocket]) == n && len(offsets[client.TransportHTTPStream]) == n
	})
	mu.Lock()
	defer mu.Unlock()
	offsets["sse"] = sse
	want := fmt.Sprint(offsets[client.TransportWebSocket])
	for tr, o := range offsets {
		if fmt.Sprint(o) != want {
			t.Errorf("%s got offsets %v, WebSocket %s", tr, o, want)
		}
	}
	var _ = json.Marshal
}

// TestSSEDrain: Shutdown ends an SSE stream with the shutdown disconnect,
// whose retry field carries the reconnect-after hint, so that browsers
// spread their reconnects over the drain window.
func TestSSEDrain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	st, code := openSSE(t, ts, "channel=drain:1", "")
	if code != 200 {
		t.Fatalf("HTTP %d", code)
	}
	if ev := <-st.events; !strings.Contains(ev.data, `"connect"`) {
		t.Fatalf("first event %+v", ev)
	}
	ts.stop(t)
	for ev := range st.events {
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage([]byte(ev.data), &m); err != nil {
			t.Fatal(err)
		}
		if m.Disconnect == nil {
			continue
		}
		want := fmt.Sprint(m.Disconnect.ReconnectAfter)
		if m.Disconnect.ReconnectAfter == 0 {
			want = "" // a hint under a millisecond: no retry field
		}
		if m.Disconnect.Code != protocol.DisconnectShutdown || ev.retry != want {
			t.Fatalf("disconnect %+v with retry %q: want 3000 and the hint as retry", m.Disconnect, ev.retry)
		}
		return
	}
	t.Fatal("the stream ended without a disconnect")
}

// TestSSETokenCookie: where anonymous connections are refused, the token
// may come in the herald_token cookie instead of the URL.
func TestSSETokenCookie(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.AllowAnonymous = false
	ts := startServer(t, cfg)
	req, _ := http.NewRequest("GET", "http://"+ts.addr+"/sse?channel=cookie:1", nil)
	req.AddCookie(&http.Cookie{Name: "herald_token", Value: token(t, "carl", 0)})
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if l, ok := strings.CutPrefix(sc.Text(), "data: "); ok {
			var m protocol.ServerMessage
			if err := protocol.JSON.DecodeServerMessage([]byte(l), &m); err != nil {
				t.Fatal(err)
			}
			if m.Connect == nil || m.Connect.Subs["cookie:1"] == nil {
				t.Fatalf("first message %s, want the connect reply with the channel", l)
			}
			return
		}
	}
	t.Fatal("the stream ended without a message")
}
