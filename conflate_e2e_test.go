package herald_test

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// keyState is a subscriber's latest value per key, from publications
// whose data is {"round": N, ...} tagged key=K.
type keyState struct {
	mu       sync.Mutex
	last     map[string]int
	offset   uint64
	received uint64
	skipped  uint64
	marked   int // publications with Skipped > 0
	bad      string
}

func newKeyState() *keyState { return &keyState{last: map[string]int{}} }

func (k *keyState) add(t testing.TB, offset uint64, tags map[string]string, data []byte, skipped uint32) {
	var d struct {
		Round int `json:"round"`
	}
	if err := json.Unmarshal(data, &d); err != nil {
		t.Errorf("data %q: %v", data, err)
		return
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if offset <= k.offset && k.bad == "" {
		k.bad = "offset " + strconv.FormatUint(offset, 10) + " after " + strconv.FormatUint(k.offset, 10)
	}
	k.offset = offset
	k.last[tags["key"]] = d.Round
	k.received++
	k.skipped += uint64(skipped)
	if skipped > 0 {
		k.marked++
	}
}

// complete reports whether every one of keys has value round.
func (k *keyState) complete(keys, round int) bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for i := 0; i < keys; i++ {
		if k.last["k"+strconv.Itoa(i)] != round {
			return false
		}
	}
	return true
}

func (k *keyState) counts() (received, skipped uint64, marked int, bad string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.received, k.skipped, k.marked, k.bad
}

// publishRound publishes one publication per key, {"round": round} with a
// pad, in one batch request.
func (ts *testServer) publishRound(t testing.TB, ch string, keys, round int, pad string) {
	t.Helper()
	type cmd struct {
		Method string         `json:"method"`
		Params map[string]any `json:"params"`
	}
	cmds := make([]cmd, keys)
	for i := range cmds {
		cmds[i] = cmd{"publish", map[string]any{"channel": ch, "tags": map[string]string{"key": "k" + strconv.Itoa(i)},
			"data": json.RawMessage(`{"round":` + strconv.Itoa(round) + `,"pad":"` + pad + `"}`)}}
	}
	var res struct {
		Replies []struct {
			Error *protocol.Error `json:"error"`
		} `json:"replies"`
	}
	if code := ts.api(t, "batch", map[string]any{"commands": cmds}, &res); code != 200 || len(res.Replies) != keys {
		t.Fatalf("batch publish: HTTP %d, %d replies", code, len(res.Replies))
	}
	for _, r := range res.Replies {
		if r.Error != nil {
			t.Fatalf("publish: %v", r.Error)
		}
	}
}

// sdkPair is two Go SDK subscribers of a conflation test's channel: fast
// reads freely; stalled's handler waits for release (called at the
// latest when the test ends), and it counts its subscribed events.
type sdkPair struct {
	fast, stalled *keyState
	fastSub       *client.Subscription
	subscribed    atomic.Int32
	conflated     atomic.Bool // of the last subscribed event
	release       func()
}

// subscribeSDKPair dials the two subscribers of sdkPair, with options
// opts() (nil: the defaults), and subscribes them to ch.
func subscribeSDKPair(t *testing.T, ts *testServer, ch string, opts func() *client.Options) *sdkPair {
	t.Helper()
	if opts == nil {
		opts = func() *client.Options { return nil }
	}
	p := &sdkPair{fast: newKeyState(), stalled: newKeyState()}
	var err error
	p.fastSub, err = dial(t, ts, opts()).Subscribe(ctxT(t), ch, client.SubscribeOptions{OnPublication: func(pub client.Publication) {
		p.fast.add(t, pub.Offset, pub.Tags, pub.Data, pub.Skipped)
	}})
	if err != nil {
		t.Fatal(err)
	}
	released := make(chan struct{})
	p.release = sync.OnceFunc(func() { close(released) })
	c := dial(t, ts, opts())
	t.Cleanup(p.release) // before the client closes: its handler must return
	if _, err := c.Subscribe(ctxT(t), ch, client.SubscribeOptions{
		OnSubscribed: func(e client.SubscribedEvent) { p.subscribed.Add(1); p.conflated.Store(e.Conflated) },
		OnPublication: func(pub client.Publication) {
			<-released
			p.stalled.add(t, pub.Offset, pub.Tags, pub.Data, pub.Skipped)
		}}); err != nil {
		t.Fatal(err)
	}
	return p
}

