package nats_test

import (
	"context"
	"strings"
	"testing"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	natsbroker "github.com/heraldhq/herald/broker/nats"
)

// TestStartFailsOnForeignOverlap: a stream of someone else's whose
// subjects overlap the broker's makes Start fail with the server's
// overlap error after a few tries (which cover a create racing another
// node's create of the same stream), not hang or succeed.
func TestStartFailsOnForeignOverlap(t *testing.T) {
	t.Parallel()
	url := startServer(t, -1, t.TempDir()).ClientURL()
	prefix := randomPrefix("overlap")
	nc, err := natsgo.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	foreign := strings.ReplaceAll(prefix, "-", "_") + "_foreign"
	if _, err := js.CreateStream(c, jetstream.StreamConfig{Name: foreign, Subjects: []string{prefix + ".hist.>"}}); err != nil {
		t.Fatal(err)
	}
	defer js.DeleteStream(context.Background(), foreign)
	b, err := natsbroker.New(natsbroker.Config{Servers: []string{url}, Prefix: prefix})
	if err != nil {
		t.Fatal(err)
	}
	err = b.Start(c, nil)
	if err == nil {
		_ = b.Close(context.Background())
		t.Fatal("Start succeeded beside a stream overlapping its subjects")
	}
	if !strings.Contains(err.Error(), "overlap") {
		t.Fatalf("Start: %v, want the subjects overlap error", err)
	}
	if c.Err() != nil {
		t.Fatalf("Start ran into its deadline: %v", err)
	}
}
