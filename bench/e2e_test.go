package bench

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/broker"
)

// startServer runs a Herald server in this process on a loopback port, on
// broker b (nil: the default in-memory one), and returns its WebSocket
// URL. It is shut down when the test ends.
func startServer(t *testing.T, b broker.Broker) string {
	t.Helper()
	return startServerWith(t, b, false)
}

// startServerWith is startServer with permessage-deflate on for every
// channel when compression is set.
func startServerWith(t *testing.T, b broker.Broker, compression bool) string {
	t.Helper()
	return startServerDelta(t, b, compression, false)
}

// startServerDelta is startServerWith whose namespace offers deltas when
// delta is set.
func startServerDelta(t *testing.T, b broker.Broker, compression, delta bool) string {
	t.Helper()
	srv, err := herald.New(herald.Config{
		AllowAnonymous:             true,
		UnknownNamespacesAsDefault: true,
		APIKeys:                    []string{"k"},
		DrainTimeout:               time.Second,
		Broker:                     b,
		Compression:                compression,
		Namespaces: []herald.Namespace{{
			HistorySize: 100, AllowSubscribe: true, AllowAnonymousSubscribe: true, AllowPublish: true,
			Compression: compression, Delta: delta,
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			t.Errorf("shutdown: %v", err)
		}
		if err := <-served; err != nil && !errors.Is(err, herald.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

// runBench runs the bench with args against url, bounded in time.
func runBench(t *testing.T, url string, args ...string) *Report {
	t.Helper()
	o, err := parseFlags(append([]string{"--url", url, "--key", "k", "--quiet"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var log strings.Builder
	rep, err := run(ctx, o, &log)
	if err != nil {
		t.Fatalf("bench %q: %v\n%s", args, err, log.String())
	}
	var out strings.Builder
	if err := rep.writeText(&out); err != nil {
		t.Fatal(err)
	}
	t.Logf("bench %q:\n%s", args, out.String())
	return rep
}

// checkDelivery asserts that every published message reached every
// subscriber of its channel exactly once, in order.
func checkDelivery(t *testing.T, rep *Report, messages uint64, subsPerChannel int) {
	t.Helper()
	p, d := rep.Publish, rep.Delivery
	if p == nil || d == nil || rep.Latency == nil {
		t.Fatalf("report lacks publish, delivery or latency: %+v", rep)
	}
	if p.Messages != messages || p.Failed != 0 {
		t.Fatalf("published %d (failed %d), want %d: %v", p.Messages, p.Failed, messages, p.Errors)
	}
	want := messages * uint64(subsPerChannel)
	if d.Expected != want || d.Received != want || d.Distinct != want {
		t.Errorf("expected %d, received %d, distinct %d; want %d", d.Expected, d.Received, d.Distinct, want)
	}
	if d.Lost != 0 || d.Duplicates != 0 || d.OutOfOrder != 0 || d.BadPayload != 0 || d.LostConns != 0 || !d.Drained {
		t.Errorf("delivery checks failed: %+v", d)
	}
	if rep.Latency.Count != want {
		t.Errorf("latency recorded for %d deliveries, want %d", rep.Latency.Count, want)
	}
}

func TestFanoutEndToEnd(t *testing.T) {
	url := startServer(t, nil)
	rep := runBench(t, url, "--scenario", "fanout", "--conns", "20", "--channels", "1",
		"--rate", "0", "--messages", "200", "--duration", "20s", "--inflight", "4", "--window", "20")
	checkDelivery(t, rep, 200, 20)
	if rep.Connect.Connected != 20 || rep.Server.NumClients != 20 {
		t.Errorf("connected %d, server reports %d clients", rep.Connect.Connected, rep.Server.NumClients)
	}
	// The server runs in this process, so its pid is ours: /proc works.
	if rep.Server.PID == 0 || rep.Server.CPU == nil || rep.Server.RSS == 0 {
		t.Errorf("no server figures: %+v", rep.Server)
	}
	// A report saved as JSON prints as the same table.
	raw, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	var shown, direct strings.Builder
	if err := show(path, &shown); err != nil {
		t.Fatal(err)
	}
	_ = rep.writeText(&direct)
	if shown.String() != direct.String() {
		t.Errorf("--show differs from the report:\n%s\nwant\n%s", shown.String(), direct.String())
	}
}

// TestFanoutCompression: with --compression against a server that
// compresses, every message arrives (inflated and checked like the others)
// in fewer bytes on the wire than without.
func TestFanoutCompression(t *testing.T) {
	url := startServerWith(t, nil, true)
	args := []string{"--scenario", "fanout", "--conns", "10", "--channels", "1",
		"--rate", "0", "--messages", "100", "--duration", "20s", "--inflight", "2", "--window", "20",
		"--payload", "json", "--size", "1000"}
	plain := runBench(t, url, args...)
	checkDelivery(t, plain, 100, 10)
	z := runBench(t, url, append(args, "--compression")...)
	checkDelivery(t, z, 100, 10)
	pw, zw := plain.Delivery.WireBytesPerDelivery, z.Delivery.WireBytesPerDelivery
	if pw < 900 || zw <= 0 || zw > pw*0.7 {
		t.Fatalf("wire bytes per delivery: %.1f plain, %.1f compressed", pw, zw)
	}
	if !z.Params.Compression || z.Params.Payload != "json" {
		t.Errorf("params %+v", z.Params)
	}
}

// TestFanoutDelta: with --delta against a server whose namespace offers
// deltas, every message of the doc shape arrives (deltas applied and
// checked like the others), nearly all of them as deltas, in a fraction
// of the bytes on the wire.
func TestFanoutDelta(t *testing.T) {
	url := startServerDelta(t, nil, false, true)
	args := []string{"--scenario", "fanout", "--conns", "10", "--channels", "1",
		"--rate", "0", "--messages", "150", "--duration", "20s", "--inflight", "1", "--window", "20",
		"--payload", "doc", "--size", "1000"}
	plain := runBench(t, url, args...)
	checkDelivery(t, plain, 150, 10)
	d := runBench(t, url, append(args, "--delta")...)
	checkDelivery(t, d, 150, 10)
	// The first publication and every 100th go full.
	if n := d.Delivery.Deltas; n < 10*(150-3) || n > 10*149 {
		t.Errorf("%d deliveries as deltas, want nearly all of 1500", n)
	}
	pw, dw := plain.Delivery.WireBytesPerDelivery, d.Delivery.WireBytesPerDelivery
	if pw < 900 || dw <= 0 || dw > pw*0.3 {
		t.Fatalf("wire bytes per delivery: %.1f full, %.1f with deltas", pw, dw)
	}
	if !d.Params.Delta || plain.Delivery.Deltas != 0 {
		t.Errorf("params %+v, deltas without --delta %d", d.Params, plain.Delivery.Deltas)
	}
}

func TestFanoutRateClientPublish(t *testing.T) {
	url := startServer(t, nil)
	rep := runBench(t, url, "--scenario", "fanout", "--conns", "12", "--channels", "3",
		"--rate", "400", "--messages", "60", "--duration", "20s", "--publish", "client", "--inflight", "2")
	checkDelivery(t, rep, 60, 4)
}

func TestChannelsBroadcastWorkerProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts worker processes")
	}
	url := startServer(t, nil)
	rep := runBench(t, url, "--scenario", "channels", "--conns", "30", "--procs", "2",
		"--rate", "0", "--messages", "150", "--batch", "7", "--duration", "20s")
	checkDelivery(t, rep, 150, 1)
	if rep.Publish.Requests >= 150 {
		t.Errorf("%d requests for 150 messages in batches of 7", rep.Publish.Requests)
	}
}

func TestIdleAndConnect(t *testing.T) {
	url := startServer(t, nil)
	rep := runBench(t, url, "--scenario", "idle", "--conns", "25", "--duration", "1500ms", "--settle", "200ms")
	if rep.Idle == nil || rep.Idle.Lost != 0 || len(rep.Idle.RSSSamples) == 0 || rep.Connect.Connected != 25 {
		t.Errorf("idle: %+v %+v", rep.Idle, rep.Connect)
	}
	rep = runBench(t, url, "--scenario", "connect", "--conns", "25", "--source-ips", "127.0.0.1,127.0.0.2")
	if c := rep.Connect; c.Connected != 25 || c.Failed != 0 || c.Rate <= 0 || c.Latency.Count != 25 {
		t.Errorf("connect: %+v", c)
	}
}
