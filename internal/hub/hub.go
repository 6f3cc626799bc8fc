// Package hub is the node's registry of channel subscriptions and its
// fan-out. A publication is encoded once per frame variant in use (codec,
// framing, and for WebSocket whether it goes compressed with
// permessage-deflate) and the same frame bytes are queued on every
// subscriber's connection of that variant; the transport writes them. Channels are sharded and each has its own lock, so a hot
// channel never serialises unrelated ones, and fan-out never waits for a
// socket.
//
// Recovery hand-off. A subscription starts held: Add registers it in
// recovering state, and from then on Publish keeps the channel's live
// publications for it (at most MaxRecoveryBuffer; past that the subscriber
// is closed as slow) instead of queueing them. Meanwhile the caller reads
// the channel's position P from history (and what a recovering client
// missed). Activate then queues, under the channel lock, the caller's
// reply first and the held publications above P after it, in order: those
// at or below P are in the reply already, and a held offset beyond the
// next one expected is a gap, reported through OnGap rather than delivered
// past. From then on Publish queues directly and skips offsets at or below
// P. Publish and Activate both hold the channel lock, so nothing is queued
// between the reply and the held publications, and nothing twice.
//
// Deltas. A subscription made with SetDelta receives a publication as a
// Fossil delta (package protocol/fossil) against the data of the previous
// publication of the channel when, and only when, it received that
// previous publication itself (full or as a delta): the channel keeps the
// previous publication's data while it has delta subscribers, Publish
// computes the delta once for all of them (Stats.Deltas) and encodes it
// once per frame variant. Every other case goes full: the first
// publication after subscribe (and so after recovery), after a
// publication the subscription did not get (filtered out, skipped,
// dropped by the slow policy, or marked Gap), every DeltaFullEvery-th
// publication of the channel, and when the delta is longer than half the
// data.
//
// Conflation. A subscription with PolicyConflate that falls behind (its
// connection has Conflate.Behind frames queued) keeps its publications
// aside, the newest per key, and queues them as the connection drains:
// the transport calls back (Conn.NotifyBelow) on the connection's writer,
// with no lock held, and the callback takes channel.mu. See conflate.go.
//
// Lock order: shard.mu, then channel.mu, then the connection's queue lock.
// Callbacks (OnSlow, OnGap) run under channel.mu and must not call back
// into the hub.
package hub

import (
	"hash/maphash"
	"sort"
	"sync"
	"sync/atomic"

	"github.com/heraldhq/herald/internal/filter"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/protocol/fossil"
)

// Policy is what happens when a subscriber's queue is full.
type Policy uint8

const (
	// PolicyDisconnect closes the connection with the "slow" code; the
	// client reconnects and recovers from history.
	PolicyDisconnect Policy = iota
	// PolicyDrop drops the connection's queued publications of drop-policy
	// channels and marks the next publication of each with Gap.
	PolicyDrop
	// PolicyConflate keeps, for a subscriber that is behind, only the
	// newest publication per key (see Conflate), queued as its connection
	// drains and marked with how many it replaced.
	PolicyConflate
)

// Sub is one connection's subscription to one channel. It is kept small:
// a node holds one per subscribed connection.
type Sub struct {
	Conn    *transport.Conn
	Channel string

	gap atomic.Bool // the next publication goes out marked Gap

	// Codec is protocol.CodecIndex of the connection's codec.
	Codec     uint8
	Policy    Policy
	JoinLeave bool
	// Compress sends the channel's publications compressed when the
	// connection negotiated permessage-deflate: the channel's namespace
	// compresses.
	Compress bool
	// Aux is the owner's: the hub never reads or writes it.
	Aux uint8
	// Ack tracks the subscription's publications until the client
	// acknowledges them (ack.go). Set before Add.
	Ack bool
	ci  uint8 // the frame variant: variant(Codec, Conn.Framing(), compressed), set by Add

	// Guarded by the channel lock.
	recovering bool
	idx        int32
	// x holds what few subscriptions need: the live publications kept
	// while recovering, the filter group, delta and acknowledgement and
	// conflation state (nil until needed).
	x *subExt
	// after is the offset the subscription started after (the position its
	// subscribe reply gave). A live publication at or before it is already
	// in what the reply carried: brokers may deliver a publication to the
	// node after a history read has seen it.
	after uint64
}