// awaitFinal waits for the stalled and the fast subscribers to reach
// every key's last round.
func (p *sdkPair) awaitFinal(t *testing.T, keys, rounds int) {
	t.Helper()
	eventually(t, 30*time.Second, "the stalled SDK subscriber's final state", func() bool { return p.stalled.complete(keys, rounds) })
	eventually(t, 30*time.Second, "the fast SDK subscriber's final state", func() bool { return p.fast.complete(keys, rounds) })
}

// conflateConfig is devConfig with namespace "cf": conflation on the tag
// "key", history of historySize, and pings too rare for stalled readers
// to miss one.
func conflateConfig(historySize int) herald.Config {
	cfg := devConfig()
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "cf", HistorySize: historySize, HistoryTTL: time.Hour,
		AllowSubscribe: true, AllowAnonymousSubscribe: true, SlowPolicy: "conflate", ConflateKey: "key"})
	cfg.PingInterval = 10 * time.Minute
	return cfg
}

// checkConflated checks the subscribers' states at the end of a
// conflation test, the pair's and other's (named otherName): each is
// consistent, received plus skipped is what was published, every one but
// the fast one fell behind (some publication marked skipped), and the
// stalled SDK subscriber subscribed once, conflated.
func (p *sdkPair) checkConflated(t *testing.T, otherName string, other *keyState, total uint64) {
	t.Helper()
	for name, k := range map[string]*keyState{otherName: other, "stalled": p.stalled, "fast": p.fast} {
		received, skipped, marked, bad := k.counts()
		t.Logf("%s: received %d, skipped %d, %d marked", name, received, skipped, marked)
		if bad != "" {
			t.Errorf("%s: %s", name, bad)
		}
		if received+skipped != total {
			t.Errorf("%s: received %d + skipped %d != published %d", name, received, skipped, total)
		}
		if name != "fast" && marked == 0 {
			t.Errorf("%s: no publication marked skipped: it never fell behind", name)
		}
	}
	if n, conflated := p.subscribed.Load(), p.conflated.Load(); n != 1 || !conflated {
		t.Errorf("the SDK subscribed %d times (conflated %v): want once, a skip is not a gap", n, conflated)
	}
}

