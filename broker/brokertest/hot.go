package brokertest

import (
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// The hot channel checks: many publishers on one channel at once, from
// several nodes unless SingleNode. Brokers may append such publications
// in batches; these checks hold them to the same promises as one at a
// time: offsets gap-free and strictly increasing, a distinct offset for
// each publisher, every publication exactly once in history and in live
// delivery, history limits and recovery exact per publication.

func runHot(t *testing.T, s Setup) {
	t.Run("HotChannel", func(t *testing.T) { t.Parallel(); testHot(t, s) })
	t.Run("HotHistorySize", func(t *testing.T) { t.Parallel(); testHotSize(t, s) })
	t.Run("HotHistoryTTL", func(t *testing.T) { t.Parallel(); testHotTTL(t, s) })
	t.Run("HotIdempotency", func(t *testing.T) { t.Parallel(); testHotIdempotency(t, s) })
}

// hotNodes starts the nodes of a hot channel check: 3, or 1 for a
// single-node broker.
func hotNodes(t *testing.T, s Setup) ([]broker.Broker, []*Recorder) {
	n := 3
	if s.SingleNode {
		n = 1
	}
	var bs []broker.Broker
	var rs []*Recorder
	for range n {
		b, r := start(t, s)
		bs, rs = append(bs, b), append(rs, r)
	}
	return bs, rs
}

// hotResult is what one publish returned.
type hotResult struct {
	data string
	pos  protocol.StreamPosition
	dup  bool
}

// publishHot runs writers goroutines, writer w on node w%len(nodes), each
// publishing each times in a row with opts (key, if not nil, gives the
// idempotency key of publication i of writer w). It returns every result,
// by writer, in the order each writer got them.
func publishHot(t *testing.T, nodes []broker.Broker, ch string, writers, each, base int, opts broker.PublishOptions, key func(w, i int) string) [][]hotResult {
	t.Helper()
	out := make([][]hotResult, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			n := nodes[w%len(nodes)]
			for i := range each {
				o := opts
				d := base + w*each + i
				if key != nil {
					o.IdempotencyKey = key(w, i)
					d = base + i*1000 + w%8 // the same data for the same key
				}
				p := data(d)
				pos, dup, err := n.Publish(ctx(t), ch, p, o)
				if err != nil {
					t.Errorf("writer %d publish %d: %v", w, i, err)
					return
				}
				out[w] = append(out[w], hotResult{data: string(p.Data), pos: pos, dup: dup})
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return out
}

// checkAcks checks that the non-duplicate results hold offsets first..last
// of one epoch, each once, increasing for each writer, and returns the data
// by offset.
func checkAcks(t *testing.T, res [][]hotResult, first uint64) (map[uint64]string, string, uint64) {
	t.Helper()
	byOffset := make(map[uint64]string)
	epoch := ""
	for w, rs := range res {
		var prev uint64
		for i, r := range rs {
			if r.dup {
				continue
			}
			if epoch == "" {
				epoch = r.pos.Epoch
			}
			if r.pos.Epoch != epoch || epoch == "" {
				t.Fatalf("writer %d publish %d: epoch %q, others %q", w, i, r.pos.Epoch, epoch)
			}
			if r.pos.Offset <= prev {
				t.Fatalf("writer %d publish %d: offset %d after %d: not increasing", w, i, r.pos.Offset, prev)
			}
			prev = r.pos.Offset
			if d, ok := byOffset[r.pos.Offset]; ok {
				t.Fatalf("offset %d acked twice (%s and %s)", r.pos.Offset, d, r.data)
			}
			byOffset[r.pos.Offset] = r.data
		}
	}
	last := first + uint64(len(byOffset)) - 1
	for o := first; o <= last; o++ {
		if _, ok := byOffset[o]; !ok {
			t.Fatalf("offset %d never acked: a gap in %d..%d", o, first, last)
		}
	}
	return byOffset, epoch, last
}

// checkPubs checks that pubs are offsets from..to in order with the data
// acked for them.
func checkPubs(t *testing.T, what string, pubs []*protocol.Publication, from, to uint64, byOffset map[uint64]string) {
	t.Helper()
	if uint64(len(pubs)) != to-from+1 {
		t.Fatalf("%s: %d publications, want offsets %d..%d", what, len(pubs), from, to)
	}
	for i, p := range pubs {
		if want := from + uint64(i); p.Offset != want {
			t.Fatalf("%s: publication %d has offset %d, want %d", what, i, p.Offset, want)
		}
		if string(p.Data) != byOffset[p.Offset] {
			t.Fatalf("%s: offset %d holds %s, was acked for %s", what, p.Offset, p.Data, byOffset[p.Offset])
		}
	}
}

func testHot(t *testing.T, s Setup) {
	nodes, recs := hotNodes(t, s)
	ch := Channel(t, "hot")
	for _, n := range nodes {
		if err := n.Subscribe(ctx(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	const writers, each = 24, 25
	opts := broker.PublishOptions{HistorySize: 10000, HistoryTTL: time.Minute}
	res := publishHot(t, nodes, ch, writers, each, 0, opts, nil)
	byOffset, epoch, last := checkAcks(t, res, 1)
	if last != writers*each {
		t.Fatalf("%d publications acked, want %d", last, writers*each)
	}
	// Every node delivers every publication once, in offset order.
	for i, r := range recs {
		Eventually(t, 20*time.Second, fmt.Sprintf("node %d deliveries", i), func() bool { n, _, _, _ := r.counts(ch); return n >= int(last) })
		checkPubs(t, fmt.Sprintf("node %d live", i), r.Pubs(ch), 1, last, byOffset)
	}
	// History, from any node, returns each publication once.
	for i, n := range nodes {
		pubs, pos, err := n.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if pos.Epoch != epoch || pos.Offset != last {
			t.Fatalf("node %d position %+v, want %s/%d", i, pos, epoch, last)
		}
		checkPubs(t, fmt.Sprintf("node %d history", i), pubs, 1, last, byOffset)
	}
	// Recovery from any offset, batches' insides included, returns exactly
	// what follows it; with a limit, the first ones of it.
	for since := uint64(0); since <= last; since += 7 {
		n := nodes[int(since)%len(nodes)]
		from := protocol.StreamPosition{Epoch: epoch, Offset: since}
		pubs, pos, err := n.History(ctx(t), ch, broker.HistoryOptions{Since: &from, Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		if !broker.Recovered(from, pubs, pos) {
			t.Fatalf("not recovered from offset %d: %d publications, position %+v", since, len(pubs), pos)
		}
		checkPubs(t, fmt.Sprintf("recovery from %d", since), pubs, since+1, last, byOffset)
		if since+5 <= last {
			pubs, _, err = n.History(ctx(t), ch, broker.HistoryOptions{Since: &from, Limit: 5})
			if err != nil {
				t.Fatal(err)
			}
			checkPubs(t, fmt.Sprintf("recovery from %d, limit 5", since), pubs, since+1, since+5, byOffset)
		}
	}
	// Newest first, from inside the stream.
	mid := protocol.StreamPosition{Epoch: epoch, Offset: last / 2}
	pubs, _, err := nodes[0].History(ctx(t), ch, broker.HistoryOptions{Since: &mid, Limit: 3, Reverse: true})
	if err != nil {
		t.Fatal(err)
	}
	slices.Reverse(pubs)
	checkPubs(t, "reverse from the middle", pubs, last/2-3, last/2-1, byOffset)
}

func testHotSize(t *testing.T, s Setup) {
	nodes, _ := hotNodes(t, s)
	ch := Channel(t, "hot-size")
	// A size that batches do not divide.
	const size = 7
	opts := broker.PublishOptions{HistorySize: size, HistoryTTL: time.Minute}
	for round := range 3 {
		res := publishHot(t, nodes, ch, 16, 5, round*1000, opts, nil)
		byOffset, _, last := checkAcks(t, res, uint64(round*80+1))
		for i, n := range nodes {
			pubs, pos, err := n.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
			if err != nil {
				t.Fatal(err)
			}
			if pos.Offset != last {
				t.Fatalf("round %d node %d: position %d, want %d", round, i, pos.Offset, last)
			}
			checkPubs(t, fmt.Sprintf("round %d node %d history", round, i), pubs, last-size+1, last, byOffset)
			from := protocol.StreamPosition{Epoch: pos.Epoch, Offset: last - size}
			pubs, pos, err = n.History(ctx(t), ch, broker.HistoryOptions{Since: &from, Limit: -1})
			if err != nil {
				t.Fatal(err)
			}
			if !broker.Recovered(from, pubs, pos) {
				t.Fatalf("round %d: not recovered from the window's edge %d", round, from.Offset)
			}
			from.Offset--
			pubs, pos, err = n.History(ctx(t), ch, broker.HistoryOptions{Since: &from, Limit: -1})
			if err != nil {
				t.Fatal(err)
			}
			if broker.Recovered(from, pubs, pos) {
				t.Fatalf("round %d: recovered from %d, outside the window", round, from.Offset)
			}
		}
	}
}

func testHotTTL(t *testing.T, s Setup) {
	nodes, _ := hotNodes(t, s)
	ch := Channel(t, "hot-ttl")
	opts := broker.PublishOptions{HistorySize: 1000, HistoryTTL: time.Second}
	res := publishHot(t, nodes, ch, 12, 5, 0, opts, nil)
	_, epoch, last := checkAcks(t, res, 1)
	Eventually(t, 15*time.Second, "the first publications to expire", func() bool {
		pubs, _, err := nodes[0].History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatalf("History while waiting for expiry: %v", err)
		}
		return len(pubs) == 0
	})
	res = publishHot(t, nodes, ch, 12, 5, 1000, opts, nil)
	first := last + 1
	if res[0][0].pos.Epoch != epoch {
		// A broker may start a new stream once everything expired; then
		// offsets start again.
		first, last = 1, 0
	}
	byOffset, _, last2 := checkAcks(t, res, first)
	for i, n := range nodes {
		pubs, _, err := n.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
		if err != nil {
			t.Fatal(err)
		}
		// What expired stays out, per publication, and everything after
		// is there: unless a second passed meanwhile on a slow machine.
		if len(pubs) > 0 {
			checkPubs(t, fmt.Sprintf("node %d history after expiry", i), pubs, pubs[0].Offset, last2, byOffset)
			if pubs[0].Offset <= last {
				t.Fatalf("node %d: expired offset %d in history", i, pubs[0].Offset)
			}
		}
	}
}

func testHotIdempotency(t *testing.T, s Setup) {
	nodes, recs := hotNodes(t, s)
	ch := Channel(t, "hot-idem")
	for _, n := range nodes {
		if err := n.Subscribe(ctx(t), ch); err != nil {
			t.Fatal(err)
		}
	}
	opts := broker.PublishOptions{HistorySize: 1000, HistoryTTL: time.Minute, IdempotencyWindow: time.Minute}
	// 16 writers, two per key: writers w and w+8 publish the same key at
	// about the same time, inside one batch or in two.
	const writers, each = 16, 6
	key := func(w, i int) string { return fmt.Sprintf("k-%d-%d", i, w%8) }
	res := publishHot(t, nodes, ch, writers, each, 0, opts, key)
	byOffset, epoch, last := checkAcks(t, res, 1)
	if last != writers*each/2 {
		t.Fatalf("%d publications stored, want %d (one per key)", last, writers*each/2)
	}
	byKey := make(map[string]protocol.StreamPosition)
	firsts := make(map[string]int)
	for w, rs := range res {
		for i, r := range rs {
			k := key(w, i)
			if !r.dup {
				firsts[k]++
			}
			if p, ok := byKey[k]; ok && p != r.pos {
				t.Fatalf("key %s: positions %+v and %+v", k, p, r.pos)
			}
			byKey[k] = r.pos
		}
	}
	for k, n := range firsts {
		if n != 1 {
			t.Fatalf("key %s published %d times", k, n)
		}
	}
	// Retries across batches: every key again, concurrently, are
	// duplicates with the first position.
	again := publishHot(t, nodes, ch, writers, each, 0, opts, key)
	for w, rs := range again {
		for i, r := range rs {
			if k := key(w, i); !r.dup || r.pos != byKey[k] {
				t.Fatalf("retry of key %s: %+v duplicate %v, want %+v", k, r.pos, r.dup, byKey[k])
			}
		}
	}
	pubs, pos, err := nodes[0].History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if pos.Epoch != epoch || pos.Offset != last {
		t.Fatalf("position %+v after retries, want %s/%d", pos, epoch, last)
	}
	checkPubs(t, "history", pubs, 1, last, byOffset)
	for i, r := range recs {
		Eventually(t, 20*time.Second, fmt.Sprintf("node %d deliveries", i), func() bool { n, _, _, _ := r.counts(ch); return n >= int(last) })
		checkPubs(t, fmt.Sprintf("node %d live", i), r.Pubs(ch), 1, last, byOffset)
	}
}
