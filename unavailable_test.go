package herald_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/broker/memory"
	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// refusingBroker refuses publishes and history reads with
// broker.ErrUnavailable while refuse is set, as the NATS broker does while
// a stream elects a leader.
type refusingBroker struct {
	broker.Broker
	refuse atomic.Bool
}

func (b *refusingBroker) Publish(ctx context.Context, ch string, pub *protocol.Publication, opts broker.PublishOptions) (broker.StreamPosition, bool, error) {
	if b.refuse.Load() {
		return broker.StreamPosition{}, false, fmt.Errorf("test: %w", broker.ErrUnavailable)
	}
	return b.Broker.Publish(ctx, ch, pub, opts)
}

func (b *refusingBroker) History(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, broker.StreamPosition, error) {
	if b.refuse.Load() {
		return nil, broker.StreamPosition{}, fmt.Errorf("test: %w", broker.ErrUnavailable)
	}
	return b.Broker.History(ctx, ch, opts)
}

func (b *refusingBroker) Ready(context.Context) error {
	if b.refuse.Load() {
		return fmt.Errorf("test: %w", broker.ErrUnavailable)
	}
	return nil
}

// TestBrokerUnavailable: /readyz answers 503 while the broker says it
// cannot serve calls (broker.Readier); a call the broker refuses for now is answered
// with the temporary code 117 (HTTP 503 on the server API), and the same
// call succeeds once the broker serves again.
func TestBrokerUnavailable(t *testing.T) {
	t.Parallel()
	b := &refusingBroker{Broker: memory.New(memory.Config{})}
	cfg := devConfig()
	cfg.Broker = b
	ts := startServer(t, cfg)
	c := dial(t, ts, nil)
	ready := func() int {
		resp, err := http.Get("http://" + ts.addr + "/readyz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz with the broker serving: HTTP %d", code)
	}
	b.refuse.Store(true)
	if code := ready(); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz with the broker unavailable: HTTP %d, want 503", code)
	}

	var res struct {
		Error *protocol.Error `json:"error"`
	}
	if code := ts.api(t, "publish", map[string]any{"channel": "news", "data": map[string]int{"n": 1}}, &res); code != http.StatusServiceUnavailable ||
		res.Error == nil || res.Error.Code != protocol.ErrUnavailable || !res.Error.Temporary {
		t.Fatalf("API publish while unavailable: HTTP %d, %+v; want 503 with temporary code 117", code, res.Error)
	}
	_, err := c.Publish(ctxT(t), "news", []byte(`{"n":1}`), nil)
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.ErrUnavailable || !pe.Temporary {
		t.Fatalf("client publish while unavailable: %v; want temporary code 117", err)
	}
	if _, _, err := c.History(ctxT(t), "news", client.HistoryOptions{}); !errors.As(err, &pe) || pe.Code != protocol.ErrUnavailable {
		t.Fatalf("history while unavailable: %v; want code 117", err)
	}

	b.refuse.Store(false)
	if code := ready(); code != http.StatusOK {
		t.Fatalf("/readyz once the broker serves again: HTTP %d", code)
	}
	if _, err := c.Publish(ctxT(t), "news", []byte(`{"n":1}`), nil); err != nil {
		t.Fatalf("publish retried once the broker serves again: %v", err)
	}
}
