package redis_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/internal/testaddr"
	"github.com/heraldhq/herald/protocol"
	goredis "github.com/redis/go-redis/v9"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// unavailable fails the test in CI (CI=true), where the dependency must be
// there, and skips it elsewhere.
func unavailable(t *testing.T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + " (skipping; with CI=true this fails)")
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// requireRedis returns the address of the test server (env
// HERALD_TEST_REDIS, default 127.0.0.1:6379) once it answers PING.
func requireRedis(t *testing.T) string {
	t.Helper()
	addr := os.Getenv("HERALD_TEST_REDIS")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	c := goredis.NewClient(&goredis.Options{Addr: addr, DialTimeout: 2 * time.Second})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		unavailable(t, "no Redis at %s (set HERALD_TEST_REDIS): %v", addr, err)
	}
	return addr
}

// testPrefix returns a prefix unique to this run and deletes its keys when
// the test ends.
func testPrefix(t *testing.T, addr string) string {
	t.Helper()
	prefix := "heraldtest-" + randomHex(6)
	t.Cleanup(func() { deleteKeys(t, addr, prefix) })
	return prefix
}

// deleteKeys deletes every key under prefix, as a server restart without
// persistence (or FLUSHDB) would, without touching anyone else's keys.
func deleteKeys(t *testing.T, addr, prefix string) {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	iter := c.Scan(ctx, 0, prefix+":*", 1000).Iterator()
	var batch []string
	flush := func() {
		if len(batch) > 0 {
			if err := c.Unlink(ctx, batch...).Err(); err != nil {
				t.Errorf("deleting test keys: %v", err)
			}
			batch = batch[:0]
		}
	}
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
		if len(batch) == 500 {
			flush()
		}
	}
	flush()
	if err := iter.Err(); err != nil {
		t.Errorf("scanning test keys: %v", err)
	}
}

// testLog sends a broker's log to the test's log.
type testLog struct{ t *testing.T }

func (w testLog) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

func newBroker(t *testing.T, cfg redis.Config) *redis.Broker {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testLog{t}, nil))
	}
	b, err := redis.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// presenceStore returns an unstarted broker used as a presence store,
// closed when the test ends.
func presenceStore(t *testing.T, cfg redis.Config) broker.PresenceStore {
	b := newBroker(t, cfg)
	t.Cleanup(func() { closeBroker(t, b) })
	return b
}

func closeBroker(t *testing.T, b *redis.Broker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Close(ctx); err != nil {
		t.Errorf("Close: %v", err)
	}
}

// started returns a started broker and its recorder, closed when the test
// ends.
func started(t *testing.T, cfg redis.Config) (*redis.Broker, *recorder) {
	t.Helper()
	b := newBroker(t, cfg)
	r := &recorder{Recorder: brokertest.NewRecorder()}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, r); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { closeBroker(t, b) })
	return b, r
}

func setup(cfg redis.Config) brokertest.Setup {
	return brokertest.Setup{
		NewNode:     func(t *testing.T) broker.Broker { return newBroker(t, cfg) },
		NewPresence: func(t *testing.T) broker.PresenceStore { return presenceStore(t, cfg) },
	}
}

func TestConformance(t *testing.T) {
	t.Parallel()
	addr := requireRedis(t)
	for _, sharded := range []bool{false, true} {
		t.Run(fmt.Sprintf("sharded=%v", sharded), func(t *testing.T) {
			t.Parallel()
			cfg := redis.Config{Addrs: []string{addr}, Prefix: testPrefix(t, addr), ShardedPubSub: sharded}
			brokertest.Run(t, setup(cfg))
			t.Run("ChannelNames", func(t *testing.T) { t.Parallel(); testChannelNames(t, cfg) })
		})
	}
}

