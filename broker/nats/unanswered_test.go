package nats_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/faultnet"
	"github.com/heraldhq/herald/protocol"
)

// TestUnansweredAppendStoredOnce: on a cluster, a publish whose append
// gets no answer (here the network between the broker and NATS goes
// silent, as when the stream's leader dies with the request in hand) is
// sent again, unchanged, until the stream answers. When the network
// comes back the first send and its copies all reach the stream: the
// publication is stored once, at the next offset, and the publish
// returns that position rather than an error.
func TestUnansweredAppendStoredOnce(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	proxy, err := faultnet.New(strings.TrimPrefix(urls[0], "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	var resent atomic.Int64
	log := slog.New(countingHandler{sub: "append unanswered", n: &resent})
	b := newBroker(t, natsbroker.Config{Servers: []string{"nats://" + proxy.Addr()}, Prefix: randomPrefix("unans"),
		Replicas: 3, Logger: log, LeaderTimeout: 2 * time.Second}, nil)
	ch := "unanswered"
	last := mustPublish(t, b, ch, 1, withHistory)

	proxy.SetFaults(faultnet.Faults{Blackhole: true})
	type result struct {
		pos protocol.StreamPosition
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pos, _, err := b.Publish(c, ch, &protocol.Publication{Data: protocol.Data(`{"n":2}`)}, withHistory)
		done <- result{pos, err}
	}()
	brokertest.Eventually(t, 20*time.Second, "the append sent again", func() bool { return resent.Load() >= 2 })
	proxy.SetFaults(faultnet.Faults{})
	r := <-done
	if r.err != nil {
		t.Fatalf("publish after the network came back: %v", r.err)
	}
	if r.pos.Epoch != last.Epoch || r.pos.Offset != last.Offset+1 {
		t.Fatalf("stored at %+v, want offset %d of epoch %s", r.pos, last.Offset+1, last.Epoch)
	}
	next := mustPublish(t, b, ch, 3, withHistory)
	if next.Offset != last.Offset+2 {
		t.Fatalf("next publication at offset %d, want %d", next.Offset, last.Offset+2)
	}
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 3 || pos != next {
		t.Fatalf("history holds %d publications up to %+v, want 3 up to %+v", len(pubs), pos, next)
	}
	for i, p := range pubs {
		if want := `{"n":` + string(rune('1'+i)) + `}`; p.Offset != last.Offset+uint64(i) || string(p.Data) != want {
			t.Fatalf("publication %d: offset %d data %s, want %d %s", i, p.Offset, p.Data, last.Offset+uint64(i), want)
		}
	}
	t.Logf("the append was sent %d times more", resent.Load())
}
