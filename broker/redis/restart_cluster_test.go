package redis_test

import (
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/protocol"
)

// TestClusterMasterRestart kills a Redis Cluster master (no replica, no
// persistence) that serves subscribed channels and starts it again on its
// port with its nodes file: it comes back with its slots and without
// data. The broker must subscribe there again and deliver what is
// published next, with the new epoch. Found by the chaos suite: the nodes
// stayed unsubscribed on a healthy connection, and subscribers stalled
// with no signal: a resubscribe that failed part way left go-redis knowing
// only some of the names, and its own reconnect subscribed those alone.
func TestClusterMasterRestart(t *testing.T) {
	t.Parallel()
	addrs, servers := startClusterWith(t, 0)
	b, r := started(t, redis.Config{
		Addrs: addrs, Cluster: true, ShardedPubSub: true, Prefix: "mr",
		DialTimeout: 500 * time.Millisecond, HealthCheckInterval: 500 * time.Millisecond,
	})
	c := goredis.NewClient(&goredis.Options{Addr: addrs[0]})
	defer c.Close()
	// Two channels of one master in different slots, as a node with
	// several channels there has.
	first := "restart-0"
	slot0, err := c.ClusterKeySlot(ctxT(t), "{"+first+"}").Result()
	if err != nil {
		t.Fatal(err)
	}
	master := slotMaster(t, c, slot0)
	chans := []string{first}
	for i := 1; len(chans) < 2 && i < 1000; i++ {
		ch := "restart-" + strconv.Itoa(i)
		slot, err := c.ClusterKeySlot(ctxT(t), "{"+ch+"}").Result()
		if err != nil {
			t.Fatal(err)
		}
		if slot != slot0 && slotMaster(t, c, slot) == master {
			chans = append(chans, ch)
		}
	}
	for _, ch := range chans {
		if err := b.Subscribe(ctxT(t), ch); err != nil {
			t.Fatal(err)
		}
		publish(t, b, ch, 1)
	}
	brokertest.Eventually(t, 10*time.Second, "first deliveries", func() bool {
		return len(r.Pubs(chans[0])) == 1 && len(r.Pubs(chans[1])) == 1
	})

	servers[master].stop()
	time.Sleep(1500 * time.Millisecond) // the broker notices and keeps trying meanwhile
	port, _ := strconv.Atoi(master[strings.LastIndexByte(master, ':')+1:])
	dir := servers[master].dir
	p := strconv.Itoa(port)
	startServer(t, dir, port, "--cluster-enabled", "yes", "--cluster-config-file", filepath.Join(dir, "nodes-"+p+".conf"),
		"--cluster-node-timeout", "1000", "--repl-diskless-sync-delay", "0")

	for _, ch := range chans {
		var pos protocol.StreamPosition
		brokertest.Eventually(t, 30*time.Second, "a publish to "+ch+" after the restart", func() bool {
			got, _, err := b.Publish(ctxT(t), ch, &protocol.Publication{Data: protocol.Data("2")}, withHistory)
			pos = got
			return err == nil
		})
		brokertest.Eventually(t, 20*time.Second, "delivery in "+ch+" after the restart", func() bool {
			pubs := r.Pubs(ch)
			return len(pubs) >= 2 && pubs[len(pubs)-1].Offset == pos.Offset && string(pubs[len(pubs)-1].Data) == "2"
		})
	}
}
