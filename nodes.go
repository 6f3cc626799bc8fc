package herald

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker/memory"
)

// The nodes of a cluster know each other only through the broker. Each
// node broadcasts a sample of its counters every second (a control
// message), and every node keeps the last 15 minutes of every node's
// samples: any node can draw the whole cluster's plots, and knows which
// nodes exist. A cluster-wide query (info, channels, connections) is a
// control message that every node answers with another; the asking node
// waits Config.QueryTimeout for the nodes it knows, and lists those that
// did not answer as unreachable. A node that stops gracefully says goodbye
// and is forgotten at once; one that dies is listed unreachable until it
// has been silent for forgetAfter.

const (
	sampleEvery   = time.Second
	samplesKept   = 900 // 15 minutes of samples
	forgetAfter   = 5 * time.Minute
	maxAnswering  = 16 // queries answered at once; more wait
	maxQueryLimit = 1000
)

// NodeSample is one node's counters over one second.
type NodeSample struct {
	Time          int64   `json:"t"` // unix milliseconds
	Connections   int     `json:"connections"`
	Subscriptions int     `json:"subscriptions"`
	Channels      int     `json:"channels"`
	Publications  float64 `json:"publications"` // accepted by this node, per second
	Deliveries    float64 `json:"deliveries"`   // frames queued to clients, per second
	Slow          float64 `json:"slow_disconnects"`
	Dropped       float64 `json:"dropped"`
	// FanoutP50 and FanoutP99 are the time, in milliseconds, from the
	// node receiving a publication to its frames being queued for every
	// subscriber, over the second (0 without publications).
	FanoutP50  float64 `json:"fanout_p50_ms"`
	FanoutP99  float64 `json:"fanout_p99_ms"`
	CPU        float64 `json:"cpu"` // cores used
	RSS        uint64  `json:"rss_bytes"`
	Goroutines int     `json:"goroutines"`
}

// nodeHello is what a node says of itself with each sample.
type nodeHello struct {
	Node    string     `json:"node"`
	Version string     `json:"version"`
	Engine  string     `json:"engine"`
	Broker  string     `json:"broker"`
	Address string     `json:"address,omitempty"`
	PID     int        `json:"pid"`
	Started int64      `json:"started"` // unix milliseconds
	Sample  NodeSample `json:"sample"`
}

// peer is what this node knows of another node (or of itself).
type peer struct {
	hello    nodeHello
	lastSeen time.Time
	ring     [samplesKept]NodeSample
	head, n  int
}

func (p *peer) add(x NodeSample) {
	p.ring[(p.head+p.n)%samplesKept] = x
	if p.n < samplesKept {
		p.n++
	} else {
		p.head = (p.head + 1) % samplesKept
	}
}

// series returns the samples oldest first, those after since (unix ms).
func (p *peer) series(since int64) []NodeSample {
	out := make([]NodeSample, 0, p.n)
	for i := 0; i < p.n; i++ {
		if x := p.ring[(p.head+i)%samplesKept]; x.Time > since {
			out = append(out, x)
		}
	}
	return out
}

// nodeTable is the node's view of the cluster, and its queries in flight.
type nodeTable struct {
	mu      sync.Mutex
	peers   map[string]*peer
	nextID  uint64
	pending map[uint64]chan nodeAnswer

	answering chan struct{} // a slot per query being answered
}

type nodeAnswer struct {
	node string
	body json.RawMessage
}

func (t *nodeTable) init() {
	t.peers = make(map[string]*peer)
	t.pending = make(map[uint64]chan nodeAnswer)
	t.answering = make(chan struct{}, maxAnswering)
}

// heard records a node's hello, and reports whether the node was new.
func (t *nodeTable) heard(h nodeHello, now time.Time) (isNew bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[h.Node]
	if p == nil {
		p = &peer{}
		t.peers[h.Node] = p
		isNew = true
	}
	if h.Sample.Time > 0 {
		p.add(h.Sample)
	} else {
		h.Sample = p.hello.Sample // a hello without a sample keeps the last one
	}
	p.hello, p.lastSeen = h, now
	return isNew
}

// forget drops a node that said goodbye, or that has been silent too long.
func (t *nodeTable) forget(node string) {
	t.mu.Lock()
	delete(t.peers, node)
	t.mu.Unlock()
}

// knownPeer is a known node's last hello, and when it came.
type knownPeer struct {
	hello    nodeHello
	lastSeen time.Time
}

// known returns the nodes heard from within forgetAfter, forgetting the
// others.
func (t *nodeTable) known(now time.Time) map[string]knownPeer {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(now)
	out := make(map[string]knownPeer, len(t.peers))
	for id, p := range t.peers {
		out[id] = knownPeer{p.hello, p.lastSeen}
	}
	return out
}

// forgetSilent drops the nodes silent for longer than forgetAfter.
func (t *nodeTable) forgetSilent(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.forgetLocked(now)
}

