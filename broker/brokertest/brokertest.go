// Package brokertest is the conformance suite every Herald broker and
// presence store must pass. A broker package calls Run from its tests:
//
//	func TestConformance(t *testing.T) {
//		brokertest.Run(t, brokertest.Setup{NewNode: func(t *testing.T) broker.Broker { ... }})
//	}
package brokertest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Setup describes the implementation under test.
type Setup struct {
	// NewNode returns a new, not yet started broker. Brokers returned by
	// successive calls must share state, as nodes of one cluster do (for the
	// memory broker, which cannot, set SingleNode). The suite starts and
	// closes each broker.
	NewNode func(t *testing.T) broker.Broker
	// SingleNode: brokers from NewNode do not share state; cross-node
	// checks are left out.
	SingleNode bool
	// NewPresence returns a presence store; successive calls must share
	// state unless SingleNode. Nil leaves presence checks out.
	NewPresence func(t *testing.T) broker.PresenceStore
}

// Recorder is a broker.Handler that records everything delivered.
type Recorder struct {
	mu      sync.Mutex
	cond    *sync.Cond
	pubs    map[string][]*protocol.Publication
	epochs  map[string]string
	joins   map[string][]*protocol.ClientInfo
	leaves  map[string][]*protocol.ClientInfo
	control [][]byte
}

// NewRecorder returns an empty recorder.
func NewRecorder() *Recorder {
	r := &Recorder{
		pubs:   make(map[string][]*protocol.Publication),
		epochs: make(map[string]string),
		joins:  make(map[string][]*protocol.ClientInfo),
		leaves: make(map[string][]*protocol.ClientInfo),
	}
	r.cond = sync.NewCond(&r.mu)
	return r
}

func (r *Recorder) HandlePublication(ch string, p *protocol.Publication, epoch string) {
	r.mu.Lock()
	r.pubs[ch] = append(r.pubs[ch], p)
	r.epochs[ch] = epoch
	r.mu.Unlock()
}

func (r *Recorder) HandleJoin(ch string, info *protocol.ClientInfo) {
	r.mu.Lock()
	r.joins[ch] = append(r.joins[ch], info)
	r.mu.Unlock()
}

func (r *Recorder) HandleLeave(ch string, info *protocol.ClientInfo) {
	r.mu.Lock()
	r.leaves[ch] = append(r.leaves[ch], info)
	r.mu.Unlock()
}

func (r *Recorder) HandleControl(data []byte) {
	r.mu.Lock()
	r.control = append(r.control, slices.Clone(data))
	r.mu.Unlock()
}

// Pubs returns a copy of the publications received on ch.
func (r *Recorder) Pubs(ch string) []*protocol.Publication {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.pubs[ch])
}

func (r *Recorder) counts(ch string) (pubs, joins, leaves, control int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.pubs[ch]), len(r.joins[ch]), len(r.leaves[ch]), len(r.control)
}

// Eventually polls cond every 10ms until it holds or timeout passes.
func Eventually(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Channel returns a channel name unique to this run, so that suites against
// a shared server do not see each other.
func Channel(t testing.TB, name string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return fmt.Sprintf("bt%s:%s", hex.EncodeToString(b[:]), name)
}

func start(t *testing.T, s Setup) (broker.Broker, *Recorder) {
	t.Helper()
	b := s.NewNode(t)
	r := NewRecorder()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, r); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b, r
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

var withHistory = broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}

func data(i int) *protocol.Publication {
	return &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, i))}
}

func mustPublish(t *testing.T, b broker.Broker, ch string, i int, opts broker.PublishOptions) protocol.StreamPosition {
	t.Helper()
	pos, dup, err := b.Publish(ctx(t), ch, data(i), opts)
	if err != nil {
		t.Fatalf("Publish %s #%d: %v", ch, i, err)
	}
	if dup {
		t.Fatalf("Publish %s #%d: unexpected duplicate", ch, i)
	}
	return pos
}