func TestConformanceCluster(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t)
	for _, sharded := range []bool{true, false} {
		t.Run(fmt.Sprintf("sharded=%v", sharded), func(t *testing.T) {
			t.Parallel()
			cfg := redis.Config{Addrs: addrs, Cluster: true, Prefix: "herald-" + randomHex(4), ShardedPubSub: sharded}
			brokertest.Run(t, setup(cfg))
			t.Run("ChannelNames", func(t *testing.T) { t.Parallel(); testChannelNames(t, cfg) })
		})
	}
}

// testChannelNames uses every operation on channel names that cannot be a
// cluster hash tag as they are; in a cluster any key outside the channel's
// slot would fail with CROSSSLOT.
func testChannelNames(t *testing.T, cfg redis.Config) {
	b, r := started(t, cfg)
	ctx := ctxT(t)
	names := []string{"", "}", "{", "{}", "a}b", "{x}y", "x{y}z", "ünï", "a:b"}
	opts := broker.PublishOptions{HistorySize: 10, HistoryTTL: time.Minute, IdempotencyKey: "k", IdempotencyWindow: time.Minute}
	info := &protocol.ClientInfo{Client: "c", User: "u"}
	for _, ch := range names {
		if err := b.Subscribe(ctx, ch); err != nil {
			t.Fatalf("%q: Subscribe: %v", ch, err)
		}
		for i, wantDup := range []bool{false, true} {
			pos, dup, err := b.Publish(ctx, ch, &protocol.Publication{Data: protocol.Data(`1`)}, opts)
			if err != nil || dup != wantDup || pos.Offset != 1 {
				t.Fatalf("%q: publish %d: pos %+v dup %v err %v", ch, i, pos, dup, err)
			}
		}
		if err := b.PublishJoin(ctx, ch, info); err != nil {
			t.Fatalf("%q: PublishJoin: %v", ch, err)
		}
		pubs, _, err := b.History(ctx, ch, broker.HistoryOptions{Limit: -1})
		if err != nil || len(pubs) != 1 || pubs[0].Channel != ch {
			t.Fatalf("%q: history %v, err %v", ch, pubs, err)
		}
		if err := b.AddPresence(ctx, ch, "c", info, time.Minute); err != nil {
			t.Fatalf("%q: AddPresence: %v", ch, err)
		}
		if m, err := b.Presence(ctx, ch); err != nil || len(m) != 1 {
			t.Fatalf("%q: presence %v, err %v", ch, m, err)
		}
		if st, err := b.PresenceStats(ctx, ch); err != nil || st.NumClients != 1 || st.NumUsers != 1 {
			t.Fatalf("%q: presence stats %+v, err %v", ch, st, err)
		}
		if err := b.RemovePresence(ctx, ch, "c"); err != nil {
			t.Fatalf("%q: RemovePresence: %v", ch, err)
		}
		if err := b.RemoveHistory(ctx, ch); err != nil {
			t.Fatalf("%q: RemoveHistory: %v", ch, err)
		}
	}
	brokertest.Eventually(t, 10*time.Second, "a delivery on every channel", func() bool {
		for _, ch := range names {
			if len(r.Pubs(ch)) != 1 {
				return false
			}
		}
		return true
	})
	for _, ch := range names {
		if p := r.Pubs(ch)[0]; p.Channel != ch || p.Offset != 1 {
			t.Fatalf("%q: delivered %+v", ch, p)
		}
		if err := b.Unsubscribe(ctx, ch); err != nil {
			t.Fatalf("%q: Unsubscribe: %v", ch, err)
		}
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

var withHistory = broker.PublishOptions{HistorySize: 100, HistoryTTL: time.Minute}

func publish(t *testing.T, b broker.Broker, ch string, i int) protocol.StreamPosition {
	t.Helper()
	pos, _, err := b.Publish(ctxT(t), ch, &protocol.Publication{Data: protocol.Data(strconv.Itoa(i))}, withHistory)
	if err != nil {
		t.Fatalf("Publish %d: %v", i, err)
	}
	return pos
}

// TestHistoryLoss: when Redis loses a channel's keys (restart without
// persistence, FLUSHDB, eviction) the stream gets a new epoch, so a client
// cannot "recover" across the loss, and delivery goes on in the new epoch.
func TestHistoryLoss(t *testing.T) {
	t.Parallel()
	addr := requireRedis(t)
	prefix := testPrefix(t, addr)
	b, r := started(t, redis.Config{Addrs: []string{addr}, Prefix: prefix})
	ch := "loss"
	if err := b.Subscribe(ctxT(t), ch); err != nil {
		t.Fatal(err)
	}
	var before protocol.StreamPosition
	for i := 1; i <= 3; i++ {
		before = publish(t, b, ch, i)
	}
	deleteKeys(t, addr, prefix)

	pubs, cur, err := b.History(ctxT(t), ch, broker.HistoryOptions{Since: &before, Limit: -1})
	if err != nil {
		t.Fatal(err)
	}
	if cur.Epoch == before.Epoch || cur.Epoch == "" || cur.Offset != 0 || len(pubs) != 0 {
		t.Fatalf("after the loss: position %+v, %d pubs; before %+v", cur, len(pubs), before)
	}
	if broker.Recovered(before, pubs, cur) {
		t.Fatal("recovered across lost history")
	}
	next := publish(t, b, ch, 4)
	if next.Epoch != cur.Epoch || next.Offset != 1 {
		t.Fatalf("first publication after the loss: %+v, want epoch %q offset 1", next, cur.Epoch)
	}
	brokertest.Eventually(t, 10*time.Second, "4 deliveries", func() bool { return len(r.Pubs(ch)) == 4 })
	if got := r.Pubs(ch)[3]; got.Offset != 1 || string(got.Data) != "4" {
		t.Fatalf("delivery after the loss: offset %d data %s", got.Offset, got.Data)
	}
}

// TestReconnect kills the broker's pub/sub connection; publications made
// while it was down must still be delivered, in order, once it is back.
func TestReconnect(t *testing.T) {
	t.Parallel()
	addr := requireRedis(t)
	name := "herald-test-" + randomHex(4)
	for _, sharded := range []bool{false, true} {
		t.Run(fmt.Sprintf("sharded=%v", sharded), func(t *testing.T) {
			t.Parallel()
			name := fmt.Sprintf("%s-%v", name, sharded)
			b, r := started(t, redis.Config{
				Addrs: []string{addr}, Prefix: testPrefix(t, addr), ShardedPubSub: sharded,
				ClientName: name, HealthCheckInterval: time.Second,
			})
			ch := "reconnect"
			if err := b.Subscribe(ctxT(t), ch); err != nil {
				t.Fatal(err)
			}
			publish(t, b, ch, 1)
			brokertest.Eventually(t, 10*time.Second, "first delivery", func() bool { return len(r.Pubs(ch)) == 1 })

			if n := killPubSub(t, addr, name); n == 0 {
				t.Fatal("no pub/sub connection to kill")
			}
			// Published while the connection is down: only a catch-up from
			// history can deliver these, no later publication reveals the gap.
			publish(t, b, ch, 2)
			publish(t, b, ch, 3)
			brokertest.Eventually(t, 15*time.Second, "publications made during the outage", func() bool { return len(r.Pubs(ch)) >= 3 })
			for i, p := range r.Pubs(ch) {
				if p.Offset != uint64(i+1) || string(p.Data) != strconv.Itoa(i+1) {
					t.Fatalf("delivery %d: offset %d data %s", i, p.Offset, p.Data)
				}
			}
			// Control messages flow again too.
			brokertest.Eventually(t, 15*time.Second, "control after reconnect", func() bool {
				if err := b.PublishControl(ctxT(t), []byte("ping")); err != nil {
					t.Fatal(err)
				}
				return r.control.Load() > 0
			})
		})
	}
}

// recorder adds a control message count and the last epoch delivered to
// brokertest.Recorder.
type recorder struct {
	*brokertest.Recorder
	control atomic.Int64
	epoch   atomic.Value // string
}

func (r *recorder) HandlePublication(ch string, p *protocol.Publication, epoch string) {
	r.Recorder.HandlePublication(ch, p, epoch)
	r.epoch.Store(epoch)
}

func (r *recorder) lastEpoch() string {
	e, _ := r.epoch.Load().(string)
	return e
}

func (r *recorder) HandleControl(data []byte) {
	r.Recorder.HandleControl(data)
	r.control.Add(1)
}

// killPubSub kills the pub/sub connections named name and returns how many.
func killPubSub(t *testing.T, addr, name string) int {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	list, err := c.ClientList(ctxT(t)).Result()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	sc := bufio.NewScanner(strings.NewReader(list))
	for sc.Scan() {
		f := map[string]string{}
		for _, kv := range strings.Fields(sc.Text()) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				f[k] = v
			}
		}
		if f["name"] != name || (f["sub"] == "0" && f["ssub"] == "0") {
			continue
		}
		if err := c.Do(ctxT(t), "CLIENT", "KILL", "ID", f["id"]).Err(); err != nil {
			t.Fatal(err)
		}
		n++
	}
	return n
}