func (t *nodeTable) forgetLocked(now time.Time) {
	for id, p := range t.peers {
		if now.Sub(p.lastSeen) > forgetAfter {
			delete(t.peers, id)
		}
	}
}

// NodeSeries is one node's samples.
type NodeSeries struct {
	Node    string       `json:"node"`
	Samples []NodeSample `json:"samples"`
}

// series returns every known node's samples after since (unix ms).
func (t *nodeTable) series(since int64) []NodeSeries {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]NodeSeries, 0, len(t.peers))
	for id, p := range t.peers {
		out = append(out, NodeSeries{Node: id, Samples: p.series(since)})
	}
	slices.SortFunc(out, func(a, b NodeSeries) int { return compareStrings(a.Node, b.Node) })
	return out
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// ownSeries returns this node's last n samples.
func (t *nodeTable) ownSeries(node string, n int) []NodeSample {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.peers[node]
	if p == nil {
		return nil
	}
	all := p.series(0)
	return all[max(len(all)-n, 0):]
}

// sampleLoop samples this node every second, keeps the sample and
// broadcasts it. It also forgets nodes silent for too long. It starts with
// a hello without a sample, which every other node answers with its own
// (node.go), so a new node knows the cluster at once.
func (s *Server) sampleLoop() {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	var last counters
	last.read(s)
	s.sayHello("hello?")
	for {
		select {
		case <-s.quit:
			return
		case now := <-t.C:
			var cur counters
			cur.read(s)
			h := s.hello(cur.sample(&last, s))
			last = cur
			s.nodes.heard(h, now)
			s.nodes.forgetSilent(now)
			if s.events != nil {
				s.events.checkNodes(now)
			}
			if _, alone := s.broker.(*memory.Broker); !alone {
				// A memory broker serves this node alone: its hello
				// would only come back to it.
				s.broadcast(&control{Op: "hello", Hello: &h})
			}
		}
	}
}

// sayHello broadcasts this node's description without a sample: op
// "hello", or "hello?" to ask every other node for its own.
func (s *Server) sayHello(op string) {
	h := s.hello(NodeSample{})
	s.broadcast(&control{Op: op, Hello: &h})
}

// hello describes this node with a sample.
func (s *Server) hello(x NodeSample) nodeHello {
	return nodeHello{
		Node: s.nodeID, Version: Version, Engine: s.engine.Name(), Broker: brokerName(s.broker),
		Address: s.address(), PID: pid, Started: s.started.UnixMilli(), Sample: x,
	}
}

// broadcast publishes a control message to every node, logging failures.
func (s *Server) broadcast(c *control) {
	b, err := json.Marshal(c)
	if err != nil {
		s.log.Error("encode control message", "op", c.Op, "err", err)
		return
	}
	ctx, cancel := context.WithTimeout(s.ctx, 5*time.Second)
	defer cancel()
	if err := s.broker.PublishControl(ctx, b); err != nil && !errors.Is(err, context.Canceled) {
		s.log.Warn("broadcast to nodes", "op", c.Op, "err", err)
	}
}

// counters are the cumulative figures a sample is the difference of.
type counters struct {
	at                                  time.Time
	published, delivered, slow, dropped uint64
	cpu                                 time.Duration
}

func (c *counters) read(s *Server) {
	st := s.hub.Stats()
	c.at = time.Now()
	c.published = s.published.Load()
	c.delivered, c.slow, c.dropped = st.Delivered, st.Slow, st.Dropped
	c.cpu = processCPU()
}

// sample is the difference from last to c, per second.
func (c *counters) sample(last *counters, s *Server) NodeSample {
	secs := c.at.Sub(last.at).Seconds()
	if secs <= 0 {
		secs = 1
	}
	rate := func(a, b uint64) float64 { return float64(a-b) / secs }
	p50, p99 := s.fanout.quantiles()
	return NodeSample{
		Time:          c.at.UnixMilli(),
		Connections:   s.sessions.count(),
		Subscriptions: s.hub.NumSubscriptions(),
		Channels:      s.hub.NumChannels(),
		Publications:  rate(c.published, last.published),
		Deliveries:    rate(c.delivered, last.delivered),
		Slow:          rate(c.slow, last.slow),
		Dropped:       rate(c.dropped, last.dropped),
		FanoutP50:     p50,
		FanoutP99:     p99,
		CPU:           (c.cpu - last.cpu).Seconds() / secs,
		RSS:           processRSS(),
		Goroutines:    goroutines(),
	}
}

// queryNodes asks every node the query kind with params and collects the
// answers: by node, and the known nodes that did not answer in time.
func (s *Server) queryNodes(ctx context.Context, kind string, params any) (map[string]json.RawMessage, []string, error) {
	return s.queryNodesExcept(ctx, kind, params, "")
}