// Run runs the whole suite.
func Run(t *testing.T, s Setup) {
	t.Run("OrderAndOffsets", func(t *testing.T) { t.Parallel(); testOrder(t, s) })
	t.Run("NoHistory", func(t *testing.T) { t.Parallel(); testNoHistory(t, s) })
	t.Run("HistoryWindowSize", func(t *testing.T) { t.Parallel(); testWindowSize(t, s) })
	t.Run("HistoryWindowTTL", func(t *testing.T) { t.Parallel(); testWindowTTL(t, s) })
	t.Run("HistoryQueries", func(t *testing.T) { t.Parallel(); testHistoryQueries(t, s) })
	t.Run("RecoverySeam", func(t *testing.T) { t.Parallel(); testRecoverySeam(t, s) })
	t.Run("EpochChange", func(t *testing.T) { t.Parallel(); testEpochChange(t, s) })
	t.Run("Idempotency", func(t *testing.T) { t.Parallel(); testIdempotency(t, s) })
	t.Run("ManyChannels", func(t *testing.T) { t.Parallel(); testManyChannels(t, s) })
	t.Run("ConcurrentPublishers", func(t *testing.T) { t.Parallel(); testConcurrent(t, s) })
	t.Run("JoinLeaveControl", func(t *testing.T) { t.Parallel(); testEvents(t, s) })
	t.Run("Cursors", func(t *testing.T) { t.Parallel(); testCursors(t, s) })
	runHot(t, s)
	if s.NewPresence != nil {
		t.Run("Presence", func(t *testing.T) { t.Parallel(); testPresence(t, s) })
		t.Run("PresenceExpiry", func(t *testing.T) { t.Parallel(); testPresenceExpiry(t, s) })
	}
	if !s.SingleNode {
		t.Run("CrossNode", func(t *testing.T) { t.Parallel(); testCrossNode(t, s) })
		t.Run("Unsubscribe", func(t *testing.T) { t.Parallel(); testUnsubscribe(t, s) })
	}
}

func testOrder(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "order")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	var epoch string
	for i := 1; i <= 200; i++ {
		pos := mustPublish(t, b, ch, i, withHistory)
		if pos.Offset != uint64(i) {
			t.Fatalf("publish #%d got offset %d", i, pos.Offset)
		}
		if epoch == "" {
			epoch = pos.Epoch
		} else if pos.Epoch != epoch {
			t.Fatalf("epoch changed from %q to %q", epoch, pos.Epoch)
		}
	}
	if epoch == "" {
		t.Fatal("empty epoch")
	}
	Eventually(t, 10*time.Second, "200 deliveries", func() bool { n, _, _, _ := r.counts(ch); return n >= 200 })
	for i, p := range r.Pubs(ch) {
		if p.Offset != uint64(i+1) || string(p.Data) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("delivery %d: offset %d data %s", i, p.Offset, p.Data)
		}
		if p.Channel != ch {
			t.Fatalf("delivery %d: channel %q", i, p.Channel)
		}
	}
	r.mu.Lock()
	gotEpoch := r.epochs[ch]
	r.mu.Unlock()
	if gotEpoch != epoch {
		t.Fatalf("delivered epoch %q, want %q", gotEpoch, epoch)
	}
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 100 || pubs[0].Offset != 101 || pubs[99].Offset != 200 || pos.Offset != 200 || pos.Epoch != epoch {
		t.Fatalf("history: %d pubs, pos %+v", len(pubs), pos)
	}
}

func testNoHistory(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "nohist")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 5; i++ {
		pos := mustPublish(t, b, ch, i, broker.PublishOptions{})
		if pos.Offset != 0 {
			t.Fatalf("offset %d for a channel without history", pos.Offset)
		}
	}
	Eventually(t, 10*time.Second, "5 deliveries", func() bool { n, _, _, _ := r.counts(ch); return n == 5 })
	for i, p := range r.Pubs(ch) {
		if string(p.Data) != fmt.Sprintf(`{"n":%d}`, i+1) {
			t.Fatalf("delivery %d out of order: %s", i, p.Data)
		}
	}
	pubs, _, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 0 {
		t.Fatalf("history of a channel without history has %d pubs", len(pubs))
	}
}

func testWindowSize(t *testing.T, s Setup) {
	b, _ := start(t, s)
	ch := Channel(t, "size")
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	for i := 1; i <= 25; i++ {
		mustPublish(t, b, ch, i, opts)
	}
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if pos.Offset != 25 || len(pubs) != 10 || pubs[0].Offset != 16 || pubs[9].Offset != 25 {
		t.Fatalf("window: pos %+v, %d pubs", pos, len(pubs))
	}
}

