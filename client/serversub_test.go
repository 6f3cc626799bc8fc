package client_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
)

// Server-side subscriptions (the token's channels claim) keep their
// position across reconnects: what was published while the client was
// away arrives after the reconnect, in order, once, before live messages.
func TestServerSideSubscriptionRecovers(t *testing.T) {
	t.Parallel()
	addr := server(t, nil)
	tok, err := auth.MintHS256(secret, auth.MintOptions{User: "carol", Channels: []string{"feed"}})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu        sync.Mutex
		got       []string
		events    []client.SubscribedEvent
		connected int
	)
	lost := make(chan struct{})
	resume := make(chan struct{})
	c, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
		Token: tok, ReconnectBase: time.Millisecond, ReconnectMax: 10 * time.Millisecond,
		OnServerSubscribed: func(ev client.SubscribedEvent) {
			mu.Lock()
			events = append(events, ev)
			mu.Unlock()
		},
		OnServerPublication: func(p client.Publication) {
			mu.Lock()
			got = append(got, fmt.Sprintf("%s@%d", p.Data, p.Offset))
			mu.Unlock()
		},
		OnState: func(s client.State) {
			mu.Lock()
			if s == client.StateConnected {
				connected++
			}
			n := connected
			mu.Unlock()
			if s == client.StateConnecting && n == 1 {
				// The first connection ended: hold the reconnect until
				// the test has published what the client must recover.
				close(lost)
				<-resume
			}
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(got)
	}
	for i := 1; i <= 3; i++ {
		apiPublish(t, addr, "feed", fmt.Sprint(i))
	}
	waitFor(t, 10*time.Second, func() bool { return count() == 3 })

	apiDisconnect(t, addr, "carol", 4000)
	select {
	case <-lost:
	case <-time.After(10 * time.Second):
		t.Fatal("the connection did not end")
	}
	for i := 4; i <= 13; i++ {
		apiPublish(t, addr, "feed", fmt.Sprint(i))
	}
	close(resume)
	waitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return connected == 2
	})
	apiPublish(t, addr, "feed", "14")
	waitFor(t, 10*time.Second, func() bool { return count() >= 14 })
	// A marker published once 14 arrived comes after anything the
	// reconnect could still deliver twice: once it is in, every duplicate
	// would be too.
	apiPublish(t, addr, "feed", "15")
	waitFor(t, 10*time.Second, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return slices.ContainsFunc(got, func(s string) bool { return strings.HasPrefix(s, "15@") })
	})

	mu.Lock()
	defer mu.Unlock()
	var want []string
	for i := 1; i <= 15; i++ {
		want = append(want, fmt.Sprintf("%d@%d", i, i))
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Fatalf("publications\n got %v\nwant %v", got, want)
	}
	// Connected at offset 0 (nothing to recover), then reconnected from 3.
	if len(events) != 2 || events[0].WasRecovering || !events[1].WasRecovering || !events[1].Recovered || events[1].Position.Offset != 13 {
		t.Fatalf("subscribed events %+v", events)
	}
}
