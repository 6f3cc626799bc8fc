// Package memory is Herald's single-node broker and presence store: history,
// positions, idempotency keys and presence kept in process memory. It is the
// default when no broker is configured.
package memory

import (
	"context"
	"crypto/rand"
	"encoding/base32"
	"hash/maphash"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*PresenceStore)(nil)
)

// Config tunes the memory broker. The zero value is ready to use.
type Config struct {
	// MetaTTL is how long a channel's stream position is kept after its last
	// publication, so that clients can still recover (or learn that they
	// cannot). Default 24h. After it, the channel starts a new epoch.
	MetaTTL time.Duration
	// MaxBytes bounds the memory held by history, over all channels: past
	// it, the channels published to least recently lose their retained
	// publications (their positions stay, so live delivery is unaffected;
	// clients recovering from before the loss get recovered: false).
	// Default 256 MiB.
	MaxBytes int64
	// Now is the clock; default time.Now. Tests replace it.
	Now func() time.Time
}

const (
	numShards  = 64
	numStripes = 1024
	// pubOverhead approximates the memory of a retained publication
	// besides its data.
	pubOverhead = 160
)

// Broker is the in-memory broker. Create it with New.
//
// Lock order: a channel's delivery stripe, then its shard. The stripe is
// held from offset assignment until the handler returns, which keeps each
// channel's deliveries in offset order; the shard lock guards the maps and
// is never held while the handler runs, so a channel with many subscribers
// delays only channels of its own stripe (1 in 1,024).
type Broker struct {
	cfg     Config
	seed    maphash.Seed
	shards  [numShards]shard
	stripes [numStripes]sync.Mutex
	handler broker.Handler
	closed  atomic.Bool
	cursors cursors
}

type shard struct {
	mu      sync.Mutex
	streams map[string]*stream
	sweep   int   // publishes since the last expiry sweep
	bytes   int64 // retained history, approximately
}

type stream struct {
	epoch   string
	top     uint64
	pubs    []*protocol.Publication // ring, oldest at head
	head    int
	n       int
	ttl     time.Duration // history TTL in force at the last publish
	touched time.Time
	bytes   int64 // retained publications, approximately
	idem    map[string]idemEntry
	// idemOrder lists the keys in insertion order, so that expired keys
	// are dropped from the front instead of by scanning the map.
	idemOrder []idemKey
}

type idemKey struct {
	key     string
	expires time.Time
}

type idemEntry struct {
	pos     protocol.StreamPosition
	expires time.Time
}