func testWindowTTL(t *testing.T, s Setup) {
	b, _ := start(t, s)
	ch := Channel(t, "ttl")
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Second}
	first := mustPublish(t, b, ch, 1, opts)
	mustPublish(t, b, ch, 2, opts)
	Eventually(t, 15*time.Second, "history to expire", func() bool {
		pubs, _, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatalf("History while waiting for expiry: %v", err)
		}
		return len(pubs) == 0
	})
	// The position outlives the publications: a client at offset 1 learns it
	// cannot recover rather than getting a silent gap.
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Since: &first, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if broker.Recovered(first, pubs, pos) {
		t.Fatalf("recovered across an expired window: pos %+v", pos)
	}
	if pos.Epoch == first.Epoch && pos.Offset != 2 {
		t.Fatalf("position after expiry: %+v", pos)
	}
	next := mustPublish(t, b, ch, 3, opts)
	if next.Epoch == first.Epoch && next.Offset != 3 {
		t.Fatalf("offset after expiry went to %d in the same epoch", next.Offset)
	}
}

func testHistoryQueries(t *testing.T, s Setup) {
	b, _ := start(t, s)
	ch := Channel(t, "queries")
	var last protocol.StreamPosition
	for i := 1; i <= 20; i++ {
		last = mustPublish(t, b, ch, i, withHistory)
	}
	offsets := func(pubs []*protocol.Publication) []uint64 {
		var o []uint64
		for _, p := range pubs {
			o = append(o, p.Offset)
		}
		return o
	}
	cases := []struct {
		name string
		opts broker.HistoryOptions
		want []uint64
	}{
		{"limit 0 gives position only", broker.HistoryOptions{}, nil},
		{"first 3", broker.HistoryOptions{Limit: 3}, []uint64{1, 2, 3}},
		{"last 3 reversed", broker.HistoryOptions{Limit: 3, Reverse: true}, []uint64{20, 19, 18}},
		{"since 17", broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: last.Epoch, Offset: 17}, Limit: -1}, []uint64{18, 19, 20}},
		{"since 10 limit 2", broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: last.Epoch, Offset: 10}, Limit: 2}, []uint64{11, 12}},
		{"before 4 reversed", broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: last.Epoch, Offset: 4}, Limit: -1, Reverse: true}, []uint64{3, 2, 1}},
		{"since at top", broker.HistoryOptions{Since: &last, Limit: -1}, nil},
		{"wrong epoch", broker.HistoryOptions{Since: &protocol.StreamPosition{Epoch: "other", Offset: 3}, Limit: -1}, nil},
	}
	for _, c := range cases {
		pubs, pos, err := b.History(ctx(t), ch, c.opts)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if pos != last {
			t.Errorf("%s: position %+v, want %+v", c.name, pos, last)
		}
		if got := offsets(pubs); !slices.Equal(got, c.want) {
			t.Errorf("%s: offsets %v, want %v", c.name, got, c.want)
		}
	}
	// A channel never published to has offset 0 and an epoch.
	_, pos, err := b.History(ctx(t), Channel(t, "empty"), broker.HistoryOptions{Limit: -1})
	if err != nil || pos.Offset != 0 || pos.Epoch == "" {
		t.Fatalf("empty channel: pos %+v err %v", pos, err)
	}
}

