package bench

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/protocol/fossil"
)

// workerConfig is one worker's share of the subscriber connections. A
// child process receives it as JSON.
type workerConfig struct {
	Target   string   `json:"target"`
	URLs     []string `json:"urls"` // connection i dials urlFor(URLs, Channels, i)
	Lo       int      `json:"lo"`   // global connection indices [Lo, Hi)
	Hi       int      `json:"hi"`
	Channels int      `json:"channels"` // connection i subscribes to channel i % Channels
	Prefix   string   `json:"prefix"`
	SourceIP []string `json:"source_ips,omitempty"`
	// Concurrency is how many connections are being opened at once.
	Concurrency int           `json:"concurrency"`
	Timeout     time.Duration `json:"timeout"` // per connection: dial, handshake, connect, subscribe
	ReadBuffer  int           `json:"read_buffer"`
	Compression bool          `json:"compression,omitempty"` // offer permessage-deflate
	Delta       bool          `json:"delta,omitempty"`       // subscribe asking for deltas, and apply them
	// Deadline (unix nanoseconds) is when a child gives up on its parent.
	Deadline int64 `json:"deadline"`
}

func channelName(prefix string, i int) string { return prefix + strconv.Itoa(i) }

// counterShard holds one shard of a worker's live counters, padded to its
// own cache line.
type counterShard struct {
	delivered atomic.Uint64 // publication frames received
	other     atomic.Uint64 // other server messages (join, leave, ...)
	wire      atomic.Uint64 // bytes read from the sockets
	_         [40]byte
}

const numShards = 16

// worker opens its share of subscriber connections and runs one reader
// goroutine per connection, which checks and times every publication.
type worker struct {
	cfg  workerConfig
	tgt  target
	d    *dialer
	subs []*subscriber // by index - Lo; nil where the connection failed

	lat      *shardedHist // end-to-end latency
	connLat  *hist        // connect + subscribe time
	ctr      [numShards]counterShard
	conns    atomic.Int64 // connections open
	stopping atomic.Bool
	wg       sync.WaitGroup // readers

	mu      sync.Mutex
	lost    int            // connections that ended before finish
	endings map[string]int // how they ended: close codes, disconnect codes, errors
	errs    map[string]int // connect errors by message
}

func newWorker(cfg workerConfig) (*worker, error) {
	tgt, err := targetFor(cfg.Target)
	if err != nil {
		return nil, err
	}
	var ips []net.IP
	for _, s := range cfg.SourceIP {
		ip := net.ParseIP(s)
		if ip == nil {
			return nil, fmt.Errorf("bad source IP %q", s)
		}
		ips = append(ips, ip)
	}
	if cfg.Delta {
		tgt = deltaSubscribe{tgt}
	}
	w := &worker{
		cfg: cfg, tgt: tgt,
		d: &dialer{urls: cfg.URLs, channels: cfg.Channels, tgt: tgt, timeout: cfg.Timeout, readBuf: cfg.ReadBuffer, sourceIPs: ips,
			compression: cfg.Compression},
		subs:    make([]*subscriber, cfg.Hi-cfg.Lo),
		lat:     newShardedHist(numShards),
		connLat: newHist(),
		endings: map[string]int{},
		errs:    map[string]int{},
	}
	w.d.wire = func(i int) *atomic.Uint64 { return &w.ctr[i%numShards].wire }
	return w, nil
}

// subscriber is one connection subscribed to one channel. Its fields
// belong to its reader goroutine until the worker has waited for it.
type subscriber struct {
	w   *worker
	c   *wsConn
	lat *hist
	ctr *counterShard

	seq      seqTracker
	received uint64
	bad      uint64
	lastRecv int64 // unix nanos of the last publication

	// With --delta: base is the data of the last publication received,
	// the source of the next delta; dbuf holds a decoded delta.
	base, dbuf []byte
	deltas     uint64
}

// readyReport is what a worker tells once its connections are open.
type readyReport struct {
	Connected int            `json:"connected"`
	Failed    []int          `json:"failed,omitempty"` // global indices
	Errors    map[string]int `json:"errors,omitempty"`
	ConnLat   HistSnapshot   `json:"conn_lat"`
	Start     int64          `json:"start"` // unix nanos
	End       int64          `json:"end"`
}

