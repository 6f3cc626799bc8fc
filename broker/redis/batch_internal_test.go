package redis

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/protocol"
)

// TestBatchedPublish holds a channel's publish group busy until n
// publications queue behind it, so that one script call appends them: one
// pub/sub message of kind b carries them all, History returns each with
// its own offset, and each publisher gets its own offset, the one
// publication with a key already recorded a duplicate.
func TestBatchedPublish(t *testing.T) {
	t.Parallel()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	raw := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer raw.Close()
	if err := raw.Ping(ctx).Err(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no Redis at %s: %v", addr, err)
		}
		t.Skipf("no Redis at %s (set HERALD_TEST_REDIS): %v (skipping; with CI=true this fails)", addr, err)
	}
	prefix := brokertest.Channel(t, "batch")
	prefix = "heraldtest-" + prefix[2:14]
	b, err := New(Config{Addrs: []string{addr}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	rec := brokertest.NewRecorder()
	if err := b.Start(ctx, rec); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = b.Close(context.Background()) }()
	const ch, n = "hot", 20
	k := keysFor(prefix, ch)
	defer raw.Del(context.Background(), k.meta(), k.stream(), k.idem("a"), k.idem("b"))
	if err := b.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	ps := raw.Subscribe(ctx, k.pubsub())
	defer ps.Close()
	if _, err := ps.Receive(ctx); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 15, HistoryTTL: time.Minute}
	// Key "a" is recorded before the batch; key "b" is published twice
	// inside it.
	first, _, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"a"`)}, withKey(opts, "a"))
	if err != nil {
		t.Fatal(err)
	}
	if m, err := ps.ReceiveMessage(ctx); err != nil || !strings.HasPrefix(m.Payload, "p1:") {
		t.Fatalf("first message %v, %v", m, err)
	}

	// Blockers take every in-flight slot: the first until the n
	// publications queue, the second (with two slots) until they are done.
	blocked := make(chan error, 1)
	leading := make(chan struct{})
	go func() {
		_, err := b.appends.Do(ctx, ch, &pubReq{}, takeBatch, func([]*pubReq) ([]pubResult, error) {
			close(leading)
			for b.appends.Queued(ch) < n {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				time.Sleep(time.Millisecond)
			}
			return []pubResult{{}}, nil
		})
		blocked <- err
	}()
	<-leading
	if appendsInFlight > 2 {
		t.Fatalf("the test holds at most 2 in-flight slots, appendsInFlight is %d", appendsInFlight)
	}
	release2, blocked2, leading2 := make(chan struct{}), make(chan error, 1), make(chan struct{})
	if appendsInFlight == 1 {
		close(leading2)
		blocked2 <- nil
	} else {
		go func() {
			_, err := b.appends.Do(ctx, ch, &pubReq{}, takeBatch, func([]*pubReq) ([]pubResult, error) {
				close(leading2)
				<-release2
				return []pubResult{{}}, nil
			})
			blocked2 <- err
		}()
	}
	<-leading2
	type result struct {
		pos broker.StreamPosition
		dup bool
	}
	res := make([]result, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			o := opts
			switch i {
			case 0:
				o = withKey(o, "a")
			case 1, 2:
				o = withKey(o, "b")
			}
			p, dup, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, min(i, 2)))}, o)
			if err != nil {
				t.Error(err)
			}
			res[i] = result{p, dup}
		}()
	}
	wg.Wait()
	close(release2)
	for _, c := range []chan error{blocked, blocked2} {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	// Stored: 1 before, then n-2 (key a is a duplicate, key b once).
	const top = n - 1
	if !res[0].dup || res[0].pos != first {
		t.Fatalf("key a in the batch: %+v, want a duplicate of %+v", res[0], first)
	}
	if res[1].dup == res[2].dup || res[1].pos != res[2].pos {
		t.Fatalf("key b twice in the batch: %+v and %+v, want one duplicate of the other", res[1], res[2])
	}
	seen := make(map[uint64]bool)
	for i, r := range res[1:] {
		if r.dup {
			continue
		}
		if r.pos.Offset < 2 || r.pos.Offset > top || seen[r.pos.Offset] || r.pos.Epoch != first.Epoch {
			t.Fatalf("publisher %d got %+v: not a distinct offset of 2..%d", i+1, r.pos, top)
		}
		seen[r.pos.Offset] = true
	}
	m, err := ps.ReceiveMessage(ctx)
	if err != nil {
		t.Fatal(err)
	}
	lm, err := decodeLive(ch, m.Payload)
	if err != nil || lm.kind != kindBatch || len(lm.pubs) != top-1 || lm.pubs[0].Offset != 2 {
		t.Fatalf("live message: kind %c, %d publications, %v; want one batch of %d from 2", lm.kind, len(lm.pubs), err, top-1)
	}
	pubs, cur, err := b.History(ctx, ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Offset != top || len(pubs) != 15 || pubs[0].Offset != top-14 {
		t.Fatalf("history: position %+v, %d publications", cur, len(pubs))
	}
	for i, p := range pubs {
		if p.Offset != top-14+uint64(i) || string(p.Data) != string(lm.pubs[p.Offset-2].Data) {
			t.Fatalf("history %d: offset %d data %s", i, p.Offset, p.Data)
		}
	}
	brokertest.Eventually(t, 10*time.Second, "live deliveries", func() bool { return len(rec.Pubs(ch)) >= top })
	for i, p := range rec.Pubs(ch) {
		if p.Offset != uint64(i+1) {
			t.Fatalf("live %d: offset %d", i, p.Offset)
		}
	}

	big := strings.Repeat("x", maxBatchBytes/3)
	for _, c := range []struct {
		pending []*pubReq
		want    int
	}{
		{[]*pubReq{{}, {}, {}}, 3},
		{[]*pubReq{{}, {size: 3}, {}}, 1},
		{[]*pubReq{{}, {ttl: 5}}, 1},
		{[]*pubReq{{body: big}, {body: big}, {body: big}, {body: big}}, 3},
		{[]*pubReq{{body: big + big + big + big}, {}}, 1},
		{make([]*pubReq, maxBatch+5), maxBatch},
	} {
		for i := range c.pending {
			if c.pending[i] == nil {
				c.pending[i] = &pubReq{}
			}
		}
		if got := takeBatch(c.pending); got != c.want {
			t.Errorf("takeBatch of %d: %d, want %d", len(c.pending), got, c.want)
		}
	}
}

func withKey(o broker.PublishOptions, key string) broker.PublishOptions {
	o.IdempotencyKey, o.IdempotencyWindow = key, time.Minute
	return o
}
