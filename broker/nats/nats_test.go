package nats_test

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	natsbroker "github.com/heraldhq/herald/broker/nats"
	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/protocol"
)

// TestMain fails the run if any goroutine outlives the tests: every
// broker's Close must join what it started, and every embedded server is
// shut down.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		if builtDir != "" {
			os.RemoveAll(builtDir)
		}
		os.Exit(code)
	}))
}

var withHistory = broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

// randomPrefix keeps the streams and subjects of a test run apart from any
// other run on the same server.
func randomPrefix(name string) string {
	var b [4]byte
	_, _ = rand.Read(b[:])
	return "test-" + name + "-" + hex.EncodeToString(b[:])
}

// startServer runs an embedded NATS server with JetStream on 127.0.0.1;
// port -1 picks a free one. It is shut down when the test ends.
func startServer(t *testing.T, port int, storeDir string) *natsserver.Server {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{
		Host:      "127.0.0.1",
		Port:      port,
		JetStream: true,
		StoreDir:  storeDir,
		NoLog:     true,
		NoSigs:    true,
	})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	if !s.ReadyForConnections(10 * time.Second) {
		s.Shutdown()
		t.Fatal("embedded NATS server not ready")
	}
	t.Cleanup(func() {
		s.Shutdown()
		s.WaitForShutdown()
	})
	return s
}

func serverPort(t *testing.T, s *natsserver.Server) int {
	t.Helper()
	addr, ok := s.Addr().(*net.TCPAddr)
	if !ok {
		t.Fatalf("server address %v", s.Addr())
	}
	return addr.Port
}

// newBroker returns a started broker, closed when the test ends.
func newBroker(t *testing.T, cfg natsbroker.Config, h broker.Handler) *natsbroker.Broker {
	t.Helper()
	b, err := natsbroker.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx(t), h); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := b.Close(c); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return b
}

// deleteStreams removes what a run with prefix created on the server.
func deleteStreams(t *testing.T, url, prefix string) {
	t.Helper()
	nc, err := natsgo.Connect(url, natsgo.Timeout(5*time.Second))
	if err != nil {
		t.Errorf("cleanup: connect: %v", err)
		return
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range []string{"history", "presence", "idempotency", "cursors"} {
		if err := js.DeleteStream(c, prefix+"-"+s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Errorf("cleanup: delete stream %s-%s: %v", prefix, s, err)
		}
	}
}

// conformance returns the suite's setup for a NATS server at url: nodes
// share a random prefix, whose streams are deleted after the suite.
func conformance(t *testing.T, url string) brokertest.Setup {
	prefix := randomPrefix("conf")
	t.Cleanup(func() { deleteStreams(t, url, prefix) })
	cfg := natsbroker.Config{Servers: []string{url}, Prefix: prefix, ReconnectWait: 100 * time.Millisecond}
	return brokertest.Setup{
		NewNode: func(t *testing.T) broker.Broker {
			b, err := natsbroker.New(cfg)
			if err != nil {
				t.Fatal(err)
			}
			return b
		},
		NewPresence: func(t *testing.T) broker.PresenceStore { return newBroker(t, cfg, nil) },
	}
}

// TestConformanceExternal runs the suite against the NATS server at
// $HERALD_TEST_NATS (default nats://127.0.0.1:4222), which must have
// JetStream enabled. Without one it skips, unless CI=true.
func TestConformanceExternal(t *testing.T) {
	t.Parallel()
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	if err := probe(url); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("NATS server with JetStream at %s unavailable (required when CI=true): %v", url, err)
		}
		t.Skipf("no NATS server with JetStream at %s (start one with `nats-server -js`, or set HERALD_TEST_NATS): %v", url, err)
	}
	brokertest.Run(t, conformance(t, url))
}

func probe(url string) error {
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second), natsgo.MaxReconnects(0))
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	c, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_, err = js.AccountInfo(c)
	return err
}

// TestConformanceEmbedded runs the suite against a NATS server started in
// the test.
func TestConformanceEmbedded(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	brokertest.Run(t, conformance(t, s.ClientURL()))
}

func mustPublish(t *testing.T, b broker.Broker, ch string, n int, opts broker.PublishOptions) protocol.StreamPosition {
	t.Helper()
	pos, dup, err := b.Publish(ctx(t), ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`{"n":%d}`, n))}, opts)
	if err != nil || dup {
		t.Fatalf("Publish %s #%d: dup %v err %v", ch, n, dup, err)
	}
	return pos
}