// TestConflation: on a channel whose slow-client policy is conflate, a
// publisher sends 100 rounds over 100 keys. A raw subscriber reads one
// message per round published (100 times slower than the publisher), a Go SDK subscriber's handler is stalled
// until the publisher is done, and another Go SDK subscriber reads
// freely. At the end each has every key's last value; the slow ones got
// publications marked with what they skipped, and every publication
// either reached a subscriber or is counted in a later one's skipped; the
// SDK took no skip for a gap (it never subscribed again); what the server
// kept for the slow subscriber stayed bounded: at most one publication per
// key aside, and its connection's queue at most the threshold past which
// a subscriber is behind.
func TestConflation(t *testing.T) {
	t.Parallel()
	ts := startServer(t, conflateConfig(100000))
	const ch, keys, rounds = "cf:prices", 100, 40
	total := uint64(keys * rounds)
	pad := strings.Repeat("x", 2<<10)

	sdk := subscribeSDKPair(t, ts, ch, nil)
	slow := newKeyState()

	raw := dialRaw(t, ts)
	id := raw.connect("").Client
	raw.send(`{"id":2,"subscribe":{"channel":"` + ch + `"}}`)
	if m := raw.next(); m.Subscribe == nil || !m.Subscribe.Conflated || !m.Subscribe.Recoverable {
		t.Fatalf("subscribe result %+v: want recoverable and conflated", m.Subscribe)
	}
	readRaw := func() {
		t.Helper()
		for {
			_ = raw.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
			f, err := ws.ReadFrame(raw.nc)
			if err != nil {
				t.Fatalf("slow subscriber: %v", err)
			}
			var m protocol.ServerMessage
			if err := json.Unmarshal(f.Payload, &m); err != nil {
				t.Fatalf("decode %q: %v", f.Payload, err)
			}
			if m.Pub != nil {
				slow.add(t, m.Pub.Offset, m.Pub.Tags, m.Pub.Data, m.Pub.Skipped)
				return
			}
		}
	}
	queueMax := 0
	for r := 1; r <= rounds; r++ {
		ts.publishRound(t, ch, keys, r, pad)
		readRaw()
		page, err := ts.Connections(ctxT(t), herald.ConnectionsQuery{Client: id})
		if err != nil || len(page.Connections) != 1 {
			t.Fatalf("connections: %v %+v", err, page)
		}
		queueMax = max(queueMax, page.Connections[0].QueueFrames)
	}
	sdk.release()
	for !slow.complete(keys, rounds) {
		readRaw()
	}
	sdk.awaitFinal(t, keys, rounds)

	sdk.checkConflated(t, "slow", slow, total)
	conflated, pendingMax, pendingBytes := ts.ConflateStats()
	t.Logf("conflated %d, at most %d publications (%d data bytes) aside, queue at most %d frames", conflated, pendingMax, pendingBytes, queueMax)
	if pendingMax == 0 || pendingMax > keys {
		t.Errorf("%d publications kept aside for one subscriber: want 1 to %d (keys)", pendingMax, keys)
	}
	if queueMax > 32 {
		t.Errorf("slow subscriber's queue reached %d frames, past the 32 from which it is behind", queueMax)
	}
	if got := metric(t, ts, "herald_conflated_publications_total"); uint64(got) != conflated {
		t.Errorf("herald_conflated_publications_total %v, hub %d", got, conflated)
	}

	// Recovery from offset 0 returns the newest publication per key.
	c3 := dial(t, ts, nil)
	rec := newKeyState()
	ev := make(chan client.SubscribedEvent, 1)
	pos, _ := sdk.fastSub.Position()
	pos.Offset = 0
	if _, err := c3.Subscribe(ctxT(t), ch, client.SubscribeOptions{Since: &pos, OnSubscribed: func(e client.SubscribedEvent) { ev <- e },
		OnPublication: func(p client.Publication) { rec.add(t, p.Offset, p.Tags, p.Data, p.Skipped) }}); err != nil {
		t.Fatal(err)
	}
	if e := <-ev; !e.Recovered || !e.Conflated {
		t.Fatalf("recovery %+v: want recovered and conflated", e)
	}
	eventually(t, 10*time.Second, "the recovered final state", func() bool { return rec.complete(keys, rounds) })
	if received, skipped, _, _ := rec.counts(); received != keys || received+skipped != total {
		t.Fatalf("recovered %d publications standing for %d, want %d for %d", received, received+skipped, keys, total)
	}
}