// New returns a memory broker.
func New(cfg Config) *Broker {
	if cfg.MetaTTL == 0 {
		cfg.MetaTTL = 24 * time.Hour
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxBytes <= 0 {
		cfg.MaxBytes = 256 << 20
	}
	b := &Broker{cfg: cfg, seed: maphash.MakeSeed()}
	for i := range b.shards {
		b.shards[i].streams = make(map[string]*stream)
	}
	return b
}

// NewEpoch returns a random stream epoch.
func NewEpoch() string {
	var b [5]byte
	_, _ = rand.Read(b[:])
	return base32.StdEncoding.EncodeToString(b[:])
}

func (b *Broker) shard(ch string) *shard {
	return &b.shards[maphash.String(b.seed, ch)%numShards]
}

func (b *Broker) stripe(ch string) *sync.Mutex {
	return &b.stripes[maphash.String(b.seed, ch)/numShards%numStripes]
}

func pubSize(p *protocol.Publication) int64 { return int64(len(p.Data) + pubOverhead) }

// Start registers the handler.
func (b *Broker) Start(_ context.Context, h broker.Handler) error {
	b.handler = h
	return nil
}

// Subscribe is a no-op: on one node every publication reaches the handler.
func (b *Broker) Subscribe(context.Context, string) error { return nil }

// Unsubscribe is a no-op.
func (b *Broker) Unsubscribe(context.Context, string) error { return nil }

// getStream returns the channel's stream, creating it (or replacing an
// expired one) when create is set. The shard lock must be held.
func (s *shard) getStream(ch string, now time.Time, metaTTL time.Duration, create bool) *stream {
	st := s.streams[ch]
	if st != nil && now.Sub(st.touched) > metaTTL {
		s.drop(ch, st)
		st = nil
	}
	if st == nil && create {
		st = &stream{epoch: NewEpoch(), touched: now}
		s.streams[ch] = st
	}
	return st
}

// drop removes a stream. The shard lock must be held.
func (s *shard) drop(ch string, st *stream) {
	delete(s.streams, ch)
	s.bytes -= st.bytes
}

// trim drops publications beyond size or older than ttl.
func (st *stream) trim(size int, ttl time.Duration, now time.Time) {
	for st.n > 0 {
		oldest := st.pubs[st.head]
		if st.n <= size && (ttl <= 0 || now.Sub(time.UnixMilli(oldest.Time)) <= ttl) {
			return
		}
		st.bytes -= pubSize(oldest)
		st.pubs[st.head] = nil
		st.head = (st.head + 1) % len(st.pubs)
		st.n--
	}
}

func (st *stream) push(p *protocol.Publication, size int) {
	if len(st.pubs) != size {
		// Size changed (config reload) or first use: re-lay the ring.
		ring := make([]*protocol.Publication, size)
		keep := min(st.n, size)
		for i := 0; i < keep; i++ {
			ring[i] = st.pubs[(st.head+st.n-keep+i)%len(st.pubs)]
		}
		st.pubs, st.head, st.n = ring, 0, keep
		st.bytes = 0
		for i := 0; i < keep; i++ {
			st.bytes += pubSize(ring[i])
		}
	}
	if st.n == size {
		st.bytes -= pubSize(st.pubs[st.head])
		st.pubs[st.head] = nil
		st.head = (st.head + 1) % size
		st.n--
	}
	st.pubs[(st.head+st.n)%size] = p
	st.n++
	st.bytes += pubSize(p)
}

// Publish implements broker.Broker. The handler is called under the
// channel's delivery stripe, which keeps per-channel order.
func (b *Broker) Publish(_ context.Context, ch string, pub *protocol.Publication, opts broker.PublishOptions) (protocol.StreamPosition, bool, error) {
	if b.closed.Load() {
		return protocol.StreamPosition{}, false, broker.ErrClosed
	}
	d := b.stripe(ch)
	d.Lock()
	defer d.Unlock()
	p, pos, dup := b.append(ch, pub, opts)
	if dup {
		return pos, true, nil
	}
	if h := b.handler; h != nil {
		h.HandlePublication(ch, p, pos.Epoch)
	}
	return pos, false, nil
}

// append assigns the publication its position and keeps it, under the
// shard lock.
func (b *Broker) append(ch string, pub *protocol.Publication, opts broker.PublishOptions) (*protocol.Publication, protocol.StreamPosition, bool) {
	now := b.cfg.Now()
	history := opts.HistorySize > 0 || opts.HistoryTTL > 0
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.maybeSweep(now, b.cfg.MetaTTL)
	var st *stream
	if history || opts.IdempotencyKey != "" {
		st = s.getStream(ch, now, b.cfg.MetaTTL, true)
	}
	if opts.IdempotencyKey != "" {
		st.expireKeys(now)
		if e, ok := st.idem[opts.IdempotencyKey]; ok && now.Before(e.expires) {
			return nil, e.pos, true
		}
	}
	p := *pub
	p.Channel = ch
	if p.Time == 0 {
		p.Time = now.UnixMilli()
	}
	var pos protocol.StreamPosition
	if history {
		st.top++
		st.touched = now
		p.Offset = st.top
		size := opts.HistorySize
		if size <= 0 {
			size = 1 << 20 // TTL-only history still needs a bound
		}
		st.ttl = opts.HistoryTTL
		before := st.bytes
		st.trim(size, opts.HistoryTTL, now)
		st.push(&p, size)
		s.bytes += st.bytes - before
		pos = protocol.StreamPosition{Epoch: st.epoch, Offset: st.top}
		s.enforceBudget(ch, b.cfg.MaxBytes/numShards)
	}
	if opts.IdempotencyKey != "" {
		w := opts.IdempotencyWindow
		if w <= 0 {
			w = 2 * time.Minute
		}
		if st.idem == nil {
			st.idem = make(map[string]idemEntry)
		}
		exp := now.Add(w)
		st.idem[opts.IdempotencyKey] = idemEntry{pos: pos, expires: exp}
		st.idemOrder = append(st.idemOrder, idemKey{key: opts.IdempotencyKey, expires: exp})
		st.touched = now
	}
	return &p, pos, false
}

// expireKeys drops the idempotency keys whose window has passed, from the
// front of the insertion order: O(expired), not O(keys).
func (st *stream) expireKeys(now time.Time) {
	i := 0
	for ; i < len(st.idemOrder) && !now.Before(st.idemOrder[i].expires); i++ {
		k := st.idemOrder[i].key
		if e, ok := st.idem[k]; ok && !now.Before(e.expires) {
			delete(st.idem, k)
		}
	}
	if i > 0 {
		st.idemOrder = append(st.idemOrder[:0], st.idemOrder[i:]...)
	}
}

// enforceBudget empties the history of the least recently published
// streams of the shard (never keep) once its history passes budget, down to
// 90% of it so that the scan is amortised over many publishes. The streams
// keep their epoch and offset: live delivery goes on without a gap, and
// only recovery from before the dropped window reports recovered: false.
// The shard lock must be held.
func (s *shard) enforceBudget(keep string, budget int64) {
	if s.bytes <= budget {
		return
	}
	for s.bytes > budget/10*9 {
		var ost *stream
		for ch, st := range s.streams {
			if ch != keep && st.bytes > 0 && (ost == nil || st.touched.Before(ost.touched)) {
				ost = st
			}
		}
		if ost == nil {
			return
		}
		s.bytes -= ost.bytes
		ost.pubs, ost.head, ost.n, ost.bytes = nil, 0, 0, 0
	}
}

// maybeSweep drops expired streams now and then so that channels nobody
// publishes to any more do not hold memory forever.
func (s *shard) maybeSweep(now time.Time, metaTTL time.Duration) {
	s.sweep++
	if s.sweep < 1024 {
		return
	}
	s.sweep = 0
	for ch, st := range s.streams {
		if now.Sub(st.touched) > metaTTL {
			s.drop(ch, st)
		}
	}
}

// PublishJoin delivers a join event to the handler.
func (b *Broker) PublishJoin(_ context.Context, ch string, info *protocol.ClientInfo) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if h := b.handler; h != nil {
		h.HandleJoin(ch, info)
	}
	return nil
}

