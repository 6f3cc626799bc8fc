package herald_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
)

// TestFirstSubscriptionAllocatedWithSession: a WebSocket connection's first
// subscription is the one allocated with its session, and it is never
// taken again: after it ends, the hub or a broker callback may still hold
// it, so a later subscription (to another channel or the same) is a new
// one; publications reach each. Client ids stay distinct.
func TestFirstSubscriptionAllocatedWithSession(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	got := make(chan string, 16)
	onPub := func(p client.Publication) {
		var v string
		_ = json.Unmarshal(p.Data, &v)
		got <- v
	}
	expect := func(want string) {
		t.Helper()
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("received %q, want %q", v, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not received", want)
		}
	}
	c := dial(t, ts, nil)
	other := dial(t, ts, nil)
	if c.ID() == other.ID() || len(c.ID()) != 16 {
		t.Fatalf("client ids %q and %q: want two distinct ids of 16 characters", c.ID(), other.ID())
	}
	first := func() string {
		t.Helper()
		ch, ok := ts.FirstSubscription(c.ID())
		if !ok {
			t.Fatalf("connection %q not found", c.ID())
		}
		return ch
	}
	if ch := first(); ch != "" {
		t.Fatalf("before any subscription, %q is the first", ch)
	}
	a, err := c.Subscribe(ctxT(t), "a", client.SubscribeOptions{OnPublication: onPub})
	if err != nil {
		t.Fatal(err)
	}
	if ch := first(); ch != "a" {
		t.Fatalf("first subscription %q, want a", ch)
	}
	ts.publish(t, "a", "a1")
	expect("a1")
	if err := a.Unsubscribe(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"b", "a"} {
		if _, err := c.Subscribe(ctxT(t), ch, client.SubscribeOptions{OnPublication: onPub}); err != nil {
			t.Fatal(err)
		}
		if f := first(); f != "" {
			t.Fatalf("after subscribing to %s, %q is the first subscription again", ch, f)
		}
		ts.publish(t, ch, ch+"2")
		expect(ch + "2")
	}
}