func testRecoverySeam(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "seam")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 50, HistoryTTL: time.Minute}
	var pos5 protocol.StreamPosition
	for i := 1; i <= 10; i++ {
		p := mustPublish(t, b, ch, i, opts)
		if i == 5 {
			pos5 = p
		}
	}
	pubs, cur, err := b.History(ctx(t), ch, broker.HistoryOptions{Since: &pos5, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if !broker.Recovered(pos5, pubs, cur) || len(pubs) != 5 || pubs[0].Offset != 6 {
		t.Fatalf("recover from 5: %d pubs, cur %+v", len(pubs), cur)
	}
	// Live publications continue exactly after the recovered ones.
	for i := 11; i <= 15; i++ {
		mustPublish(t, b, ch, i, opts)
	}
	Eventually(t, 10*time.Second, "15 deliveries", func() bool { n, _, _, _ := r.counts(ch); return n >= 15 })
	var seam []uint64
	for _, p := range r.Pubs(ch) {
		if p.Offset > cur.Offset {
			seam = append(seam, p.Offset)
		}
	}
	if !slices.Equal(seam, []uint64{11, 12, 13, 14, 15}) {
		t.Fatalf("live after recovery: %v", seam)
	}
	// Outside the window: not recovered.
	for i := 16; i <= 80; i++ {
		mustPublish(t, b, ch, i, opts)
	}
	pubs, cur, err = b.History(ctx(t), ch, broker.HistoryOptions{Since: &pos5, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if broker.Recovered(pos5, pubs, cur) {
		t.Fatal("recovered from outside the window")
	}
	// From the future: not recovered.
	future := protocol.StreamPosition{Epoch: cur.Epoch, Offset: cur.Offset + 10}
	pubs, cur, err = b.History(ctx(t), ch, broker.HistoryOptions{Since: &future, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if broker.Recovered(future, pubs, cur) {
		t.Fatal("recovered from a position ahead of the stream")
	}
}

func testEpochChange(t *testing.T, s Setup) {
	b, _ := start(t, s)
	ch := Channel(t, "epoch")
	pos := mustPublish(t, b, ch, 1, withHistory)
	if err := b.RemoveHistory(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	pubs, cur, err := b.History(ctx(t), ch, broker.HistoryOptions{Since: &pos, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Epoch == pos.Epoch {
		t.Fatalf("epoch unchanged after the stream was removed: %q", cur.Epoch)
	}
	if broker.Recovered(pos, pubs, cur) {
		t.Fatal("recovered across an epoch change")
	}
	next := mustPublish(t, b, ch, 2, withHistory)
	if next.Epoch != cur.Epoch || next.Offset != 1 {
		t.Fatalf("first publish of the new stream: %+v, want epoch %q offset 1", next, cur.Epoch)
	}
}

func testIdempotency(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "idem")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	opts := withHistory
	opts.IdempotencyKey = "key-1"
	opts.IdempotencyWindow = time.Minute
	first, dup, err := b.Publish(ctx(t), ch, data(1), opts)
	if err != nil || dup {
		t.Fatalf("first: dup %v err %v", dup, err)
	}
	again, dup, err := b.Publish(ctx(t), ch, data(1), opts)
	if err != nil || !dup || again != first {
		t.Fatalf("retry: pos %+v dup %v err %v, want %+v duplicate", again, dup, err, first)
	}
	opts.IdempotencyKey = "key-2"
	second := mustPublish(t, b, ch, 2, opts)
	if second.Offset != first.Offset+1 {
		t.Fatalf("second key got offset %d", second.Offset)
	}
	// Without history the key still dedupes.
	nh := broker.PublishOptions{IdempotencyKey: "key-3", IdempotencyWindow: time.Minute}
	ch2 := Channel(t, "idem-nohist")
	if err := b.Subscribe(ctx(t), ch2); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, dup, err := b.Publish(ctx(t), ch2, data(i), nh); err != nil || dup != (i > 0) {
			t.Fatalf("no-history publish %d: dup %v err %v", i, dup, err)
		}
	}
	Eventually(t, 10*time.Second, "deliveries", func() bool {
		a, _, _, _ := r.counts(ch)
		c, _, _, _ := r.counts(ch2)
		return a == 2 && c == 1
	})
	// Short window: a retry after it is a new publication.
	ch3 := Channel(t, "idem-window")
	w := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute, IdempotencyKey: "k", IdempotencyWindow: time.Second}
	p1 := mustPublish(t, b, ch3, 1, w)
	Eventually(t, 15*time.Second, "idempotency window to pass", func() bool {
		p, dup, err := b.Publish(ctx(t), ch3, data(1), w)
		if err != nil {
			t.Fatal(err)
		}
		return !dup && p.Offset == p1.Offset+1
	})
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 2 || pos != second {
		t.Fatalf("history holds %d publications at %+v, want 2 at %+v", len(pubs), pos, second)
	}
}

func testManyChannels(t *testing.T, s Setup) {
	b, r := start(t, s)
	const n = 300
	chans := make([]string, n)
	for i := range chans {
		chans[i] = Channel(t, fmt.Sprintf("many-%d", i))
		if err := b.Subscribe(ctx(t), chans[i]); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range chans {
		wg.Add(1)
		go func(ch string) {
			defer wg.Done()
			for j := 1; j <= 3; j++ {
				pos, _, err := b.Publish(ctx(t), ch, data(j), withHistory)
				if err != nil {
					errs <- err
					return
				}
				if pos.Offset != uint64(j) {
					errs <- fmt.Errorf("%s: offset %d, want %d", ch, pos.Offset, j)
					return
				}
			}
		}(chans[i])
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	Eventually(t, 20*time.Second, "deliveries on every channel", func() bool {
		for _, ch := range chans {
			if n, _, _, _ := r.counts(ch); n != 3 {
				return false
			}
		}
		return true
	})
	for _, ch := range chans {
		for i, p := range r.Pubs(ch) {
			if p.Offset != uint64(i+1) {
				t.Fatalf("%s: delivery %d has offset %d", ch, i, p.Offset)
			}
		}
	}
}

func testConcurrent(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "concurrent")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	const writers, each = 8, 50
	opts := broker.PublishOptions{HistorySize: writers * each, HistoryTTL: time.Minute}
	var mu sync.Mutex
	seen := map[uint64]bool{}
	var wg sync.WaitGroup
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				pos, _, err := b.Publish(ctx(t), ch, data(w*each+i), opts)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[pos.Offset] {
					t.Errorf("offset %d assigned twice", pos.Offset)
				}
				seen[pos.Offset] = true
				mu.Unlock()
			}
		}(w)
	}
	wg.Wait()
	for o := uint64(1); o <= writers*each; o++ {
		if !seen[o] {
			t.Fatalf("offset %d never assigned", o)
		}
	}
	Eventually(t, 10*time.Second, "all deliveries", func() bool { n, _, _, _ := r.counts(ch); return n == writers*each })
	for i, p := range r.Pubs(ch) {
		if p.Offset != uint64(i+1) {
			t.Fatalf("delivery %d has offset %d: handler order is not offset order", i, p.Offset)
		}
	}
}

func testEvents(t *testing.T, s Setup) {
	b, r := start(t, s)
	ch := Channel(t, "events")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	info := &protocol.ClientInfo{Client: "c1", User: "u1"}
	if err := b.PublishJoin(ctx(t), ch, info); err != nil {
		t.Fatal(err)
	}
	if err := b.PublishLeave(ctx(t), ch, info); err != nil {
		t.Fatal(err)
	}
	_, _, _, before := r.counts(ch)
	if err := b.PublishControl(ctx(t), []byte("hello nodes")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "join, leave and control", func() bool {
		_, j, l, c := r.counts(ch)
		return j == 1 && l == 1 && c > before
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	if got := r.joins[ch][0]; got.Client != "c1" || got.User != "u1" {
		t.Fatalf("join info %+v", got)
	}
	if !slices.ContainsFunc(r.control, func(b []byte) bool { return string(b) == "hello nodes" }) {
		t.Fatal("control message not delivered")
	}
}

func testPresence(t *testing.T, s Setup) {
	p := s.NewPresence(t)
	ch := Channel(t, "presence")
	c := ctx(t)
	add := func(client, user string) {
		if err := p.AddPresence(c, ch, client, &protocol.ClientInfo{Client: client, User: user, ConnInfo: protocol.Data(`{"x":1}`)}, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	add("c1", "alice")
	add("c2", "alice")
	add("c3", "bob")
	add("c3", "bob") // refresh, not a second member
	m, err := p.Presence(c, ch)
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m["c1"].User != "alice" || m["c3"].User != "bob" || string(m["c2"].ConnInfo) != `{"x":1}` {
		t.Fatalf("presence %+v", m)
	}
	st, err := p.PresenceStats(c, ch)
	if err != nil || st.NumClients != 3 || st.NumUsers != 2 {
		t.Fatalf("stats %+v err %v", st, err)
	}
	if err := p.RemovePresence(c, ch, "c1"); err != nil {
		t.Fatal(err)
	}
	if err := p.RemovePresence(c, ch, "nobody"); err != nil {
		t.Fatalf("removing an absent member: %v", err)
	}
	st, err = p.PresenceStats(c, ch)
	if err != nil || st.NumClients != 2 || st.NumUsers != 2 {
		t.Fatalf("stats after remove %+v err %v", st, err)
	}
	if !s.SingleNode {
		other := s.NewPresence(t)
		m, err := other.Presence(c, ch)
		if err != nil || len(m) != 2 {
			t.Fatalf("presence from another node: %d members, err %v", len(m), err)
		}
	}
	empty, err := p.Presence(c, Channel(t, "nobody-here"))
	if err != nil || len(empty) != 0 {
		t.Fatalf("empty channel: %v %v", empty, err)
	}
}

func testPresenceExpiry(t *testing.T, s Setup) {
	p := s.NewPresence(t)
	ch := Channel(t, "expiry")
	c := ctx(t)
	if err := p.AddPresence(c, ch, "dies", &protocol.ClientInfo{Client: "dies", User: "u"}, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := p.AddPresence(c, ch, "lives", &protocol.ClientInfo{Client: "lives", User: "v"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 15*time.Second, "the expired member to go", func() bool {
		m, err := p.Presence(c, ch)
		if err != nil {
			t.Fatalf("Presence while waiting for expiry: %v", err)
		}
		return len(m) == 1 && m["lives"] != nil
	})
	st, err := p.PresenceStats(c, ch)
	if err != nil || st.NumClients != 1 || st.NumUsers != 1 {
		t.Fatalf("stats after expiry %+v err %v", st, err)
	}
}

func testCrossNode(t *testing.T, s Setup) {
	a, ra := start(t, s)
	b, rb := start(t, s)
	ch := Channel(t, "cross")
	for _, n := range []broker.Broker{a, b} {
		if err := n.Subscribe(ctx(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	var last protocol.StreamPosition
	for i := 1; i <= 20; i++ {
		n := a
		if i%2 == 0 {
			n = b
		}
		last = mustPublish(t, n, ch, i, withHistory)
		if last.Offset != uint64(i) {
			t.Fatalf("publish %d on alternating nodes got offset %d", i, last.Offset)
		}
	}
	for name, r := range map[string]*Recorder{"a": ra, "b": rb} {
		Eventually(t, 10*time.Second, "deliveries on node "+name, func() bool { n, _, _, _ := r.counts(ch); return n == 20 })
		for i, p := range r.Pubs(ch) {
			if p.Offset != uint64(i+1) {
				t.Fatalf("node %s delivery %d offset %d", name, i, p.Offset)
			}
		}
	}
	// Both nodes report the last publication's position (two failed
	// History calls would agree on a zero one).
	for name, n := range map[string]broker.Broker{"a": a, "b": b} {
		_, pos, err := n.History(ctx(t), ch, broker.HistoryOptions{})
		if err != nil {
			t.Fatalf("History on node %s: %v", name, err)
		}
		if pos != last {
			t.Fatalf("node %s reports position %+v, want %+v", name, pos, last)
		}
	}
	// A publication's trace context travels to the other node (with and
	// without history), and is kept in history.
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	for _, opts := range []broker.PublishOptions{withHistory, {}} {
		p := data(100)
		p.Trace = tp
		if _, _, err := a.Publish(ctx(t), ch, p, opts); err != nil {
			t.Fatal(err)
		}
	}
	Eventually(t, 10*time.Second, "traced publications on node b", func() bool { n, _, _, _ := rb.counts(ch); return n == 22 })
	for _, p := range rb.Pubs(ch)[20:] {
		if p.Trace != tp {
			t.Fatalf("node b got trace %q, want %q", p.Trace, tp)
		}
	}
	info := &protocol.ClientInfo{Client: "x", User: "y"}
	if err := a.PublishJoin(ctx(t), ch, info); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "join on the other node", func() bool { _, j, _, _ := rb.counts(ch); return j == 1 })
	if err := a.PublishControl(ctx(t), []byte("ctl")); err != nil {
		t.Fatal(err)
	}
	Eventually(t, 10*time.Second, "control on the other node", func() bool {
		rb.mu.Lock()
		defer rb.mu.Unlock()
		return slices.ContainsFunc(rb.control, func(b []byte) bool { return string(b) == "ctl" })
	})
}

func testUnsubscribe(t *testing.T, s Setup) {
	a, _ := start(t, s)
	b, rb := start(t, s)
	ch := Channel(t, "unsub")
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, a, ch, 1, withHistory)
	Eventually(t, 10*time.Second, "first delivery", func() bool { n, _, _, _ := rb.counts(ch); return n == 1 })
	if err := b.Unsubscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, a, ch, 2, withHistory)
	// A marker on another channel, published after, proves delivery has
	// caught up without a sleep.
	marker := Channel(t, "marker")
	if err := b.Subscribe(ctx(t), marker); err != nil {
		t.Fatal(err)
	}
	mustPublish(t, a, marker, 1, broker.PublishOptions{})
	Eventually(t, 10*time.Second, "marker", func() bool { n, _, _, _ := rb.counts(marker); return n == 1 })
	if n, _, _, _ := rb.counts(ch); n != 1 {
		t.Fatalf("node received %d publications after unsubscribing, want 1 in all", n)
	}
}
