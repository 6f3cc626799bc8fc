package nats

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"
	"time"

	natsserver "github.com/nats-io/nats-server/v2/server"
	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// fakeStreamAPI answers the JetStream stream API on a NATS server without
// JetStream: updates find no stream, and the first failures creates are
// refused with err_code; later creates succeed. It returns the number of
// creates asked for.
func fakeStreamAPI(t *testing.T, nc *natsgo.Conn, code, errCode, failures int) *atomic.Int64 {
	t.Helper()
	var creates atomic.Int64
	reply := func(m *natsgo.Msg, v any) {
		b, err := json.Marshal(v)
		if err != nil {
			t.Error(err)
			return
		}
		_ = m.Respond(b)
	}
	apiErr := func(code, errCode int, desc string) map[string]any {
		return map[string]any{"error": map[string]any{"code": code, "err_code": errCode, "description": desc}}
	}
	if _, err := nc.Subscribe("$JS.API.STREAM.UPDATE.*", func(m *natsgo.Msg) {
		reply(m, apiErr(404, int(jetstream.JSErrCodeStreamNotFound), "stream not found"))
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := nc.Subscribe("$JS.API.STREAM.CREATE.*", func(m *natsgo.Msg) {
		if n := creates.Add(1); n <= int64(failures) {
			reply(m, apiErr(code, errCode, "refused"))
			return
		}
		var cfg jetstream.StreamConfig
		if err := json.Unmarshal(m.Data, &cfg); err != nil {
			t.Error(err)
		}
		reply(m, map[string]any{"type": "io.nats.jetstream.api.v1.stream_create_response", "config": cfg,
			"created": time.Now().UTC(), "state": map[string]any{}})
	}); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	return &creates
}

// plainServer runs an embedded NATS server without JetStream and returns
// a broker whose JetStream calls go to it, not started.
func plainServer(t *testing.T) (*Broker, *natsgo.Conn) {
	t.Helper()
	s, err := natsserver.NewServer(&natsserver.Options{Host: "127.0.0.1", Port: -1, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	s.Start()
	t.Cleanup(func() { s.Shutdown(); s.WaitForShutdown() })
	if !s.ReadyForConnections(10 * time.Second) {
		t.Fatal("NATS server not ready")
	}
	b, err := New(Config{Servers: []string{s.ClientURL()}, Prefix: "p", Replicas: 3})
	if err != nil {
		t.Fatal(err)
	}
	nc, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	if b.js, err = jetstream.New(nc); err != nil {
		t.Fatal(err)
	}
	api, err := natsgo.Connect(s.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(api.Close)
	return b, api
}

// TestEnsureStreamWaitsForPeers: a stream create refused with "no
// suitable peers for placement" (a NATS cluster still forming, or a
// server restarting, with too few servers online for the replicas) is
// tried again until it succeeds, rather than failing Start.
func TestEnsureStreamWaitsForPeers(t *testing.T) {
	b, api := plainServer(t)
	creates := fakeStreamAPI(t, api, 503, int(jsErrCodeNoPeers), 3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.ensureStream(ctx, histStream); err != nil {
		t.Fatalf("ensureStream: %v", err)
	}
	if n := creates.Load(); n != 4 {
		t.Fatalf("%d creates, want 3 refused and one stored", n)
	}
}

// TestEnsureStreamOtherErrorsFail: any other refusal of a create fails at
// once.
func TestEnsureStreamOtherErrorsFail(t *testing.T) {
	b, api := plainServer(t)
	creates := fakeStreamAPI(t, api, 400, 10052, 1) // invalid configuration
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := b.ensureStream(ctx, histStream); err == nil {
		t.Fatal("ensureStream succeeded after a refusal")
	}
	if n := creates.Load(); n != 1 {
		t.Fatalf("%d creates, want 1", n)
	}
}
