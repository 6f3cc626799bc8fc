package herald_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/protocol"
)

func eventsConfig() herald.Config {
	cfg := devConfig()
	cfg.Events = herald.EventsConfig{Enabled: true, Connections: true, OfflineGrace: 300 * time.Millisecond, VacatedGrace: 300 * time.Millisecond}
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "ev", SubscriptionEvents: true, AllowSubscribe: true, HistorySize: 10, HistoryTTL: time.Minute})
	return cfg
}

// eventReader is a backend connection subscribed to the events channel.
type eventReader struct {
	r *rawConn
}

func readEvents(t *testing.T, ts *testServer) *eventReader {
	t.Helper()
	r := dialRaw(t, ts)
	r.send(`{"id":1,"connect":{"api_key":"` + testAPIKey + `"}}`)
	if m := r.next(); m.Connect == nil {
		t.Fatalf("backend connect: %+v", m)
	}
	r.send(`{"id":2,"subscribe":{"channel":"$events"}}`)
	if m := r.next(); m.Subscribe == nil || !m.Subscribe.Recoverable {
		t.Fatalf("subscribe to the events channel: %+v", m)
	}
	return &eventReader{r: r}
}

// next returns the next event.
func (e *eventReader) next() herald.Event {
	e.r.t.Helper()
	for {
		m := e.r.next()
		if m.Pub == nil || m.Pub.Channel != herald.EventsChannel {
			continue
		}
		var ev herald.Event
		if err := json.Unmarshal(m.Pub.Data, &ev); err != nil {
			e.r.t.Fatal(err)
		}
		return ev
	}
}

// expect reads events until it has seen want (type/user/channel), in that
// order, and fails on any other online/offline/occupied/vacated event of
// the users and channels named.
func (e *eventReader) expect(want ...herald.Event) []herald.Event {
	e.r.t.Helper()
	var got []herald.Event
	for len(got) < len(want) {
		ev := e.next()
		w := want[len(got)]
		if ev.Type != w.Type || ev.User != w.User || ev.Channel != w.Channel {
			e.r.t.Fatalf("event %d: %+v, want %s user=%q channel=%q (so far %+v)", len(got), ev, w.Type, w.User, w.Channel, got)
		}
		if ev.ID == "" || ev.Time == 0 || ev.Node == "" {
			e.r.t.Fatalf("event without id, time or node: %+v", ev)
		}
		got = append(got, ev)
	}
	return got
}

// TestLifecycleEvents on one node: online, connect, occupied, subscribe,
// and after the graces unsubscribe, disconnect, vacated and offline, in
// order; a reconnect within the grace produces neither offline nor online.
func TestLifecycleEvents(t *testing.T) {
	t.Parallel()
	ts := startServer(t, eventsConfig())
	evs := readEvents(t, ts)

	r, client := connectRaw(t, ts, "ulla")
	evs.expect(herald.Event{Type: "connect", User: "ulla"}, herald.Event{Type: "online", User: "ulla"})
	r.send(`{"id":2,"subscribe":{"channel":"ev:room"}}`)
	r.next()
	// subscribe and occupied, in either order.
	for _, ev := range []herald.Event{evs.next(), evs.next()} {
		switch {
		case ev.Type == "subscribe" && ev.User == "ulla" && ev.Channel == "ev:room" && ev.Client == client:
		case ev.Type == "occupied" && ev.Channel == "ev:room":
		default:
			t.Fatalf("after the subscribe: %+v, want subscribe (client %s) and occupied of ev:room", ev, client)
		}
	}
	r.nc.Close()
	got := evs.expect(
		herald.Event{Type: "unsubscribe", User: "ulla", Channel: "ev:room"},
		herald.Event{Type: "disconnect", User: "ulla"},
	)
	// vacated and offline, in either order, each a grace later.
	for _, ev := range []herald.Event{evs.next(), evs.next()} {
		switch {
		case ev.Type == "vacated" && ev.Channel == "ev:room", ev.Type == "offline" && ev.User == "ulla":
		default:
			t.Fatalf("after the disconnect: %+v, want vacated of ev:room and offline of ulla", ev)
		}
		if ev.Time-got[1].Time < 250 {
			t.Fatalf("%s %d ms after the disconnect: sooner than the grace", ev.Type, ev.Time-got[1].Time)
		}
	}

	// A reconnect within the grace: connect and disconnect events only.
	r1, _ := connectRaw(t, ts, "vic")
	evs.expect(herald.Event{Type: "connect", User: "vic"}, herald.Event{Type: "online", User: "vic"})
	r1.nc.Close()
	evs.expect(herald.Event{Type: "disconnect", User: "vic"})
	r2, _ := connectRaw(t, ts, "vic")
	evs.expect(herald.Event{Type: "connect", User: "vic"})
	// vic's second connection goes too: one offline, a grace after it.
	r2.nc.Close()
	got = evs.expect(herald.Event{Type: "disconnect", User: "vic"}, herald.Event{Type: "offline", User: "vic"})
	if got[1].Time-got[0].Time < 250 {
		t.Fatalf("offline %d ms after the last disconnect: sooner than the grace", got[1].Time-got[0].Time)
	}
}

