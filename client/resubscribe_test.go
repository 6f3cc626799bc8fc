package client_test

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// flakyBroker is the memory broker whose next History calls fail, or
// block, as a clustered broker's do while it elects a leader.
type flakyBroker struct {
	broker.Broker
	fail  atomic.Int32  // History calls still to fail
	block atomic.Int32  // History calls still to block
	hold  time.Duration // how long a blocked call waits
	calls atomic.Int32  // History calls made
	done  chan struct{} // closed when the test ends
}

func (f *flakyBroker) History(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, broker.StreamPosition, error) {
	f.calls.Add(1)
	if f.fail.Add(-1) >= 0 {
		return nil, broker.StreamPosition{}, errors.New("injected: no leader")
	}
	if f.block.Add(-1) >= 0 {
		select {
		case <-time.After(f.hold):
		case <-f.done:
		}
	}
	return f.Broker.History(ctx, ch, opts)
}

// TestResubscribeRetries: after a reconnect, the resubscription of a
// channel meets a broker that fails (error 100, temporary) or does not
// answer before the client's timeout. The subscription must come back
// and recover, not end or stay behind on a live connection.
func TestResubscribeRetries(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name        string
		fail, block int32
	}{
		{"temporary error", 2, 0},
		{"no answer in time", 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			fb := &flakyBroker{Broker: memory.New(memory.Config{}), hold: 1500 * time.Millisecond, done: make(chan struct{})}
			t.Cleanup(func() { close(fb.done) })
			addr := server(t, func(cfg *herald.Config) { cfg.Broker = fb })
			cl, err := client.Dial(context.Background(), "ws://"+addr+"/ws", &client.Options{
				Token: mint(t, "u", time.Hour), ReconnectBase: 50 * time.Millisecond, ReconnectMax: 200 * time.Millisecond,
				DialTimeout: 500 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			var (
				mu     sync.Mutex
				got    []uint64
				events []client.SubscribedEvent
				ended  error
			)
			_, err = cl.Subscribe(context.Background(), "news", client.SubscribeOptions{
				OnPublication: func(p client.Publication) {
					mu.Lock()
					got = append(got, p.Offset)
					mu.Unlock()
				},
				OnSubscribed: func(e client.SubscribedEvent) {
					mu.Lock()
					events = append(events, e)
					mu.Unlock()
				},
				OnUnsubscribed: func(err error) {
					mu.Lock()
					ended = err
					mu.Unlock()
				},
			})
			if err != nil {
				t.Fatal(err)
			}
			publish := func(data string) {
				t.Helper()
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				defer cancel()
				if _, err := cl.Publish(ctx, "news", []byte(data), nil); err != nil {
					t.Fatal(err)
				}
			}
			publish(`1`)
			fb.fail.Store(c.fail)
			fb.block.Store(c.block)
			apiDisconnect(t, addr, "u", 4000) // reconnect
			// Published while the client is away or resubscribing.
			waitFor(t, 5*time.Second, func() bool { return fb.calls.Load() >= 2 })
			publish(`2`)
			waitFor(t, 10*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) == 2 || ended != nil
			})
			mu.Lock()
			defer mu.Unlock()
			if ended != nil {
				t.Fatalf("the subscription ended: %v", ended)
			}
			if got[0] != 1 || got[1] != 2 {
				t.Fatalf("offsets %v", got)
			}
			if last := events[len(events)-1]; !last.WasRecovering || !last.Recovered {
				t.Fatalf("last subscribe %+v", last)
			}
		})
	}
}

func waitFor(t *testing.T, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
