package nats

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// TestIdempotencyPendingClaim: a publisher claims a key and appends the
// publication, then dies (or loses its server) before completing the
// record. A retry with the key, from another node, must return that
// publication's position as a duplicate, soon, and not publish again.
func TestIdempotencyPendingClaim(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := func() *Broker {
		b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "idem"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx, nil); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b
	}
	dead, retrier := start(), start()

	const ch = "orders"
	opts := broker.PublishOptions{HistorySize: 10, IdempotencyKey: "order-42", IdempotencyWindow: time.Minute}
	tok, err := token(ch)
	if err != nil {
		t.Fatal(err)
	}
	ktok := keyToken(opts.IdempotencyKey)
	// The dead node's publishOnce, up to the record's completion.
	if _, _, dup, err := dead.claim(ctx, dead.names.idem+tok+"."+ktok, dead.names.hist+tok, ktok, time.Minute); err != nil || dup {
		t.Fatalf("claim: dup %v, %v", dup, err)
	}
	first, err := dead.publish(ctx, ch, tok, &protocol.Publication{Channel: ch, Data: protocol.Data(`1`), Time: time.Now().UnixMilli()}, opts)
	if err != nil {
		t.Fatal(err)
	}

	began := time.Now()
	pos, dup, err := retrier.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`1`)}, opts)
	if err != nil || !dup || pos != first {
		t.Fatalf("retry: %+v dup %v, %v; want %+v dup", pos, dup, err, first)
	}
	if d := time.Since(began); d >= claimTimeout {
		t.Errorf("the retry waited %v, as long as the claim timeout", d)
	}
	pubs, cur, err := retrier.History(ctx, ch, broker.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 1 || cur != first {
		t.Fatalf("history: %d publications at %+v, %v; want 1 at %+v", len(pubs), cur, err, first)
	}
	// The record is complete now: the next retry answers at once.
	began = time.Now()
	if pos, dup, err := retrier.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`1`)}, opts); err != nil || !dup || pos != first {
		t.Fatalf("second retry: %+v dup %v, %v", pos, dup, err)
	}
	if d := time.Since(began); d > claimCheckAfter/2 {
		t.Errorf("second retry took %v", d)
	}
}

// countingHandler counts the publications a node is handed.
type countingHandler struct {
	mu   sync.Mutex
	data []string
}

func (h *countingHandler) HandlePublication(_ string, p *protocol.Publication, _ string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.data = append(h.data, string(p.Data))
}
func (h *countingHandler) HandleJoin(string, *protocol.ClientInfo)  {}
func (h *countingHandler) HandleLeave(string, *protocol.ClientInfo) {}
func (h *countingHandler) HandleControl([]byte)                     {}

func (h *countingHandler) got() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.data...)
}

// TestIdempotencyWithoutHistoryNodeDies: in a channel without history, a
// publisher's node dies once its publication is out, before it records
// the key as done. A retry with the key through another node, after the
// claim timeout, must not publish again: subscribers get the publication
// once, and the retry is told it is a duplicate.
func TestIdempotencyWithoutHistoryNodeDies(t *testing.T) {
	t.Parallel()
	s := jsServer(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := func(h broker.Handler) *Broker {
		b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "idemlive"})
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Start(ctx, h); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close(context.Background()) })
		return b
	}
	rec := &countingHandler{}
	subscriber, dead, retrier := start(rec), start(nil), start(nil)
	const ch = "alerts"
	if err := subscriber.Subscribe(ctx, ch); err != nil {
		t.Fatal(err)
	}
	opts := broker.PublishOptions{IdempotencyKey: "alert-7", IdempotencyWindow: time.Minute}

	dead.testDieAfterPublish = true
	if _, _, err := dead.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"alert"`)}, opts); !errors.Is(err, errTestDied) {
		t.Fatalf("the dying publisher: %v", err)
	}
	// Its node is gone: the retry comes after the claim timeout, when a
	// pending claim no longer holds retries back.
	if err := dead.Close(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(claimTimeout + time.Second)
	_, dup, err := retrier.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"alert"`)}, opts)
	if err != nil || !dup {
		t.Fatalf("retry after the publisher's death: dup %v, %v; want a duplicate", dup, err)
	}
	// A later publication marks the end of what the subscriber can get.
	if _, _, err := retrier.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`"end"`)}, broker.PublishOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for got := rec.got(); len(got) == 0 || got[len(got)-1] != `"end"`; got = rec.got() {
		if time.Now().After(deadline) {
			t.Fatalf("the subscriber got %q, not the end marker", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := rec.got(); len(got) != 2 || got[0] != `"alert"` {
		t.Fatalf("the subscriber got %q; want the alert once, then the end", got)
	}
}