// TestServerRestart restarts a Redis without persistence under a
// subscribed broker: the stream comes back with a new epoch, and the
// publication made before the broker resubscribed is still delivered (with
// that epoch, which tells Herald's hub that clients cannot recover).
func TestServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	port := freePorts(t, 1)[0]
	srv := startServer(t, dir, port)
	addr := "127.0.0.1:" + strconv.Itoa(port)
	b, r := started(t, redis.Config{Addrs: []string{addr}, DialTimeout: time.Second, HealthCheckInterval: time.Second})
	ch := "restart"
	if err := b.Subscribe(ctxT(t), ch); err != nil {
		t.Fatal(err)
	}
	before := publish(t, b, ch, 1)
	brokertest.Eventually(t, 10*time.Second, "first delivery", func() bool { return len(r.Pubs(ch)) == 1 })

	srv.stop()
	startServer(t, dir, port)
	var after protocol.StreamPosition
	brokertest.Eventually(t, 10*time.Second, "a publish after the restart", func() bool {
		pos, _, err := b.Publish(ctxT(t), ch, &protocol.Publication{Data: protocol.Data("2")}, withHistory)
		after = pos
		return err == nil // the first tries may meet pooled connections of the dead server
	})
	if after.Epoch == before.Epoch || after.Offset != 1 {
		t.Fatalf("after the restart: %+v, before %+v", after, before)
	}
	brokertest.Eventually(t, 15*time.Second, "the publication after the restart", func() bool { return len(r.Pubs(ch)) == 2 })
	if p := r.Pubs(ch)[1]; p.Offset != 1 || string(p.Data) != "2" || r.lastEpoch() != after.Epoch {
		t.Fatalf("delivered offset %d data %s epoch %q, want offset 1 epoch %q", p.Offset, p.Data, r.lastEpoch(), after.Epoch)
	}
	// Control messages flow again too.
	brokertest.Eventually(t, 15*time.Second, "control after the restart", func() bool {
		if err := b.PublishControl(ctxT(t), []byte("ping")); err != nil {
			return false
		}
		return r.control.Load() > 0
	})
}