// connect opens the worker's connections, Concurrency at a time, and
// starts each one's reader as soon as it is subscribed.
func (w *worker) connect(ctx context.Context) readyReport {
	start := time.Now()
	n := len(w.subs)
	var next atomic.Int64
	var wg sync.WaitGroup
	failed := make([]bool, n)
	for g := 0; g < min(max(w.cfg.Concurrency, 1), n); g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if ctx.Err() != nil {
					failed[i] = true
					w.countErr(ctx.Err())
					continue
				}
				t0 := time.Now()
				s, err := w.open(ctx, w.cfg.Lo+i)
				if err != nil {
					failed[i] = true
					w.countErr(err)
					continue
				}
				w.connLat.Record(int64(time.Since(t0)))
				w.subs[i] = s
				w.conns.Add(1)
				w.wg.Add(1)
				go s.run()
			}
		}()
	}
	wg.Wait()
	rep := readyReport{ConnLat: w.connLat.Snapshot(), Start: start.UnixNano(), End: time.Now().UnixNano()}
	for i, f := range failed {
		if f {
			rep.Failed = append(rep.Failed, w.cfg.Lo+i)
		} else {
			rep.Connected++
		}
	}
	w.mu.Lock()
	if len(w.errs) > 0 {
		rep.Errors = w.errs
		w.errs = map[string]int{}
	}
	w.mu.Unlock()
	return rep
}

func (w *worker) countErr(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	msg := err.Error()
	if len(w.errs) >= 20 {
		msg = "other errors"
	}
	w.errs[msg]++
}

// open dials connection gi, sends connect and subscribe in one write and
// waits for the subscribe reply.
func (w *worker) open(ctx context.Context, gi int) (*subscriber, error) {
	ctx, cancel := context.WithTimeout(ctx, w.cfg.Timeout)
	defer cancel()
	c, err := w.d.dial(ctx, gi)
	if err != nil {
		return nil, err
	}
	ch := channelName(w.cfg.Prefix, gi%w.cfg.Channels)
	if err := handshake(ctx, c, w.tgt, ch); err != nil {
		c.Close()
		return nil, err
	}
	sh := gi % numShards
	return &subscriber{w: w, c: c, lat: w.lat.shard(sh), ctr: &w.ctr[sh]}, nil
}

// handshake sends connect (id 1) and, with a channel, subscribe (id 2),
// then reads until the last one's reply.
func handshake(ctx context.Context, c *wsConn, tgt target, channel string) error {
	if dl, ok := ctx.Deadline(); ok {
		_ = c.nc.SetDeadline(dl)
		defer c.nc.SetDeadline(time.Time{})
	}
	c.mbuf = tgt.AppendConnect(c.mbuf[:0], 1)
	c.queue()
	want := uint64(1)
	if channel != "" {
		c.mbuf = tgt.AppendSubscribe(c.mbuf[:0], 2, channel)
		c.queue()
		want = 2
	}
	if err := c.flush(); err != nil {
		return err
	}
	var ev event
	for {
		msg, err := c.read()
		if err != nil {
			return err
		}
		for rest := msg; len(rest) > 0; {
			rest = tgt.Next(rest, &ev)
			switch ev.kind {
			case evReply:
				if ev.failed {
					return fmt.Errorf("reply %d: error %s", ev.id, truncate(ev.data, 80))
				}
				if ev.id == want {
					return nil
				}
			case evPing:
				c.mbuf = tgt.AppendPong(c.mbuf[:0])
				if err := c.send(); err != nil {
					return err
				}
			case evDisconnect:
				return fmt.Errorf("disconnected with code %d", ev.code)
			}
		}
	}
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}

// run reads the connection until it ends.
func (s *subscriber) run() {
	w := s.w
	defer w.wg.Done()
	var ev event
	for {
		msg, err := s.c.read()
		if err != nil {
			w.ended(err)
			return
		}
		for rest := msg; len(rest) > 0; {
			rest = w.tgt.Next(rest, &ev)
			switch ev.kind {
			case evPub:
				now := time.Now().UnixNano()
				s.received++
				s.ctr.delivered.Add(1)
				data := ev.data
				if w.cfg.Delta {
					var ok bool
					if data, ok = s.undelta(&ev); !ok {
						s.bad++
						continue
					}
				}
				seq, sent, ok := parsePayload(data)
				if !ok {
					s.bad++
					continue
				}
				s.lat.Record(now - sent)
				s.seq.Observe(seq, ev.offset)
				s.lastRecv = now
			case evPing:
				s.c.mbuf = w.tgt.AppendPong(s.c.mbuf[:0])
				if err := s.c.send(); err != nil {
					w.ended(err)
					return
				}
			case evDisconnect:
				w.mu.Lock()
				w.endings["disconnect "+strconv.Itoa(int(ev.code))]++
				w.mu.Unlock()
			default:
				s.ctr.other.Add(1)
			}
		}
	}
}

