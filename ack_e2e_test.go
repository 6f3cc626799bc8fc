package herald_test

import (
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/faultnet"
)

// ackConfig is a dev config with the namespace "acked": acknowledgements
// with short timeouts, so that tests wait little (they assert outcomes
// and counts, never durations).
func ackConfig(mod func(*herald.Namespace)) herald.Config {
	cfg := devConfig()
	ns := herald.Namespace{
		Name: "acked", HistorySize: 1000, HistoryTTL: time.Hour,
		AllowSubscribe: true, AllowAnonymousSubscribe: true, AllowPublish: true,
		Ack: true, AckTimeout: 100 * time.Millisecond, AckDeadline: time.Hour,
	}
	if mod != nil {
		mod(&ns)
	}
	cfg.Namespaces = append(cfg.Namespaces, ns)
	return cfg
}

// ackRecorder records what a subscription hands the application.
type ackRecorder struct {
	mu          sync.Mutex
	seqs        []int
	offsets     []uint64
	redelivered int
	gaps        int
}

func (r *ackRecorder) on(t testing.TB) func(client.Publication) {
	return func(p client.Publication) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.seqs = append(r.seqs, seqOf(t, p.Data))
		r.offsets = append(r.offsets, p.Offset)
		if p.Redelivered {
			r.redelivered++
		}
		if p.Gap {
			r.gaps++
		}
	}
}

func (r *ackRecorder) len() int { r.mu.Lock(); defer r.mu.Unlock(); return len(r.seqs) }

func (r *ackRecorder) get() []int { r.mu.Lock(); defer r.mu.Unlock(); return slices.Clone(r.seqs) }

// checkOnce fails unless the recorder was handed seqs 1..n, in order,
// each once.
func (r *ackRecorder) checkOnce(t *testing.T, n int) {
	t.Helper()
	got := r.get()
	if len(got) != n {
		t.Fatalf("handed %d publications, want %d: %v", len(got), n, got)
	}
	for i, s := range got {
		if s != i+1 {
			t.Fatalf("publication %d is seq %d, want %d (in order, once each): %v", i, s, i+1, got)
		}
	}
}

func TestAckConfigNeedsHistory(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Namespaces = append(cfg.Namespaces, herald.Namespace{Name: "a", Ack: true})
	if err := cfg.Validate(); err == nil {
		t.Fatal("ack without history accepted")
	}
	cfg.Namespaces[1].HistorySize = 10
	cfg.Namespaces[1].AckMaxUnacked = -1
	if err := cfg.Validate(); err == nil {
		t.Fatal("negative ack_max_unacked accepted")
	}
	cfg.Namespaces[1].AckMaxUnacked = 0
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Namespaces[1].SlowPolicy = "conflate"
	if err := cfg.Validate(); err == nil {
		t.Fatal("ack with slow_policy conflate accepted")
	}
}