func TestStartUnreachable(t *testing.T) {
	t.Parallel()
	addr := testaddr.Addr(t) // nothing listens there
	b := newBroker(t, redis.Config{Addrs: []string{addr}, DialTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Start(ctx, brokertest.NewRecorder()); err == nil {
		t.Fatal("Start succeeded without a server")
	}
	closeBroker(t, b)
	if _, _, err := b.Publish(ctx, "x", &protocol.Publication{}, broker.PublishOptions{}); err != broker.ErrClosed {
		t.Fatalf("Publish after Close: %v, want ErrClosed", err)
	}
}

func TestValidate(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		cfg  redis.Config
		ok   bool
	}{
		{"zero value", redis.Config{}, true},
		{"cluster with seeds", redis.Config{Cluster: true, Addrs: []string{"a:1", "b:2"}, ShardedPubSub: true}, true},
		{"standalone with two addresses", redis.Config{Addrs: []string{"a:1", "b:2"}}, false},
		{"empty address", redis.Config{Addrs: []string{""}}, false},
		{"cluster with DB", redis.Config{Cluster: true, DB: 1}, false},
		{"negative DB", redis.Config{DB: -1}, false},
		{"brace in prefix", redis.Config{Prefix: "a{b"}, false},
		{"negative timeout", redis.Config{ReadTimeout: -time.Second}, false},
		{"negative pool", redis.Config{PoolSize: -1}, false},
	}
	for _, c := range cases {
		if err := c.cfg.Validate(); (err == nil) != c.ok {
			t.Errorf("%s: Validate() = %v", c.name, err)
		}
		if _, err := redis.New(c.cfg); (err == nil) != c.ok {
			t.Errorf("%s: New error %v", c.name, err)
		}
	}
}

// TestClusterSlotMigration moves a subscribed channel's slot, keys and
// all, to another master. The old master ends the shard subscription; the
// broker must follow the slot, and deliver what was published meanwhile.
func TestClusterSlotMigration(t *testing.T) {
	t.Parallel()
	addrs := startCluster(t)
	b, r := started(t, redis.Config{Addrs: addrs, Cluster: true, ShardedPubSub: true, Prefix: "mig"})
	ch := "moving"
	if err := b.Subscribe(ctxT(t), ch); err != nil {
		t.Fatal(err)
	}
	first := publish(t, b, ch, 1)
	brokertest.Eventually(t, 10*time.Second, "first delivery", func() bool { return len(r.Pubs(ch)) == 1 })

	migrateSlot(t, addrs, "{"+ch+"}")
	for i := 2; i <= 4; i++ {
		if pos := publish(t, b, ch, i); pos.Epoch != first.Epoch || pos.Offset != uint64(i) {
			t.Fatalf("publish %d after the move: %+v (first %+v)", i, pos, first)
		}
	}
	brokertest.Eventually(t, 15*time.Second, "deliveries after the move", func() bool { return len(r.Pubs(ch)) >= 4 })
	for i, p := range r.Pubs(ch) {
		if p.Offset != uint64(i+1) {
			t.Fatalf("delivery %d has offset %d", i, p.Offset)
		}
	}
	// The subscription lives on the new master now.
	publish(t, b, ch, 5)
	brokertest.Eventually(t, 10*time.Second, "live delivery from the new master", func() bool { return len(r.Pubs(ch)) == 5 })
	pubs, pos, err := b.History(ctxT(t), ch, broker.HistoryOptions{Limit: -1})
	if err != nil || len(pubs) != 5 || pos.Offset != 5 || pos.Epoch != first.Epoch {
		t.Fatalf("history after the move: %d pubs, pos %+v, err %v", len(pubs), pos, err)
	}
}

// TestClusterFailover kills the master serving a subscribed channel; once
// its replica takes over, the broker must subscribe there and deliver
// what is published, including what was published before it got there.
func TestClusterFailover(t *testing.T) {
	t.Parallel()
	start := time.Now()
	addrs, servers := startClusterWith(t, 1)
	t.Logf("cluster up after %v", time.Since(start))
	b, r := started(t, redis.Config{
		Addrs: addrs, Cluster: true, ShardedPubSub: true, Prefix: "fo",
		DialTimeout: 500 * time.Millisecond, HealthCheckInterval: 500 * time.Millisecond,
	})
	ch := "failover"
	if err := b.Subscribe(ctxT(t), ch); err != nil {
		t.Fatal(err)
	}
	publish(t, b, ch, 1)
	brokertest.Eventually(t, 10*time.Second, "first delivery", func() bool { return len(r.Pubs(ch)) == 1 })

	c := goredis.NewClient(&goredis.Options{Addr: addrs[0]})
	defer c.Close()
	slot, err := c.ClusterKeySlot(ctxT(t), "{"+ch+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	master := slotMaster(t, c, slot)
	servers[master].stop()
	t.Logf("killed master %s after %v", master, time.Since(start))
	for _, a := range addrs { // a client that still asks the dead master
		if a != master {
			c = goredis.NewClient(&goredis.Options{Addr: a})
			defer c.Close()
			break
		}
	}
	brokertest.Eventually(t, 20*time.Second, "a replica to take over", func() bool {
		m := slotMaster(t, c, slot)
		return m != "" && m != master
	})
	t.Logf("failed over after %v", time.Since(start))
	// Publish once the new master accepts it (async replication may or may
	// not have kept the stream: either epoch is fine).
	var pos protocol.StreamPosition
	brokertest.Eventually(t, 20*time.Second, "a publish after the failover", func() bool {
		p, _, err := b.Publish(ctxT(t), ch, &protocol.Publication{Data: protocol.Data("2")}, withHistory)
		pos = p
		return err == nil
	})
	brokertest.Eventually(t, 20*time.Second, "delivery after the failover", func() bool {
		pubs := r.Pubs(ch)
		return len(pubs) == 2 && pubs[1].Offset == pos.Offset && string(pubs[1].Data) == "2"
	})
	publish(t, b, ch, 3)
	brokertest.Eventually(t, 10*time.Second, "live delivery from the new master", func() bool { return len(r.Pubs(ch)) == 3 })
}

// slotMaster returns the address of slot's master as c's node sees it.
func slotMaster(t *testing.T, c *goredis.Client, slot int64) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	slots, err := c.ClusterSlots(ctx).Result()
	if err != nil {
		return ""
	}
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			return r.Nodes[0].Addr
		}
	}
	return ""
}

