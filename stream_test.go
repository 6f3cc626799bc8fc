package herald_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// transports are the client transports the end-to-end tests run on.
var transports = []string{client.TransportWebSocket, client.TransportHTTPStream}

// TestStreamPubSub: an HTTP-streaming client connects, subscribes,
// publishes and receives like a WebSocket one, on both engines.
func TestStreamPubSub(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"epoll", "goroutine"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			cfg := devConfig()
			cfg.Engine = engine
			ts := startServer(t, cfg)
			var mu sync.Mutex
			var got []int
			c := dial(t, ts, &client.Options{Transport: client.TransportHTTPStream, Token: token(t, "ann", 0)})
			if _, err := c.Subscribe(ctxT(t), "room:1", client.SubscribeOptions{OnPublication: func(p client.Publication) {
				mu.Lock()
				got = append(got, seqOf(t, p.Data))
				mu.Unlock()
			}}); err != nil {
				t.Fatal(err)
			}
			for i := 1; i <= 50; i++ {
				if i%2 == 0 {
					ts.publish(t, "room:1", seqData(i))
				} else if _, err := c.Publish(ctxT(t), "room:1", []byte(fmt.Sprintf(`{"seq":%d}`, i)), nil); err != nil {
					t.Fatal(err)
				}
			}
			eventually(t, 10*time.Second, "50 publications", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) >= 50 })
			mu.Lock()
			defer mu.Unlock()
			for i, s := range got {
				if s != i+1 {
					t.Fatalf("publication %d has seq %d", i, s)
				}
			}
		})
	}
}

// rawStream is a stream opened by hand: its token and its lines.
type rawStream struct {
	resp  *http.Response
	token string
	lines chan string
}

