package nats_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/protocol"
)

// TestPublishDuringLeaderElection kills (SIGKILL) the server leading the
// history stream of a three-server NATS cluster with replicated streams,
// then publishes and reads history through a survivor without pause. While
// the stream elects a new leader every call must either succeed or fail
// with broker.ErrUnavailable, a retryable error, at once: none may run
// into its deadline. Once a leader is elected, calls succeed again.
func TestPublishDuringLeaderElection(t *testing.T) {
	t.Parallel()
	procs := startNATSProcs(t)
	prefix := randomPrefix("elect")
	cfg := natsbroker.Config{Servers: []string{procs[0].url}, Prefix: prefix, Replicas: 3, ReconnectWait: 100 * time.Millisecond}
	setup := newBroker(t, cfg, nil)
	ch := "elect"
	mustPublish(t, setup, ch, 0, withHistory)
	leader := streamLeader(t, procs[0].url, prefix+"-history")
	var victim, survivor *natsProc
	for _, p := range procs {
		switch {
		case p.name == leader:
			victim = p
		case survivor == nil:
			survivor = p
		}
	}
	if victim == nil {
		t.Fatalf("stream leader %q is none of the servers", leader)
	}
	cfg.Servers = []string{survivor.url}
	b := newBroker(t, cfg, nil)
	last := mustPublish(t, b, ch, 1, withHistory)

	victim.kill()
	killed := time.Now()
	var (
		calls, refused, streak int
		firstOK, longest       time.Duration
	)
	// 20 calls in a row succeed: 10 publishes and 10 history reads.
	for n := 2; streak < 20; n++ {
		if time.Since(killed) > time.Minute {
			t.Fatalf("no run of successful calls within a minute of the kill (%d calls, %d refused)", calls, refused)
		}
		var err error
		c, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		start := time.Now()
		if n%2 == 0 {
			var pos protocol.StreamPosition
			pos, _, err = b.Publish(c, ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, n))}, withHistory)
			if err == nil {
				if pos.Epoch != last.Epoch || pos.Offset != last.Offset+1 {
					t.Fatalf("publish after the kill at %+v, want offset %d of epoch %s", pos, last.Offset+1, last.Epoch)
				}
				last = pos
			}
		} else {
			var cur protocol.StreamPosition
			_, cur, err = b.History(c, ch, broker.HistoryOptions{Limit: -1})
			if err == nil && cur != last {
				t.Fatalf("history after the kill at %+v, want %+v", cur, last)
			}
		}
		took := time.Since(start)
		cancel()
		calls++
		longest = max(longest, took)
		switch {
		case err == nil:
			if firstOK == 0 {
				firstOK = time.Since(killed)
			}
			streak++
		case errors.Is(err, broker.ErrUnavailable):
			t.Logf("call %d, %v after the kill, refused after %v: %v", calls, time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond), err)
			refused++
			streak = 0
			time.Sleep(20 * time.Millisecond) // a client's retry pause
		default:
			t.Fatalf("call %d, %v after the kill, took %v: %v; want success or broker.ErrUnavailable", calls, time.Since(killed).Round(time.Millisecond), took.Round(time.Millisecond), err)
		}
	}
	t.Logf("leader %s killed: first success after %v, %d calls, %d refused as unavailable, longest call %v",
		leader, firstOK.Round(time.Millisecond), calls, refused, longest.Round(time.Millisecond))
}

// outageRecorder records the outage calls among what it is handed.
type outageRecorder struct {
	*brokertest.Recorder
	mu    sync.Mutex
	calls []string
}

func (r *outageRecorder) HandleBrokerDown() { r.add("down") }
func (r *outageRecorder) HandleBrokerUp()   { r.add("up") }
func (r *outageRecorder) add(s string) {
	r.mu.Lock()
	r.calls = append(r.calls, s)
	r.mu.Unlock()
}

func (r *outageRecorder) get() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// TestOutageReported: when the connection to NATS is lost and comes back,
// a handler that implements broker.OutageHandler is told down, then up.
func TestOutageReported(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	s := startServer(t, -1, store)
	port := serverPort(t, s)
	rec := &outageRecorder{Recorder: brokertest.NewRecorder()}
	newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: randomPrefix("outage"), ReconnectWait: 20 * time.Millisecond}, rec)
	s.Shutdown()
	s.WaitForShutdown()
	brokertest.Eventually(t, 10*time.Second, "down", func() bool { return len(rec.get()) >= 1 })
	startServer(t, port, store)
	brokertest.Eventually(t, 15*time.Second, "down, then up", func() bool { return len(rec.get()) >= 2 })
	if got := rec.get(); got[0] != "down" || got[1] != "up" {
		t.Fatalf("outage calls %v, want down then up", got)
	}
}