// migrateSlot moves the slot of key, with its keys, from its master to
// another one, as redis-cli --cluster reshard does.
func migrateSlot(t *testing.T, addrs []string, key string) {
	t.Helper()
	ctx := ctxT(t)
	clients := map[string]*goredis.Client{}
	ids := map[string]string{}
	for _, a := range addrs {
		c := goredis.NewClient(&goredis.Options{Addr: a})
		defer c.Close()
		clients[a] = c
		id, err := c.Do(ctx, "CLUSTER", "MYID").Text()
		if err != nil {
			t.Fatal(err)
		}
		ids[a] = id
	}
	slot, err := clients[addrs[0]].ClusterKeySlot(ctx, key).Result()
	if err != nil {
		t.Fatal(err)
	}
	slots, err := clients[addrs[0]].ClusterSlots(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	var src, dst string
	for _, r := range slots {
		if int64(r.Start) <= slot && slot <= int64(r.End) {
			src = r.Nodes[0].Addr
		}
	}
	for _, a := range addrs {
		if a != src {
			dst = a
			break
		}
	}
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(clients[dst].Do(ctx, "CLUSTER", "SETSLOT", slot, "IMPORTING", ids[src]).Err())
	must(clients[src].Do(ctx, "CLUSTER", "SETSLOT", slot, "MIGRATING", ids[dst]).Err())
	keys, err := clients[src].ClusterGetKeysInSlot(ctx, int(slot), 1000).Result()
	must(err)
	if len(keys) > 0 {
		host, port, _ := net.SplitHostPort(dst)
		args := []any{"MIGRATE", host, port, "", 0, 5000, "KEYS"}
		for _, k := range keys {
			args = append(args, k)
		}
		must(clients[src].Do(ctx, args...).Err())
	}
	for _, a := range append([]string{dst, src}, addrs...) {
		must(clients[a].Do(ctx, "CLUSTER", "SETSLOT", slot, "NODE", ids[dst]).Err())
	}
}

// startCluster starts a 3-master Redis Cluster without persistence from the
// local redis-server on free loopback ports and returns the addresses. The
// processes are killed when the test ends.
func startCluster(t *testing.T) []string {
	t.Helper()
	// A master that misses the cluster bus for the node timeout is failed
	// by the others (CLUSTERDOWN): 1 s is short on a loaded machine, and
	// no test on this cluster kills a master.
	addrs, _ := startClusterTimeout(t, 0, "5000")
	return addrs
}

// startClusterWith starts 3 masters with replicas replicas each and
// returns the addresses and servers (by address). The node timeout is 1 s,
// so that a killed master is noticed soon.
func startClusterWith(t *testing.T, replicas int) ([]string, map[string]*server) {
	t.Helper()
	return startClusterTimeout(t, replicas, "1000")
}

func startClusterTimeout(t *testing.T, replicas int, nodeTimeout string) ([]string, map[string]*server) {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		unavailable(t, "redis-cli not found in PATH: %v", err)
	}
	dir := t.TempDir()
	ports := freePorts(t, 3*(1+replicas))
	addrs := make([]string, len(ports))
	servers := make(map[string]*server)
	for i, port := range ports {
		p := strconv.Itoa(port)
		addrs[i] = "127.0.0.1:" + p
		servers[addrs[i]] = startServer(t, dir, port,
			"--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"),
			"--cluster-node-timeout", nodeTimeout, "--repl-diskless-sync-delay", "0")
	}
	clients := make([]*goredis.Client, len(addrs))
	for i, a := range addrs {
		clients[i] = goredis.NewClient(&goredis.Options{Addr: a, MaxRetries: -1})
		defer clients[i].Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", strconv.Itoa(replicas), "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redis-cli --cluster create: %v\n%s", err, out)
	}
	for i, c := range clients {
		brokertest.Eventually(t, 20*time.Second, "cluster_state:ok on "+addrs[i], func() bool {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			defer cancel()
			info, err := c.ClusterInfo(ctx).Result()
			if err != nil || !strings.Contains(info, "cluster_state:ok") {
				return false
			}
			slots, err := c.ClusterSlots(ctx).Result()
			if err != nil || len(slots) != 3 {
				return false
			}
			// Every node knows every replica (CLUSTER SLOTS lists them
			// only seconds later).
			nodes, err := c.ClusterNodes(ctx).Result()
			return err == nil && strings.Count(nodes, "slave") == 3*replicas
		})
	}
	return addrs, servers
}