// TestConflateConfig: the conflate options are checked at start.
func TestConflateConfig(t *testing.T) {
	t.Parallel()
	for name, tc := range map[string]struct {
		ns herald.Namespace
		ok bool
	}{
		"conflate":                  {herald.Namespace{Name: "a", SlowPolicy: "conflate", ConflateKey: "key", ConflateRate: 10, ConflateMaxKeys: 50}, true},
		"whole channel":             {herald.Namespace{Name: "a", SlowPolicy: "conflate"}, true},
		"key without conflate":      {herald.Namespace{Name: "a", ConflateKey: "key"}, false},
		"rate without conflate":     {herald.Namespace{Name: "a", SlowPolicy: "drop", ConflateRate: 5}, false},
		"negative rate":             {herald.Namespace{Name: "a", SlowPolicy: "conflate", ConflateRate: -1}, false},
		"rate too high":             {herald.Namespace{Name: "a", SlowPolicy: "conflate", ConflateRate: 1001}, false},
		"negative max keys":         {herald.Namespace{Name: "a", SlowPolicy: "conflate", ConflateMaxKeys: -1}, false},
		"with acknowledgements":     {herald.Namespace{Name: "a", SlowPolicy: "conflate", Ack: true, HistorySize: 10, HistoryTTL: time.Minute}, false},
		"unknown policy is refused": {herald.Namespace{Name: "a", SlowPolicy: "latest"}, false},
	} {
		cfg := herald.Config{Namespaces: []herald.Namespace{tc.ns}}
		srv, err := herald.New(cfg)
		if tc.ok != (err == nil) {
			t.Errorf("%s: New: %v", name, err)
		}
		if err != nil && !errors.Is(err, herald.ErrConfig) {
			t.Errorf("%s: %v does not wrap ErrConfig", name, err)
		}
		if srv != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_ = srv.Shutdown(ctx)
			cancel()
		}
	}
}

// TestConflationStreams: conflation over the transports that are not
// WebSocket. On a conflate channel, a Server-Sent Events reader that reads
// one event per round published (a browser tab busy elsewhere), a Go SDK
// subscriber over HTTP streaming whose handler is stalled until the
// publisher is done, and one over HTTP streaming that reads freely: each
// ends with every key's last value, the slow ones got publications
// marked with what they skipped, every publication reached each of them
// or is counted in a later one's skipped, and the SDK never took a skip
// for a gap.
func TestConflationStreams(t *testing.T) {
	t.Parallel()
	ts := startServer(t, conflateConfig(100000))
	const ch, keys, rounds = "cf:quotes", 100, 40
	total := uint64(keys * rounds)
	pad := strings.Repeat("x", 2<<10)

	sdk := subscribeSDKPair(t, ts, ch, func() *client.Options { return &client.Options{Transport: client.TransportHTTPStream} })
	sse := newKeyState()

	// The SSE reader reads the response body itself, an event at a time,
	// so that what it does not read stays in the socket and the server.
	req, _ := http.NewRequest("GET", "http://"+ts.addr+"/sse?channel="+url.QueryEscape(ch), nil)
	req.Header.Set("Accept", "text/event-stream")
	resp, err := (&http.Client{Transport: &http.Transport{}}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("GET /sse: HTTP %d", resp.StatusCode)
	}
	br := bufio.NewReaderSize(resp.Body, 4096)
	nextEvent := func() *protocol.ServerMessage {
		t.Helper()
		var data string
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				t.Fatalf("SSE reader: %v", err)
			}
			line = strings.TrimRight(line, "\n")
			if line == "" {
				if data != "" {
					break
				}
				continue
			}
			if d, ok := strings.CutPrefix(line, "data: "); ok {
				data = d
			}
		}
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage([]byte(data), &m); err != nil {
			t.Fatalf("SSE event %.100q: %v", data, err)
		}
		return &m
	}
	if m := nextEvent(); m.Connect == nil || m.Connect.Subs[ch] == nil || !m.Connect.Subs[ch].Conflated {
		t.Fatalf("first SSE event %+v: want the connect reply, subscribed to %s with conflation", m, ch)
	}
	readSSE := func() {
		t.Helper()
		for {
			if m := nextEvent(); m.Pub != nil {
				sse.add(t, m.Pub.Offset, m.Pub.Tags, m.Pub.Data, m.Pub.Skipped)
				return
			}
		}
	}
	for r := 1; r <= rounds; r++ {
		ts.publishRound(t, ch, keys, r, pad)
		readSSE()
	}
	sdk.release()
	for !sse.complete(keys, rounds) {
		readSSE()
	}
	sdk.awaitFinal(t, keys, rounds)

	sdk.checkConflated(t, "sse", sse, total)
	if _, pendingMax, _ := ts.ConflateStats(); pendingMax == 0 || pendingMax > keys {
		t.Errorf("%d publications kept aside for one subscriber: want 1 to %d (keys)", pendingMax, keys)
	}
}
