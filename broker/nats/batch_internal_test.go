package nats

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/internal/groupcommit"
	"github.com/heraldhq/herald/protocol"
)

// TestBatchedAppend holds a channel's append group busy until n
// publications queue behind it, so that they are appended together: one
// history message with Herald-Count n, read back as n publications by
// History and by live delivery, each publisher with its own offset.
func TestBatchedAppend(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "batch"})
	if err != nil {
		t.Fatal(err)
	}
	rec := brokertest.NewRecorder()
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()

	const ch, n = "hot", 20
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 15, HistoryTTL: time.Minute}
	cs := b.acquire(ch)
	defer b.release(ch, cs)
	blocked := make(chan error, 1)
	leading := make(chan struct{})
	go func() {
		_, err := cs.group.Do(ctx, &pubReq{}, b.takeBatch, func([]*pubReq) ([]protocol.StreamPosition, error) {
			close(leading)
			for cs.group.Queued() < n {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
			return []protocol.StreamPosition{{}}, nil
		})
		blocked <- err
	}()
	<-leading
	pos := make([]protocol.StreamPosition, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p, _, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, i))}, opts)
			if err != nil {
				t.Error(err)
			}
			pos[i] = p
		}()
	}
	wg.Wait()
	if err := <-blocked; err != nil {
		t.Fatal(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	data := make(map[uint64]string)
	for i, p := range pos {
		if p.Offset < 1 || p.Offset > n || data[p.Offset] != "" {
			t.Fatalf("publisher %d got offset %d: not a distinct one of 1..%d", i, p.Offset, n)
		}
		data[p.Offset] = fmt.Sprintf(`{"n":%d}`, i)
	}
	m, err := b.streams[histStream].GetLastMsgForSubject(ctx, b.names.hist+ch)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(hdrCount); got != strconv.Itoa(n) || m.Header.Get(hdrOffset) != strconv.Itoa(n) || m.Sequence != 1 {
		t.Fatalf("history message %d: %s %q, %s %q; want the only one, carrying %d", m.Sequence, hdrCount, got, hdrOffset, m.Header.Get(hdrOffset), n)
	}
	pubs, cur, err := b.History(ctx, ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	// The size is 15: the window starts inside the message.
	if cur.Offset != n || len(pubs) != 15 || pubs[0].Offset != n-14 {
		t.Fatalf("history: position %+v, %d publications from %d", cur, len(pubs), pubs[0].Offset)
	}
	for i, p := range pubs {
		if p.Offset != n-14+uint64(i) || string(p.Data) != data[p.Offset] {
			t.Fatalf("history %d: offset %d data %s", i, p.Offset, p.Data)
		}
	}
	brokertest.Eventually(t, 10*time.Second, "live deliveries", func() bool { return len(rec.Pubs(ch)) >= n })
	for i, p := range rec.Pubs(ch) {
		if p.Offset != uint64(i+1) || string(p.Data) != data[p.Offset] {
			t.Fatalf("live %d: offset %d data %s", i, p.Offset, p.Data)
		}
	}

	// The batch bounds: history options of the first, maxBatch, the
	// server's maximum payload.
	big := make([]byte, b.nc.MaxPayload()/3)
	other := &pubReq{size: 3}
	for _, c := range []struct {
		pending []*pubReq
		want    int
	}{
		{[]*pubReq{{}, {}, {}}, 3},
		{[]*pubReq{{}, {}, other, {}}, 2},
		{[]*pubReq{{body: big}, {body: big}, {body: big}, {}}, 2},
		{[]*pubReq{{body: append(big, big...)}, {body: append(big, big...)}}, 1},
		{make([]*pubReq, maxBatch+5), maxBatch},
	} {
		for i := range c.pending {
			if c.pending[i] == nil {
				c.pending[i] = &pubReq{}
			}
		}
		if got := b.takeBatch(c.pending); got != c.want {
			t.Errorf("takeBatch of %d: %d, want %d", len(c.pending), got, c.want)
		}
	}
}

func FuzzDecodeEntries(f *testing.F) {
	one, _ := encodePub(&protocol.Publication{Data: protocol.Data(`{"a":1}`)}, "k")
	two := encodeBatch([][]byte{one, one})
	f.Add("", "E", "3", one)
	f.Add("2", "E", "5", two)
	f.Add("2", "", "", two)
	f.Add("3", "E", "2", two)
	f.Add("x", "E", "1", one)
	f.Fuzz(func(t *testing.T, count, epoch, offset string, body []byte) {
		h := natsgo.Header{}
		if count != "" {
			h.Set(hdrCount, count)
		}
		if epoch != "" {
			h.Set(hdrEpoch, epoch)
		}
		if offset != "" {
			h.Set(hdrOffset, offset)
		}
		ws, first, ep, err := decodeEntries(h, body)
		if err != nil {
			return
		}
		if len(ws) < 1 || len(ws) > maxBatch {
			t.Fatalf("%d entries", len(ws))
		}
		if ep != h.Get(hdrEpoch) {
			t.Fatalf("epoch %q from header %q", ep, h.Get(hdrEpoch))
		}
		if ep != "" {
			last, _ := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
			if first < 1 || first+uint64(len(ws))-1 != last {
				t.Fatalf("offsets %d..+%d, header says last %d", first, len(ws), last)
			}
		} else if first != 0 {
			t.Fatalf("offset %d without an epoch", first)
		}
	})
}

// TestLiveOutOfOrder: a live message whose offsets jump ahead of the last
// delivered is preceded by the missing publications, read from history;
// the late message is skipped when it comes.
func TestLiveOutOfOrder(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "order"})
	if err != nil {
		t.Fatal(err)
	}
	rec := brokertest.NewRecorder()
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()
	const ch = "ro"
	opts := broker.PublishOptions{HistorySize: 10}
	var pos protocol.StreamPosition
	for i := 1; i <= 4; i++ {
		if pos, _, err = b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(strconv.Itoa(i))}, opts); err != nil {
			t.Fatal(err)
		}
	}
	w := func(i int) []wirePub { return []wirePub{{Data: protocol.Data(strconv.Itoa(i))}} }
	ls := &liveState{synced: true, base: protocol.StreamPosition{Epoch: pos.Epoch, Offset: 1}}
	b.deliverLive(ch, ls, w(3), 3, pos.Epoch) // 2 is late
	b.deliverLive(ch, ls, w(2), 2, pos.Epoch) // here it is
	b.deliverLive(ch, ls, w(4), 4, pos.Epoch)
	var got []string
	for _, p := range rec.Pubs(ch) {
		got = append(got, fmt.Sprintf("%d:%s", p.Offset, p.Data))
	}
	if fmt.Sprint(got) != "[2:2 3:3 4:4]" {
		t.Fatalf("delivered %v, want [2:2 3:3 4:4]", got)
	}
	// A new epoch is delivered as it comes: the handler sees the change.
	b.deliverLive(ch, ls, w(9), 9, "OTHER")
	if ps := rec.Pubs(ch); len(ps) != 4 || ps[3].Offset != 9 {
		t.Fatalf("after an epoch change: %d delivered", len(ps))
	}
}

