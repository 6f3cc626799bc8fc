package brokertest

import (
	"math"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
)

// testCursors: a cursor is per user and channel, moves only forward in
// one epoch, is replaced by another epoch's position, is seen by every
// node, and expires after its ttl.
func testCursors(t *testing.T, s Setup) {
	b, _ := start(t, s)
	other := b
	if !s.SingleNode {
		other, _ = start(t, s)
	}
	ch := Channel(t, "cursor")
	c := ctx(t)
	if _, ok, err := b.Cursor(c, "u1", ch); err != nil || ok {
		t.Fatalf("Cursor before any write: ok %v, err %v", ok, err)
	}
	set := func(n broker.Broker, user string, pos broker.StreamPosition, ttl time.Duration) {
		t.Helper()
		if err := n.SetCursor(c, user, ch, pos, ttl); err != nil {
			t.Fatalf("SetCursor %s %+v: %v", user, pos, err)
		}
	}
	want := func(n broker.Broker, user string, pos broker.StreamPosition) {
		t.Helper()
		got, ok, err := n.Cursor(c, user, ch)
		if err != nil || !ok || got != pos {
			t.Fatalf("Cursor %s = %+v, %v, %v; want %+v", user, got, ok, err, pos)
		}
	}
	set(b, "u1", broker.StreamPosition{Epoch: "e1", Offset: 5}, time.Minute)
	want(other, "u1", broker.StreamPosition{Epoch: "e1", Offset: 5})
	set(other, "u1", broker.StreamPosition{Epoch: "e1", Offset: 3}, time.Minute)
	want(b, "u1", broker.StreamPosition{Epoch: "e1", Offset: 5})
	set(other, "u1", broker.StreamPosition{Epoch: "e1", Offset: 9}, time.Minute)
	want(b, "u1", broker.StreamPosition{Epoch: "e1", Offset: 9})
	set(b, "u1", broker.StreamPosition{Epoch: "e2", Offset: 1}, time.Minute)
	want(other, "u1", broker.StreamPosition{Epoch: "e2", Offset: 1})
	// Offsets compare as numbers, whatever their number of digits.
	set(b, "u1", broker.StreamPosition{Epoch: "e2", Offset: math.MaxUint64}, time.Minute)
	set(b, "u1", broker.StreamPosition{Epoch: "e2", Offset: 99}, time.Minute)
	want(b, "u1", broker.StreamPosition{Epoch: "e2", Offset: math.MaxUint64})
	// Per user.
	if _, ok, err := b.Cursor(c, "u2", ch); err != nil || ok {
		t.Fatalf("another user's cursor: ok %v, err %v", ok, err)
	}
	// Expiry.
	set(b, "u3", broker.StreamPosition{Epoch: "e1", Offset: 4}, 500*time.Millisecond)
	want(b, "u3", broker.StreamPosition{Epoch: "e1", Offset: 4})
	Eventually(t, 10*time.Second, "the cursor to expire", func() bool {
		_, ok, err := other.Cursor(c, "u3", ch)
		return err == nil && !ok
	})
	// Written again after it expired.
	set(b, "u3", broker.StreamPosition{Epoch: "e1", Offset: 2}, time.Minute)
	want(other, "u3", broker.StreamPosition{Epoch: "e1", Offset: 2})
}
