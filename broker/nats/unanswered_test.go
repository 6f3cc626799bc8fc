package nats_test

import (
	"context"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/faultnet"
	"github.com/heraldhq/herald/protocol"
)

// TestUnansweredAppendStoredOnce: on a cluster, a publish whose append
// gets no answer (here the network between the broker and NATS goes
// silent, as when the stream's leader dies with the request in hand) is
// sent again, unchanged, until the stream answers. When the network
// comes back the first send and its copies all reach the stream: the
// publication is stored once, at the next offset, and the publish
// returns that position rather than an error.
func TestUnansweredAppendStoredOnce(t *testing.T) {
	t.Parallel()
	urls := startNATSCluster(t)
	b, proxy, resent := brokerBehindProxy(t, urls[0], randomPrefix("unans"))
	ch := "unanswered"
	last := mustPublish(t, b, ch, 1, withHistory)

	r := publishUnanswered(t, b, proxy, ch, resent, nil)
	if r.err != nil {
		t.Fatalf("publish after the network came back: %v", r.err)
	}
	if r.pos.Epoch != last.Epoch || r.pos.Offset != last.Offset+1 {
		t.Fatalf("stored at %+v, want offset %d of epoch %s", r.pos, last.Offset+1, last.Epoch)
	}
	next := mustPublish(t, b, ch, 3, withHistory)
	if next.Offset != last.Offset+2 {
		t.Fatalf("next publication at offset %d, want %d", next.Offset, last.Offset+2)
	}
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 3 || pos != next {
		t.Fatalf("history holds %d publications up to %+v, want 3 up to %+v", len(pubs), pos, next)
	}
	for i, p := range pubs {
		if want := `{"n":` + string(rune('1'+i)) + `}`; p.Offset != last.Offset+uint64(i) || string(p.Data) != want {
			t.Fatalf("publication %d: offset %d data %s, want %d %s", i, p.Offset, p.Data, last.Offset+uint64(i), want)
		}
	}
	t.Logf("the append was sent %d times more", resent.Load())
}

// TestUnansweredAppendInProcess: as TestUnansweredAppendStoredOnce, but
// replication is slow when the network comes back, so the first send is
// still being replicated (proposed, not yet stored) when the stream
// refuses the later copies. The server refuses an append to a subject
// with an append in process without saying whether it will be stored;
// the broker must wait for the first send's fate rather than take the
// place for free and append the publication a second time.
func TestUnansweredAppendInProcess(t *testing.T) {
	t.Parallel()
	urls, routes := startNATSClusterRoutes(t, true)
	prefix := randomPrefix("inproc")
	b, proxy, resent := brokerBehindProxy(t, urls[0], prefix)
	// The stream's leader on the broker's server: its refusals come back
	// at once while its replication waits on the slow routes.
	leadOn(t, urls[0], prefix+"-history", "n0")
	ch := "inprocess"
	last := mustPublish(t, b, ch, 1, withHistory)

	r := publishUnanswered(t, b, proxy, ch, resent, func() { setLatency(routes, 200*time.Millisecond) })
	setLatency(routes, 0)
	if r.err != nil {
		t.Fatalf("publish after the network came back: %v", r.err)
	}
	if r.pos.Epoch != last.Epoch || r.pos.Offset != last.Offset+1 {
		t.Fatalf("stored at %+v, want offset %d of epoch %s", r.pos, last.Offset+1, last.Epoch)
	}
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if len(pubs) != 2 || pos != r.pos {
		t.Fatalf("history holds %d publications up to %+v, want 2 up to %+v", len(pubs), pos, r.pos)
	}
	t.Logf("the append was sent %d times more", resent.Load())
}

// brokerBehindProxy starts a broker with prefix on the replicated
// streams of the NATS server at url, through a faultnet proxy; resent
// counts its log lines saying that an unanswered append is sent again.
func brokerBehindProxy(t *testing.T, url, prefix string) (*natsbroker.Broker, *faultnet.Proxy, *atomic.Int64) {
	t.Helper()
	proxy, err := faultnet.New(strings.TrimPrefix(url, "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(proxy.Close)
	resent := new(atomic.Int64)
	log := slog.New(countingHandler{sub: "append unanswered", n: resent})
	b := newBroker(t, natsbroker.Config{Servers: []string{"nats://" + proxy.Addr()}, Prefix: prefix,
		Replicas: 3, Logger: log, LeaderTimeout: 2 * time.Second}, nil)
	return b, proxy, resent
}

type publishResult struct {
	pos protocol.StreamPosition
	err error
}

// publishUnanswered publishes {"n":2} to ch with the network between b
// and NATS (proxy) silent until the append was sent again twice (resent
// counts the broker's log lines saying so); then it runs beforeRelease,
// if any, ends the silence and returns the publish's outcome.
func publishUnanswered(t *testing.T, b broker.Broker, proxy *faultnet.Proxy, ch string, resent *atomic.Int64, beforeRelease func()) publishResult {
	t.Helper()
	proxy.SetFaults(faultnet.Faults{Blackhole: true})
	done := make(chan publishResult, 1)
	go func() {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		pos, _, err := b.Publish(c, ch, &protocol.Publication{Data: protocol.Data(`{"n":2}`)}, withHistory)
		done <- publishResult{pos, err}
	}()
	brokertest.Eventually(t, 20*time.Second, "the append sent again", func() bool { return resent.Load() >= 2 })
	if beforeRelease != nil {
		beforeRelease()
	}
	proxy.SetFaults(faultnet.Faults{})
	return <-done
}

// leadOn moves the leadership of stream to the server named server, over
// a connection of its own to url.
func leadOn(t *testing.T, url, stream, server string) {
	t.Helper()
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	leader := func() string {
		s, err := js.Stream(ctx(t), stream)
		if err != nil {
			return ""
		}
		info, err := s.Info(ctx(t))
		if err != nil || info.Cluster == nil {
			return ""
		}
		return info.Cluster.Leader
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		l := leader()
		if l == server {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("stream %s led by %q, not %s", stream, l, server)
		}
		if l == "" {
			time.Sleep(50 * time.Millisecond) // an election in progress
			continue
		}
		req := `{"placement":{"preferred":"` + server + `"}}`
		m, err := nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, []byte(req), 5*time.Second)
		if err == nil && strings.Contains(string(m.Data), `"error"`) {
			t.Logf("step down from %s: %s", l, m.Data)
		}
		// Let the election settle before looking again; a server not
		// caught up yet declines, and the step down is asked again.
		for wait := time.Now().Add(3 * time.Second); time.Now().Before(wait); time.Sleep(50 * time.Millisecond) {
			if l2 := leader(); l2 != "" && l2 != l {
				break
			}
		}
	}
}
