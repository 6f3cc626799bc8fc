package herald_test

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/protocol"
)

// closeWatch records calls that reach a broker or presence store after the
// server closed its broker: the cleanup of a session must come before.
type closeWatch struct {
	closed   atomic.Bool
	closedCh chan struct{}
	mu       sync.Mutex
	late     []string
	removes  atomic.Int64
}

func newCloseWatch() *closeWatch { return &closeWatch{closedCh: make(chan struct{})} }

func (w *closeWatch) check(op string) {
	if w.closed.Load() {
		w.mu.Lock()
		w.late = append(w.late, op)
		w.mu.Unlock()
	}
}

func (w *closeWatch) lateCalls() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.late...)
}

type watchedBroker struct {
	broker.Broker
	w *closeWatch
}

func (b *watchedBroker) Subscribe(ctx context.Context, ch string) error {
	b.w.check("Subscribe")
	return b.Broker.Subscribe(ctx, ch)
}

func (b *watchedBroker) Unsubscribe(ctx context.Context, ch string) error {
	b.w.check("Unsubscribe")
	return b.Broker.Unsubscribe(ctx, ch)
}

func (b *watchedBroker) PublishLeave(ctx context.Context, ch string, info *protocol.ClientInfo) error {
	b.w.check("PublishLeave")
	return b.Broker.PublishLeave(ctx, ch, info)
}

func (b *watchedBroker) Close(ctx context.Context) error {
	if b.w.closed.CompareAndSwap(false, true) {
		close(b.w.closedCh)
	}
	return b.Broker.Close(ctx)
}

type watchedPresence struct {
	broker.PresenceStore
	w *closeWatch
}

func (p *watchedPresence) RemovePresence(ctx context.Context, ch, client string) error {
	p.w.check("RemovePresence")
	p.w.removes.Add(1)
	return p.PresenceStore.RemovePresence(ctx, ch, client)
}

// watchedServer starts a dev-config server whose broker and presence store
// report calls after the broker's Close.
func watchedServer(t *testing.T, drain time.Duration) (*testServer, *closeWatch) {
	t.Helper()
	w := newCloseWatch()
	cfg := devConfig()
	cfg.Broker = &watchedBroker{Broker: memory.New(memory.Config{}), w: w}
	cfg.Presence = &watchedPresence{PresenceStore: memory.NewPresenceStore(nil), w: w}
	cfg.DrainTimeout = drain
	return startServer(t, cfg), w
}

// subscribedConn opens a raw connection subscribed to ch (a channel with
// presence and join/leave in the dev config).
func subscribedConn(t *testing.T, ts *testServer, ch string) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, _, _, err := ws.Dialer{}.Dial(ctx, ts.wsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	for _, cmd := range []string{`{"id":1,"connect":{}}`, `{"id":2,"subscribe":{"channel":"` + ch + `"}}`} {
		if err := wsutil.WriteClientText(nc, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
	}
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for replies := 0; replies < 2; {
		data, err := wsutil.ReadServerText(nc)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		var m protocol.ServerMessage
		if err := protocol.JSON.DecodeServerMessage(data, &m); err != nil {
			t.Fatal(err)
		}
		if m.Error != nil {
			t.Fatalf("command %d: %v", m.ID, m.Error)
		}
		if m.ID != 0 {
			replies++
		}
	}
	_ = nc.SetReadDeadline(time.Time{})
	return nc
}

// TestShutdownWaitsForClosingSessions holds connections whose close the
// transport has begun (the peer hung up) but not yet reported when the
// drain window ends. Shutdown must still run their cleanup (leave,
// presence removal, broker unsubscribe) before it closes the broker; before
// it waited for every cleanup, it closed the broker first and the cleanup
// ran against a closed broker, racing its own WaitGroup.
func TestShutdownWaitsForClosingSessions(t *testing.T) {
	ts, w := watchedServer(t, 50*time.Millisecond)
	const n = 10
	conns := make([]net.Conn, n)
	for i := range conns {
		conns[i] = subscribedConn(t, ts, "room:shutdown")
	}
	node := ts.NodeID()
	var held atomic.Int64
	herald.SetTestHookSessionClose(func(id string) {
		if id != node {
			return
		}
		held.Add(1)
		// Report the close only once the broker is closed, or after a
		// second if the server waits for this report first (as it must).
		select {
		case <-w.closedCh:
		case <-time.After(time.Second):
		}
	})
	t.Cleanup(func() { herald.SetTestHookSessionClose(nil) })
	for _, nc := range conns {
		nc.Close()
	}
	eventually(t, 10*time.Second, "every close begun", func() bool { return held.Load() == n })

	ts.stop(t)
	// Each closed session removes its presence entry once, at some point:
	// wait for all of them, then see whether any came after the close.
	eventually(t, 10*time.Second, "every session's presence removed", func() bool { return w.removes.Load() >= n })
	if late := w.lateCalls(); len(late) > 0 {
		t.Fatalf("%d broker calls after the broker was closed: %v", len(late), late)
	}
}

// TestShutdownWhileConnectionsClose shuts servers down while their clients
// hang up, many times: no session's cleanup may reach the broker after it
// closed, and (under -race) no goroutine may be added to a WaitGroup that
// is being waited for.
func TestShutdownWhileConnectionsClose(t *testing.T) {
	t.Parallel()
	for round := 0; round < 10; round++ {
		ts, w := watchedServer(t, 5*time.Millisecond)
		conns := make([]net.Conn, 40)
		for i := range conns {
			conns[i] = subscribedConn(t, ts, "room:churn")
		}
		var wg sync.WaitGroup
		for _, nc := range conns {
			wg.Add(1)
			go func() {
				defer wg.Done()
				nc.Close()
			}()
		}
		ts.stop(t)
		wg.Wait()
		if late := w.lateCalls(); len(late) > 0 {
			t.Fatalf("round %d: %d broker calls after the broker was closed: %v", round, len(late), late)
		}
	}
}
