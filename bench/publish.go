package bench

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// pubPlan says what to publish.
type pubPlan struct {
	mode     string   // "api" or "client"
	channels []string // channel names
	subs     []int    // subscribers of each channel
	rate     float64  // channel messages per second; 0: as fast as the window allows
	duration time.Duration
	messages uint64 // stop after this many channel messages; 0: no limit
	size     int
	shape    string        // payload shape: pad or json
	batch    int           // channels per API request (broadcast) or pipelined client publishes
	inflight int           // concurrent requests (API) or publisher connections (client)
	window   int           // rate 0: messages published but not yet delivered to every subscriber
	stall    time.Duration // rate 0: give up when nothing is delivered for this long
}

// The publisher works in rounds: round r publishes message r (sequence
// number r) once into every channel, in a fresh random order, in batches
// handed to --inflight concurrent requests or publisher connections. With
// --rate the batches follow a fixed schedule (open loop: a late batch does
// not shift the later ones); without, the publisher keeps at most --window
// messages per channel between publish and delivery, measured with the
// subscribers' live delivery counts. Publishes into one channel may
// overlap, so subscribers check order by the server's offsets (see
// seqTracker).
type publisher struct {
	plan      pubPlan
	tgt       target
	api       *apiClient
	apis      []*apiClient // if set, worker slot uses apis[slot%len(apis)] rather than api
	d         *dialer
	delivered func() uint64 // deliveries so far, over all workers

	issued   atomic.Int64 // deliveries expected from what was handed out
	messages atomic.Uint64
	requests atomic.Uint64
	failed   atomic.Uint64
	rtt      *shardedHist

	mu   sync.Mutex
	errs map[string]int
}

// PublishStats describes the publishing side of a run.
type PublishStats struct {
	Mode string `json:"mode"`
	// Messages counts channel messages published: a broadcast into B
	// channels is B messages.
	Messages uint64         `json:"messages"`
	Requests uint64         `json:"requests"`
	Failed   uint64         `json:"failed"`
	Errors   map[string]int `json:"errors,omitempty"`
	Rounds   uint64         `json:"rounds"`
	Elapsed  float64        `json:"elapsed_s"`
	Rate     float64        `json:"rate_per_s"`
	// MaxLag is how far the publisher fell behind the --rate schedule.
	MaxLag  float64 `json:"max_lag_ms,omitempty"`
	Stalled bool    `json:"stalled,omitempty"`
	// RTT is the round trip of one publish request (API call or client
	// publish until its reply).
	RTT Latency `json:"rtt"`

	start, end time.Time
}

type pubTask struct {
	chans []int
	seq   uint64
}

func (p *publisher) countErr(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	msg := err.Error()
	if len(msg) > 200 {
		msg = msg[:200]
	}
	if len(p.errs) >= 20 {
		msg = "other errors"
	}
	p.errs[msg]++
}

// run publishes for the plan's duration (or until ctx ends) and waits for
// every request.
func (p *publisher) run(ctx context.Context) (PublishStats, error) {
	p.errs = map[string]int{}
	p.rtt = newShardedHist(numShards)
	plan := p.plan
	inflight := max(plan.inflight, 1)

	// Client mode: one connection per in-flight slot, connected first.
	var conns []*wsConn
	if plan.mode == "client" {
		for i := 0; i < inflight; i++ {
			cctx, cancel := context.WithTimeout(ctx, p.d.timeout)
			c, err := p.d.dial(cctx, i)
			if err == nil {
				err = handshake(cctx, c, p.tgt, "")
				if err != nil {
					c.Close()
				}
			}
			cancel()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return PublishStats{}, fmt.Errorf("publisher connection: %w", err)
			}
			conns = append(conns, c)
		}
	}

	tasks := make(chan pubTask)
	var wg sync.WaitGroup
	for i := 0; i < inflight; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *wsConn
			if conns != nil {
				c = conns[i]
				defer c.Close()
			}
			p.work(ctx, i, c, tasks)
		}()
	}

	st := PublishStats{Mode: plan.mode}
	st.start = time.Now()
	p.dispatch(ctx, tasks, &st)
	close(tasks)
	wg.Wait()
	st.end = time.Now()

	st.Messages = p.messages.Load()
	st.Requests = p.requests.Load()
	st.Failed = p.failed.Load()
	if len(p.errs) > 0 {
		st.Errors = p.errs
	}
	st.Elapsed = round3(st.end.Sub(st.start).Seconds())
	if st.Elapsed > 0 {
		st.Rate = round1(float64(st.Messages) / st.end.Sub(st.start).Seconds())
	}
	st.RTT = p.rtt.Snapshot().Summary()
	return st, nil
}

