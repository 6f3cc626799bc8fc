package nats

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math/rand/v2"
	"slices"
	"strconv"
	"sync"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/groupcommit"
	"github.com/heraldhq/herald/protocol"
)

const (
	numShards = 64
	// chanStateIdle is how long an unused channel's cached head is kept.
	chanStateIdle = 5 * time.Minute
	// maxAppendAttempts bounds the compare-and-append loop of one publish.
	maxAppendAttempts = 1000
)

type chanShard struct {
	mu  sync.Mutex
	m   map[string]*chanState
	ops int // releases since the last sweep
}

// chanState is this node's view of a channel's history subject. Its
// appends go through group: while one is in flight, this node's next
// publications of the channel queue and are appended together, in one
// message. Races with other nodes are settled by the server.
type chanState struct {
	refs int       // guarded by the shard's mu
	used time.Time // guarded by the shard's mu

	group groupcommit.Group[*pubReq, protocol.StreamPosition]

	mu    sync.Mutex
	stale bool // set by invalidate: the leader reads the head again
	// The last position this node appended and when, for the tail check
	// (tail.go); cleared once checked.
	tail   protocol.StreamPosition
	tailAt time.Time

	// Owned by the group's leader (one at a time; the lead passes under
	// the group's lock).
	valid bool   // epoch, top and seq hold the subject's last message
	epoch string // as far as this node knows
	top   uint64
	seq   uint64
	// TTL trimming checkpoint: a message this node appended, and when.
	ckSeq uint64
	ckAt  time.Time
	// Size trimming marks: messages this node appended (stream sequence,
	// first offset), oldest first, one about every size/4 offsets.
	marks []mark
}

type mark struct{ seq, first uint64 }

// pubReq is one publication waiting for its channel's next append.
type pubReq struct {
	body []byte
	size int
	ttl  time.Duration
}

func (b *Broker) acquire(ch string) *chanState {
	s := &b.shards[maphash.String(b.seed, ch)%numShards]
	s.mu.Lock()
	defer s.mu.Unlock()
	cs := s.m[ch]
	if cs == nil {
		cs = &chanState{}
		s.m[ch] = cs
	}
	cs.refs++
	return cs
}

func (b *Broker) release(ch string, cs *chanState) {
	s := &b.shards[maphash.String(b.seed, ch)%numShards]
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	cs.refs--
	cs.used = now
	if s.ops++; s.ops < 1024 {
		return
	}
	// Now and then forget channels not published to lately, so that the
	// cache does not grow with every channel ever used.
	s.ops = 0
	for k, v := range s.m {
		if v.refs == 0 && now.Sub(v.used) > chanStateIdle {
			delete(s.m, k)
		}
	}
}

func (b *Broker) invalidate(ch string) {
	cs := b.acquire(ch)
	cs.mu.Lock()
	cs.stale = true
	cs.mu.Unlock()
	b.release(ch, cs)
}

// Publish implements broker.Broker. Without history the publication goes
// over core NATS only, with offset 0. With history it is appended to the
// history stream with the next offset of the channel; the stream
// republishes it to every subscribed node.
func (b *Broker) Publish(ctx context.Context, ch string, pub *protocol.Publication, opts broker.PublishOptions) (protocol.StreamPosition, bool, error) {
	if err := b.enter(); err != nil {
		return protocol.StreamPosition{}, false, err
	}
	defer b.inflight.Done()
	tok, err := token(ch)
	if err != nil {
		return protocol.StreamPosition{}, false, err
	}
	p := *pub
	p.Channel, p.Offset = ch, 0
	if p.Time == 0 {
		p.Time = time.Now().UnixMilli()
	}
	if opts.IdempotencyKey != "" {
		return b.publishOnce(ctx, ch, tok, &p, opts)
	}
	pos, err := b.publish(ctx, ch, tok, &p, opts)
	return pos, false, err
}

func hasHistory(opts broker.PublishOptions) bool {
	return opts.HistorySize > 0 || opts.HistoryTTL > 0
}