// subExt is the part of a Sub that few subscriptions need, kept out of
// Sub so that it stays in its size class.
type subExt struct {
	held []*protocol.Publication // live publications kept while recovering
	grp  *group                  // the subscription's filter group, nil if unfiltered
	ack  *ackState               // what an Ack subscription was sent and not acknowledged
	cf   *Conflate               // PolicyConflate's configuration (SetConflate), shared
	cs   *conflation             // publications kept aside (PolicyConflate), nil unless behind or rate-capped
	// delta: SetDelta. prev is the channel sequence (channel.seq) of the
	// last publication queued for it, 0 for none; a sequence that wraps
	// to 0 only costs a full publication.
	delta bool
	prev  uint32
}

// SetDelta makes s a delta subscription: it receives the channel's
// publications as deltas against the previous one it received, when it
// received it. Call it before Add.
func (s *Sub) SetDelta() {
	if s.x == nil {
		s.x = &subExt{}
	}
	s.x.delta = true
}

// Delta reports whether SetDelta made s a delta subscription (until it is
// removed).
func (s *Sub) Delta() bool { return s.x != nil && s.x.delta }

// group is the subscribers of a channel that share one filter (by its
// normalized text). Publish evaluates the filter once per publication for
// all of them and skips them all when it does not match.
type group struct {
	f    *filter.Filter
	subs []*Sub
	idx  int // in channel.groups
	// recovering counts the subscribers still recovering, which hold the
	// publications their filter skips: without any, a skipped publication
	// costs one evaluation whatever the number of subscribers.
	recovering int
}

// Options configure a Hub.
type Options struct {
	// OnSlow is called when a subscriber's connection must be closed as
	// slow. It must not block or call into the hub.
	OnSlow func(sub *Sub)
	// OnGap is called for each subscriber of a channel whose live stream
	// skipped offsets or changed epoch: it must be disconnected so that it
	// recovers. It must not block or call into the hub.
	OnGap func(sub *Sub)
	// SSEEvent queues a publication with an offset for a subscriber on a
	// Server-Sent Events stream: its event id carries the connection's
	// positions, so the event is built per connection around payload (the
	// publication push, encoded once for all). It returns the error of the
	// connection's Enqueue. It runs under the channel lock and must not
	// call into the hub. Without it such publications go out without id.
	SSEEvent func(s *Sub, pub *protocol.Publication, payload []byte) error
	// MaxRecoveryBuffer bounds the live publications held for a subscriber
	// while its recovery runs. Default 10,000.
	MaxRecoveryBuffer int
	// DeltaFullEvery sends every DeltaFullEvery-th publication of a
	// channel full to its delta subscribers, whatever they received
	// before. Default 100.
	DeltaFullEvery int
}

// Stats are cumulative counters.
type Stats struct {
	Delivered uint64 // publication frames queued
	Dropped   uint64 // publications dropped by the drop policy
	Slow      uint64 // slow-client disconnects
	Gaps      uint64 // live-stream gaps detected
	// Compressed counts the publication frames compressed: one per
	// publication and codec whose channel has subscribers on this node
	// that take it compressed, whatever their number.
	Compressed uint64
	// Redelivered counts publications sent again for want of an
	// acknowledgement; Unacked those dropped or refused because a
	// subscription had MaxUnacked publications unacknowledged.
	Redelivered uint64
	Unacked     uint64
	// FilterEvals counts filter evaluations: one per publication and
	// distinct filter of its channel on this node, whatever the number of
	// subscribers that share the filter.
	FilterEvals uint64
	// Deltas counts the deltas computed: at most one per publication of a
	// channel with delta subscribers on this node, whatever their number.
	Deltas uint64
	// DeltaFrames counts the publication frames queued as deltas (they are
	// also in Delivered).
	DeltaFrames uint64
	// Conflated counts the publications a newer one of the same key
	// replaced before they were queued (PolicyConflate).
	Conflated uint64
	// ConflatePendingMax and ConflatePendingBytesMax are the most
	// publications (and data bytes) kept aside for one conflating
	// subscriber at any time.
	ConflatePendingMax      uint64
	ConflatePendingBytesMax uint64
}

const numShards = 256

// numVariants is the number of frame variants a publication may need: one
// per codec and framing (WebSocket, HTTP streaming, Server-Sent Events),
// and per codec for WebSocket frames compressed with permessage-deflate
// (the framing slot after the last). Fan-out encodes (and compresses)
// each variant in use once.
const numVariants = protocol.NumCodecs * (transport.NumFramings + 1)