// TestLostRaceGrowsBatch: a node whose append loses the race to another
// node's (its view of the channel's head is behind) tries again with the
// publications that queued on it meanwhile in the same message: the
// channel gets one history message for them all, at the next offsets.
func TestLostRaceGrowsBatch(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var nodes [2]*Broker
	for i := range nodes {
		b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "grow"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = b.Close(context.Background()) }()
		nodes[i] = b
	}
	a, other := nodes[0], nodes[1]
	const ch, queued = "contended", 3
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}
	publish := func(b *Broker, data string) (protocol.StreamPosition, error) {
		pos, _, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(data)}, opts)
		return pos, err
	}
	if _, err := publish(a, `"a0"`); err != nil { // a knows the head: offset 1
		t.Fatal(err)
	}
	if _, err := publish(other, `"b0"`); err != nil { // offset 2, which a does not know
		t.Fatal(err)
	}

	// a's next append leads; it starts only once queued more have queued
	// behind it, so that its first try (at offset 2, taken) is refused
	// with them waiting.
	cs := a.acquire(ch)
	defer a.release(ch, cs)
	body, err := encodePub(&protocol.Publication{Channel: ch, Data: protocol.Data(`"a1"`)}, "")
	if err != nil {
		t.Fatal(err)
	}
	tok, _ := token(ch)
	type result struct {
		pos protocol.StreamPosition
		err error
	}
	first := make(chan result, 1)
	leading := make(chan struct{})
	go func() {
		pos, err := cs.group.DoGrowing(ctx, &pubReq{body: body, size: opts.HistorySize, ttl: opts.HistoryTTL}, a.takeBatch,
			func(batch []*pubReq, grow groupcommit.Grow[*pubReq]) ([]protocol.StreamPosition, error) {
				close(leading)
				for cs.group.Queued() < queued {
					if ctx.Err() != nil {
						return nil, ctx.Err()
					}
					time.Sleep(time.Millisecond)
				}
				return a.append(ch, tok, cs, batch, grow)
			})
		first <- result{pos, err}
	}()
	<-leading
	rest := make([]result, queued)
	var wg sync.WaitGroup
	for i := range queued {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pos, err := publish(a, fmt.Sprintf(`"a%d"`, i+2))
			rest[i] = result{pos, err}
		}()
	}
	wg.Wait()
	r := <-first
	if r.err != nil || r.pos.Offset != 3 {
		t.Fatalf("the leader's publication: %+v, %v; want offset 3", r.pos, r.err)
	}
	seen := map[uint64]bool{3: true}
	for i, r := range rest {
		if r.err != nil || r.pos.Offset < 4 || r.pos.Offset > 3+queued || seen[r.pos.Offset] {
			t.Fatalf("queued publication %d: %+v, %v; want a distinct offset of 4..%d", i, r.pos, r.err, 3+queued)
		}
		seen[r.pos.Offset] = true
	}
	m, err := a.streams[histStream].GetLastMsgForSubject(ctx, a.names.hist+tok)
	if err != nil {
		t.Fatal(err)
	}
	if m.Sequence != 3 || m.Header.Get(hdrCount) != strconv.Itoa(1+queued) || m.Header.Get(hdrOffset) != strconv.Itoa(3+queued) {
		t.Fatalf("last history message %d: count %q, last offset %q; want the third, carrying %d up to %d",
			m.Sequence, m.Header.Get(hdrCount), m.Header.Get(hdrOffset), 1+queued, 3+queued)
	}
	pubs, pos, err := a.History(ctx, ch, broker.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 3+queued || pos.Offset != 3+queued {
		t.Fatalf("history: %d publications up to %+v, %v; want %d", len(pubs), pos, err, 3+queued)
	}
}

