package cluster_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/internal/testaddr"
)

// hookReceiver is a webhook endpoint on a fixed address that can go down
// (its listener closed: connections refused) and come back, or answer 500.
type hookReceiver struct {
	addr, secret string

	mu       sync.Mutex
	srv      *http.Server
	fail     bool
	requests int
	bad      int            // requests whose signature did not verify
	seen     map[string]int // event id -> order of first arrival
	order    []herald.Event // events in order of first arrival
}

func newHookReceiver(t *testing.T, secret string) *hookReceiver {
	r := &hookReceiver{addr: testaddr.Addr(t), secret: secret, seen: map[string]int{}}
	r.up(t)
	t.Cleanup(r.down)
	return r
}

func (r *hookReceiver) url() string { return "http://" + r.addr + "/hook" }

func (r *hookReceiver) up(t *testing.T) {
	ln, err := net.Listen("tcp", r.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: r}
	r.mu.Lock()
	r.srv = srv
	r.mu.Unlock()
	go func() { _ = srv.Serve(ln) }()
}

func (r *hookReceiver) down() {
	r.mu.Lock()
	srv := r.srv
	r.srv = nil
	r.mu.Unlock()
	if srv != nil {
		_ = srv.Close()
	}
}

func (r *hookReceiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests++
	if r.fail {
		http.Error(w, "failing on purpose", http.StatusInternalServerError)
		return
	}
	sig := req.Header.Get("Herald-Signature")
	ts, _, _ := strings.Cut(strings.TrimPrefix(sig, "t="), ",")
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig != herald.Sign(r.secret, time.Unix(unix, 0), body) || time.Since(time.Unix(unix, 0)).Abs() > 5*time.Minute {
		r.bad++
		http.Error(w, "bad signature", http.StatusUnauthorized)
		return
	}
	var batch struct {
		Events []herald.Event `json:"events"`
	}
	if err := json.Unmarshal(body, &batch); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	for _, ev := range batch.Events {
		if _, dup := r.seen[ev.ID]; !dup {
			r.seen[ev.ID] = len(r.order)
			r.order = append(r.order, ev)
		}
	}
}

func (r *hookReceiver) stats() (requests, bad, distinct int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.requests, r.bad, len(r.order)
}