// compressedVariants is the first compressed variant.
const compressedVariants = protocol.NumCodecs * transport.NumFramings

// variant is the frame variant of a codec on a framing, compressed or not
// (WebSocket only).
func variant(codec uint8, f transport.Framing, compressed bool) uint8 {
	if compressed && f == transport.FramingWebSocket {
		return uint8(compressedVariants + int(codec))
	}
	return uint8(int(f)*protocol.NumCodecs + int(codec))
}

// Hub is the subscription registry. Create it with New.
type Hub struct {
	opts   Options
	seed   maphash.Seed
	shards [numShards]shard

	delivered, dropped, slow, gaps, compressed, evals, deltas, deltaFrames atomic.Uint64
	redelivered, unacked                                                   atomic.Uint64
	conflated, pendingMax, pendingBytesMax                                 atomic.Uint64
	numSubs                                                                atomic.Int64
}

type shard struct {
	mu    sync.RWMutex
	chans map[string]*channel
}

type channel struct {
	name string // shared by the subscriptions' Channel: one copy per node
	mu   sync.Mutex
	subs []*Sub // the unfiltered subscribers
	// groups are the filtered subscribers, one group per distinct filter;
	// byFilter finds a group by its filter's normalized text.
	groups    []*group
	byFilter  map[string]*group
	nfiltered int // subscribers in groups
	epoch     string
	offset    uint64
	// seq numbers the publications fanned out (and gaps), so that a delta
	// subscriber knows whether it got the previous one (subExt.prev).
	seq uint32
	// ndelta counts the delta subscribers; while there are any, prevData
	// (with hasPrev) is the data of publication seq.
	ndelta   int
	hasPrev  bool
	prevData protocol.Data
}

// count returns the channel's subscribers on this node.
func (ch *channel) count() int { return len(ch.subs) + ch.nfiltered }

// each calls fn for every subscriber of the channel.
func (ch *channel) each(fn func(*Sub)) {
	for _, s := range ch.subs {
		fn(s)
	}
	for _, g := range ch.groups {
		for _, s := range g.subs {
			fn(s)
		}
	}
}

// has reports whether sub is registered in ch.
func (ch *channel) has(sub *Sub) bool {
	subs := ch.subs
	if sub.x != nil && sub.x.grp != nil {
		subs = sub.x.grp.subs
	}
	i := int(sub.idx)
	return i < len(subs) && subs[i] == sub
}

// New returns an empty hub.
func New(opts Options) *Hub {
	if opts.MaxRecoveryBuffer <= 0 {
		opts.MaxRecoveryBuffer = 10000
	}
	if opts.DeltaFullEvery <= 0 {
		opts.DeltaFullEvery = 100
	}
	if opts.OnSlow == nil {
		opts.OnSlow = func(*Sub) {}
	}
	if opts.OnGap == nil {
		opts.OnGap = func(*Sub) {}
	}
	h := &Hub{opts: opts, seed: maphash.MakeSeed()}
	for i := range h.shards {
		h.shards[i].chans = make(map[string]*channel)
	}
	return h
}

func (h *Hub) shard(ch string) *shard {
	return &h.shards[maphash.String(h.seed, ch)%numShards]
}

func (h *Hub) lookup(name string) *channel {
	s := h.shard(name)
	s.mu.RLock()
	ch := s.chans[name]
	s.mu.RUnlock()
	return ch
}

// lockedChannel returns sub's channel locked, or nil (nothing locked) if
// sub is not registered in it.
func (h *Hub) lockedChannel(sub *Sub) *channel {
	ch := h.lookup(sub.Channel)
	if ch == nil {
		return nil
	}
	ch.mu.Lock()
	if !ch.has(sub) {
		ch.mu.Unlock()
		return nil
	}
	return ch
}

// Add registers sub in recovering state: live publications are held for it
// until Activate. first reports that it is the node's only subscriber of
// the channel, so the caller must subscribe the node at the broker.
func (h *Hub) Add(sub *Sub) (first bool) { return h.AddFiltered(sub, nil) }