// dispatch hands out the batches of each round, paced by the rate or the
// window.
func (p *publisher) dispatch(ctx context.Context, tasks chan<- pubTask, st *PublishStats) {
	plan := p.plan
	k := len(plan.channels)
	batch := max(plan.batch, 1)
	perm := make([]int, k)
	for i := range perm {
		perm[i] = i
	}
	total := 0
	for _, n := range plan.subs {
		total += n
	}
	// The window in deliveries: window messages into an average channel,
	// and never less than one message into the largest.
	window := int64(max(plan.window, 1)) * int64(max(total/max(k, 1), 1))
	for _, n := range plan.subs {
		window = max(window, int64(n))
	}
	end := st.start.Add(plan.duration)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	sleep := func(d time.Duration) bool {
		timer.Reset(d)
		select {
		case <-timer.C:
			return true
		case <-ctx.Done():
			return false
		}
	}
	var sent uint64 // channel messages handed out
	var maxLag time.Duration
	defer func() { st.MaxLag = ms(int64(maxLag)) }()
	for round := uint64(1); ; round++ {
		rand.Shuffle(k, func(i, j int) { perm[i], perm[j] = perm[j], perm[i] })
		for off := 0; off < k; off += batch {
			chans := append([]int(nil), perm[off:min(off+batch, k)]...)
			need := int64(0)
			for _, c := range chans {
				need += int64(plan.subs[c])
			}
			if plan.rate > 0 {
				due := st.start.Add(time.Duration(float64(sent) / plan.rate * float64(time.Second)))
				if !due.Before(end) {
					return
				}
				if d := time.Until(due); d > 0 {
					if !sleep(d) {
						return
					}
				} else {
					maxLag = max(maxLag, -d)
				}
			} else if !p.waitWindow(ctx, window, need, end, st) {
				return
			}
			if ctx.Err() != nil || !time.Now().Before(end) {
				return
			}
			if plan.messages > 0 && sent >= plan.messages {
				return
			}
			if plan.messages > 0 && sent+uint64(len(chans)) > plan.messages {
				chans = chans[:plan.messages-sent]
				need = 0
				for _, c := range chans {
					need += int64(plan.subs[c])
				}
			}
			p.issued.Add(need)
			select {
			case tasks <- pubTask{chans: chans, seq: round}:
			case <-ctx.Done():
				p.issued.Add(-need)
				return
			}
			sent += uint64(len(chans))
		}
		st.Rounds = round
	}
}

// waitWindow waits until need more deliveries fit the window. It reports
// false when the run must stop: ctx ended, the duration passed, or the
// subscribers stopped receiving.
func (p *publisher) waitWindow(ctx context.Context, window, need int64, end time.Time, st *PublishStats) bool {
	last := p.delivered()
	lastChange := time.Now()
	for {
		out := p.issued.Load() - int64(last)
		if out <= 0 || out+need <= window {
			return true
		}
		if ctx.Err() != nil || !time.Now().Before(end) {
			return false
		}
		time.Sleep(200 * time.Microsecond)
		if d := p.delivered(); d != last {
			last, lastChange = d, time.Now()
		} else if time.Since(lastChange) > p.plan.stall {
			st.Stalled = true
			return false
		}
	}
}

// work runs tasks: API requests, or client publishes on connection c.
func (p *publisher) work(ctx context.Context, slot int, c *wsConn, tasks <-chan pubTask) {
	plan := p.plan
	var payload []byte
	names := make([]string, 0, max(plan.batch, 1))
	var nextID uint64 = 1 // ids 1 went to connect
	lat := p.rtt.shard(slot)
	api := p.api
	if len(p.apis) > 0 {
		api = p.apis[slot%len(p.apis)]
	}
	for t := range tasks {
		t0 := time.Now()
		payload = appendPayloadShape(payload[:0], plan.shape, t.seq, t0.UnixNano(), plan.size)
		var failed []int // indices into t.chans
		var err error
		if c == nil {
			names = names[:0]
			for _, ch := range t.chans {
				names = append(names, plan.channels[ch])
			}
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			err = p.tgt.Publish(rctx, api, names, payload)
			cancel()
			var be *batchError
			if errors.As(err, &be) {
				failed = be.failed
			} else if err != nil {
				failed = allIndices(len(t.chans))
			}
			p.requests.Add(1)
		} else {
			failed, err = p.clientPublish(c, &nextID, t.chans, payload)
			p.requests.Add(uint64(len(t.chans)))
		}
		lat.Record(int64(time.Since(t0)))
		if err != nil {
			p.countErr(err)
		}
		for _, i := range failed {
			p.issued.Add(-int64(plan.subs[t.chans[i]]))
		}
		p.failed.Add(uint64(len(failed)))
		p.messages.Add(uint64(len(t.chans) - len(failed)))
	}
}

func allIndices(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

// batchError reports the channels of a multi-channel publish that failed.
type batchError struct {
	failed []int // indices into the request's channels
	err    error
}

func (e *batchError) Error() string { return e.err.Error() }
func (e *batchError) Unwrap() error { return e.err }

// clientPublish sends one publish command per channel in one write and
// waits for every reply.
func (p *publisher) clientPublish(c *wsConn, nextID *uint64, chans []int, payload []byte) (failed []int, err error) {
	first := *nextID + 1
	for _, ch := range chans {
		*nextID++
		c.mbuf = p.tgt.AppendPublish(c.mbuf[:0], *nextID, p.plan.channels[ch], payload)
		c.queue()
	}
	if err := c.flush(); err != nil {
		return allIndices(len(chans)), err
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	defer c.nc.SetReadDeadline(time.Time{})
	pending := len(chans)
	var ev event
	for pending > 0 {
		msg, rerr := c.read()
		if rerr != nil {
			// Replies not received: count them all failed (they may or
			// may not have been published).
			return allIndices(len(chans)), rerr
		}
		for rest := msg; len(rest) > 0; {
			rest = p.tgt.Next(rest, &ev)
			switch ev.kind {
			case evReply:
				if ev.id < first || ev.id > *nextID {
					continue
				}
				pending--
				if ev.failed {
					failed = append(failed, int(ev.id-first))
					err = errors.New("publish reply: error " + truncate(ev.data, 80))
				}
			case evPing:
				c.mbuf = p.tgt.AppendPong(c.mbuf[:0])
				if err := c.send(); err != nil {
					return allIndices(len(chans)), err
				}
			case evDisconnect:
				return allIndices(len(chans)), errors.New("publisher disconnected with code " + strconv.Itoa(int(ev.code)))
			}
		}
	}
	return failed, err
}