// TestEventsChannelRights: a client may not subscribe to or publish in the
// events channel (103), nor may the API publish to it.
func TestEventsChannelRights(t *testing.T) {
	t.Parallel()
	ts := startServer(t, eventsConfig())
	r := dialRaw(t, ts)
	r.connect(token(t, "mallory", time.Hour))
	r.send(`{"id":2,"subscribe":{"channel":"$events"}}`)
	if m := r.next(); m.Error == nil || m.Error.Code != protocol.ErrPermissionDenied {
		t.Fatalf("client subscribe to the events channel: %+v", m)
	}
	r.send(`{"id":3,"publish":{"channel":"$events","data":{}}}`)
	if m := r.next(); m.Error == nil || m.Error.Code != protocol.ErrPermissionDenied {
		t.Fatalf("client publish to the events channel: %+v", m)
	}
	var e struct {
		Error *protocol.Error `json:"error"`
	}
	if code := ts.api(t, "publish", map[string]any{"channel": "$events", "data": 1}, &e); code != http.StatusForbidden {
		t.Fatalf("API publish to the events channel: %d %+v", code, e)
	}
	bad := dialRaw(t, ts)
	bad.send(`{"id":1,"connect":{"api_key":"wrong"}}`)
	if code, _ := bad.closeCode(); code != protocol.DisconnectInvalidToken {
		t.Fatalf("connect with a wrong API key: close %d", code)
	}
}

// webhookReceiver records signed event batches; fail makes it answer 500.
type webhookReceiver struct {
	t      *testing.T
	secret string
	mu     sync.Mutex
	fail   bool
	events []herald.Event
	bad    int // requests whose signature did not verify
	posts  int
}

func (w *webhookReceiver) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.posts++
	if w.fail {
		http.Error(rw, "down", http.StatusInternalServerError)
		return
	}
	sig := r.Header.Get("Herald-Signature")
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	var unix int64
	_ = json.Unmarshal([]byte(ts), &unix)
	if sig != herald.Sign(w.secret, time.Unix(unix, 0), body) {
		w.bad++
		http.Error(rw, "bad signature", http.StatusUnauthorized)
		return
	}
	var batch struct {
		Events []herald.Event `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(rw, err.Error(), http.StatusBadRequest)
		return
	}
	w.events = append(w.events, batch.Events...)
}

func (w *webhookReceiver) setFail(f bool) {
	w.mu.Lock()
	w.fail = f
	w.mu.Unlock()
}

func (w *webhookReceiver) snapshot() ([]herald.Event, int, int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]herald.Event(nil), w.events...), w.posts, w.bad
}

// TestWebhooks: events reach a webhook signed and in order; while the
// receiver fails, the node retries, and when it is back every event
// arrives, in order, with no gap.
func TestWebhooks(t *testing.T) {
	t.Parallel()
	recv := &webhookReceiver{t: t, secret: "s3cret"}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	cfg := eventsConfig()
	cfg.Events.Webhooks = []herald.WebhookConfig{{URL: srv.URL, Secret: "s3cret", Types: []string{"online", "offline"}, MaxBackoff: 200 * time.Millisecond}}
	ts := startServer(t, cfg)

	users := []string{"w1", "w2", "w3", "w4", "w5", "w6"}
	var conns []*rawConn
	for _, u := range users[:3] {
		r, _ := connectRaw(t, ts, u)
		conns = append(conns, r)
	}
	eventually(t, 10*time.Second, "3 online events delivered", func() bool { ev, _, _ := recv.snapshot(); return len(ev) == 3 })
	recv.setFail(true)
	_, posts0, _ := recv.snapshot()
	for _, u := range users[3:] {
		r, _ := connectRaw(t, ts, u)
		conns = append(conns, r)
	}
	for _, r := range conns[:3] {
		r.nc.Close()
	}
	eventually(t, 10*time.Second, "retries while the receiver fails", func() bool { _, posts, _ := recv.snapshot(); return posts >= posts0+3 })
	recv.setFail(false)
	eventually(t, 20*time.Second, "every event after the receiver is back", func() bool { ev, _, _ := recv.snapshot(); return len(ev) >= 9 })
	got, _, bad := recv.snapshot()
	if bad != 0 {
		t.Fatalf("%d requests with a bad signature", bad)
	}
	seen := map[string]bool{}
	var order []string
	for _, ev := range got {
		if seen[ev.ID] {
			continue // at least once: repeats are allowed, and dropped by id
		}
		seen[ev.ID] = true
		order = append(order, ev.Type+":"+ev.User)
	}
	want := "online:w1 online:w2 online:w3 online:w4 online:w5 online:w6 offline:w1 offline:w2 offline:w3"
	if strings.Join(order, " ") != want {
		// onlines and offlines of different users may interleave; each
		// user's come in order.
		perUser := map[string][]string{}
		for _, o := range order {
			typ, u, _ := strings.Cut(o, ":")
			perUser[u] = append(perUser[u], typ)
		}
		for _, u := range users {
			w := "online"
			if u <= "w3" {
				w = "online offline"
			}
			if strings.Join(perUser[u], " ") != w {
				t.Fatalf("events of %s: %v, want %s (all: %v)", u, perUser[u], w, order)
			}
		}
	}
}