// server is a redis-server process the test started.
type server struct {
	cmd  *exec.Cmd
	dir  string
	done bool
}

// stop kills the server (SIGKILL: no shutdown save) and waits for it.
func (s *server) stop() {
	if !s.done {
		s.done = true
		_ = s.cmd.Process.Kill()
		_ = s.cmd.Wait()
	}
}

// startServer starts redis-server without persistence on port, with
// extra arguments, and waits until it answers. It is stopped when the
// test ends.
func startServer(t *testing.T, dir string, port int, extra ...string) *server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		unavailable(t, "redis-server not found in PATH: %v", err)
	}
	p := strconv.Itoa(port)
	args := append([]string{
		"--port", p, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--dir", dir, "--logfile", filepath.Join(dir, p+".log"),
	}, extra...)
	s := &server{cmd: exec.Command(bin, args...), dir: dir}
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(s.stop)
	c := goredis.NewClient(&goredis.Options{Addr: "127.0.0.1:" + p, MaxRetries: -1})
	defer c.Close()
	brokertest.Eventually(t, 10*time.Second, "redis-server on port "+p+" to answer", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return c.Ping(ctx).Err() == nil
	})
	return s
}

// freePorts returns n free loopback ports whose cluster bus ports (+10000)
// are free too.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ports := make([]int, n)
	for i := range ports {
		ports[i] = testaddr.PortWith(t, 10000)
	}
	return ports
}
