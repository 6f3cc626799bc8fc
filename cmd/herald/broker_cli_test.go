package main_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/internal/testaddr"
)

func TestCheckConfigBroker(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	f := filepath.Join(dir, "b.yaml")
	os.WriteFile(f, []byte("broker:\n  url: nats://herald:hunter2@n1:4222,n2?prefix=prod\n  nats:\n    reconnect_wait: 250ms\n"), 0o600)
	out, err := run(t, nil, "check-config", f)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{"type: nats", "prefix: prod", "- nats://n1:4222", "- nats://n2:4222", "user: herald", "password: <redacted>", "reconnect_wait: 250ms",
		// Options left out show the broker's defaults.
		"request_timeout: 10s", "history_max_age: 24h0m0s", "replicas: 1"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "hunter2") {
		t.Errorf("password printed:\n%s", out)
	}
	// HERALD_BROKER replaces the file's URL.
	out, err = run(t, []string{"HERALD_BROKER=redis://:pw@r1:6380/2"}, "check-config", filepath.Join(dir, "b.yaml"))
	if err == nil || !strings.Contains(out, "nats section") {
		t.Fatalf("switching type under a nats section: %v %s", err, out)
	}
	os.WriteFile(f, []byte("listen: :1\n"), 0o600)
	out, err = run(t, []string{"HERALD_BROKER=redis+cluster://:pw@r1:1,r2:2?prefix=p"}, "check-config", f)
	if err != nil || !strings.Contains(out, "cluster: true") || !strings.Contains(out, "sharded_pubsub: true") || strings.Contains(out, ":pw@") ||
		!strings.Contains(out, "meta_ttl: 24h0m0s") || !strings.Contains(out, "dial_timeout: 5s") {
		t.Fatalf("%v: %s", err, out)
	}
	out, err = run(t, nil, "check-config", f)
	if err != nil || !strings.Contains(out, "type: memory") {
		t.Fatalf("default broker: %v: %s", err, out)
	}
}

// TestServeBrokerUnreachable: a node whose broker does not answer exits
// with the reason, soon.
func TestServeBrokerUnreachable(t *testing.T) {
	t.Parallel()
	dead := testaddr.Addr(t) // nothing listens there
	for _, url := range []string{"nats://" + dead, "redis://" + dead} {
		p := start(t, nil, "serve", "--dev", "--listen", testaddr.Addr(t), "--broker", url)
		if err := p.wait(t, 20*time.Second); err == nil {
			t.Errorf("%s: serve exited 0", url)
		}
		if log := p.log(); !strings.Contains(log, "start broker") || !strings.Contains(log, dead) {
			t.Errorf("%s: stderr does not say why:\n%s", url, log)
		}
	}
}

// TestServeNATSBroker runs a node on the test NATS server (HERALD_TEST_NATS)
// with a prefix of its own.
func TestServeNATSBroker(t *testing.T) {
	t.Parallel()
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	host := strings.TrimPrefix(url, "nats://")
	if c, err := net.DialTimeout("tcp", host, 2*time.Second); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("no NATS at %s: %v", url, err)
		}
		t.Skipf("no NATS at %s (set HERALD_TEST_NATS): %v", url, err)
	} else {
		c.Close()
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	prefix := "clitest-" + hex.EncodeToString(b[:])
	t.Cleanup(func() { deleteStreams(t, url, prefix) })
	p, addr := serve(t, []string{"HERALD_API_KEY=k", "HERALD_BROKER=" + url + "?prefix=" + prefix + "&memory_storage=true"}, "--dev")
	if out, err := run(t, nil, "pub", "--api", "http://"+addr, "--key", "k", "room:1", `{"a":1}`); err != nil {
		t.Fatalf("pub: %v %s", err, out)
	}
	if !strings.Contains(p.log(), "broker=\"nats "+url) {
		t.Errorf("no broker line in the log:\n%s", p.log())
	}
}

// deleteStreams removes the streams a node with prefix created.
func deleteStreams(t *testing.T, url, prefix string) {
	nc, err := natsgo.Connect(url, natsgo.Timeout(5*time.Second))
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, s := range []string{"history", "presence", "idempotency", "cursors"} {
		if err := js.DeleteStream(ctx, prefix+"-"+s); err != nil {
			t.Errorf("cleanup: delete stream %s-%s: %v", prefix, s, err)
		}
	}
}