// TestTailDeliveredFromHistory: the live copy of a channel's last
// publication never reaches two nodes (dropped as if the server had not
// sent it). No later publication shows the gap; the node that appended it
// notices that its live feed did not deliver it, delivers it from
// history and tells the other node, which does the same.
func TestTailDeliveredFromHistory(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	const ch = "tail"
	var nodes [2]*Broker
	var recs [2]*brokertest.Recorder
	for i := range nodes {
		b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "tail"})
		if err != nil {
			t.Fatal(err)
		}
		recs[i] = brokertest.NewRecorder()
		if err := b.Start(ctx, recs[i]); err != nil {
			t.Fatal(err)
		}
		defer func() { _ = b.Close(context.Background()) }()
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatal(err)
		}
		nodes[i] = b
	}
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute}
	first, _, err := nodes[0].Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"one"`)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, rec := range recs {
		brokertest.Eventually(t, 5*time.Second, "the first publication live", func() bool { return len(rec.Pubs(ch)) == 1 })
	}
	for _, b := range nodes {
		b.testDropLive.Store(1)
	}
	last, _, err := nodes[0].Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"two"`)}, opts)
	if err != nil {
		t.Fatal(err)
	}
	if last.Offset != first.Offset+1 {
		t.Fatalf("second publication at %d, want %d", last.Offset, first.Offset+1)
	}
	for i, rec := range recs {
		brokertest.Eventually(t, 10*time.Second, fmt.Sprintf("node %d: the dropped publication from history", i), func() bool {
			return len(rec.Pubs(ch)) == 2
		})
		if p := rec.Pubs(ch)[1]; p.Offset != last.Offset || string(p.Data) != `"two"` {
			t.Fatalf("node %d delivered offset %d %s, want %d \"two\"", i, p.Offset, p.Data, last.Offset)
		}
		if n := nodes[i].testDropLive.Load(); n != 0 {
			t.Fatalf("node %d: %d live messages still to drop: the publication never came live", i, n)
		}
	}
}

// jsServer runs an embedded NATS server with JetStream on 127.0.0.1 (a
// port of the kernel's choosing) until the test ends.
func jsServer(t *testing.T) *natsserver.Server {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
	return s
}