// TestEpochChangesWhenStreamDeleted deletes the history stream underneath
// a running broker: the broker recreates it (calls meanwhile fail with
// broker.ErrUnavailable), and the channel's history
// has a new epoch, so a client is told it did not recover.
func TestEpochChangesWhenStreamDeleted(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	prefix := randomPrefix("deleted")
	b := newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix}, nil)
	ch := "news:deleted"
	mustPublish(t, b, ch, 1, withHistory)
	last := mustPublish(t, b, ch, 2, withHistory)

	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(ctx(t), prefix+"-history"); err != nil {
		t.Fatal(err)
	}

	// The first call finds the stream missing and fails at once with
	// broker.ErrUnavailable while the broker recreates the stream in the
	// background; a retry succeeds.
	var pubs []*protocol.Publication
	var cur protocol.StreamPosition
	brokertest.Eventually(t, 10*time.Second, "history once the stream is recreated", func() bool {
		pubs, cur, err = b.History(ctx(t), ch, broker.HistoryOptions{Since: &last, Limit: -1})
		if err != nil && !errors.Is(err, broker.ErrUnavailable) {
			t.Fatal(err)
		}
		return err == nil
	})
	if cur.Epoch == last.Epoch || cur.Epoch == "" || broker.Recovered(last, pubs, cur) {
		t.Fatalf("after the stream was deleted: position %+v, %d pubs (was %+v)", cur, len(pubs), last)
	}
	next := mustPublish(t, b, ch, 3, withHistory)
	if next.Epoch != cur.Epoch || next.Offset != 1 {
		t.Fatalf("first publication of the new stream: %+v, want epoch %q offset 1", next, cur.Epoch)
	}
}

// TestEpochAcrossServerRestarts restarts the NATS server on the same port:
// with its store the history and epoch survive; with a fresh store the
// history is lost and the epoch changes. Live delivery resumes after the
// reconnect either way.
func TestEpochAcrossServerRestarts(t *testing.T) {
	t.Parallel()
	store := t.TempDir()
	s := startServer(t, -1, store)
	port := serverPort(t, s)
	rec := brokertest.NewRecorder()
	b := newBroker(t, natsbroker.Config{
		Servers:       []string{s.ClientURL()},
		Prefix:        randomPrefix("restart"),
		ReconnectWait: 20 * time.Millisecond,
	}, rec)
	ch := "news:restart"
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	var pos [4]protocol.StreamPosition
	for i := 1; i <= 3; i++ {
		pos[i] = mustPublish(t, b, ch, i, withHistory)
	}
	history := func(since protocol.StreamPosition) ([]*protocol.Publication, protocol.StreamPosition) {
		t.Helper()
		var pubs []*protocol.Publication
		var cur protocol.StreamPosition
		brokertest.Eventually(t, 15*time.Second, "history after the restart", func() bool {
			c, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			var err error
			pubs, cur, err = b.History(c, ch, broker.HistoryOptions{Since: &since, Limit: -1})
			return err == nil
		})
		return pubs, cur
	}

	s.Shutdown()
	s.WaitForShutdown()
	s = startServer(t, port, store)
	pubs, cur := history(pos[1])
	if cur != pos[3] || !broker.Recovered(pos[1], pubs, cur) {
		t.Fatalf("restart with the store: position %+v, %d pubs, want %+v recovered", cur, len(pubs), pos[3])
	}

	s.Shutdown()
	s.WaitForShutdown()
	startServer(t, port, t.TempDir())
	pubs, cur = history(pos[3])
	if cur.Epoch == pos[3].Epoch || broker.Recovered(pos[3], pubs, cur) {
		t.Fatalf("restart without the store: position %+v, %d pubs; epoch unchanged or recovered", cur, len(pubs))
	}
	next := mustPublish(t, b, ch, 4, withHistory)
	if next.Epoch != cur.Epoch || next.Offset != 1 {
		t.Fatalf("publication after the history was lost: %+v, want epoch %q offset 1", next, cur.Epoch)
	}
	brokertest.Eventually(t, 10*time.Second, "live delivery after the reconnect", func() bool {
		pubs := rec.Pubs(ch)
		return len(pubs) > 0 && pubs[len(pubs)-1].Offset == 1 && string(pubs[len(pubs)-1].Data) == `{"n":4}`
	})
}

