package herald_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/heraldhq/herald/client"
)

func spanAttr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// TestTracingPublish: an API publish carrying a traceparent yields, in
// that trace, the publish span (a child of the caller's), the broker
// append (its child) and the node's fan-out (the append's child) with the
// subscribers and bytes queued; a client publish starts a trace of its own.
func TestTracingPublish(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	t.Cleanup(func() { _ = tp.Shutdown(ctxT(t)) })
	cfg := devConfig()
	cfg.TracerProvider = tp
	ts := startServer(t, cfg)

	const subscribers = 3
	got := make(chan struct{}, 100)
	for i := 0; i < subscribers; i++ {
		c := dial(t, ts, nil)
		if _, err := c.Subscribe(ctxT(t), "traced:1", client.SubscribeOptions{OnPublication: func(client.Publication) { got <- struct{}{} }}); err != nil {
			t.Fatal(err)
		}
	}

	const traceID = "4bf92f3577b34da6a3ce929d0e0e4736"
	const parentSpan = "00f067aa0ba902b7"
	req, _ := http.NewRequest("POST", "http://"+ts.addr+"/api/publish", strings.NewReader(`{"channel":"traced:1","data":{"n":1}}`))
	req.Header.Set("Authorization", "apikey "+testAPIKey)
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parentSpan+"-01")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	receive(t, got, subscribers)

	byName := map[string]sdktrace.ReadOnlySpan{}
	eventually(t, 5*time.Second, "three spans ended", func() bool {
		for _, s := range rec.Ended() {
			if s.SpanContext().TraceID().String() == traceID {
				byName[s.Name()] = s
			}
		}
		return len(byName) == 3
	})
	pub, app, fan := byName["herald.publish"], byName["herald.broker.append"], byName["herald.fanout"]
	if pub == nil || app == nil || fan == nil {
		t.Fatalf("spans of the trace: %v", byName)
	}
	if pub.Parent().SpanID().String() != parentSpan || app.Parent().SpanID() != pub.SpanContext().SpanID() ||
		fan.Parent().SpanID() != app.SpanContext().SpanID() {
		t.Fatalf("span tree: publish<-%s append<-%s fanout<-%s", pub.Parent().SpanID(), app.Parent().SpanID(), fan.Parent().SpanID())
	}
	if v, _ := spanAttr(fan, "herald.subscribers"); v.AsInt64() != subscribers {
		t.Fatalf("fan-out subscribers %v, want %d", v, subscribers)
	}
	if v, _ := spanAttr(fan, "herald.bytes"); v.AsInt64() < subscribers*10 {
		t.Fatalf("fan-out bytes %v", v)
	}
	if v, _ := spanAttr(fan, "herald.node"); v.AsString() != ts.NodeID() {
		t.Fatalf("fan-out node %v", v)
	}
	if v, _ := spanAttr(app, "herald.offset"); v.AsInt64() != 1 {
		t.Fatalf("append offset %v", v)
	}

	// A client publish: a trace of its own, with the same three spans.
	c := dial(t, ts, nil)
	if _, err := c.Publish(ctxT(t), "traced:1", []byte(`{"n":2}`), nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "client publish traced", func() bool {
		for _, s := range rec.Ended() {
			if v, _ := spanAttr(s, "herald.source"); s.Name() == "herald.publish" && v.AsString() == "client" && !s.Parent().IsValid() {
				return true
			}
		}
		return false
	})
}

// TestTracingUnsampled: with a sampler that records nothing, no span ends
// and publications flow as before.
func TestTracingUnsampled(t *testing.T) {
	t.Parallel()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec), sdktrace.WithSampler(sdktrace.NeverSample()))
	t.Cleanup(func() { _ = tp.Shutdown(ctxT(t)) })
	cfg := devConfig()
	cfg.TracerProvider = tp
	ts := startServer(t, cfg)
	got := make(chan struct{}, 1)
	c := dial(t, ts, nil)
	if _, err := c.Subscribe(ctxT(t), "untraced:1", client.SubscribeOptions{OnPublication: func(client.Publication) { got <- struct{}{} }}); err != nil {
		t.Fatal(err)
	}
	ts.publish(t, "untraced:1", seqData(1))
	receive(t, got, 1)
	if n := len(rec.Ended()); n != 0 {
		t.Fatalf("%d spans recorded with NeverSample", n)
	}
}

// receive waits for n values on ch, failing after 10s.
func receive(t *testing.T, ch <-chan struct{}, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		select {
		case <-ch:
		case <-time.After(10 * time.Second):
			t.Fatalf("received %d of %d", i, n)
		}
	}
}