func (b *Broker) publish(ctx context.Context, ch, tok string, p *protocol.Publication, opts broker.PublishOptions) (protocol.StreamPosition, error) {
	key := ""
	if opts.IdempotencyKey != "" && hasHistory(opts) {
		key = keyToken(opts.IdempotencyKey)
	}
	body, err := encodePub(p, key)
	if err != nil {
		return protocol.StreamPosition{}, fmt.Errorf("encode publication: %w", err)
	}
	if !hasHistory(opts) {
		m := natsgo.NewMsg(b.names.live + tok)
		m.Header.Set(hdrKind, kindPub)
		m.Data = body
		if err := b.nc.PublishMsg(m); err != nil {
			return protocol.StreamPosition{}, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		return protocol.StreamPosition{}, nil
	}
	cs := b.acquire(ch)
	defer b.release(ch, cs)
	r := &pubReq{body: body, size: opts.HistorySize, ttl: opts.HistoryTTL}
	return cs.group.DoGrowing(ctx, r, b.takeBatch, func(batch []*pubReq, grow groupcommit.Grow[*pubReq]) ([]protocol.StreamPosition, error) {
		return b.append(ch, tok, cs, batch, grow)
	})
}

// takeBatch says how many of the queued publications go in the next
// append: those with the history options of the first, up to maxBatch and
// a body of at most the server's maximum payload less room for headers.
func (b *Broker) takeBatch(pending []*pubReq) int {
	budget := int(b.nc.MaxPayload()) - batchHeadroom
	n, size := 1, len(pending[0].body)
	for n < len(pending) && n < maxBatch {
		r := pending[n]
		if r.size != pending[0].size || r.ttl != pending[0].ttl || size+len(r.body) > budget {
			break
		}
		size += len(r.body)
		n++
	}
	return n
}

// batchHeadroom is what a history message needs besides its publications:
// headers and the array header.
const batchHeadroom = 4 << 10

// append adds a batch of publications to the channel's history subject in
// one message, with the next offsets of the channel. The first offset is
// the last message's last plus one, and the append is conditional on that
// message still being the last of the subject
// (Nats-Expected-Last-Subject-Sequence): two appenders, on this node or
// others, can never get the same offset, offsets have no holes, and stream
// order is offset order. A lost race re-reads the last message and tries
// again. The caller leads cs.group, which gives it cs's head.
//
// An append that lost a race (surely not stored) takes into its batch,
// with grow, what queued on this node meanwhile before it tries again: a
// channel that nodes race for then gets more publications per win.
//
// The batch belongs to several callers, so no caller's context bounds it:
// RequestTimeout does, and Close.
func (b *Broker) append(ch, tok string, cs *chanState, batch []*pubReq, grow groupcommit.Grow[*pubReq]) ([]protocol.StreamPosition, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
	defer cancel()
	cs.mu.Lock()
	if cs.stale {
		cs.stale, cs.valid = false, false
	}
	cs.mu.Unlock()
	subj := b.names.hist + tok
	opts := broker.PublishOptions{HistorySize: batch[0].size, HistoryTTL: batch[0].ttl}
	n := uint64(len(batch))
	bodies := make([][]byte, len(batch))
	for i, r := range batch {
		bodies[i] = r.body
	}
	body := encodeBatch(bodies)
	grown := func() {
		more := grow()
		if len(more) == 0 {
			return
		}
		batch = append(batch, more...)
		for _, r := range more {
			bodies = append(bodies, r.body)
		}
		n, body = uint64(len(batch)), encodeBatch(bodies)
	}
	// nonce names the message being sent; unknown says a send of it got
	// no answer, so it may be stored (see sendAppend).
	nonce, unknown := "", false
	for attempt := 0; ; attempt++ {
		if attempt >= maxAppendAttempts {
			return nil, fmt.Errorf("nats publish %q: gave up after %d conflicting appends", ch, attempt)
		}
		if attempt > 2 && !unknown {
			// Contention with other nodes: back off a little, randomly,
			// so that one of them wins.
			d := time.Duration(rand.Int64N(int64(min(attempt, 20)) * int64(time.Millisecond)))
			if err := b.sleep(ctx, d); err != nil {
				return nil, err
			}
		}
		if !cs.valid {
			hd, found, err := b.lastHead(ctx, subj)
			if err != nil {
				return nil, fmt.Errorf("nats publish %q: %w", ch, err)
			}
			if !found {
				// No history at all (never published, removed, expired or
				// lost with the stream): a new stream, a new epoch.
				hd = head{epoch: newEpoch()}
			}
			if hd.epoch != cs.epoch {
				// The trimming checkpoints belong to another stream.
				cs.ckSeq, cs.marks = 0, cs.marks[:0]
			}
			cs.epoch, cs.top, cs.seq = hd.epoch, hd.offset, hd.seq
			cs.valid = true
		}
		if nonce == "" {
			nonce = strconv.FormatUint(rand.Uint64(), 36)
		}
		m := natsgo.NewMsg(subj)
		m.Header.Set(hdrKind, kindPub)
		m.Header.Set(hdrEpoch, cs.epoch)
		m.Header.Set(hdrOffset, strconv.FormatUint(cs.top+n, 10))
		if n > 1 {
			m.Header.Set(hdrCount, strconv.FormatUint(n, 10))
		}
		if opts.HistorySize > 0 {
			m.Header.Set(hdrSize, strconv.Itoa(opts.HistorySize))
		}
		if opts.HistoryTTL > 0 {
			m.Header.Set(hdrTTL, strconv.FormatInt(opts.HistoryTTL.Milliseconds(), 10))
		}
		m.Header.Set(hdrNonce, nonce)
		m.Data = body
		ack, err := b.sendAppend(ctx, m, cs.seq)
		switch {
		case err == nil:
		case ctx.Err() == nil && unanswered(err):
			// The send may have reached the stream, or not: send the
			// same message again. Being conditional on the same last
			// sequence, at most one of the two is stored.
			unknown = true
			b.log.Debug("nats append unanswered; sending it again", "channel", ch)
			continue
		case inProcess(err) && unknown:
			// The stream's leader is still storing an append of the
			// subject (on a replicated stream: proposed, not yet
			// replicated), maybe an earlier send of this very message:
			// until it is stored or dropped nothing tells whether the
			// place is ours. Wait, then send the same message again.
			if err := b.sleep(ctx, inProcessWait); err != nil {
				return nil, fmt.Errorf("nats publish %q: no answer from the stream, the publication may have been stored: %w", ch, err)
			}
			continue
		case wrongLastSeq(err) && unknown:
			// Something took the place after cs.seq: this message, sent
			// earlier, or another appender's.
			seq, ours, rerr := b.storedAs(ctx, subj, cs, nonce)
			if rerr != nil {
				if ctx.Err() == nil {
					continue // cannot tell yet: send again, read again
				}
				return nil, fmt.Errorf("nats publish %q: no answer from the stream, the publication may have been stored: %w", ch, rerr)
			}
			if !ours {
				cs.valid, nonce, unknown = false, "", false
				continue
			}
			ack = &jetstream.PubAck{Sequence: seq}
		case unknown && ctx.Err() == nil:
			// No leader for now (or another error): the earlier send
			// may still be stored. Try again until the stream answers.
			if err := b.sleep(ctx, 50*time.Millisecond); err != nil {
				return nil, fmt.Errorf("nats publish %q: no answer from the stream, the publication may have been stored: %w", ch, err)
			}
			continue
		case unknown:
			return nil, fmt.Errorf("nats publish %q: no answer from the stream, the publication may have been stored: %w", ch, err)
		default:
			cs.valid = false
			if wrongLastSeq(err) {
				// Refused: not stored. A new message goes next, which
				// may carry more.
				nonce = ""
				grown()
				continue
			}
			return nil, fmt.Errorf("nats publish %q: %w", ch, err)
		}
		first := cs.top + 1
		cs.top += n
		cs.seq = ack.Sequence
		cs.appended(protocol.StreamPosition{Epoch: cs.epoch, Offset: cs.top})
		b.trim(cs, subj, opts, first)
		pos := make([]protocol.StreamPosition, n)
		for i := range pos {
			pos[i] = protocol.StreamPosition{Epoch: cs.epoch, Offset: first + uint64(i)}
		}
		return pos, nil
	}
}

// sendAppend sends m, an append conditional on the subject's last stream
// sequence being last. On a NATS cluster each send waits at most a
// quarter of LeaderTimeout for its answer: a send that reached a stream
// leader as its server died is never answered, and waiting longer would
// only wait out the caller. The caller sends the same message again
// (unanswered reports such a send); on a single server a slow answer is
// only slow, and the send waits as long as ctx.
func (b *Broker) sendAppend(ctx context.Context, m *natsgo.Msg, last uint64) (*jetstream.PubAck, error) {
	var ack *jetstream.PubAck
	err := b.retry(ctx, histStream, func() error {
		actx, cancel := ctx, context.CancelFunc(func() {})
		if b.clustered() {
			actx, cancel = context.WithTimeout(ctx, b.cfg.LeaderTimeout/4)
		}
		defer cancel()
		var err error
		ack, err = b.js.PublishMsg(actx, m,
			jetstream.WithExpectStream(b.names.histStream),
			jetstream.WithExpectLastSequencePerSubject(last),
			jetstream.WithRetryAttempts(0))
		return err
	})
	return ack, err
}

// inProcess reports whether err is a conditional append refused because
// another append of the same subject is in process on the stream's leader
// (nats-server 2.10.20 and later, on a replicated stream): that append may
// yet be stored or not, so the refusal says nothing about the place.
func inProcess(err error) bool {
	return apiCode(err) == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// inProcessWait is how long a write waits, after a refusal for a write
// in process, before it is sent again.
const inProcessWait = 10 * time.Millisecond

// waitInProcess reports whether a conditional write refused for a write
// in process should wait and try again: for at most a quarter of
// LeaderTimeout since the first such refusal (*since, zero until then).
// Beyond, the refusal is taken as any other (a stream being recreated
// can refuse so for longer, and the caller must not wait out its
// deadline).
func (b *Broker) waitInProcess(since *time.Time) bool {
	if since.IsZero() {
		*since = time.Now()
	}
	return time.Since(*since) < b.cfg.LeaderTimeout/4
}

// unanswered reports whether err is a send's own wait running out: the
// stream may or may not have stored what was sent.
func unanswered(err error) bool {
	return errors.Is(err, context.DeadlineExceeded) || errors.Is(err, natsgo.ErrTimeout)
}

// storedAs finds out whether the append named nonce, following cs's head,
// was stored after all: it reads the subject's first
// message after cs.seq, which holds the place the append aimed at. It
// reports that message's stream sequence and whether it is the append.
// It fails when it cannot tell: the read failed, or that message was
// trimmed away.
func (b *Broker) storedAs(ctx context.Context, subj string, cs *chanState, nonce string) (uint64, bool, error) {
	var m *jetstream.RawStreamMsg
	err := b.read(ctx, histStream, func(ctx context.Context) (err error) {
		m, err = b.streams[histStream].GetMsg(ctx, cs.seq+1, jetstream.WithGetMsgSubject(subj))
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil // nothing after cs.seq: the place is still free
	}
	if err != nil {
		return 0, false, err
	}
	if m.Header.Get(hdrNonce) == nonce {
		return m.Sequence, true, nil
	}
	hd, err := parseHead(m.Header, m.Sequence)
	if err != nil || hd.epoch != cs.epoch {
		return m.Sequence, false, nil // a new stream: what was before is gone
	}
	count := uint64(1)
	if v := m.Header.Get(hdrCount); v != "" {
		count, _ = strconv.ParseUint(v, 10, 64)
	}
	if hd.offset-count+1 == cs.top+1 || hd.offset == 0 {
		return m.Sequence, false, nil // another append took the place
	}
	return 0, false, fmt.Errorf("the message after stream sequence %d was trimmed", cs.seq)
}

// trim removes, asynchronously, what the history no longer needs: beyond
// the size, and older than the TTL (this node purges below a message it
// appended more than TTL ago). The last message always stays: it holds the
// position. History filters by size and TTL exactly whatever trimming has
// done. first is the first offset of the message just appended; the
// caller leads cs.group.
//
// Size: every time the top crosses a multiple of size/4, this node marks
// the message it appended, and purges the messages before the newest mark
// whose first offset is at or below the window's first: they hold only
// offsets outside the window, so at most about 1.25 times size
// publications stay stored. Without such a mark (other nodes did the
// appends) it keeps the last size messages, which hold at least size
// publications.
func (b *Broker) trim(cs *chanState, subj string, opts broker.PublishOptions, first uint64) {
	if size := uint64(opts.HistorySize); size > 0 {
		step := max(size/4, 1)
		if (first-1)/step != cs.top/step {
			if cs.top > size {
				lo := cs.top - size + 1
				req := purgeRequest{Filter: subj, Keep: size}
				for i := len(cs.marks) - 1; i >= 0; i-- {
					if cs.marks[i].first <= lo {
						req = purgeRequest{Filter: subj, Seq: cs.marks[i].seq}
						cs.marks = cs.marks[:copy(cs.marks, cs.marks[i:])]
						break
					}
				}
				b.purgeAsync(b.names.histStream, req)
			}
			if len(cs.marks) >= maxMarks {
				cs.marks = cs.marks[:copy(cs.marks, cs.marks[1:])]
			}
			cs.marks = append(cs.marks, mark{seq: cs.seq, first: first})
		}
	}
	if ttl := opts.HistoryTTL; ttl > 0 {
		now := time.Now()
		switch {
		case cs.ckSeq == 0:
			cs.ckSeq, cs.ckAt = cs.seq, now
		case now.Sub(cs.ckAt) > ttl:
			// Messages stored before the checkpoint are older than ttl.
			b.purgeAsync(b.names.histStream, purgeRequest{Filter: subj, Seq: cs.ckSeq})
			cs.ckSeq, cs.ckAt = cs.seq, now
		}
	}
}

// maxMarks bounds the size trimming marks of a channel: about 1.25 times
// size is covered by 5.
const maxMarks = 8

// lastHead reads the last message of a history subject.
func (b *Broker) lastHead(ctx context.Context, subj string) (head, bool, error) {
	var m *jetstream.RawStreamMsg
	err := b.read(ctx, histStream, func(ctx context.Context) (err error) {
		m, err = b.streams[histStream].GetLastMsgForSubject(ctx, subj)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return head{}, false, nil
	}
	if err != nil {
		return head{}, false, err
	}
	hd, err := parseHead(m.Header, m.Sequence)
	return hd, err == nil, err
}

// position returns the channel's head, writing an epoch marker when the
// subject is empty, so that the epoch returned is the one the next
// publication continues (and a fresh one whenever the history was lost).
func (b *Broker) position(ctx context.Context, subj string) (head, error) {
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		hd, found, err := b.lastHead(ctx, subj)
		if err != nil || found {
			return hd, err
		}
		hd = head{epoch: newEpoch()}
		m := natsgo.NewMsg(subj)
		m.Header.Set(hdrKind, kindMark)
		m.Header.Set(hdrEpoch, hd.epoch)
		m.Header.Set(hdrOffset, "0")
		var ack *jetstream.PubAck
		err = b.retry(ctx, histStream, func() (err error) {
			ack, err = b.js.PublishMsg(ctx, m,
				jetstream.WithExpectStream(b.names.histStream),
				jetstream.WithExpectLastSequencePerSubject(0),
				jetstream.WithRetryAttempts(0))
			return err
		})
		if wrongLastSeq(err) {
			continue // someone wrote first: read what they wrote
		}
		if err != nil {
			return head{}, err
		}
		hd.seq = ack.Sequence
		return hd, nil
	}
	return head{}, errors.New("too many conflicting writes")
}

// History implements broker.Broker.
func (b *Broker) History(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, protocol.StreamPosition, error) {
	if err := b.enter(); err != nil {
		return nil, protocol.StreamPosition{}, err
	}
	defer b.inflight.Done()
	tok, err := token(ch)
	if err != nil {
		return nil, protocol.StreamPosition{}, err
	}
	subj := b.names.hist + tok
	hd, err := b.position(ctx, subj)
	if err != nil {
		return nil, protocol.StreamPosition{}, fmt.Errorf("nats history %q: %w", ch, err)
	}
	pos := protocol.StreamPosition{Epoch: hd.epoch, Offset: hd.offset}
	if opts.Limit == 0 || hd.offset == 0 || (opts.Since != nil && opts.Since.Epoch != hd.epoch) {
		return nil, pos, nil
	}
	lo, hi := hd.window()
	if opts.Since != nil {
		if opts.Reverse {
			if opts.Since.Offset == 0 {
				return nil, pos, nil
			}
			hi = min(hi, opts.Since.Offset-1)
		} else {
			lo = max(lo, opts.Since.Offset+1)
		}
	}
	if lo > hi {
		return nil, pos, nil
	}
	msgs, err := b.readHead(ctx, subj, hd.seq)
	if err != nil {
		return nil, protocol.StreamPosition{}, fmt.Errorf("nats history %q: %w", ch, err)
	}
	now := time.Now()
	pubs := make([]*protocol.Publication, 0, len(msgs))
	for _, m := range msgs {
		h := m.Headers()
		if h.Get(hdrKind) != kindPub || h.Get(hdrEpoch) != hd.epoch {
			continue
		}
		if hd.ttl > 0 {
			// The server's clock stamped the message; ours judges it.
			if md, err := m.Metadata(); err == nil && now.Sub(md.Timestamp) > hd.ttl {
				continue
			}
		}
		ws, first, _, err := decodeEntries(h, m.Data())
		if err != nil {
			return nil, protocol.StreamPosition{}, fmt.Errorf("nats history %q: %w", ch, err)
		}
		for i := range ws {
			if off := first + uint64(i); off >= lo && off <= hi {
				pubs = append(pubs, ws[i].pub(ch, off))
			}
		}
	}
	if opts.Reverse {
		slices.Reverse(pubs)
	}
	if opts.Limit > 0 && len(pubs) > opts.Limit {
		pubs = pubs[:opts.Limit]
	}
	if len(pubs) == 0 {
		pubs = nil
	}
	return pubs, pos, nil
}

// RemoveHistory implements broker.Broker: it purges the channel's history
// and idempotency keys. With the subject empty, the next History or
// Publish starts a new epoch.
func (b *Broker) RemoveHistory(ctx context.Context, ch string) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	tok, err := token(ch)
	if err != nil {
		return err
	}
	for _, r := range []struct {
		stream int
		filter string
	}{
		{histStream, b.names.hist + tok},
		{idemStream, b.names.idem + tok + ".*"},
	} {
		err := b.streams[r.stream].Purge(ctx, jetstream.WithPurgeSubject(r.filter))
		if err != nil && !streamMissing(err) {
			return fmt.Errorf("nats remove history %q: %w", ch, err)
		}
	}
	b.invalidate(ch)
	return nil
}

// readHead reads a history subject up to its head, the message of stream
// sequence seq, which the read must include: the head is never trimmed.
// A read that ends before it was served by a replica that has not caught
// up yet (a consumer may be placed on any server of the stream): it is
// read again, a few times, and then fails with broker.ErrUnavailable
// rather than answer with a history that misses publications the
// position counts.
func (b *Broker) readHead(ctx context.Context, subj string, seq uint64) ([]jetstream.Msg, error) {
	wait := 10 * time.Millisecond
	for attempt := 1; ; attempt++ {
		msgs, err := b.readSubject(ctx, histStream, subj, seq, time.Time{})
		if err != nil {
			return nil, err
		}
		if n := len(msgs); n > 0 {
			if md, err := msgs[n-1].Metadata(); err == nil && md.Sequence.Stream == seq {
				return msgs, nil
			}
		}
		if attempt == 5 {
			return nil, fmt.Errorf("%w: a read of %s ended before its head (stream sequence %d): a replica behind", broker.ErrUnavailable, subj, seq)
		}
		b.log.Debug("nats: a history read ended before its head; reading again", "subject", subj, "seq", seq)
		if err := b.sleep(ctx, wait); err != nil {
			return nil, err
		}
		wait *= 2
	}
}