// TestConcurrentNodes has several nodes publish to one channel at once:
// offsets stay unique and contiguous, and every node is handed the
// publications in offset order.
func TestConcurrentNodes(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	cfg := natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: randomPrefix("nodes")}
	const nodes, writers, each = 3, 4, 40
	ch := "race:nodes"
	var bs []*natsbroker.Broker
	var recs []*brokertest.Recorder
	for range nodes {
		rec := brokertest.NewRecorder()
		b := newBroker(t, cfg, rec)
		if err := b.Subscribe(ctx(t), ch); err != nil {
			t.Fatal(err)
		}
		bs, recs = append(bs, b), append(recs, rec)
	}
	opts := broker.PublishOptions{HistorySize: nodes * writers * each, HistoryTTL: time.Minute}
	offsets := make(chan uint64, nodes*writers*each)
	errs := make(chan error, nodes*writers)
	var wg sync.WaitGroup
	for n, b := range bs {
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					pos, _, err := b.Publish(ctx(t), ch, &protocol.Publication{Data: protocol.Data(fmt.Sprintf(`"%d-%d-%d"`, n, w, i))}, opts)
					if err != nil {
						errs <- err
						return
					}
					offsets <- pos.Offset
				}
			}()
		}
	}
	wg.Wait()
	close(offsets)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	seen := map[uint64]bool{}
	for o := range offsets {
		if seen[o] {
			t.Fatalf("offset %d assigned twice", o)
		}
		seen[o] = true
	}
	const total = nodes * writers * each
	for o := uint64(1); o <= total; o++ {
		if !seen[o] {
			t.Fatalf("offset %d never assigned", o)
		}
	}
	for n, rec := range recs {
		brokertest.Eventually(t, 10*time.Second, "all deliveries", func() bool { return len(rec.Pubs(ch)) == total })
		for i, p := range rec.Pubs(ch) {
			if p.Offset != uint64(i+1) {
				t.Fatalf("node %d: delivery %d has offset %d", n, i, p.Offset)
			}
		}
	}
	pubs, pos, err := bs[0].History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != total || pos.Offset != total {
		t.Fatalf("history: %d pubs, pos %+v, err %v", len(pubs), pos, err)
	}
}

// TestChannelNames checks that names which are not plain subject tokens
// neither break nor collide: each channel gets only its own publications.
func TestChannelNames(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	rec := brokertest.NewRecorder()
	b := newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: randomPrefix("names")}, rec)
	chans := []string{"a.b", "a", "a.*", "a.>", "*", ">", "a b", "A", "%41", "ns:x/y=z", "ünï", "a\r\nb"}
	for _, ch := range chans {
		if err := b.Subscribe(ctx(t), ch); err != nil {
			t.Fatalf("Subscribe %q: %v", ch, err)
		}
	}
	for i, ch := range chans {
		mustPublish(t, b, ch, i, withHistory)
		mustPublish(t, b, ch, i, broker.PublishOptions{})
	}
	for i, ch := range chans {
		brokertest.Eventually(t, 10*time.Second, "deliveries on "+ch, func() bool { return len(rec.Pubs(ch)) >= 2 })
		for _, p := range rec.Pubs(ch) {
			if string(p.Data) != fmt.Sprintf(`{"n":%d}`, i) || p.Channel != ch {
				t.Fatalf("channel %q got %s of channel %q", ch, p.Data, p.Channel)
			}
		}
		pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
		if err != nil || len(pubs) != 1 || pos.Offset != 1 {
			t.Fatalf("history of %q: %d pubs, pos %+v, err %v", ch, len(pubs), pos, err)
		}
	}
	if _, _, err := b.Publish(ctx(t), "", &protocol.Publication{}, withHistory); err == nil {
		t.Fatal("publish to an empty channel name: no error")
	}
}

// TestNoHistoryStaysOffJetStream checks that publications of channels
// without history do not touch JetStream.
func TestNoHistoryStaysOffJetStream(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	prefix := randomPrefix("nojs")
	rec := brokertest.NewRecorder()
	b := newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix}, rec)
	ch := "chat:nojs"
	if err := b.Subscribe(ctx(t), ch); err != nil {
		t.Fatal(err)
	}
	before := jsAPICalls(t, s)
	for i := 1; i <= 10; i++ {
		if pos := mustPublish(t, b, ch, i, broker.PublishOptions{}); pos != (protocol.StreamPosition{}) {
			t.Fatalf("position %+v without history", pos)
		}
	}
	brokertest.Eventually(t, 10*time.Second, "10 deliveries", func() bool { return len(rec.Pubs(ch)) == 10 })
	if after := jsAPICalls(t, s); after != before {
		t.Fatalf("%d JetStream API calls for publications without history", after-before)
	}
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx(t), prefix+"-history")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 0 {
		t.Fatalf("history stream holds %d messages", n)
	}
}