// ended records how a connection ended, unless the worker is closing it.
func (w *worker) ended(err error) {
	w.conns.Add(-1)
	if w.stopping.Load() {
		return
	}
	var ce *closeError
	key := "error: " + err.Error()
	switch {
	case errors.As(err, &ce):
		key = "close " + strconv.Itoa(int(ce.code))
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		key = "eof"
	}
	w.mu.Lock()
	w.lost++
	if len(w.endings) < 20 {
		w.endings[key]++
	} else {
		w.endings["other"]++
	}
	w.mu.Unlock()
}

// progress is a worker's live counters.
type progress struct {
	Delivered uint64 `json:"d"`
	Other     uint64 `json:"o"`
	Wire      uint64 `json:"w,omitempty"`
	Conns     int64  `json:"c"`
	CPU       int64  `json:"cpu,omitempty"` // nanoseconds; child processes only
}

func (w *worker) progress() progress {
	var p progress
	for i := range w.ctr {
		p.Delivered += w.ctr[i].delivered.Load()
		p.Other += w.ctr[i].other.Load()
		p.Wire += w.ctr[i].wire.Load()
	}
	p.Conns = w.conns.Load()
	return p
}

// workerResult is what a worker reports at the end.
type workerResult struct {
	Seq      SeqStats       `json:"seq"`
	Latency  HistSnapshot   `json:"latency"`
	LastRecv int64          `json:"last_recv"` // unix nanos, 0 if none
	Lost     int            `json:"lost_conns"`
	Endings  map[string]int `json:"endings,omitempty"`
}

// finish closes every connection, waits for the readers and sums up.
func (w *worker) finish() workerResult {
	w.stopping.Store(true)
	for _, s := range w.subs {
		if s != nil {
			s.c.Close()
		}
	}
	w.wg.Wait()
	var r workerResult
	for _, s := range w.subs {
		if s == nil {
			continue
		}
		st := s.seq.stats()
		st.Received = s.received
		st.Bad += s.bad
		st.Deltas = s.deltas
		r.Seq.Add(st)
		r.LastRecv = max(r.LastRecv, s.lastRecv)
	}
	r.Latency = w.lat.Snapshot()
	w.mu.Lock()
	r.Lost = w.lost
	if len(w.endings) > 0 {
		r.Endings = w.endings
	}
	w.mu.Unlock()
	return r
}

// undelta returns the data of a publication received with --delta: a
// delta applied to the previous publication's data, or the full data,
// which becomes the next delta's source. It reports false for a delta
// that does not apply (or data that does not parse).
func (s *subscriber) undelta(ev *event) ([]byte, bool) {
	if !ev.delta {
		end := jsonValueEnd(ev.data)
		if end < 0 {
			s.base = s.base[:0]
			return nil, false
		}
		s.base = append(s.base[:0], ev.data[:end]...)
		return s.base, true
	}
	// "data":"DELTA" (a JSON string), or "data":"BASE64","b64":true
	d := ev.data
	end := jsonValueEnd(d)
	if end < 2 || d[0] != '"' || len(s.base) == 0 {
		return nil, false
	}
	var err error
	if bytes.HasPrefix(d[end:], hB64) {
		s.dbuf, err = base64.StdEncoding.AppendDecode(s.dbuf[:0], d[1:end-1])
	} else if bytes.IndexByte(d[1:end-1], '\\') < 0 {
		s.dbuf = append(s.dbuf[:0], d[1:end-1]...)
	} else {
		var str string
		err = json.Unmarshal(d[:end], &str)
		s.dbuf = append(s.dbuf[:0], str...)
	}
	if err != nil {
		return nil, false
	}
	full, err := fossil.Apply(s.base, s.dbuf, 0)
	if err != nil {
		s.base = s.base[:0]
		return nil, false
	}
	s.base = full
	s.deltas++
	return full, true
}

// jsonValueEnd returns the length of the JSON value at the start of b
// (an object, array, string or scalar), or -1 if it does not end.
func jsonValueEnd(b []byte) int {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
			if i >= len(b) {
				return -1
			}
			if depth == 0 {
				return i + 1
			}
		case '{', '[':
			depth++
		case '}', ']':
			if depth == 0 {
				return i // the end of what holds a scalar
			}
			depth--
			if depth == 0 {
				return i + 1
			}
		case ',':
			if depth == 0 {
				return i
			}
		}
	}
	if depth == 0 {
		return len(b)
	}
	return -1
}
