package cluster_test

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald/client"
	"github.com/heraldhq/herald/protocol"
)

// TestHTTPStreamNoStickiness runs three nodes on NATS behind the
// round-robin balancer, without stickiness: an HTTP-streaming client's
// POSTs, each on a new connection, land on every node, most of them not
// the one holding the stream, and sent two at a time they arrive out of
// order; every command is answered, in order, on the stream. A Go SDK
// client on HTTP streaming through the balancer publishes and receives
// its publications in order.
func TestHTTPStreamNoStickiness(t *testing.T) {
	t.Parallel()
	be := sharedNATS(t)
	c := startCluster(t, 3, nodeConfig(t, be.yaml), 20*time.Second, func(int) []string { return []string{"--broker", be.url} })
	base := "http://" + c.lb.ln.Addr().String()
	ch := "nostick-" + randomHex(4)

	resp, err := http.Get(base + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	token := resp.Header.Get("Herald-Session")
	if resp.StatusCode != 200 || token == "" {
		t.Fatalf("GET /stream: HTTP %d, session %q", resp.StatusCode, token)
	}
	holder, _, _ := strings.Cut(token, ".")
	lines := make(chan string, 1000)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	before := c.lb.servedTotal()
	post := func(seq int, body string) error {
		hc := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		r, err := hc.Post(fmt.Sprintf("%s/stream/send?session=%s&seq=%d", base, token, seq), "text/plain", strings.NewReader(body))
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, r.Body)
		r.Body.Close()
		if r.StatusCode != 204 {
			return fmt.Errorf("POST %d: HTTP %d", seq, r.StatusCode)
		}
		return nil
	}
	if err := post(1, `{"id":1,"connect":{}}`); err != nil {
		t.Fatal(err)
	}
	// Batches 2..31 in pairs, the later one of each pair first.
	const batches = 31
	for seq := 2; seq <= batches; seq += 2 {
		var wg sync.WaitGroup
		errs := make(chan error, 2)
		for _, s := range []int{seq + 1, seq} {
			if s > batches {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- post(s, fmt.Sprintf(`{"id":%d,"publish":{"channel":%q,"data":{"n":%d}}}`, s, ch, s))
			}()
			time.Sleep(20 * time.Millisecond) // the later one goes first
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	var ids []uint64
	var offsets []uint64
	deadline := time.After(20 * time.Second)
	for len(ids) < batches {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("stream ended after replies %v", ids)
			}
			var m protocol.ServerMessage
			if err := protocol.JSON.DecodeServerMessage([]byte(l), &m); err != nil {
				t.Fatalf("%q: %v", l, err)
			}
			if m.ID == 0 {
				continue // a ping
			}
			if m.Error != nil {
				t.Fatalf("reply %d: %v", m.ID, m.Error)
			}
			ids = append(ids, m.ID)
			if m.Publish != nil {
				offsets = append(offsets, m.Publish.Offset)
			}
		case <-deadline:
			t.Fatalf("replies so far %v, want 1..%d", ids, batches)
		}
	}
	for i, id := range ids {
		if id != uint64(i+1) {
			t.Fatalf("replies in the order %v, want 1..%d", ids, batches)
		}
	}
	for i, o := range offsets {
		if o != uint64(i+1) {
			t.Fatalf("publishes got offsets %v: not run in order", offsets)
		}
	}
	after := c.lb.servedTotal()
	elsewhere, per := 0, make([]int, len(after))
	for i := range after {
		per[i] = after[i] - before[i]
		if nodeOf(t, c.nodes[i]) != holder {
			elsewhere += per[i]
		}
	}
	if elsewhere < batches/2 {
		t.Fatalf("POSTs per node %v: %d landed away from the stream's node, want most", per, elsewhere)
	}
	t.Logf("POSTs per node %v (stream on %s), %d of %d on other nodes than the stream's", per, holder[:8], elsewhere, batches)

	// The Go SDK through the balancer.
	opts := clientOptions()
	opts.Transport = client.TransportHTTPStream
	cl := dial(t, c.lb.URL(), opts)
	var mu sync.Mutex
	var got []int
	if _, err := cl.Subscribe(ctxTimeout(t, 10*time.Second), ch+"-sdk", client.SubscribeOptions{OnPublication: func(p client.Publication) {
		var n int
		fmt.Sscanf(string(p.Data), `{"n":%d}`, &n)
		mu.Lock()
		got = append(got, n)
		mu.Unlock()
	}}); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 30; i++ {
		if _, err := cl.Publish(ctxTimeout(t, 10*time.Second), ch+"-sdk", fmt.Appendf(nil, `{"n":%d}`, i), nil); err != nil {
			t.Fatal(err)
		}
	}
	checkFor(t, 10*time.Second, "the SDK client's 30 publications", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(got) < 30 {
			return fmt.Errorf("%d so far", len(got))
		}
		return nil
	})
	mu.Lock()
	defer mu.Unlock()
	for i, n := range got {
		if n != i+1 {
			t.Fatalf("SDK client received %v", got)
		}
	}
}
