package cluster_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/internal/testproc"
)

// backend is where a cluster's nodes share their state.
type backend struct {
	kind string // "nats" or "redis"
	// url is the nodes' --broker, with the test's prefix.
	url string
	// yaml is the config file's broker section: reconnect settings short
	// enough for the tests.
	yaml string
}

const (
	natsTuning  = "broker:\n  nats:\n    reconnect_wait: 100ms\n    connect_timeout: 2s\n    request_timeout: 3s\n"
	redisTuning = "broker:\n  redis:\n    dial_timeout: 1s\n    health_check_interval: 1s\n"
)

// sharedNATS is the NATS server at $HERALD_TEST_NATS (default
// nats://127.0.0.1:4222) under a prefix of the test's own, whose streams
// are deleted when the test ends.
func sharedNATS(t *testing.T) backend {
	t.Helper()
	url := os.Getenv("HERALD_TEST_NATS")
	if url == "" {
		url = "nats://127.0.0.1:4222"
	}
	if err := natsReady(url, 3*time.Second); err != nil {
		unavailable(t, "no NATS server with JetStream at %s (start one with `nats-server -js`, or set HERALD_TEST_NATS): %v", url, err)
	}
	prefix := "clustertest-" + randomHex(4)
	t.Cleanup(func() { deleteStreams(t, url, prefix) })
	return backend{kind: "nats", url: url + "?prefix=" + prefix, yaml: natsTuning}
}

// sharedRedis is the Redis at $HERALD_TEST_REDIS (default 127.0.0.1:6379)
// under a prefix of the test's own, whose keys are deleted when the test
// ends.
func sharedRedis(t *testing.T) backend {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if err := redisReady(addr, 3*time.Second); err != nil {
		unavailable(t, "no Redis at %s (set HERALD_TEST_REDIS): %v", addr, err)
	}
	prefix := "clustertest-" + randomHex(4)
	t.Cleanup(func() { deleteKeys(t, addr, prefix) })
	return backend{kind: "redis", url: "redis://" + addr + "?prefix=" + prefix, yaml: redisTuning}
}

// natsReady reports whether a NATS server with JetStream answers at url.
func natsReady(url string, timeout time.Duration) error { return testproc.NATSReady(url, timeout) }

func redisReady(addr string, timeout time.Duration) error { return testproc.RedisReady(addr, timeout) }

// deleteStreams removes the streams of prefix (the layout of broker/nats).
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
		if err := js.DeleteStream(ctx, prefix+"-"+s); err != nil && !strings.Contains(err.Error(), "not found") {
			t.Errorf("cleanup: delete stream %s-%s: %v", prefix, s, err)
		}
	}
}

// deleteKeys removes every key under prefix.
func deleteKeys(t *testing.T, addr, prefix string) {
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var keys []string
	for iter.Next(ctx) {
		keys = append(keys, iter.Val())
	}
	if err := iter.Err(); err != nil {
		t.Errorf("cleanup: scan: %v", err)
	}
	for len(keys) > 0 {
		n := min(len(keys), 500)
		if err := c.Unlink(ctx, keys[:n]...).Err(); err != nil {
			t.Errorf("cleanup: unlink: %v", err)
			return
		}
		keys = keys[n:]
	}
}

// privateServer is a broker process of one test, which it may restart.
type privateServer struct {
	t    *testing.T
	kind string
	port int
	dir  string
	p    *process
}

// startPrivateNATS runs nats-server with JetStream on a spare loopback
// port, storing in dir.
func startPrivateNATS(t *testing.T, dir string) *privateServer {
	t.Helper()
	s := &privateServer{t: t, kind: "nats", port: testaddr.Port(t), dir: dir}
	s.start()
	return s
}

// startPrivateRedis runs redis-server without persistence on a spare
// loopback port.
func startPrivateRedis(t *testing.T) *privateServer {
	t.Helper()
	s := &privateServer{t: t, kind: "redis", port: testaddr.Port(t), dir: t.TempDir()}
	s.start()
	return s
}

func (s *privateServer) addr() string { return "127.0.0.1:" + strconv.Itoa(s.port) }

// backend returns the nodes' broker settings for this server.
func (s *privateServer) backend() backend {
	if s.kind == "nats" {
		return backend{kind: "nats", url: "nats://" + s.addr() + "?prefix=herald", yaml: natsTuning}
	}
	return backend{kind: "redis", url: "redis://" + s.addr() + "?prefix=herald", yaml: redisTuning}
}

// start starts the server and waits until it serves.
func (s *privateServer) start() {
	t := s.t
	t.Helper()
	port := strconv.Itoa(s.port)
	var path string
	var args []string
	var ready func() error
	switch s.kind {
	case "nats":
		path = lookPath(t, "nats-server", "/usr/sbin/nats-server")
		args = []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", s.dir}
		ready = func() error { return natsReady("nats://"+s.addr(), time.Second) }
	default:
		path = lookPath(t, "redis-server", "")
		args = []string{"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
			"--dir", s.dir, "--logfile", filepath.Join(s.dir, "redis.log")}
		ready = func() error { return redisReady(s.addr(), time.Second) }
	}
	s.p = startProcess(t, s.kind+"-server :"+port, path, args...)
	checkFor(t, 15*time.Second, s.kind+"-server ready", func() error {
		if s.p.exited() {
			t.Fatalf("%s exited: %v\n%s", s.p.name, s.p.Err(), s.p.out.String())
		}
		return ready()
	})
}

// restart kills the server (SIGKILL) and starts it again on the same
// port; with freshStore, NATS starts from an empty store directory.
func (s *privateServer) restart(freshStore bool) {
	s.p.kill()
	if freshStore {
		s.dir = s.t.TempDir()
	}
	s.start()
}

func lookPath(t *testing.T, name, fallback string) string {
	t.Helper()
	return testproc.LookPath(t, name, fallback)
}
