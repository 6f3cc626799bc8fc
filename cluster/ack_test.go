package cluster_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/client"
)

// testAckedElsewhere: a user's phone, on node 0, receives and
// acknowledges a channel's publications, then goes away; more are
// published; the user's laptop, on node 2, subscribes with FromAcked and
// no position of its own and receives exactly those the phone did not
// acknowledge (the user's cursor, kept in the broker).
func testAckedElsewhere(t *testing.T, c *testCluster) {
	ch := "acked:devices-" + randomHex(4)
	tok, err := auth.MintHS256(tokenSecret, auth.MintOptions{User: "carol-" + randomHex(4), TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	pub, err := client.Dial(ctx, c.nodes[1].url(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer pub.Close()
	publish := func(from, to int) {
		for i := from; i <= to; i++ {
			if _, err := pub.Publish(ctx, ch, fmt.Appendf(nil, `{"n":%d}`, i), nil); err != nil {
				t.Fatalf("publish %d: %v", i, err)
			}
		}
	}
	phone, err := client.Dial(ctx, c.nodes[0].url(), &client.Options{Token: tok})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var got []int
	_, err = phone.Subscribe(ctx, ch, client.SubscribeOptions{OnPublication: func(p client.Publication) {
		mu.Lock()
		got = append(got, seq(t, p.Data))
		mu.Unlock()
	}})
	if err != nil {
		t.Fatal(err)
	}
	publish(1, 10)
	checkFor(t, 10*time.Second, "the phone's 10", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) != 10 {
			return fmt.Errorf("%d publications", len(got))
		}
		return nil
	})
	phone.FlushAcks()
	// Gone before the next ones: a phone still connected would receive
	// and acknowledge some of them.
	phone.Close()
	publish(11, 15)
	// The cursor reaches the broker within a flush interval: until it
	// has, a laptop that acknowledges nothing (ManualAck) would start
	// further back.
	checkFor(t, 10*time.Second, "the laptop to resume after the phone's acknowledgements", func() error {
		laptop, err := client.Dial(ctx, c.nodes[2].url(), &client.Options{Token: tok})
		if err != nil {
			return err
		}
		defer laptop.Close()
		var lgot []int
		var lmu sync.Mutex
		_, err = laptop.Subscribe(ctx, ch, client.SubscribeOptions{FromAcked: true, ManualAck: true, OnPublication: func(p client.Publication) {
			lmu.Lock()
			lgot = append(lgot, seq(t, p.Data))
			lmu.Unlock()
		}})
		if err != nil {
			return err
		}
		lmu.Lock()
		defer lmu.Unlock()
		if want := []int{11, 12, 13, 14, 15}; !slices.Equal(lgot, want) {
			return fmt.Errorf("laptop recovered %v, want %v", lgot, want)
		}
		return nil
	})
}

func seq(t *testing.T, data []byte) int {
	var v struct{ N int }
	if err := json.Unmarshal(data, &v); err != nil {
		t.Errorf("bad payload %q", data)
	}
	return v.N
}