func jsAPICalls(t *testing.T, s *natsserver.Server) uint64 {
	t.Helper()
	jsz, err := s.Jsz(nil)
	if err != nil {
		t.Fatal(err)
	}
	return jsz.API.Total
}

// TestHistoryIsTrimmed checks that storage stays near the history size
// while History returns exactly the window.
func TestHistoryIsTrimmed(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	prefix := randomPrefix("trim")
	b := newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix}, nil)
	ch := "feed:trim"
	opts := broker.PublishOptions{HistorySize: 8, HistoryTTL: time.Minute}
	for i := 1; i <= 100; i++ {
		mustPublish(t, b, ch, i, opts)
	}
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	brokertest.Eventually(t, 10*time.Second, "trimmed storage", func() bool {
		st, err := js.Stream(ctx(t), prefix+"-history")
		return err == nil && st.CachedInfo().State.Msgs <= 10
	})
	pubs, pos, err := b.History(ctx(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 8 || pubs[0].Offset != 93 || pos.Offset != 100 {
		t.Fatalf("history: %d pubs, pos %+v, err %v", len(pubs), pos, err)
	}
}

func TestPresenceLimits(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	b := newBroker(t, natsbroker.Config{
		Servers:              []string{s.ClientURL()},
		Prefix:               randomPrefix("limits"),
		MaxPresenceTTL:       time.Minute,
		MaxIdempotencyWindow: time.Minute,
	}, nil)
	info := &protocol.ClientInfo{Client: "c", User: "u"}
	for _, ttl := range []time.Duration{0, -time.Second, 2 * time.Minute} {
		if err := b.AddPresence(ctx(t), "p:1", "c", info, ttl); err == nil {
			t.Errorf("AddPresence with ttl %v: no error", ttl)
		}
	}
	opts := withHistory
	opts.IdempotencyKey, opts.IdempotencyWindow = "k", time.Hour
	if _, _, err := b.Publish(ctx(t), "p:1", &protocol.Publication{}, opts); err == nil {
		t.Error("Publish with a window above MaxIdempotencyWindow: no error")
	}
}

func TestLifecycle(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	b, err := natsbroker.New(natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: randomPrefix("life")})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := b.History(ctx(t), "x", broker.HistoryOptions{}); !errors.Is(err, natsbroker.ErrNotStarted) {
		t.Fatalf("History before Start: %v", err)
	}
	if err := b.Start(ctx(t), nil); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx(t), nil); err == nil {
		t.Fatal("second Start: no error")
	}
	if err := b.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(ctx(t)); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, _, err := b.Publish(ctx(t), "x", &protocol.Publication{}, withHistory); !errors.Is(err, broker.ErrClosed) {
		t.Fatalf("Publish after Close: %v", err)
	}

	// Unreachable server: Start fails rather than hanging.
	addr := testaddr.Addr(t)
	b, err = natsbroker.New(natsbroker.Config{Servers: []string{"nats://" + addr}, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Start(ctx(t), nil); err == nil {
		t.Fatal("Start against a closed port: no error")
	}
	if err := b.Close(ctx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  natsbroker.Config
		want string // substring of the error; "" for valid
	}{
		{"zero value", natsbroker.Config{}, ""},
		{"full", natsbroker.Config{Servers: []string{"nats://a:4222", "b:4222"}, Prefix: "prod_eu-1", User: "u", Password: "p", Replicas: 3}, ""},
		{"empty server", natsbroker.Config{Servers: []string{" "}}, "Servers[0]"},
		{"prefix with dot", natsbroker.Config{Prefix: "a.b"}, "Prefix"},
		{"prefix too long", natsbroker.Config{Prefix: strings.Repeat("p", 65)}, "Prefix"},
		{"password alone", natsbroker.Config{Password: "p"}, "Password without User"},
		{"user and token", natsbroker.Config{User: "u", Token: "t"}, "at most one"},
		{"token and creds", natsbroker.Config{Token: "t", CredsFile: "x.creds"}, "at most one"},
		{"tls twice", natsbroker.Config{TLS: &tls.Config{}, TLSCAFile: "ca.pem"}, "either TLS"},
		{"cert without key", natsbroker.Config{TLSCertFile: "c.pem"}, "go together"},
		{"replicas", natsbroker.Config{Replicas: 7}, "Replicas"},
		{"negative duration", natsbroker.Config{HistoryMaxAge: -time.Second}, "HistoryMaxAge"},
	}
	for _, c := range cases {
		err := c.cfg.Validate()
		if c.want == "" {
			if err != nil {
				t.Errorf("%s: %v", c.name, err)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
		if _, nerr := natsbroker.New(c.cfg); nerr == nil {
			t.Errorf("%s: New accepted an invalid config", c.name)
		}
	}
}

// Example configures a node's broker. Nodes of one cluster share Servers
// and Prefix. The server starts the broker with its own handler and closes
// it on Shutdown; since the broker is also a broker.PresenceStore, the
// server keeps presence in it too:
//
//	srv, err := herald.New(herald.Config{Broker: b, ...})
func Example() {
	b, err := natsbroker.New(natsbroker.Config{
		Servers:  []string{"nats://nats-1:4222", "nats://nats-2:4222"},
		Prefix:   "herald-prod",
		User:     "herald",
		Password: os.Getenv("NATS_PASSWORD"),
		Replicas: 3,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	var _ broker.PresenceStore = b
	fmt.Println("configured")
	// Output: configured
}

func BenchmarkPublish(b *testing.B) {
	dir := b.TempDir()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true})
	if err != nil {
		b.Fatal(err)
	}
	s.Start()
	defer func() { s.Shutdown(); s.WaitForShutdown() }()
	if !s.ReadyForConnections(10 * time.Second) {
		b.Fatal("server not ready")
	}
	for _, c := range []struct {
		name string
		opts broker.PublishOptions
	}{
		{"NoHistory", broker.PublishOptions{}},
		{"History", withHistory},
		{"HistoryIdempotent", withHistory},
	} {
		b.Run(c.name, func(b *testing.B) {
			br, err := natsbroker.New(natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: randomPrefix("bench")})
			if err != nil {
				b.Fatal(err)
			}
			c0 := context.Background()
			if err := br.Start(c0, nil); err != nil {
				b.Fatal(err)
			}
			defer br.Close(c0)
			pub := &protocol.Publication{Data: protocol.Data(`{"n":1}`)}
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				opts := c.opts
				if c.name == "HistoryIdempotent" {
					opts.IdempotencyKey = strconv.Itoa(i)
				}
				if _, _, err := br.Publish(c0, "bench:1", pub, opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestStartLeavesCurrentStreamsAlone: a node that starts while the
// streams already exist as it wants them sends no stream update (several
// nodes starting at once would otherwise update them at once, which
// nats-server 2.9.10 does not survive); a node that wants another
// configuration updates the stream that differs.
func TestStartLeavesCurrentStreamsAlone(t *testing.T) {
	t.Parallel()
	s := startServer(t, -1, t.TempDir())
	prefix := randomPrefix("current")
	newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix}, nil)

	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	var mu sync.Mutex
	var changes []string
	for _, subj := range []string{"$JS.API.STREAM.UPDATE.>", "$JS.API.STREAM.CREATE.>"} {
		if _, err := nc.Subscribe(subj, func(m *natsgo.Msg) {
			mu.Lock()
			changes = append(changes, m.Subject)
			mu.Unlock()
		}); err != nil {
			t.Fatal(err)
		}
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	seen := func() []string {
		// A request the monitor saw before the broker's answer came back
		// is in its queue by the time a round trip through the server ends.
		if err := nc.Flush(); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(changes)
	}

	newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix}, nil)
	if c := seen(); len(c) != 0 {
		t.Fatalf("a second node with the same configuration changed streams: %v", c)
	}
	newBroker(t, natsbroker.Config{Servers: []string{s.ClientURL()}, Prefix: prefix, HistoryMaxAge: time.Hour}, nil)
	want := "$JS.API.STREAM.UPDATE." + prefix + "-history"
	if c := seen(); len(c) != 1 || c[0] != want {
		t.Fatalf("a node with another history age sent %v, want one %s", c, want)
	}
}
