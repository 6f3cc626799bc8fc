package memory_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/protocol"
)

func TestConformance(t *testing.T) {
	brokertest.Run(t, brokertest.Setup{
		NewNode:     func(*testing.T) broker.Broker { return memory.New(memory.Config{}) },
		SingleNode:  true,
		NewPresence: func(*testing.T) broker.PresenceStore { return memory.NewPresenceStore(nil) },
	})
}

func TestHistoryMemoryBound(t *testing.T) {
	b := memory.New(memory.Config{MaxBytes: 64 * 1024 * 64}) // 64 KiB per shard
	if err := b.Start(context.Background(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Hour}
	data := &protocol.Publication{Data: protocol.Data(strings.Repeat("x", 1000))}
	first, _, err := b.Publish(context.Background(), "c0", data, opts)
	if err != nil {
		t.Fatal(err)
	}
	// 10 MiB into 2,000 channels: far past the 4 MiB bound.
	for i := 1; i < 2000; i++ {
		for j := 0; j < 5; j++ {
			if _, _, err := b.Publish(context.Background(), fmt.Sprintf("c%d", i), data, opts); err != nil {
				t.Fatal(err)
			}
		}
	}
	before := first
	before.Offset = 0
	pubs0, pos, err := b.History(context.Background(), "c0", broker.HistoryOptions{Since: &before, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs0) != 0 || broker.Recovered(before, pubs0, pos) {
		t.Fatal("the least recently used stream kept its history past the memory bound")
	}
	if pos != first {
		t.Fatalf("the stream's position changed from %+v to %+v: live delivery would see a gap", first, pos)
	}
	next, _, err := b.Publish(context.Background(), "c0", data, opts)
	if err != nil {
		t.Fatal(err)
	}
	if next.Epoch != first.Epoch || next.Offset != first.Offset+1 {
		t.Fatalf("publish after eviction got %+v, want the next offset of %+v", next, first)
	}
	pubs, _, err := b.History(context.Background(), "c1999", broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 5 {
		t.Fatalf("the newest stream lost history: %d publications", len(pubs))
	}
}

func TestIdempotencyKeysExpire(t *testing.T) {
	now := time.Unix(1000, 0)
	b := memory.New(memory.Config{Now: func() time.Time { return now }})
	if err := b.Start(context.Background(), brokertest.NewRecorder()); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{HistorySize: 10, IdempotencyWindow: time.Minute}
	publish := func() bool {
		t.Helper()
		_, dup, err := b.Publish(context.Background(), "c", &protocol.Publication{Data: protocol.Data("1")}, opts)
		if err != nil {
			t.Fatalf("publish with key %s: %v", opts.IdempotencyKey, err)
		}
		return dup
	}
	for i := 0; i < 1000; i++ {
		opts.IdempotencyKey = fmt.Sprint(i)
		if publish() {
			t.Fatalf("key %d reported duplicate", i)
		}
	}
	opts.IdempotencyKey = "5"
	if !publish() {
		t.Fatal("key within its window not deduplicated")
	}
	now = now.Add(2 * time.Minute)
	if publish() {
		t.Fatal("key deduplicated after its window")
	}
}
