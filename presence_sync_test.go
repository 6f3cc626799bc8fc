package herald_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// outageBroker is a memory broker whose connection a test can cut: while
// down, join and leave events are lost, and the handler is told when the
// connection goes and comes back, as the NATS and Redis brokers do.
type outageBroker struct {
	broker.Broker
	h    broker.Handler
	down atomic.Bool
}

func (b *outageBroker) Start(ctx context.Context, h broker.Handler) error {
	b.h = h
	return b.Broker.Start(ctx, h)
}

func (b *outageBroker) setDown(down bool) {
	b.down.Store(down)
	oh := b.h.(broker.OutageHandler)
	if down {
		oh.HandleBrokerDown()
	} else {
		oh.HandleBrokerUp()
	}
}

func (b *outageBroker) PublishJoin(ctx context.Context, ch string, info *protocol.ClientInfo) error {
	if b.down.Load() {
		return fmt.Errorf("test: join lost: %w", broker.ErrUnavailable)
	}
	return b.Broker.PublishJoin(ctx, ch, info)
}

func (b *outageBroker) PublishLeave(ctx context.Context, ch string, info *protocol.ClientInfo) error {
	if b.down.Load() {
		return fmt.Errorf("test: leave lost: %w", broker.ErrUnavailable)
	}
	return b.Broker.PublishLeave(ctx, ch, info)
}

// TestPresenceAcrossBrokerOutage: a subscriber with join/leave is told
// presence_stale when the node loses its broker, misses a join and a
// leave meanwhile, and gets presence_sync with the channel's members once
// the broker is back.
func TestPresenceAcrossBrokerOutage(t *testing.T) {
	t.Parallel()
	b := &outageBroker{Broker: memory.New(memory.Config{})}
	cfg := devConfig()
	cfg.Broker = b
	ts := startServer(t, cfg)

	var mu sync.Mutex
	var events []string
	var synced map[string]client.ClientInfo
	record := func(e string) {
		mu.Lock()
		events = append(events, e)
		mu.Unlock()
	}
	alice := dial(t, ts, &client.Options{Token: token(t, "alice", 0)})
	if _, err := alice.Subscribe(ctxT(t), "room", client.SubscribeOptions{
		OnPublication:   func(client.Publication) {},
		OnJoin:          func(i client.ClientInfo) { record("join " + i.User) },
		OnLeave:         func(i client.ClientInfo) { record("leave " + i.User) },
		OnPresenceStale: func() { record("stale") },
		OnPresenceSync: func(m map[string]client.ClientInfo) {
			mu.Lock()
			synced = m
			mu.Unlock()
			record("sync")
		},
	}); err != nil {
		t.Fatal(err)
	}
	carol := dial(t, ts, &client.Options{Token: token(t, "carol", 0)})
	if _, err := carol.Subscribe(ctxT(t), "room", client.SubscribeOptions{OnPublication: func(client.Publication) {}}); err != nil {
		t.Fatal(err)
	}
	has := func(e string) func() bool {
		return func() bool {
			mu.Lock()
			defer mu.Unlock()
			return slices.Contains(events, e)
		}
	}
	eventually(t, 5*time.Second, "carol's join", has("join carol"))

	b.setDown(true)
	eventually(t, 5*time.Second, "presence_stale", has("stale"))
	// Bob joins and Carol leaves while the broker is down: both events
	// are lost.
	bob := dial(t, ts, &client.Options{Token: token(t, "bob", 0)})
	if _, err := bob.Subscribe(ctxT(t), "room", client.SubscribeOptions{OnPublication: func(client.Publication) {}}); err != nil {
		t.Fatal(err)
	}
	carol.Close()
	eventually(t, 5*time.Second, "carol gone from presence", func() bool {
		m, err := alice.Presence(ctxT(t), "room")
		return err == nil && len(m) == 2
	})

	b.setDown(false)
	eventually(t, 5*time.Second, "presence_sync", has("sync"))
	mu.Lock()
	defer mu.Unlock()
	users := map[string]bool{}
	for id, info := range synced {
		if id != info.Client {
			t.Errorf("presence_sync key %q for client %q", id, info.Client)
		}
		users[info.User] = true
	}
	if len(synced) != 2 || !users["alice"] || !users["bob"] {
		t.Fatalf("presence_sync members %v, want alice and bob", synced)
	}
	if slices.Contains(events, "join bob") || slices.Contains(events, "leave carol") {
		t.Fatalf("events %v: the outage should have lost bob's join and carol's leave", events)
	}
	if i, j := slices.Index(events, "stale"), slices.Index(events, "sync"); i > j {
		t.Fatalf("events %v: stale must come before sync", events)
	}
}
