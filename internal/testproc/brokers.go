package testproc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/internal/testaddr"
)

// NATSReady reports whether a NATS server with JetStream answers at url.
func NATSReady(url string, timeout time.Duration) error {
	nc, err := natsgo.Connect(url, natsgo.Timeout(timeout), natsgo.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err = js.AccountInfo(ctx)
	return err
}

// RedisReady reports whether a Redis server answers PING at addr.
func RedisReady(addr string, timeout time.Duration) error {
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: timeout, MaxRetries: -1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

// Server is a broker process (nats-server or redis-server) of one test on
// a fixed loopback port, which the test may kill, pause and restart.
type Server struct {
	tb    testing.TB
	Kind  string // "nats" or "redis"
	Port  int
	Dir   string // the store directory, kept across restarts
	path  string
	args  []string
	ready func() error
	logs  Logs
	P     *Process
}

// Addr is the server's client address, 127.0.0.1:PORT.
func (s *Server) Addr() string { return "127.0.0.1:" + strconv.Itoa(s.Port) }

// Start starts the server and waits until it serves (at most 30s).
func (s *Server) Start() {
	s.tb.Helper()
	s.P = Start(s.tb, s.logs, s.Kind+"-server :"+strconv.Itoa(s.Port), s.path, nil, s.args...)
	s.WaitReady(30 * time.Second)
}

// StartNoWait starts the server without waiting for it (a cluster member
// that is ready only once the others are up).
func (s *Server) StartNoWait() {
	s.tb.Helper()
	s.P = Start(s.tb, s.logs, s.Kind+"-server :"+strconv.Itoa(s.Port), s.path, nil, s.args...)
}

// WaitReady waits until the server answers; it fails the test if the
// process exits or timeout passes first.
func (s *Server) WaitReady(timeout time.Duration) {
	s.tb.Helper()
	CheckFor(s.tb, timeout, s.P.Name+" ready", func() error {
		if s.P.Exited() {
			s.tb.Fatalf("%s exited: %v\n%s", s.P.Name, s.P.Err(), Tail(s.P.Output(), 4000))
		}
		return s.ready()
	})
}

// Restart kills the server (SIGKILL) if it runs and starts it again on
// the same port and store.
func (s *Server) Restart() {
	s.tb.Helper()
	s.P.Kill()
	s.Start()
}

// NATSServer returns a nats-server with JetStream on a spare loopback
// port, storing in a directory of the test; it is not started yet. The
// binary is $HERALD_TEST_NATS_SERVER if set, else nats-server from PATH
// (or /usr/sbin). logs say where its output goes (see Start).
func NATSServer(tb testing.TB, logs Logs) *Server {
	tb.Helper()
	path := os.Getenv("HERALD_TEST_NATS_SERVER")
	if path == "" {
		path = LookPath(tb, "nats-server", "/usr/sbin/nats-server")
	}
	s := &Server{tb: tb, Kind: "nats", Port: testaddr.Port(tb), Dir: tb.TempDir(), logs: logs, path: path}
	s.args = []string{"-a", "127.0.0.1", "-p", strconv.Itoa(s.Port), "-js", "-sd", s.Dir}
	s.ready = func() error { return NATSReady("nats://"+s.Addr(), time.Second) }
	return s
}

// StartNATSCluster starts n nats-server processes with JetStream that
// route to each other as one cluster, and waits until each serves
// JetStream. The servers advertise no cluster addresses to clients, so a
// client connects only to the server it was given (through a proxy, say).
func StartNATSCluster(tb testing.TB, logs Logs, n int) []*Server {
	tb.Helper()
	name := "c" + RandomHex(4)
	routes := testaddr.Addrs(tb, n)
	urls := make([]string, n)
	for i, r := range routes {
		urls[i] = "nats://" + r
	}
	servers := make([]*Server, n)
	for i := range servers {
		s := NATSServer(tb, logs)
		s.args = append(s.args, "--server_name", fmt.Sprintf("s%d", i), "--cluster_name", name,
			"--cluster", urls[i], "--routes", strings.Join(urls, ","), "--no_advertise=true")
		servers[i] = s
	}
	for _, s := range servers {
		s.StartNoWait()
	}
	for _, s := range servers {
		s.WaitReady(60 * time.Second)
	}
	// Each server answering is not enough: a stream with n replicas can
	// be placed only once every peer is known to the meta leader.
	CheckFor(tb, 60*time.Second, "a stream with every server as a replica", func() error {
		return natsPlace("nats://"+servers[0].Addr(), n)
	})
	return servers
}

// natsPlace creates a stream with replicas replicas and deletes it.
func natsPlace(url string, replicas int) error {
	nc, err := natsgo.Connect(url, natsgo.Timeout(2*time.Second), natsgo.NoReconnect())
	if err != nil {
		return err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	name := "testproc_ready_" + RandomHex(4)
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: name, Subjects: []string{name}, Replicas: replicas, Storage: jetstream.MemoryStorage}); err != nil {
		return err
	}
	return js.DeleteStream(ctx, name)
}

// RedisServer returns a redis-server without persistence on a spare
// loopback port (extra arguments appended); it is not started yet.
func RedisServer(tb testing.TB, logs Logs, portOffset int, extra ...string) *Server {
	tb.Helper()
	s := &Server{tb: tb, Kind: "redis", Port: testaddr.PortWith(tb, portOffset), Dir: tb.TempDir(), logs: logs,
		path: LookPath(tb, "redis-server", "/usr/bin/redis-server")}
	p := strconv.Itoa(s.Port)
	s.args = append([]string{"--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", s.Dir, "--logfile", filepath.Join(s.Dir, "redis-"+p+".log")}, extra...)
	s.ready = func() error { return RedisReady(s.Addr(), time.Second) }
	return s
}

// StartRedisCluster starts a 3-master Redis Cluster without persistence
// and without replicas, and waits until every node reports it ok.
// A master that is killed and restarted keeps its identity (its nodes
// file) and slots, and comes back empty.
func StartRedisCluster(tb testing.TB, logs Logs) []*Server {
	tb.Helper()
	cli := LookPath(tb, "redis-cli", "/usr/bin/redis-cli")
	servers := make([]*Server, 3)
	addrs := make([]string, 3)
	for i := range servers {
		s := RedisServer(tb, logs, 10000)
		s.args = append(s.args, "--cluster-enabled", "yes",
			"--cluster-config-file", filepath.Join(s.Dir, "nodes.conf"),
			"--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "yes")
		s.Start()
		servers[i], addrs[i] = s, s.Addr()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		tb.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for _, s := range servers {
		s.ready = redisClusterReady(s.Addr(), len(servers))
		s.WaitReady(30 * time.Second)
	}
	return servers
}

// redisClusterReady reports whether the node at addr sees the cluster ok
// with n masters serving every slot.
func redisClusterReady(addr string, n int) func() error {
	return func() error {
		c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: time.Second, MaxRetries: -1})
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		info, err := c.ClusterInfo(ctx).Result()
		if err != nil {
			return err
		}
		if !strings.Contains(info, "cluster_state:ok") {
			return fmt.Errorf("%s: cluster state not ok", addr)
		}
		slots, err := c.ClusterSlots(ctx).Result()
		if err != nil {
			return err
		}
		if len(slots) != n {
			return fmt.Errorf("%s: %d slot ranges, want %d", addr, len(slots), n)
		}
		return nil
	}
}