// AddFiltered is Add for a subscription that receives only the
// publications f matches (all of them if f is nil). Subscribers of a
// channel whose filters have the same normalized text share one
// evaluation per publication.
func (h *Hub) AddFiltered(sub *Sub, f *filter.Filter) (first bool) {
	s := h.shard(sub.Channel)
	s.mu.Lock()
	ch := s.chans[sub.Channel]
	if ch == nil {
		ch = &channel{name: sub.Channel}
		s.chans[sub.Channel] = ch
	}
	sub.Channel = ch.name
	ch.mu.Lock()
	s.mu.Unlock()
	sub.ci = variant(sub.Codec, sub.Conn.Framing(), sub.Compress && sub.Conn.Deflate())
	sub.recovering = true
	if sub.Delta() {
		sub.x.prev = 0
		ch.ndelta++
	}
	if sub.Policy == PolicyConflate && (sub.x == nil || sub.x.cf == nil) {
		sub.SetConflate(&Conflate{})
	}
	if f == nil {
		sub.idx = int32(len(ch.subs))
		ch.subs = append(ch.subs, sub)
	} else {
		g := ch.byFilter[f.String()]
		if g == nil {
			if ch.byFilter == nil {
				ch.byFilter = make(map[string]*group)
			}
			g = &group{f: f, idx: len(ch.groups)}
			ch.byFilter[f.String()] = g
			ch.groups = append(ch.groups, g)
		}
		if sub.x == nil {
			sub.x = &subExt{}
		}
		sub.x.grp = g
		g.recovering++
		sub.idx = int32(len(g.subs))
		g.subs = append(g.subs, sub)
		ch.nfiltered++
	}
	first = ch.count() == 1
	ch.mu.Unlock()
	h.numSubs.Add(1)
	return first
}