// PublishLeave delivers a leave event to the handler.
func (b *Broker) PublishLeave(_ context.Context, ch string, info *protocol.ClientInfo) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if h := b.handler; h != nil {
		h.HandleLeave(ch, info)
	}
	return nil
}

// PublishControl delivers a control message to the handler.
func (b *Broker) PublishControl(_ context.Context, data []byte) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if h := b.handler; h != nil {
		h.HandleControl(data)
	}
	return nil
}

// History implements broker.Broker.
func (b *Broker) History(_ context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, protocol.StreamPosition, error) {
	if b.closed.Load() {
		return nil, protocol.StreamPosition{}, broker.ErrClosed
	}
	now := b.cfg.Now()
	s := b.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.getStream(ch, now, b.cfg.MetaTTL, true)
	pos := protocol.StreamPosition{Epoch: st.epoch, Offset: st.top}
	if opts.Limit == 0 || st.n == 0 {
		return nil, pos, nil
	}
	if opts.Since != nil && opts.Since.Epoch != st.epoch {
		return nil, pos, nil
	}
	var out []*protocol.Publication
	for i := 0; i < st.n; i++ {
		idx := i
		if opts.Reverse {
			idx = st.n - 1 - i
		}
		p := st.pubs[(st.head+idx)%len(st.pubs)]
		if st.ttl > 0 && now.Sub(time.UnixMilli(p.Time)) > st.ttl {
			continue
		}
		if opts.Since != nil {
			if !opts.Reverse && p.Offset <= opts.Since.Offset {
				continue
			}
			if opts.Reverse && p.Offset >= opts.Since.Offset {
				continue
			}
		}
		out = append(out, p)
		if opts.Limit > 0 && len(out) == opts.Limit {
			break
		}
	}
	return out, pos, nil
}

// RemoveHistory implements broker.Broker.
func (b *Broker) RemoveHistory(_ context.Context, ch string) error {
	s := b.shard(ch)
	s.mu.Lock()
	if st := s.streams[ch]; st != nil {
		s.drop(ch, st)
	}
	s.mu.Unlock()
	return nil
}

// Close stops delivery.
func (b *Broker) Close(context.Context) error {
	b.closed.Store(true)
	return nil
}
