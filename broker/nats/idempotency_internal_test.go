package nats

import (
	"context"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// TestIdempotencyPendingClaim: a publisher claims a key and appends the
// publication, then dies (or loses its server) before completing the
// record. A retry with the key, from another node, must return that
// publication's position as a duplicate, soon, and not publish again.
func TestIdempotencyPendingClaim(t *testing.T) {
	t.Parallel()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: t.TempDir(), NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("server not ready")
	}
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