// A connection that silently loses the server's frames for a while (a
// proxy discards them without closing anything) still receives every
// publication: the server sends again what is not acknowledged, and the
// client hands each one to the application once, in order.
func TestAckRedeliveryOnSilentLoss(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ackConfig(nil))
	px, err := faultnet.New(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	c, err := client.Dial(ctxT(t), "ws://"+px.Addr()+"/ws", &client.Options{ReconnectBase: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rec ackRecorder
	var reconnects int
	var mu sync.Mutex
	sub, err := c.Subscribe(ctxT(t), "acked:loss", client.SubscribeOptions{
		OnPublication: rec.on(t),
		OnSubscribed: func(ev client.SubscribedEvent) {
			mu.Lock()
			reconnects++
			mu.Unlock()
			if !ev.Ack {
				t.Errorf("subscribe result without ack: %+v", ev)
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		ts.publish(t, "acked:loss", seqData(i))
	}
	eventually(t, 10*time.Second, "10 publications", func() bool { return rec.len() == 10 })
	eventually(t, 10*time.Second, "the first 10 acknowledged", func() bool { return sub.Acked() == 10 })

	px.SetFaults(faultnet.Faults{DropServerFrames: true})
	for i := 11; i <= 30; i++ {
		ts.publish(t, "acked:loss", seqData(i))
	}
	// The server sends them again while they are lost too.
	eventually(t, 10*time.Second, "a redelivery while frames are lost", func() bool {
		return metric(t, ts, "herald_redelivered_total") >= 20
	})
	if n := rec.len(); n != 10 {
		t.Fatalf("handed %d publications while the server's frames were discarded", n)
	}
	px.SetFaults(faultnet.Faults{})
	eventually(t, 10*time.Second, "30 publications", func() bool { return rec.len() >= 30 })
	ts.publish(t, "acked:loss", seqData(31))
	eventually(t, 10*time.Second, "31 publications", func() bool { return rec.len() >= 31 })
	rec.checkOnce(t, 31)
	rec.mu.Lock()
	redelivered := rec.redelivered
	rec.mu.Unlock()
	if redelivered == 0 {
		t.Fatal("no publication was handed over by redelivery")
	}
	mu.Lock()
	defer mu.Unlock()
	if reconnects != 1 {
		t.Fatalf("subscribed %d times: the loss must heal on the live connection", reconnects)
	}
}

// A client that resumes after a reconnect starts from the offset it
// acknowledged, not from the last one received: what it received and did
// not acknowledge comes again (and is not handed to the application
// twice), and the server keeps sending it until it is acknowledged.
func TestAckResumeFromAcknowledged(t *testing.T) {
	t.Parallel()
	ts := startServer(t, ackConfig(nil))
	px, err := faultnet.New(ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer px.Close()
	c, err := client.Dial(ctxT(t), "ws://"+px.Addr()+"/ws", &client.Options{ReconnectBase: 20 * time.Millisecond, ReconnectMax: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var rec ackRecorder
	var subscribed []client.SubscribedEvent
	var mu sync.Mutex
	sub, err := c.Subscribe(ctxT(t), "acked:resume", client.SubscribeOptions{
		ManualAck: true, OnPublication: rec.on(t),
		OnSubscribed: func(ev client.SubscribedEvent) { mu.Lock(); subscribed = append(subscribed, ev); mu.Unlock() },
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		ts.publish(t, "acked:resume", seqData(i))
	}
	eventually(t, 10*time.Second, "10 publications", func() bool { return rec.len() == 10 })
	sub.Ack(5)
	if got := sub.Acked(); got != 5 {
		t.Fatalf("Acked %d after Ack(5)", got)
	}
	// The acknowledgement reaches the server, which then has 5 to go.
	before := metric(t, ts, "herald_redelivered_total")
	eventually(t, 10*time.Second, "redelivery of the 5 unacknowledged", func() bool {
		return metric(t, ts, "herald_redelivered_total") >= before+10
	})
	px.Reset(-1)
	eventually(t, 10*time.Second, "the resubscription", func() bool { mu.Lock(); defer mu.Unlock(); return len(subscribed) == 2 })
	mu.Lock()
	ev := subscribed[1]
	mu.Unlock()
	if !ev.WasRecovering || !ev.Recovered || !ev.Ack {
		t.Fatalf("resubscription %+v: want recovered, with ack", ev)
	}
	for i := 11; i <= 12; i++ {
		ts.publish(t, "acked:resume", seqData(i))
	}
	eventually(t, 10*time.Second, "12 publications", func() bool { return rec.len() >= 12 })
	sub.Ack(12)
	rec.checkOnce(t, 12)
	// Acknowledged: the server stops sending them.
	eventually(t, 10*time.Second, "redelivery to stop", func() bool {
		a := metric(t, ts, "herald_redelivered_total")
		time.Sleep(300 * time.Millisecond) // three ack timeouts
		return metric(t, ts, "herald_redelivered_total") == a
	})
	rec.checkOnce(t, 12)
}

// Past ack_max_unacked the namespace's slow policy applies: disconnect
// closes the connection with 3002 (and the client resumes from what it
// acknowledged); drop skips publications until acknowledgements make
// room, then marks the next one with gap, and the client recovers the
// skipped ones.
func TestAckMaxUnacked(t *testing.T) {
	t.Parallel()
	t.Run("disconnect", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ackConfig(func(ns *herald.Namespace) { ns.AckMaxUnacked = 5 }))
		codes := make(chan uint32, 16)
		c := dial(t, ts, &client.Options{OnDisconnect: func(ev client.DisconnectEvent) { codes <- ev.Code }})
		var rec ackRecorder
		sub, err := c.Subscribe(ctxT(t), "acked:cap", client.SubscribeOptions{ManualAck: true, OnPublication: rec.on(t)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 6; i++ {
			ts.publish(t, "acked:cap", seqData(i))
		}
		select {
		case code := <-codes:
			if code != 3002 {
				t.Fatalf("disconnected with %d, want 3002", code)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no disconnect past ack_max_unacked")
		}
		eventually(t, 10*time.Second, "5 publications", func() bool { return rec.len() >= 5 })
		sub.Ack(5)
		eventually(t, 10*time.Second, "the sixth, after the reconnect", func() bool { return rec.len() >= 6 })
		sub.Ack(6)
		rec.checkOnce(t, 6)
		if n := metric(t, ts, "herald_unacked_overflows_total"); n < 1 {
			t.Fatalf("herald_unacked_overflows_total %v", n)
		}
	})
	t.Run("drop", func(t *testing.T) {
		t.Parallel()
		ts := startServer(t, ackConfig(func(ns *herald.Namespace) { ns.AckMaxUnacked = 5; ns.SlowPolicy = "drop" }))
		c := dial(t, ts, nil)
		var rec ackRecorder
		sub, err := c.Subscribe(ctxT(t), "acked:drop", client.SubscribeOptions{ManualAck: true, OnPublication: rec.on(t)})
		if err != nil {
			t.Fatal(err)
		}
		for i := 1; i <= 10; i++ {
			ts.publish(t, "acked:drop", seqData(i))
		}
		eventually(t, 10*time.Second, "5 skipped", func() bool { return metric(t, ts, "herald_unacked_overflows_total") >= 5 })
		if n := rec.len(); n != 5 {
			t.Fatalf("handed %d publications with room for 5", n)
		}
		sub.Ack(5)
		c.FlushAcks()
		if err := c.Ping(ctxT(t)); err != nil { // after the ack, on the same connection
			t.Fatal(err)
		}
		// The next one goes out marked gap: the client recovers 6-10.
		ts.publish(t, "acked:drop", seqData(11))
		eventually(t, 10*time.Second, "11 publications", func() bool { return rec.len() >= 11 })
		sub.Ack(11)
		rec.checkOnce(t, 11)
	})
}

// A user with two devices, one acknowledging and one away: the one away,
// when it comes with FromAcked and no position of its own, resumes after
// what the other acknowledged (the user's cursor, kept in the broker).
func TestAckUserCursor(t *testing.T) {
	t.Parallel()
	b := memory.New(memory.Config{})
	cfg := ackConfig(nil)
	cfg.Broker = b
	ts := startServer(t, cfg)
	const ch = "acked:devices"
	phone := dial(t, ts, &client.Options{Token: token(t, "alice", time.Hour)})
	var got ackRecorder
	sub, err := phone.Subscribe(ctxT(t), ch, client.SubscribeOptions{OnPublication: got.on(t)})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 10; i++ {
		ts.publish(t, ch, seqData(i))
	}
	eventually(t, 10*time.Second, "the phone's 10", func() bool { return got.len() == 10 })
	eventually(t, 10*time.Second, "alice's cursor at 10", func() bool {
		pos, ok, err := b.Cursor(ctxT(t), "alice", ch)
		return err == nil && ok && pos.Offset == 10
	})
	if err := sub.Unsubscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for i := 11; i <= 15; i++ {
		ts.publish(t, ch, seqData(i))
	}
	// Another user has no cursor: FromAcked is a plain subscribe.
	bob := dial(t, ts, &client.Options{Token: token(t, "bob", time.Hour)})
	var bobGot ackRecorder
	if _, err := bob.Subscribe(ctxT(t), ch, client.SubscribeOptions{FromAcked: true, OnPublication: bobGot.on(t)}); err != nil {
		t.Fatal(err)
	}
	laptop := dial(t, ts, &client.Options{Token: token(t, "alice", time.Hour)})
	var lgot ackRecorder
	var ev client.SubscribedEvent
	if _, err := laptop.Subscribe(ctxT(t), ch, client.SubscribeOptions{FromAcked: true, OnPublication: lgot.on(t),
		OnSubscribed: func(e client.SubscribedEvent) { ev = e }}); err != nil {
		t.Fatal(err)
	}
	if !ev.WasRecovering || !ev.Recovered {
		t.Fatalf("laptop subscribe %+v: want recovered from alice's cursor", ev)
	}
	eventually(t, 10*time.Second, "the laptop's 5", func() bool { return lgot.len() >= 5 })
	if s := lgot.get(); !slices.Equal(s, []int{11, 12, 13, 14, 15}) {
		t.Fatalf("laptop got %v, want 11-15 (after what the phone acknowledged)", s)
	}
	eventually(t, 10*time.Second, "alice's cursor at 15", func() bool {
		pos, ok, err := b.Cursor(ctxT(t), "alice", ch)
		return err == nil && ok && pos.Offset == 15
	})
	if n := bobGot.len(); n != 0 {
		t.Fatalf("bob, without a cursor, got %d publications from before his subscribe", n)
	}
}

// A publication unacknowledged past ack_deadline is reported undelivered
// once per user, channel and offset: one lifecycle event (here through a
// webhook) and one count in herald_undelivered_total, however many of the
// user's connections leave it unacknowledged and however often it is
// redelivered meanwhile.
func TestAckUndelivered(t *testing.T) {
	t.Parallel()
	recv := &webhookReceiver{t: t, secret: "s"}
	srv := httptest.NewServer(recv)
	t.Cleanup(srv.Close)
	cfg := ackConfig(func(ns *herald.Namespace) { ns.AckDeadline = 300 * time.Millisecond })
	cfg.Events = herald.EventsConfig{Enabled: true}
	cfg.Events.Webhooks = []herald.WebhookConfig{{URL: srv.URL, Secret: "s", Types: []string{herald.EventUndelivered}, MaxBackoff: 200 * time.Millisecond}}
	ts := startServer(t, cfg)
	const ch = "acked:late"
	for range 2 { // two devices of one user, neither acknowledging
		c := dial(t, ts, &client.Options{Token: token(t, "dora", time.Hour)})
		if _, err := c.Subscribe(ctxT(t), ch, client.SubscribeOptions{ManualAck: true, OnPublication: func(client.Publication) {}}); err != nil {
			t.Fatal(err)
		}
	}
	var acker ackRecorder // another user, acknowledging: never late
	ac := dial(t, ts, &client.Options{Token: token(t, "erin", time.Hour)})
	if _, err := ac.Subscribe(ctxT(t), ch, client.SubscribeOptions{OnPublication: acker.on(t)}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 3; i++ {
		ts.publish(t, ch, seqData(i))
	}
	eventually(t, 10*time.Second, "3 undelivered reports", func() bool { return metric(t, ts, "herald_undelivered_total") >= 3 })
	eventually(t, 10*time.Second, "3 undelivered events", func() bool { ev, _, _ := recv.snapshot(); return len(ev) >= 3 })
	// Let redelivery run through many more timeouts.
	r0 := metric(t, ts, "herald_redelivered_total")
	eventually(t, 10*time.Second, "more redeliveries", func() bool { return metric(t, ts, "herald_redelivered_total") >= r0+30 })
	if n := metric(t, ts, "herald_undelivered_total"); n != 3 {
		t.Fatalf("herald_undelivered_total %v, want 3", n)
	}
	got, _, bad := recv.snapshot()
	if bad != 0 || len(got) != 3 {
		t.Fatalf("%d undelivered events (%d badly signed), want 3: %+v", len(got), bad, got)
	}
	for i, ev := range got {
		if ev.Type != herald.EventUndelivered || ev.User != "dora" || ev.Channel != ch || ev.Offset != uint64(i+1) || ev.Epoch == "" || ev.Client == "" {
			t.Fatalf("event %d: %+v", i, ev)
		}
	}
	if n := acker.len(); n != 3 {
		t.Fatalf("the acknowledging user got %d publications", n)
	}
}