func openRawStream(t *testing.T, ts *testServer) *rawStream {
	t.Helper()
	resp, err := http.Get("http://" + ts.addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 200 {
		t.Fatalf("GET /stream: HTTP %d", resp.StatusCode)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/x-ndjson" {
		t.Errorf("Content-Type %q", ct)
	}
	rs := &rawStream{resp: resp, token: resp.Header.Get("Herald-Session"), lines: make(chan string, 1000)}
	go func() {
		defer close(rs.lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			rs.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		resp.Body.Close()
		for range rs.lines {
		}
	})
	return rs
}

func (rs *rawStream) post(t *testing.T, addr string, seq int, body string) int {
	t.Helper()
	resp, err := http.Post(fmt.Sprintf("http://%s/stream/send?session=%s&seq=%d", addr, rs.token, seq), "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func (rs *rawStream) next(t *testing.T) *protocol.ServerMessage {
	t.Helper()
	select {
	case l, ok := <-rs.lines:
		if !ok {
			t.Fatal("stream ended")
		}
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage([]byte(l), &m); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		return &m
	case <-time.After(10 * time.Second):
		t.Fatal("no message within 10s")
	}
	return nil
}

// TestStreamCommandOrder: POSTs that arrive out of order run in the order
// of their numbers, a retried POST does not run twice, and every command
// is answered in order on the stream.
func TestStreamCommandOrder(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	rs := openRawStream(t, ts)
	if code := rs.post(t, ts.addr, 1, `{"id":1,"connect":{}}`); code != 204 {
		t.Fatalf("connect POST: HTTP %d", code)
	}
	if m := rs.next(t); m.ID != 1 || m.Connect == nil {
		t.Fatalf("first message %+v, want the connect reply", m)
	}
	// Batches 2..21, each with two publishes, posted from 21 down to 2.
	for seq := 21; seq >= 2; seq-- {
		a, b := 2*seq, 2*seq+1
		body := fmt.Sprintf(`{"id":%d,"publish":{"channel":"o","data":{"n":%d}}}`+"\n"+`{"id":%d,"publish":{"channel":"o","data":{"n":%d}}}`, a, a, b, b)
		if code := rs.post(t, ts.addr, seq, body); code != 204 {
			t.Fatalf("POST %d: HTTP %d", seq, code)
		}
	}
	// A retry of batch 5 is acknowledged and not run again.
	if code := rs.post(t, ts.addr, 5, `{"id":999,"ping":{}}`); code != 204 {
		t.Fatalf("retried POST: HTTP %d", code)
	}
	var last uint64
	var offsets []uint64
	for i := 0; i < 40; i++ {
		m := rs.next(t)
		if m.Ping != nil && m.ID == 0 {
			i--
			continue
		}
		if m.ID <= last || m.Publish == nil {
			t.Fatalf("reply %d: %+v after id %d", i, m, last)
		}
		last = m.ID
		offsets = append(offsets, m.Publish.Offset)
	}
	for i, o := range offsets {
		if o != uint64(i+1) {
			t.Fatalf("publish %d got offset %d: not run in order", i, o)
		}
	}
	m := metricsText(t, ts)
	for _, want := range []string{`herald_http_streams_total{transport="http-stream"} 1`, `herald_stream_posts_total{route="local"} 22`} {
		if !strings.Contains(m, want+"\n") {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func metricsText(t *testing.T, ts *testServer) string {
	t.Helper()
	resp, err := http.Get("http://" + ts.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestStreamSendErrors: what a bad POST gets.
func TestStreamSendErrors(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	rs := openRawStream(t, ts)
	node, _, _ := strings.Cut(rs.token, ".")
	for _, tc := range []struct {
		name, query, body string
		want              int
	}{
		{"no session", "seq=1", `{"id":1,"ping":{}}`, 400},
		{"no seq", "session=" + rs.token, `{"id":1,"ping":{}}`, 400},
		{"seq 0", "session=" + rs.token + "&seq=0", `{"id":1,"ping":{}}`, 400},
		{"empty body", "session=" + rs.token + "&seq=1", "\n\n", 400},
		{"too large", "session=" + rs.token + "&seq=1", strings.Repeat("x", 70<<10), 413},
		{"unknown stream", "session=" + node + ".nokey&seq=1", `{"id":1,"ping":{}}`, 404},
		{"beyond the window", "session=" + rs.token + "&seq=1000", `{"id":1,"ping":{}}`, 429},
	} {
		resp, err := http.Post("http://"+ts.addr+"/stream/send?"+tc.query, "text/plain", strings.NewReader(tc.body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("%s: HTTP %d, want %d", tc.name, resp.StatusCode, tc.want)
		}
	}
	// A command that is not one closes the stream with a bad-request
	// disconnect, as on WebSocket.
	if code := rs.post(t, ts.addr, 1, `{"id":`); code != 204 {
		t.Fatalf("POST: HTTP %d", code)
	}
	m := rs.next(t)
	if m.Disconnect == nil || m.Disconnect.Code != protocol.DisconnectBadRequest {
		t.Fatalf("got %+v, want a bad-request disconnect", m)
	}
	if _, ok := <-rs.lines; ok {
		t.Fatal("the stream goes on after its disconnect")
	}
}

// TestStreamDrain: Shutdown tells a stream client to reconnect later and
// ends the response.
func TestStreamDrain(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	rs := openRawStream(t, ts)
	if code := rs.post(t, ts.addr, 1, `{"id":1,"connect":{}}`); code != 204 {
		t.Fatalf("connect POST: HTTP %d", code)
	}
	rs.next(t)
	ts.stop(t)
	m := rs.next(t)
	if m.Disconnect == nil || m.Disconnect.Code != protocol.DisconnectShutdown || !m.Disconnect.Reconnect {
		t.Fatalf("got %+v, want a shutdown disconnect", m)
	}
	var _ = json.Marshal
	var _ = herald.ErrServerClosed
}

// TestStreamPings: a stream gets the server's pings like a WebSocket
// connection; the Go SDK answers them by POST and stays connected, and a
// stream whose client never answers is closed with 3004.
func TestStreamPings(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	// Margins wide enough for a loaded machine: pings come every 1-2 s (the
	// sweep runs once a second), and a POST may take a while.
	cfg.PingInterval, cfg.PongTimeout = time.Second, 3*time.Second
	ts := startServer(t, cfg)
	var mu sync.Mutex
	var ends []client.DisconnectEvent
	c := dial(t, ts, &client.Options{Transport: client.TransportHTTPStream, PingMargin: 5 * time.Second, OnDisconnect: func(e client.DisconnectEvent) {
		mu.Lock()
		ends = append(ends, e)
		mu.Unlock()
	}})
	id := c.ID()

	rs := openRawStream(t, ts)
	if code := rs.post(t, ts.addr, 1, `{"id":1,"connect":{}}`); code != 204 {
		t.Fatalf("connect POST: HTTP %d", code)
	}
	pings := 0
	for {
		m := rs.next(t)
		if m.Ping != nil {
			pings++
			continue
		}
		if m.Disconnect != nil {
			if m.Disconnect.Code != protocol.DisconnectNoPong || pings == 0 {
				t.Fatalf("disconnect %+v after %d pings, want 3004 after a ping", m.Disconnect, pings)
			}
			break
		}
	}
	// By now the SDK client has answered pings for over three seconds.
	mu.Lock()
	defer mu.Unlock()
	if len(ends) != 0 || c.ID() != id || c.State() != client.StateConnected {
		t.Fatalf("the SDK client's stream ended %v (id %s, was %s, state %v): its pongs did not keep it", ends, c.ID(), id, c.State())
	}
}

// TestStreamSlowClient: a stream whose client stops reading is handled by
// its channel's slow policy like a WebSocket connection: with the default
// policy its queue overflows and the session ends (a POST then finds no
// stream), while memory stays bounded by the queue.
func TestStreamSlowClient(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.QueueMaxBytes = 64 << 10
	ts := startServer(t, cfg)
	resp, err := http.Get("http://" + ts.addr + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close() // never read
	token := resp.Header.Get("Herald-Session")
	post := func(seq int, body string) int {
		r, err := http.Post(fmt.Sprintf("http://%s/stream/send?session=%s&seq=%d", ts.addr, token, seq), "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if code := post(1, `{"id":1,"connect":{}}`+"\n"+`{"id":2,"subscribe":{"channel":"slow:1"}}`); code != 204 {
		t.Fatalf("POST: HTTP %d", code)
	}
	eventually(t, 10*time.Second, "the subscription", func() bool {
		var res struct {
			Channels map[string]any `json:"channels"`
		}
		ts.api(t, "channels", map[string]any{}, &res)
		return len(res.Channels) > 0
	})
	big := strings.Repeat("x", 30<<10)
	gone := false
	for i := 0; i < 2000 && !gone; i++ {
		ts.publish(t, "slow:1", map[string]string{"pad": big})
		if i%50 == 49 {
			gone = post(2, `{"id":3,"ping":{}}`) == 404
		}
	}
	if !gone {
		eventually(t, 10*time.Second, "the slow stream to end", func() bool { return post(2, `{"id":3,"ping":{}}`) == 404 })
	}
}
