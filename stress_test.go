package herald_test

import (
	"context"
	"encoding/json"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"

	"github.com/heraldhq/herald/protocol"
)

// TestStressConnectionChurn opens and closes thousands of connections
// while a channel is broadcast to: each connection must have received every
// publication from its subscribe position to the moment it left, with no
// gap, or have been disconnected by the server.
func TestStressConnectionChurn(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"epoll", "goroutine"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			cfg := devConfig()
			cfg.Engine = engine
			cfg.Namespaces[0].JoinLeave = false
			cfg.Namespaces[0].Presence = false
			ts := startServer(t, cfg)
			const total, concurrent = 1500, 100
			stop := make(chan struct{})
			var pubWG sync.WaitGroup
			var published atomic.Int64
			for p := 0; p < 3; p++ {
				pubWG.Add(1)
				go func() {
					defer pubWG.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						ts.publish(t, "churn", seqData(int(published.Add(1))))
					}
				}()
			}
			var checked, disconnected, msgs atomic.Int64
			sem := make(chan struct{}, concurrent)
			var wg sync.WaitGroup
			for i := 0; i < total; i++ {
				sem <- struct{}{}
				wg.Add(1)
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					n, cut, err := churnClient(ts, time.Duration(20+rand.IntN(100))*time.Millisecond)
					if err != nil {
						t.Error(err)
						return
					}
					checked.Add(1)
					msgs.Add(int64(n))
					if cut {
						disconnected.Add(1)
					}
				}()
			}
			wg.Wait()
			close(stop)
			pubWG.Wait()
			t.Logf("%s: %d connections checked, %d publications, %d deliveries verified, %d disconnected by the server",
				engine, checked.Load(), published.Load(), msgs.Load(), disconnected.Load())
			if checked.Load() != total {
				t.Fatalf("%d of %d connections checked", checked.Load(), total)
			}
		})
	}
}

// churnClient connects, subscribes, reads for a while and checks that the
// offsets it got are contiguous from the subscribe position. cut reports a
// server disconnect: a disconnect push or close frame with 3002 (slow), the
// only reason the server has to end these connections, or the socket ending
// after that push. A connection that goes quiet (the publishers never stop
// while it reads) or ends without saying why is an error: a stalled or
// crashed server must not pass as one that disconnected slow clients.
func churnClient(ts *testServer, stay time.Duration) (n int, cut bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	nc, _, _, err := ws.Dial(ctx, ts.wsURL())
	if err != nil {
		return 0, false, err
	}
	defer nc.Close()
	if err := wsutil.WriteClientText(nc, []byte(`{"id":1,"connect":{}}`)); err != nil {
		return 0, false, err
	}
	if err := wsutil.WriteClientText(nc, []byte(`{"id":2,"subscribe":{"channel":"churn"}}`)); err != nil {
		return 0, false, err
	}
	deadline := time.Now().Add(stay)
	var next uint64
	var push *protocol.DisconnectPush
	for {
		_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		f, err := ws.ReadFrame(nc)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				return n, false, errorf("nothing received for 5s while publications flow (after %d, disconnect push %+v): the server stalled", n, push)
			}
			if push != nil && peerEnded(err) {
				return n, true, nil // the socket ended after the disconnect push
			}
			return n, false, errorf("connection ended without a close frame (after %d, disconnect push %+v): %v", n, push, err)
		}
		switch f.Header.OpCode {
		case ws.OpClose:
			code, reason := ws.ParseCloseFrameData(f.Payload)
			if code != protocol.DisconnectSlow || (push != nil && uint32(code) != push.Code) {
				return n, false, errorf("closed with %d %q (disconnect push %+v), want %d", code, reason, push, protocol.DisconnectSlow)
			}
			return n, true, nil
		case ws.OpText:
			if !f.Header.Fin {
				return n, false, errorf("fragmented message: %q", f.Payload)
			}
		default:
			continue
		}
		var m protocol.ServerMessage
		if err := json.Unmarshal(f.Payload, &m); err != nil {
			return n, false, err
		}
		switch {
		case push != nil:
			return n, false, errorf("message after the disconnect push: %s", f.Payload)
		case m.Subscribe != nil:
			next = m.Subscribe.Offset + 1
		case m.Pub != nil:
			if next == 0 {
				return n, false, errorf("publication before the subscribe reply")
			}
			if m.Pub.Offset != next {
				return n, false, errorf("gap or duplicate: offset %d, want %d", m.Pub.Offset, next)
			}
			next++
			n++
		case m.Disconnect != nil:
			if m.Disconnect.Code != protocol.DisconnectSlow {
				return n, false, errorf("disconnect push %+v, want code %d", m.Disconnect, protocol.DisconnectSlow)
			}
			// Read on: the close frame (or the socket's end) must follow.
			push = m.Disconnect
			continue
		}
		if push == nil && time.Now().After(deadline) && next > 0 {
			return n, false, nil
		}
	}
}