// queryNodesExcept is queryNodes that does not wait for the node skip (one
// known to be gone).
func (s *Server) queryNodesExcept(ctx context.Context, kind string, params any, skip string) (map[string]json.RawMessage, []string, error) {
	body, err := json.Marshal(params)
	if err != nil {
		return nil, nil, err
	}
	known := s.nodes.known(time.Now())
	delete(known, skip)
	known[s.nodeID] = knownPeer{} // always asked
	t := &s.nodes
	ch := make(chan nodeAnswer, len(known)+8)
	t.mu.Lock()
	t.nextID++
	id := t.nextID
	t.pending[id] = ch
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.pending, id)
		t.mu.Unlock()
	}()
	b, _ := json.Marshal(&control{Op: "query", From: s.nodeID, ID: id, Query: kind, Body: body})
	if err := s.broker.PublishControl(ctx, b); err != nil {
		return nil, nil, err
	}
	answers := make(map[string]json.RawMessage, len(known))
	timer := time.NewTimer(s.cfg.QueryTimeout)
	defer timer.Stop()
wait:
	for missing(known, answers) > 0 {
		select {
		case a := <-ch:
			answers[a.node] = a.body
		case <-timer.C:
			break wait
		case <-ctx.Done():
			break wait
		}
	}
	var silent []string
	for id := range known {
		if _, ok := answers[id]; !ok {
			silent = append(silent, id)
		}
	}
	slices.Sort(silent)
	return answers, silent, nil
}

func missing(known map[string]knownPeer, answers map[string]json.RawMessage) int {
	n := 0
	for id := range known {
		if _, ok := answers[id]; !ok {
			n++
		}
	}
	return n
}

// answerQuery answers another node's (or this node's) query, off the
// broker's delivery goroutine: at most maxAnswering at once.
func (s *Server) answerQuery(c *control) {
	t := &s.nodes
	select {
	case t.answering <- struct{}{}:
	default:
		s.log.Warn("too many node queries at once; one left unanswered", "from", c.From, "query", c.Query)
		return
	}
	started := s.goTracked(func() {
		defer func() { <-t.answering }()
		body, err := s.localAnswer(c.Query, c.Body)
		if err != nil {
			s.log.Warn("node query", "from", c.From, "query", c.Query, "err", err)
			return
		}
		s.broadcast(&control{Op: "answer", From: s.nodeID, To: c.From, ID: c.ID, Body: body})
	})
	if !started {
		<-t.answering
	}
}

// deliverAnswer hands an answer to the query waiting for it, if any.
func (t *nodeTable) deliverAnswer(c *control) {
	t.mu.Lock()
	ch := t.pending[c.ID]
	t.mu.Unlock()
	if ch == nil {
		return // came too late
	}
	select {
	case ch <- nodeAnswer{node: c.From, body: c.Body}:
	default:
	}
}

// localAnswer runs a query on this node.
func (s *Server) localAnswer(kind string, params json.RawMessage) (json.RawMessage, error) {
	var v any
	switch kind {
	case "info":
		v = s.Info()
	case "channels":
		var q channelsQuery
		if err := json.Unmarshal(params, &q); err != nil {
			return nil, err
		}
		v = s.localChannels(&q)
	case "connections":
		var q ConnectionsQuery
		if err := json.Unmarshal(params, &q); err != nil {
			return nil, err
		}
		v = s.localConnections(&q)
	case "holders":
		if s.events == nil {
			return nil, errors.New("lifecycle events are off")
		}
		var q holdersQuery
		if err := json.Unmarshal(params, &q); err != nil {
			return nil, err
		}
		v = s.events.localHolders(&q)
	case "act":
		var a act
		if err := json.Unmarshal(params, &a); err != nil {
			return nil, err
		}
		v = s.localAct(&a)
	default:
		return nil, errors.New("unknown query " + kind)
	}
	return json.Marshal(v)
}

// fanoutHist is a histogram of fan-out times, read and reset each second.
type fanoutHist struct {
	buckets [len(fanoutBounds) + 1]atomic.Uint64
}

// fanoutBounds are the buckets' upper bounds, in microseconds.
var fanoutBounds = [...]float64{5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6}

func (h *fanoutHist) observe(d time.Duration) {
	us := float64(d) / float64(time.Microsecond)
	i := 0
	for i < len(fanoutBounds) && us > fanoutBounds[i] {
		i++
	}
	h.buckets[i].Add(1)
}

// quantiles returns the 50th and 99th percentiles in milliseconds (each
// bucket's upper bound) since the last call, and resets.
func (h *fanoutHist) quantiles() (p50, p99 float64) {
	var counts [len(fanoutBounds) + 1]uint64
	var total uint64
	for i := range h.buckets {
		counts[i] = h.buckets[i].Swap(0)
		total += counts[i]
	}
	if total == 0 {
		return 0, 0
	}
	at := func(q float64) float64 {
		rank := uint64(q*float64(total)+0.5) + 0
		if rank == 0 {
			rank = 1
		}
		var seen uint64
		for i, c := range counts {
			seen += c
			if seen >= rank {
				if i == len(fanoutBounds) {
					return fanoutBounds[len(fanoutBounds)-1] * 2 / 1e3
				}
				return fanoutBounds[i] / 1e3
			}
		}
		return 0
	}
	return at(0.5), at(0.99)
}