// Remove unregisters sub. last reports that the channel has no subscriber
// left on this node.
func (h *Hub) Remove(sub *Sub) (last bool) {
	s := h.shard(sub.Channel)
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := s.chans[sub.Channel]
	if ch == nil {
		return false
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if !ch.has(sub) {
		return false
	}
	if sub.x != nil && sub.x.grp != nil {
		g := sub.x.grp
		if sub.recovering {
			g.recovering--
		}
		g.subs = cut(g.subs, int(sub.idx))
		ch.nfiltered--
		if len(g.subs) == 0 {
			// The group goes with its last subscriber.
			last := len(ch.groups) - 1
			ch.groups[g.idx] = ch.groups[last]
			ch.groups[g.idx].idx = g.idx
			ch.groups[last] = nil
			ch.groups = ch.groups[:last]
			delete(ch.byFilter, g.f.String())
		}
	} else {
		ch.subs = cut(ch.subs, int(sub.idx))
	}
	if sub.x != nil && sub.x.cs != nil {
		sub.x.cs.stop()
	}
	if sub.Delta() {
		ch.ndelta--
		if ch.ndelta == 0 {
			ch.hasPrev, ch.prevData = false, nil
		}
	}
	sub.x = nil
	h.numSubs.Add(-1)
	if ch.count() == 0 {
		delete(s.chans, sub.Channel)
		return true
	}
	return false
}

// cut removes subs[i], moving the last subscriber into its place, and
// shrinks the array when it has become mostly empty.
func cut(subs []*Sub, i int) []*Sub {
	n := len(subs) - 1
	subs[i] = subs[n]
	subs[i].idx = int32(i)
	subs[n] = nil
	subs = subs[:n]
	if cap(subs) > 64 && n < cap(subs)/4 {
		subs = append([]*Sub(nil), subs...)
	}
	return subs
}

// Activate ends sub's recovery: it queues first (the subscribe reply frame,
// if not nil), then the held live publications after offset after (all of
// them for a channel without history); from then on sub receives live
// publications directly. It reports false if the queue could not take them
// (the connection is then being closed as slow).
func (h *Hub) Activate(sub *Sub, first []byte, after uint64) bool {
	ch := h.lockedChannel(sub)
	if ch == nil {
		return false
	}
	defer ch.mu.Unlock()
	sub.recovering = false
	sub.after = after
	var held []*protocol.Publication
	var f *filter.Filter
	if sub.x != nil {
		held = sub.x.held
		sub.x.held = nil
		if sub.x.grp != nil {
			f = sub.x.grp.f
			sub.x.grp.recovering--
		} else if sub.x.ack == nil && sub.x.cf == nil && !sub.x.delta {
			sub.x = nil
		}
	}
	if first != nil {
		if err := sub.Conn.Enqueue(first, nil); err != nil {
			if err == transport.ErrQueueFull {
				h.slowClose(sub)
			}
			return false
		}
	}
	next := after + 1
	for _, p := range held {
		if p.Offset != 0 {
			if p.Offset < next {
				continue // already in the recovered history
			}
			if p.Offset > next {
				h.gaps.Add(1)
				h.opts.OnGap(sub)
				return false
			}
			next = p.Offset + 1
		}
		if f != nil && !f.Match(p.Tags) {
			continue // filtered out
		}
		var frames [numVariants][]byte
		if !h.send(sub, p, &frames) && (sub.Policy != PolicyConflate || sub.Conn.Closing()) {
			return false
		}
	}
	return true
}

// Fanout is what one publication's fan-out queued on this node.
type Fanout struct {
	Queued int // subscribers the publication was queued for
	Bytes  int // frame bytes queued in all
}

// fanout is one publication's fan-out in progress: its frames, encoded
// once per variant, and for delta subscribers its delta, computed once.
type fanout struct {
	frames [numVariants][]byte
	queued [numVariants]int
	// Deltas: dpub is the publication as a delta (nil until computed, or
	// when not worth it), tried says the delta was considered.
	ch      *channel
	dpub    *protocol.Publication
	tried   bool
	dframes [numVariants][]byte
	dqueued [numVariants]int
}

// Publish fans a publication of the node's broker stream out to the
// channel's subscribers. The broker calls it in offset order per channel.
func (h *Hub) Publish(name string, pub *protocol.Publication, epoch string) (f Fanout) {
	ch := h.lookup(name)
	if ch == nil {
		return f
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	if pub.Offset != 0 {
		if ch.offset != 0 && epoch == ch.epoch && pub.Offset <= ch.offset {
			return f // redelivery of what the channel already had
		}
		gap := ch.offset != 0 && (epoch != ch.epoch || pub.Offset != ch.offset+1)
		ch.epoch, ch.offset = epoch, pub.Offset
		if gap {
			// Subscribers must not see this publication: their positions
			// would jump the gap. Disconnected, they recover from history.
			h.gaps.Add(1)
			ch.seq++
			ch.hasPrev, ch.prevData = false, nil
			ch.each(h.opts.OnGap)
			return f
		}
	}
	ch.seq++
	var st fanout
	st.ch = ch
	h.fan(ch.subs, pub, &st)
	if len(ch.groups) > 0 {
		h.evals.Add(uint64(len(ch.groups)))
		for _, g := range ch.groups {
			if g.f.Match(pub.Tags) {
				h.fan(g.subs, pub, &st)
				continue
			}
			if g.recovering == 0 {
				continue
			}
			// Filtered out: subscribers still recovering keep it, as
			// Activate checks the held offsets for gaps before it
			// filters.
			for _, s := range g.subs {
				if s.recovering {
					h.hold(s, pub)
				}
			}
		}
	}
	if ch.ndelta > 0 {
		ch.hasPrev, ch.prevData = true, pub.Data
	}
	for i, n := range st.queued {
		f.Queued += n
		f.Bytes += n * len(st.frames[i])
	}
	for i, n := range st.dqueued {
		f.Queued += n
		f.Bytes += n * len(st.dframes[i])
	}
	return f
}

// fan queues pub for subs, or holds it for those still recovering, and
// counts in st the subscribers it was queued for per frame variant.
func (h *Hub) fan(subs []*Sub, pub *protocol.Publication, st *fanout) {
	for _, s := range subs {
		if s.recovering {
			h.hold(s, pub)
			continue
		}
		if pub.Offset != 0 && pub.Offset <= s.after {
			continue // the subscribe reply covered it
		}
		if s.x != nil && s.x.delta && !s.Ack {
			h.sendDelta(s, pub, st)
			continue
		}
		if h.send(s, pub, &st.frames) {
			st.queued[s.ci]++
		}
	}
}

// sendDelta queues pub for the delta subscriber s: as the channel's delta
// when s received the previous publication and the delta is worth it,
// else full. The delta is computed on the first subscriber that can take
// it and shared by the others.
func (h *Hub) sendDelta(s *Sub, pub *protocol.Publication, st *fanout) {
	ch := st.ch
	// A conflating subscriber that is behind takes no delta: its
	// publication is kept aside, and goes out full.
	if x := s.x; x.prev != 0 && x.prev == ch.seq-1 && ch.hasPrev && !s.gap.Load() && ch.seq%uint32(h.opts.DeltaFullEvery) != 0 && !conflating(s) {
		if !st.tried {
			st.tried = true
			h.deltas.Add(1)
			d := fossil.Create(ch.prevData, pub.Data)
			if 2*len(d) <= len(pub.Data) {
				p := *pub
				p.Data, p.Delta, p.Gap = d, true, false
				st.dpub = &p
			}
		}
		if st.dpub != nil {
			switch h.enqueue(s, st.dpub, &st.dframes) {
			case nil:
				h.delivered.Add(1)
				h.deltaFrames.Add(1)
				st.dqueued[s.ci]++
				s.x.prev = ch.seq
				return
			case transport.ErrQueueFull:
				// The policy's publication goes full (marked Gap).
				if h.overflow(s, pub) {
					s.x.prev = ch.seq
				}
				return
			}
			return // closing
		}
	}
	if h.send(s, pub, &st.frames) {
		st.queued[s.ci]++
		s.x.prev = ch.seq
	}
}

// hold keeps pub for s until its recovery ends, or closes s as slow when
// it holds too many.
func (h *Hub) hold(s *Sub, pub *protocol.Publication) {
	if s.x == nil {
		s.x = &subExt{}
	}
	if len(s.x.held) >= h.opts.MaxRecoveryBuffer {
		h.slowClose(s)
		return
	}
	s.x.held = append(s.x.held, pub)
}

// send queues pub on s's connection, encoding it once per frame variant
// into frames. It applies s's slow policy when the queue is full and
// reports whether the publication was queued.
//
// A conflating subscriber that is behind has its publication kept aside
// instead (see Conflate); send then reports false unless it queued it.
func (h *Hub) send(s *Sub, pub *protocol.Publication, frames *[numVariants][]byte) bool {
	if s.Ack {
		return h.sendAcked(s, pub, frames)
	}
	return h.sendPlain(s, pub, frames)
}

// sendPlain is send without acknowledgements.
func (h *Hub) sendPlain(s *Sub, pub *protocol.Publication, frames *[numVariants][]byte) bool {
	if conflating(s) {
		return h.conflate(s, pub) && !conflating(s)
	}
	if s.gap.Load() {
		p := *pub
		p.Gap = true
		if h.enqueue(s, &p, nil) == nil {
			s.gap.Store(false)
			h.delivered.Add(1)
			return true
		}
		return h.overflow(s, &p)
	}
	switch h.enqueue(s, pub, frames) {
	case nil:
		h.delivered.Add(1)
		return true
	case transport.ErrQueueFull:
		return h.overflow(s, pub)
	}
	return false // closing
}

// enqueue queues pub on s's connection. frames, when not nil, shares the
// encoding between the subscribers of one fan-out: a complete frame per
// variant, or for Server-Sent Events with offsets the push alone, which
// SSEEvent wraps in the connection's own event.
func (h *Hub) enqueue(s *Sub, pub *protocol.Publication, frames *[numVariants][]byte) error {
	sse := pub.Offset != 0 && h.opts.SSEEvent != nil && s.Conn.Framing() == transport.FramingSSE
	var b []byte
	if frames != nil {
		b = frames[s.ci]
	}
	if b == nil && frames != nil && s.ci >= compressedVariants {
		b = h.compressedFrame(s, pub, frames)
	}
	if b == nil {
		c := protocol.CodecAt(s.Codec)
		payload, _ := c.AppendPublicationPush(make([]byte, 0, 64+len(pub.Data)), pub)
		b = payload
		if !sse {
			b = s.Conn.Frame(c.Binary(), payload)
		}
		if frames != nil {
			frames[s.ci] = b
		}
	}
	if sse {
		return h.opts.SSEEvent(s, pub, b)
	}
	if s.Policy == PolicyConflate {
		return s.Conn.EnqueueUnder(b, s, s.x.cf.behind())
	}
	return s.Conn.EnqueuePush(b, s)
}

// compressedFrame encodes pub's push for s's compressed variant into
// frames, compressing the plain WebSocket frame's payload when that
// variant was encoded already. Only shared publication frames go
// compressed: replies, other pushes and a subscriber's own gap-marked
// publication stay plain, which permessage-deflate allows.
func (h *Hub) compressedFrame(s *Sub, pub *protocol.Publication, frames *[numVariants][]byte) []byte {
	c := protocol.CodecAt(s.Codec)
	var payload []byte
	if plain := frames[variant(s.Codec, transport.FramingWebSocket, false)]; plain != nil {
		payload = transport.FramePayload(plain)
	} else {
		payload, _ = c.AppendPublicationPush(make([]byte, 0, 64+len(pub.Data)), pub)
	}
	f, z := transport.CompressedMessageFrame(c.Binary(), payload)
	if z {
		h.compressed.Add(1)
	}
	frames[s.ci] = f
	return f
}

// overflow applies s's policy to a full queue.
func (h *Hub) overflow(s *Sub, pub *protocol.Publication) bool {
	if s.Policy == PolicyConflate {
		h.conflate(s, pub)
		return false // kept aside, not queued
	}
	if s.Policy != PolicyDrop {
		h.slowClose(s)
		return false
	}
	dropped := s.Conn.DropQueued(func(tag any) bool {
		t, ok := tag.(*Sub)
		return ok && t.Policy == PolicyDrop
	})
	lost := false // s's own publications were among those dropped
	for _, t := range dropped {
		if t := t.(*Sub); t == s {
			lost = true
		} else {
			t.gap.Store(true) // its next publication says so
		}
	}
	h.dropped.Add(uint64(len(dropped)))
	// pub follows a gap only if s lost some (or had before): the queue may
	// have been full of frames being written, which are not dropped, and
	// have room now.
	p := *pub
	p.Gap = pub.Gap || lost
	if h.enqueue(s, &p, nil) == nil {
		s.gap.Store(false)
		h.delivered.Add(1)
		return true
	}
	if p.Gap {
		s.gap.Store(true)
	}
	// Still no room: what fills the queue is not droppable.
	h.dropped.Add(1)
	h.slowClose(s)
	return false
}

func (h *Hub) slowClose(s *Sub) {
	h.slow.Add(1)
	h.opts.OnSlow(s)
}

// Broadcast queues a push (join or leave) on the channel's active
// subscribers for which want is true, encoded once per codec. A subscriber
// whose queue is full is treated by its policy (drop: the push is skipped).
func (h *Hub) Broadcast(name string, msg *protocol.ServerMessage, want func(*Sub) bool) {
	ch := h.lookup(name)
	if ch == nil {
		return
	}
	ch.mu.Lock()
	defer ch.mu.Unlock()
	var frames [numVariants][]byte
	ch.each(func(s *Sub) {
		if s.recovering || !want(s) {
			return
		}
		ci := s.ci
		if frames[ci] == nil {
			c := protocol.CodecAt(s.Codec)
			payload, err := c.AppendServerMessage(nil, msg)
			if err != nil {
				return
			}
			frames[ci] = s.Conn.Frame(c.Binary(), payload)
		}
		if s.Conn.Enqueue(frames[ci], nil) == transport.ErrQueueFull && s.Policy == PolicyDisconnect {
			h.slowClose(s)
		}
	})
}

// ChannelInfo describes one channel with subscribers on this node.
type ChannelInfo struct {
	Name        string
	Subscribers int
}

// Channels lists the channels with subscribers on this node, sorted by
// name, for which match is true (nil matches all).
func (h *Hub) Channels(match func(string) bool) []ChannelInfo {
	var out []ChannelInfo
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		for name, ch := range s.chans {
			if match != nil && !match(name) {
				continue
			}
			ch.mu.Lock()
			n := ch.count()
			ch.mu.Unlock()
			out = append(out, ChannelInfo{Name: name, Subscribers: n})
		}
		s.mu.RUnlock()
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// NumChannels returns the number of channels with subscribers on this node.
func (h *Hub) NumChannels() int {
	n := 0
	for i := range h.shards {
		s := &h.shards[i]
		s.mu.RLock()
		n += len(s.chans)
		s.mu.RUnlock()
	}
	return n
}

// NumSubscriptions returns the number of subscriptions on this node.
func (h *Hub) NumSubscriptions() int { return int(h.numSubs.Load()) }

// Stats returns the cumulative counters.
func (h *Hub) Stats() Stats {
	return Stats{Delivered: h.delivered.Load(), Dropped: h.dropped.Load(), Slow: h.slow.Load(), Gaps: h.gaps.Load(), Compressed: h.compressed.Load(), FilterEvals: h.evals.Load(), Deltas: h.deltas.Load(), DeltaFrames: h.deltaFrames.Load(), Redelivered: h.redelivered.Load(), Unacked: h.unacked.Load(),
		Conflated: h.conflated.Load(), ConflatePendingMax: h.pendingMax.Load(), ConflatePendingBytesMax: h.pendingBytesMax.Load()}
}
