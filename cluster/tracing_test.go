package cluster_test

import (
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/internal/testaddr"
)

// otlpReceiver is an OTLP/HTTP trace receiver: it keeps every span it is
// sent.
type otlpReceiver struct {
	url   string
	mu    sync.Mutex
	spans []*tracepb.Span
}

func startOTLPReceiver(t *testing.T) *otlpReceiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &otlpReceiver{url: "http://" + ln.Addr().String()}
	srv := &http.Server{Handler: http.HandlerFunc(r.serve)}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return r
}

func (r *otlpReceiver) serve(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != "/v1/traces" {
		http.NotFound(w, req)
		return
	}
	var body io.Reader = req.Body
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(req.Body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		body = zr
	}
	b, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var msg coltracepb.ExportTraceServiceRequest
	if err := proto.Unmarshal(b, &msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	for _, rs := range msg.ResourceSpans {
		for _, ss := range rs.ScopeSpans {
			r.spans = append(r.spans, ss.Spans...)
		}
	}
	r.mu.Unlock()
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	w.Header().Set("Content-Type", "application/x-protobuf")
	_, _ = w.Write(out)
}

// trace returns the spans of traceID (hex).
func (r *otlpReceiver) trace(traceID string) []*tracepb.Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []*tracepb.Span
	for _, s := range r.spans {
		if hex.EncodeToString(s.TraceId) == traceID {
			out = append(out, s)
		}
	}
	return out
}

func attrString(s *tracepb.Span, key string) string {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetStringValue()
		}
	}
	return ""
}

func attrInt(s *tracepb.Span, key string) int64 {
	for _, kv := range s.Attributes {
		if kv.Key == key {
			return kv.Value.GetIntValue()
		}
	}
	return -1
}

// TestTracingAcrossNodes: three nodes export spans over OTLP to a receiver
// the test runs; an API publish on node 0 with a traceparent yields, under
// that trace id, the publish and append spans of node 0 and one fan-out
// span from each of the three nodes, each with its subscribers.
func TestTracingAcrossNodes(t *testing.T) {
	t.Parallel()
	for _, engine := range []string{"nats", "redis", "embedded"} {
		t.Run(engine, func(t *testing.T) {
			t.Parallel()
			recv := startOTLPReceiver(t)
			env := []string{"OTEL_EXPORTER_OTLP_ENDPOINT=" + recv.url, "OTEL_BSP_SCHEDULE_DELAY=100", "OTEL_SERVICE_NAME=herald-test"}
			var c *testCluster
			switch engine {
			case "embedded":
				routes := testaddr.Addrs(t, 3)
				name := "t" + randomHex(4)
				c = startClusterEnv(t, 3, nodeConfig(t, ""), 60*time.Second, env, func(i int) []string {
					return []string{"--cluster-listen", routes[i], "--cluster-peers", strings.Join(routes, ","),
						"--cluster-name", name, "--data-dir", t.TempDir()}
				})
			default:
				be := sharedNATS
				if engine == "redis" {
					be = sharedRedis
				}
				b := be(t)
				c = startClusterEnv(t, 3, nodeConfig(t, b.yaml), 20*time.Second, env, func(int) []string { return []string{"--broker", b.url} })
			}
			testTracing(t, c, recv)
		})
	}
}

func testTracing(t *testing.T, c *testCluster, recv *otlpReceiver) {
	ch := "traced-" + randomHex(4)
	got := make(chan struct{}, 100)
	subsPerNode := []int{1, 2, 3}
	nodeIDs := map[string]int{} // node id -> subscribers there
	for _, n := range c.nodes {
		for k := 0; k < subsPerNode[n.i]; k++ {
			cl := dial(t, n.url(), nil)
			if _, err := cl.Subscribe(ctxTimeout(t, 10*time.Second), ch, client.SubscribeOptions{
				OnPublication: func(client.Publication) { got <- struct{}{} },
			}); err != nil {
				t.Fatal(err)
			}
		}
		nodeIDs[nodeOf(t, n)] = subsPerNode[n.i]
	}

	traceID := randomHex(16)
	parent := randomHex(8)
	req, _ := http.NewRequest("POST", "http://"+c.nodes[0].addr+"/api/publish", bytes.NewReader(fmt.Appendf(nil, `{"channel":%q,"data":{"n":1}}`, ch)))
	req.Header.Set("Authorization", "apikey "+apiKey)
	req.Header.Set("Traceparent", "00-"+traceID+"-"+parent+"-01")
	resp, err := httpc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("publish: %d", resp.StatusCode)
	}
	for i := 0; i < 6; i++ {
		select {
		case <-got:
		case <-time.After(10 * time.Second):
			t.Fatalf("%d of 6 subscribers got the publication", i)
		}
	}

	var pub, app *tracepb.Span
	fanouts := map[string]*tracepb.Span{}
	checkFor(t, 10*time.Second, "spans of every node exported", func() error {
		pub, app = nil, nil
		clear(fanouts)
		for _, s := range recv.trace(traceID) {
			switch s.Name {
			case "herald.publish":
				pub = s
			case "herald.broker.append":
				app = s
			case "herald.fanout":
				fanouts[attrString(s, "herald.node")] = s
			}
		}
		if pub == nil || app == nil || len(fanouts) < 3 {
			return fmt.Errorf("publish %v, append %v, fan-out spans from %d nodes", pub != nil, app != nil, len(fanouts))
		}
		return nil
	})
	if hex.EncodeToString(pub.ParentSpanId) != parent || !bytes.Equal(app.ParentSpanId, pub.SpanId) {
		t.Fatalf("publish's parent %x (want %s), append's parent %x (want %x)", pub.ParentSpanId, parent, app.ParentSpanId, pub.SpanId)
	}
	for node, subs := range nodeIDs {
		f := fanouts[node]
		if f == nil {
			t.Fatalf("no fan-out span from node %s", node)
		}
		if !bytes.Equal(f.ParentSpanId, app.SpanId) {
			t.Errorf("fan-out of %s: parent %x, want the append %x", node, f.ParentSpanId, app.SpanId)
		}
		if n := attrInt(f, "herald.subscribers"); n != int64(subs) {
			t.Errorf("fan-out of %s: %d subscribers, want %d", node, n, subs)
		}
		if attrInt(f, "herald.bytes") <= 0 {
			t.Errorf("fan-out of %s: no bytes", node)
		}
	}
}
