package redis_test

import (
	"context"
	"fmt"
	"log"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/brokertest"
	"github.com/heraldhq/herald/broker/redis"
	"github.com/heraldhq/herald/protocol"
)

// A node of a Herald cluster on a 3-master Redis Cluster with sharded
// pub/sub. (Compiled, not run: it needs the servers.)
func ExampleNew() {
	b, err := redis.New(redis.Config{
		Addrs:         []string{"10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379"},
		Cluster:       true,
		ShardedPubSub: true,
		Prefix:        "herald-prod",
	})
	if err != nil {
		log.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Start(ctx, brokertest.NewRecorder()); err != nil { // the server passes its hub's handler
		log.Fatal(err)
	}
	defer b.Close(context.Background())

	if err := b.Subscribe(ctx, "chat:lobby"); err != nil {
		log.Fatal(err)
	}
	pos, _, err := b.Publish(ctx, "chat:lobby", &protocol.Publication{Data: protocol.Data(`{"text":"hi"}`)},
		broker.PublishOptions{HistorySize: 100, HistoryTTL: 10 * time.Minute})
	if err != nil {
		log.Fatal(err)
	}
	pubs, cur, err := b.History(ctx, "chat:lobby", broker.HistoryOptions{Since: &broker.StreamPosition{Epoch: pos.Epoch, Offset: pos.Offset - 1}, Limit: -1})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(len(pubs), cur == pos)
}