// metric returns the value of a Prometheus counter or gauge with the given
// name and label set on a node ("" if absent).
func (n *node) metric(name, labels string) (float64, bool) {
	resp, err := httpc.Get("http://" + n.addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	prefix := name + labels + " "
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// maxMetric is the largest value of a metric over the live nodes.
func (c *testCluster) maxMetric(name, labels string) float64 {
	m := 0.0
	for _, n := range c.nodes {
		if v, ok := n.metric(name, labels); ok && v > m {
			m = v
		}
	}
	return m
}

// churn connects and disconnects users on the nodes, round robin: each
// makes connect, online, disconnect and offline events (4 per user).
func churn(t *testing.T, c *testCluster, prefix string, users int, pace time.Duration) {
	t.Helper()
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	var tick <-chan time.Time
	if pace > 0 {
		tk := time.NewTicker(pace) // a steady stream of events, not a burst
		defer tk.Stop()
		tick = tk.C
	}
	for i := 0; i < users; i++ {
		if tick != nil {
			<-tick
		}
		n := c.nodes[i%len(c.nodes)]
		u := fmt.Sprintf("%s-%d", prefix, i)
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			rc := connectUser(t, n.addr, u)
			rc.nc.Close()
		}()
	}
	wg.Wait()
}

const hookYAML = `events:
  enabled: true
  connections: true
  offline_grace: 500ms
  vacated_grace: 500ms
  history_size: %d
  webhooks:
    - url: %s
      secret: %s
      max_backoff: 2s
`

// TestWebhookReceiverDown: 10,000 events (2,500 users connecting and
// leaving over three nodes) while the webhook receiver is down for 60 s:
// once it is back, every event has arrived, each signed, and each user's
// events in the order they happened.
func TestWebhookReceiverDown(t *testing.T) {
	t.Parallel()
	recv := newHookReceiver(t, "hook-secret")
	b := sharedRedis(t)
	cfg := nodeConfig(t, b.yaml+fmt.Sprintf(hookYAML, 100000, recv.url(), recv.secret))
	c := startCluster(t, 3, cfg, 20*time.Second, func(int) []string { return []string{"--broker", b.url} })

	const users = 2500
	prefix := "hook-" + randomHex(3)
	done := make(chan struct{})
	go func() {
		defer close(done)
		churn(t, c, prefix, users, 8*time.Millisecond)
	}()
	checkFor(t, 20*time.Second, "the first events delivered", func() error {
		if _, _, n := recv.stats(); n < 100 {
			return fmt.Errorf("%d events", n)
		}
		return nil
	})
	recv.down()
	downAt := time.Now()
	reqs0, _, n0 := recv.stats()
	t.Logf("receiver down after %d events", n0)
	outage := time.NewTimer(60 * time.Second) // the receiver stays down this long
	<-outage.C
	<-done
	t.Logf("failed webhook requests while down: %v", c.maxMetric("herald_webhook_failures_total", fmt.Sprintf(`{url=%q}`, recv.url())))
	recv.up(t)
	t.Logf("receiver back after %v", time.Since(downAt).Round(time.Second))

	// Every event of the stream arrives.
	var stream []herald.Event
	checkFor(t, 90*time.Second, "every event delivered", func() error {
		evs, err := c.nodes[0].events()
		if err != nil {
			return err
		}
		stream = evs
		_, _, n := recv.stats()
		if n < len(stream) {
			return fmt.Errorf("%d of %d events delivered", n, len(stream))
		}
		return nil
	})
	reqs, bad, n := recv.stats()
	if bad != 0 {
		t.Fatalf("%d requests with a bad signature", bad)
	}
	mine := 0
	for _, ev := range stream {
		if strings.HasPrefix(ev.User, prefix) {
			mine++
		}
	}
	if mine < 4*users {
		t.Fatalf("%d events of the test's users in the stream, want %d", mine, 4*users)
	}
	// In order per user: the receiver's order of first arrival follows the
	// stream's for each user.
	recv.mu.Lock()
	defer recv.mu.Unlock()
	last := map[string]int{}
	for _, ev := range stream {
		at, ok := recv.seen[ev.ID]
		if !ok {
			t.Fatalf("event %s (%s of %s) never arrived", ev.ID, ev.Type, ev.User)
		}
		if prev, ok := last[ev.User]; ok && at < prev {
			t.Fatalf("events of %s out of order: %s arrived before an earlier one", ev.User, ev.Type)
		}
		last[ev.User] = at
	}
	t.Logf("%d events (%d of the test's users) delivered in %d requests, %d of them after the receiver came back", n, mine, reqs, reqs-reqs0)
	if f := c.maxMetric("herald_webhook_failures_total", fmt.Sprintf(`{url=%q}`, recv.url())); f == 0 {
		t.Errorf("no failed requests counted while the receiver was down")
	}
}

// TestWebhookAlwaysFailing: a receiver that answers 500 forever leaves the
// backlog bounded (by the events channel's history) and the failure and
// lost-event counters rising.
func TestWebhookAlwaysFailing(t *testing.T) {
	t.Parallel()
	recv := newHookReceiver(t, "hook-secret")
	recv.mu.Lock()
	recv.fail = true
	recv.mu.Unlock()
	b := sharedRedis(t)
	const history = 500
	cfg := nodeConfig(t, b.yaml+fmt.Sprintf(hookYAML, history, recv.url(), recv.secret))
	c := startCluster(t, 3, cfg, 20*time.Second, func(int) []string { return []string{"--broker", b.url} })
	label := fmt.Sprintf(`{url=%q}`, recv.url())

	churn(t, c, "fail-"+randomHex(3), 500, 0) // 2,000 events, 4 times the history
	var failures, lost, backlog float64
	checkFor(t, 30*time.Second, "failures and lost events counted", func() error {
		failures = c.maxMetric("herald_webhook_failures_total", label)
		lost = c.maxMetric("herald_webhook_lost_events_total", label)
		backlog = c.maxMetric("herald_webhook_backlog_events", label)
		if failures < 3 || lost == 0 {
			return fmt.Errorf("failures %v, lost %v", failures, lost)
		}
		return nil
	})
	if backlog > history {
		t.Fatalf("backlog %v events, beyond the history of %d", backlog, history)
	}
	checkFor(t, 30*time.Second, "failures still rising", func() error {
		if f := c.maxMetric("herald_webhook_failures_total", label); f <= failures {
			return fmt.Errorf("failures %v, were %v", f, failures)
		}
		return nil
	})
	t.Logf("after 2,000 events against a receiver answering 500: %v failed requests, %v events lost, backlog %v (history %d)", failures, lost, backlog, history)
}
