package nats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/syncx"
	"github.com/heraldhq/herald/protocol"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
	_ broker.Readier       = (*Broker)(nil)
)

// ErrNotStarted is returned by calls made before Start.
var ErrNotStarted = errors.New("herald: nats broker not started")

// Broker is the NATS broker and presence store. Create it with New, call
// Start once, and Close when done. Its methods are safe for concurrent use.
//
// Lock order: mu, then smu, then a shard's mu, then a chanState's mu; hmu
// is taken alone. No lock is held while calling the handler except hmu
// (read).
type Broker struct {
	cfg   Config
	names names
	log   *slog.Logger

	// mu guards the lifecycle flags; Close waits for inflight calls.
	mu       sync.RWMutex
	started  bool
	closed   bool
	inflight sync.WaitGroup
	quit     chan struct{} // closed by Close: ends waits inside calls
	// quitCtx ends when Close begins: the context of background work.
	quitCtx    context.Context
	cancelQuit context.CancelFunc

	// Set by Start, read-only after.
	nc         *natsgo.Conn
	js         jetstream.JetStream
	streams    [numStreams]jetstream.Stream
	sink       string        // inbox for replies to asynchronous API requests
	connClosed chan struct{} // closed by the connection's closed handler

	smu  sync.Mutex // guards subs
	subs map[string]*liveSub

	// hmu is held for reading around every handler call; Close sets
	// stopped under it, so no call starts after Close returns.
	hmu     sync.RWMutex
	handler broker.Handler
	stopped bool

	ensureMu sync.Mutex // serializes stream (re)creation

	// repairing[i] is set while a goroutine checks stream i, and recreates
	// it if it is gone; repairs tracks those goroutines (Close joins them).
	repairMu  sync.Mutex
	repairing [numStreams]bool
	repairs   sync.WaitGroup

	// testDieAfterPublish, set by tests before use, makes an idempotent
	// publish stop once its publication is out, as if its node died
	// there, before it completes the key's record.
	testDieAfterPublish bool
	// testDropLive, set by tests, drops that many live history messages
	// as if the server had never sent them.
	testDropLive atomic.Int32

	seed   maphash.Seed
	shards [numShards]chanShard
}

// Streams, indexes of Broker.streams.
const (
	histStream = iota
	presStream
	idemStream
	cursStream
	numStreams
)

// New returns a broker for cfg. It does not connect: Start does.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	b := &Broker{
		cfg:        cfg,
		names:      newNames(cfg.Prefix),
		log:        cfg.Logger,
		quit:       make(chan struct{}),
		connClosed: make(chan struct{}),
		subs:       make(map[string]*liveSub),
		seed:       maphash.MakeSeed(),
	}
	for i := range b.shards {
		b.shards[i].m = make(map[string]*chanState)
	}
	b.quitCtx, b.cancelQuit = context.WithCancel(context.Background())
	return b, nil
}

// Start connects to NATS, creates or updates the JetStream streams and
// subscribes to control messages. h may be nil for a broker used only as a
// PresenceStore.
func (b *Broker) Start(ctx context.Context, h broker.Handler) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return broker.ErrClosed
	}
	if b.started {
		return errors.New("herald: nats broker already started")
	}
	b.hmu.Lock()
	b.handler = h
	b.hmu.Unlock()

	var once sync.Once
	opts := append(b.cfg.options(),
		natsgo.ClosedHandler(func(*natsgo.Conn) { once.Do(func() { close(b.connClosed) }) }),
		natsgo.DisconnectErrHandler(func(_ *natsgo.Conn, err error) {
			b.log.Warn("nats disconnected", "err", err)
			b.outage(true)
		}),
		natsgo.ReconnectHandler(func(nc *natsgo.Conn) {
			b.log.Info("nats reconnected", "server", nc.ConnectedUrl())
			b.outage(false)
		}),
		natsgo.ErrorHandler(func(_ *natsgo.Conn, sub *natsgo.Subscription, err error) {
			subj := ""
			if sub != nil {
				subj = sub.Subject
			}
			b.log.Warn("nats async error", "subject", subj, "err", err)
		}),
	)
	nc, err := natsgo.Connect(strings.Join(b.cfg.Servers, ","), opts...)
	if err != nil {
		return fmt.Errorf("nats connect %v: %w", b.cfg.Servers, err)
	}
	fail := func(err error) error {
		nc.Close()
		<-b.connClosed
		b.connClosed = make(chan struct{})
		return err
	}
	if err := checkServerVersion(nc.ConnectedServerVersion(), b.cfg.Replicas); err != nil {
		return fail(err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return fail(fmt.Errorf("nats jetstream: %w", err))
	}
	b.nc, b.js = nc, js
	ctx, cancel := b.bound(ctx)
	defer cancel()
	for i := range b.streams {
		if b.streams[i], err = b.ensureStream(ctx, i); err != nil {
			return fail(err)
		}
	}
	b.sink = nc.NewInbox()
	if _, err := nc.Subscribe(b.sink, b.onAPIReply); err != nil {
		return fail(fmt.Errorf("nats subscribe: %w", err))
	}
	_, err = nc.Subscribe(b.names.ctl, func(m *natsgo.Msg) {
		b.handle(func(h broker.Handler) { h.HandleControl(m.Data) })
	})
	if err != nil {
		return fail(fmt.Errorf("nats subscribe %s: %w", b.names.ctl, err))
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fail(fmt.Errorf("nats flush: %w", err))
	}
	b.started = true
	b.repairs.Add(1) // ends with quit, as repairs do
	go b.tailChecks()
	return nil
}

// readyProbeSeq is the expected last sequence of a readiness probe: one no
// subject reaches, so the stream's leader refuses the probe, storing
// nothing.
const readyProbeSeq = 1 << 62

// Ready implements broker.Readier: it reports whether every stream the
// broker uses can take a write from this node now. For each stream it
// sends a write that the stream's leader must refuse (its expected last
// sequence is never reached), on a subject no channel uses ('$' is
// escaped in tokens): the refusal proves the write path to the leader.
// No leader (an election, a cluster still forming) or a missing stream
// fails with broker.ErrUnavailable, as any call would; a missing stream
// is recreated in the background.
func (b *Broker) Ready(ctx context.Context) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	ctx, cancel := b.bound(ctx)
	defer cancel()
	subjects := [numStreams]string{
		histStream: b.names.hist + "$ready",
		presStream: b.names.pres + "$ready.$ready",
		idemStream: b.names.idem + "$ready.$ready",
		cursStream: b.names.curs + "$ready.$ready",
	}
	for i, subj := range subjects {
		name := b.streamConfig(i).Name
		actx, acancel := context.WithTimeout(ctx, b.cfg.LeaderTimeout)
		err := b.retry(ctx, i, func() error {
			_, err := b.js.PublishMsg(actx, &natsgo.Msg{Subject: subj},
				jetstream.WithExpectStream(name),
				jetstream.WithExpectLastSequencePerSubject(readyProbeSeq),
				jetstream.WithRetryAttempts(0))
			return err
		})
		err = b.unavailable(ctx, actx, err)
		acancel()
		switch {
		case wrongLastSeq(err):
		case err == nil:
			return fmt.Errorf("nats ready: stream %s stored a probe it should have refused", name)
		default:
			return fmt.Errorf("nats ready: stream %s: %w", name, err)
		}
	}
	return nil
}

// Close drains the connection (publications already received are still
// handed to the handler), closes it and returns when no handler call is in
// progress and none will start. Calls in flight are waited for, bounded by
// ctx.
func (b *Broker) Close(ctx context.Context) error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	started := b.started
	b.mu.Unlock()
	b.repairMu.Lock() // no repair starts after this
	close(b.quit)
	b.repairMu.Unlock()
	b.cancelQuit()
	if !started {
		return nil
	}

	err := syncx.Wait(ctx, &b.inflight)
	if err == nil {
		if b.nc.Drain() != nil {
			b.nc.Close()
		}
		select {
		case <-b.connClosed:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	// Closing makes calls still in flight fail fast.
	b.nc.Close()
	<-b.connClosed
	b.repairs.Wait() // they end with quit
	// Wait for the calls in flight, which fail fast now (and so for the
	// goroutine of syncx.Wait, when ctx ended the wait above).
	b.inflight.Wait()
	b.hmu.Lock()
	b.stopped = true
	b.hmu.Unlock()
	return err
}

// enter admits a call; the caller must call b.inflight.Done when enter
// returns nil.
func (b *Broker) enter() error {
	b.mu.RLock()
	defer b.mu.RUnlock()
	if b.closed {
		return broker.ErrClosed
	}
	if !b.started {
		return ErrNotStarted
	}
	b.inflight.Add(1)
	return nil
}

// bound gives ctx the configured RequestTimeout when it has no deadline:
// nats.go needs one to flush.
func (b *Broker) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	if _, ok := ctx.Deadline(); ok {
		return ctx, func() {}
	}
	return context.WithTimeout(ctx, b.cfg.RequestTimeout)
}

// handle calls f with the handler unless Close has finished.
func (b *Broker) handle(f func(broker.Handler)) {
	b.hmu.RLock()
	defer b.hmu.RUnlock()
	if b.handler != nil && !b.stopped {
		f(b.handler)
	}
}

// outage tells the handler, if it wants to know (broker.OutageHandler),
// that the connection was lost (down) or is back.
func (b *Broker) outage(down bool) {
	b.handle(func(h broker.Handler) {
		if oh, ok := h.(broker.OutageHandler); ok {
			if down {
				oh.HandleBrokerDown()
			} else {
				oh.HandleBrokerUp()
			}
		}
	})
}

// sleep waits for d, ctx or Close, and reports whether d passed.
func (b *Broker) sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-b.quit:
		return broker.ErrClosed
	}
}

// Subscribe subscribes this node to the channel's live subject. It returns
// once the server has registered the subscription, so everything published
// after it returns is delivered. Subscribing twice is a no-op.
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	tok, err := token(ch)
	if err != nil {
		return err
	}
	b.smu.Lock()
	ent, ok := b.subs[ch]
	var ls *liveState
	if !ok {
		ls = &liveState{}
		sub, err := b.nc.Subscribe(b.names.live+tok, b.liveHandler(ch, ls))
		if err != nil {
			b.smu.Unlock()
			return fmt.Errorf("nats subscribe %q: %w", ch, err)
		}
		ent = &liveSub{sub: sub, ls: ls}
		b.subs[ch] = ent
	}
	b.smu.Unlock()
	// Flush even when already subscribed: a concurrent first Subscribe may
	// not have reached the server yet.
	ctx, cancel := b.bound(ctx)
	defer cancel()
	if err := b.nc.FlushWithContext(ctx); err != nil {
		if !ok {
			b.smu.Lock()
			if b.subs[ch] == ent {
				delete(b.subs, ch)
				_ = ent.sub.Unsubscribe()
			}
			b.smu.Unlock()
		}
		return fmt.Errorf("nats subscribe %q: flush: %w", ch, err)
	}
	if ls != nil {
		b.syncLive(ctx, b.names.hist+tok, ls)
	}
	return nil
}

// Unsubscribe stops delivery of the channel to this node. It is a no-op
// for a channel not subscribed.
func (b *Broker) Unsubscribe(_ context.Context, ch string) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	b.smu.Lock()
	ent := b.subs[ch]
	delete(b.subs, ch)
	b.smu.Unlock()
	if ent == nil {
		return nil
	}
	if err := ent.sub.Unsubscribe(); err != nil && !errors.Is(err, natsgo.ErrConnectionClosed) {
		return fmt.Errorf("nats unsubscribe %q: %w", ch, err)
	}
	return nil
}

// PublishJoin sends a join event to the nodes subscribed to the channel.
func (b *Broker) PublishJoin(_ context.Context, ch string, info *protocol.ClientInfo) error {
	return b.publishEvent(ch, kindJoin, info)
}

// PublishLeave sends a leave event to the nodes subscribed to the channel.
func (b *Broker) PublishLeave(_ context.Context, ch string, info *protocol.ClientInfo) error {
	return b.publishEvent(ch, kindLeave, info)
}

func (b *Broker) publishEvent(ch, kind string, info *protocol.ClientInfo) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	tok, err := token(ch)
	if err != nil {
		return err
	}
	body, err := msgpack.Marshal(info)
	if err != nil {
		return fmt.Errorf("encode %s: %w", kind, err)
	}
	m := natsgo.NewMsg(b.names.live + tok)
	m.Header.Set(hdrKind, kind)
	m.Data = body
	if err := b.nc.PublishMsg(m); err != nil {
		return fmt.Errorf("nats publish %s %q: %w", kind, ch, err)
	}
	return nil
}

// PublishControl sends data to every node, this one included.
func (b *Broker) PublishControl(_ context.Context, data []byte) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	if err := b.nc.Publish(b.names.ctl, data); err != nil {
		return fmt.Errorf("nats publish control: %w", err)
	}
	return nil
}

// streamConfig returns the configuration of stream i.
func (b *Broker) streamConfig(i int) jetstream.StreamConfig {
	storage := jetstream.FileStorage
	if b.cfg.MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	c := jetstream.StreamConfig{
		Retention: jetstream.LimitsPolicy,
		Discard:   jetstream.DiscardOld,
		Storage:   storage,
		Replicas:  b.cfg.Replicas,
	}
	switch i {
	case histStream:
		c.Name = b.names.histStream
		c.Description = "Herald channel history"
		c.Subjects = []string{b.names.hist + ">"}
		c.MaxAge = b.cfg.HistoryMaxAge
		c.MaxMsgsPerSubject = -1
		// Stored publications are republished, in stream order, to the
		// live subjects: only accepted writes reach subscribers, and in
		// offset order.
		c.RePublish = &jetstream.RePublish{Source: b.names.hist + ">", Destination: b.names.live + ">"}
	case presStream:
		c.Name = b.names.presStream
		c.Description = "Herald presence"
		c.Subjects = []string{b.names.pres + ">"}
		c.MaxAge = b.cfg.MaxPresenceTTL
		c.MaxMsgsPerSubject = 1
		c.Storage = jetstream.MemoryStorage
	case idemStream:
		c.Name = b.names.idemStream
		c.Description = "Herald idempotency keys"
		c.Subjects = []string{b.names.idem + ">"}
		c.MaxAge = b.cfg.MaxIdempotencyWindow
		c.MaxMsgsPerSubject = 1
	case cursStream:
		c.Name = b.names.cursStream
		c.Description = "Herald acknowledged positions per user and channel"
		c.Subjects = []string{b.names.curs + ">"}
		c.MaxAge = b.cfg.MaxCursorTTL
		c.MaxMsgsPerSubject = 1
	}
	return c
}

// streamAttemptTimeout bounds one attempt to create or update a stream.
const streamAttemptTimeout = 2 * time.Second

// ensureStream creates stream i or updates its configuration; a stream
// already configured as wanted is left alone. In a
// clustered JetStream, a server may never answer a node that creates a
// stream while another node creates the same one (as when several Herald
// nodes start at once; seen with nats-server 2.15), so each attempt is
// bounded and retried, until ctx ends: by then the stream exists and the
// retry finds it.
func (b *Broker) ensureStream(ctx context.Context, i int) (jetstream.Stream, error) {
	b.ensureMu.Lock()
	defer b.ensureMu.Unlock()
	cfg := b.streamConfig(i)
	var noPeersSince time.Time
	for overlaps, noPeers := 0, 0; ; {
		actx, cancel := context.WithTimeout(ctx, streamAttemptTimeout)
		if s, err := b.js.Stream(actx, cfg.Name); err == nil && sameStreamConfig(s.CachedInfo().Config, cfg) {
			// Already as wanted: no update. Several nodes starting at
			// once would otherwise update the stream at once, which
			// some servers do not survive (nats-server 2.9.10 panics).
			cancel()
			return s, nil
		}
		s, err := b.js.CreateOrUpdateStream(actx, cfg)
		cancel()
		switch {
		case err == nil:
			return s, nil
		case ctx.Err() != nil:
			return nil, fmt.Errorf("nats stream %s: %w", cfg.Name, err)
		case errors.Is(err, jetstream.ErrStreamNameAlreadyInUse):
			// Another node created it between our update and create.
		case apiCode(err) == jsErrCodeSubjectOverlap && overlaps < 5:
			// So may this mean: the server answers a create racing
			// another node's create of the same stream with "subjects
			// overlap". The update then finds the stream; a real overlap
			// with another stream fails again, and after a few tries the
			// error is returned.
			overlaps++
			if err := b.sleep(ctx, time.Duration(overlaps)*20*time.Millisecond); err != nil {
				return nil, fmt.Errorf("nats stream %s: %w", cfg.Name, err)
			}
		case apiCode(err) == jsErrCodeNoPeers && (noPeers == 0 || time.Since(noPeersSince) < noPeersWait):
			// Not enough servers for the replicas right now: a cluster
			// still forming, or a server restarting. Wait for them, at
			// most noPeersWait; a cluster that has too few servers
			// fails then with this error.
			if noPeers == 0 {
				noPeersSince = time.Now()
			}
			noPeers++
			b.log.Warn("nats stream has no servers for its replicas yet; retrying", "stream", cfg.Name, "replicas", cfg.Replicas, "err", err)
			if err := b.sleep(ctx, min(time.Duration(noPeers)*100*time.Millisecond, time.Second)); err != nil {
				return nil, fmt.Errorf("nats stream %s: %w", cfg.Name, err)
			}
		case errors.Is(err, context.DeadlineExceeded):
			b.log.Warn("nats stream create or update unanswered; retrying", "stream", cfg.Name)
		default:
			return nil, fmt.Errorf("nats stream %s: %w", cfg.Name, err)
		}
	}
}

// sameStreamConfig reports whether a stream configured as have already is
// as want asks, in every field streamConfig sets.
func sameStreamConfig(have, want jetstream.StreamConfig) bool {
	same := have.Name == want.Name && have.Description == want.Description &&
		slices.Equal(have.Subjects, want.Subjects) && have.MaxAge == want.MaxAge &&
		have.MaxMsgsPerSubject == want.MaxMsgsPerSubject && have.Storage == want.Storage &&
		have.Replicas == want.Replicas && have.Retention == want.Retention && have.Discard == want.Discard &&
		(have.RePublish == nil) == (want.RePublish == nil)
	if same && want.RePublish != nil {
		same = *have.RePublish == *want.RePublish
	}
	return same
}

// retry runs f. If f finds stream i missing it tries f again, pausing a
// little longer each time, for at most Config.LeaderTimeout, and then
// fails with an error wrapping broker.ErrUnavailable, so that the caller
// may retry later; meanwhile the stream is repaired in the background.
// No server answers for a stream that has no leader for the moment (its
// leader died, or stepped down, and the others are electing one), nor for
// one that is gone (deleted, or lost by a NATS restart without
// persistence); the repair recreates it in the second case and changes
// nothing in the first. A request nobody answered reached no stream:
// nothing was stored, and trying again is safe. No call waits for a
// stream's creation.
func (b *Broker) retry(ctx context.Context, i int, f func() error) error {
	err := f()
	if !streamMissing(err) {
		return err
	}
	b.repair(i)
	deadline := time.Now().Add(b.cfg.LeaderTimeout)
	for wait := 5 * time.Millisecond; streamMissing(err); wait = min(2*wait, 100*time.Millisecond) {
		left := time.Until(deadline)
		if left <= 0 || b.sleep(ctx, min(wait, left)) != nil {
			return fmt.Errorf("%w: stream %s has no leader or is missing: %w", broker.ErrUnavailable, b.streamConfig(i).Name, err)
		}
		err = f()
	}
	return err
}

// repairTimeout bounds one background repair of a stream.
const repairTimeout = time.Minute

// repair creates or updates stream i in a goroutine of its own, unless
// one is at it already. The goroutine ends with Close.
func (b *Broker) repair(i int) {
	b.repairMu.Lock()
	defer b.repairMu.Unlock()
	select {
	case <-b.quit:
		return
	default:
	}
	if b.repairing[i] {
		return
	}
	b.repairing[i] = true
	b.repairs.Add(1)
	go func() {
		defer b.repairs.Done()
		ctx, cancel := context.WithTimeout(b.quitCtx, repairTimeout)
		defer cancel()
		name := b.streamConfig(i).Name
		b.log.Warn("nats stream unavailable (no leader, or missing); checking it in the background", "stream", name)
		if _, err := b.ensureStream(ctx, i); err != nil {
			b.log.Warn("nats stream repair", "stream", name, "err", err)
		}
		b.repairMu.Lock()
		b.repairing[i] = false
		b.repairMu.Unlock()
	}()
}

// read runs f, a read of stream i that only the stream's leader answers,
// with a context bounded by Config.LeaderTimeout. While a stream elects a
// leader nobody answers its reads: one that got no answer within that
// time, while ctx goes on, fails with an error wrapping
// broker.ErrUnavailable, as does one the servers answer with "JetStream
// temporarily unavailable" or one that finds the stream missing (see
// retry).
func (b *Broker) read(ctx context.Context, i int, f func(context.Context) error) error {
	if !b.clustered() {
		return b.retry(ctx, i, func() error { return f(ctx) })
	}
	actx, cancel := context.WithTimeout(ctx, b.cfg.LeaderTimeout)
	defer cancel()
	err := b.retry(ctx, i, func() error { return f(actx) })
	return b.unavailable(ctx, actx, err)
}

// clustered reports whether the server is part of a NATS cluster. A
// single server elects no leaders: a slow answer there is only slow (a
// loaded server), and reads wait for it as long as their caller does.
func (b *Broker) clustered() bool { return b.nc.ConnectedClusterName() != "" }

// unavailable wraps err in broker.ErrUnavailable when it means the stream
// could not answer for now: actx, bounded by LeaderTimeout, ended before
// the caller's ctx, or the servers said JetStream was unavailable.
func (b *Broker) unavailable(ctx, actx context.Context, err error) error {
	switch {
	case err == nil || errors.Is(err, broker.ErrUnavailable):
		return err
	case ctx.Err() == nil && actx.Err() != nil:
		return fmt.Errorf("%w: no answer from the stream's leader within %v: %w", broker.ErrUnavailable, b.cfg.LeaderTimeout, err)
	case apiCode(err) == jsErrCodeClusterNotAvail:
		return fmt.Errorf("%w: %w", broker.ErrUnavailable, err)
	}
	return err
}

// jsErrCodeClusterNotAvail is the API error of a request to a stream that
// has no leader: "JetStream system temporarily unavailable".
const jsErrCodeClusterNotAvail jetstream.ErrorCode = 10008

// jsErrCodeNoPeers is the API error of a stream create or update that
// finds too few servers online for its replicas: "no suitable peers for
// placement".
const jsErrCodeNoPeers jetstream.ErrorCode = 10005

// noPeersWait bounds how long ensureStream waits for servers enough for a
// stream's replicas.
const noPeersWait = 30 * time.Second

// jsErrCodeSubjectOverlap is the API error of a stream create whose
// subjects overlap another stream's.
const jsErrCodeSubjectOverlap jetstream.ErrorCode = 10065

func streamMissing(err error) bool {
	return err != nil && (errors.Is(err, jetstream.ErrStreamNotFound) ||
		errors.Is(err, jetstream.ErrNoStreamResponse) ||
		apiCode(err) == jetstream.JSErrCodeStreamNotFound)
}

func wrongLastSeq(err error) bool {
	c := apiCode(err)
	return c == jetstream.JSErrCodeStreamWrongLastSequence || c == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

func apiCode(err error) jetstream.ErrorCode {
	var e *jetstream.APIError
	if errors.As(err, &e) {
		return e.ErrorCode
	}
	var je jetstream.JetStreamError
	if errors.As(err, &je) && je.APIError() != nil {
		return je.APIError().ErrorCode
	}
	return 0
}

// apiAsync sends a JetStream API request whose reply nobody waits for
// (housekeeping: trimming, purging expired entries, deleting consumers);
// onAPIReply logs failures.
func (b *Broker) apiAsync(subj string, req any) {
	var body []byte
	if req != nil {
		var err error
		if body, err = json.Marshal(req); err != nil {
			return
		}
	}
	if err := b.nc.PublishRequest(subj, b.sink, body); err != nil {
		b.log.Debug("nats async request", "subject", subj, "err", err)
	}
}

func (b *Broker) onAPIReply(m *natsgo.Msg) {
	var r struct {
		Error *jetstream.APIError `json:"error"`
	}
	if json.Unmarshal(m.Data, &r) == nil && r.Error != nil {
		b.log.Debug("nats housekeeping request failed", "err", r.Error)
	}
}

// purgeRequest is the body of $JS.API.STREAM.PURGE: messages of Filter
// below Seq, or all but the last Keep.
type purgeRequest struct {
	Filter string `json:"filter,omitempty"`
	Seq    uint64 `json:"seq,omitempty"`
	Keep   uint64 `json:"keep,omitempty"`
}

func (b *Broker) purgeAsync(stream string, r purgeRequest) {
	b.apiAsync("$JS.API.STREAM.PURGE."+stream, r)
}

func (b *Broker) deleteConsumerAsync(stream, consumer string) {
	b.apiAsync("$JS.API.CONSUMER.DELETE."+stream+"."+consumer, nil)
}

// readSubject returns the messages of stream s on filter, oldest first,
// up to stream sequence last (0: no bound), stored at or after since (zero:
// all). It reads through an ephemeral consumer that it deletes.
func (b *Broker) readSubject(ctx context.Context, i int, filter string, last uint64, since time.Time) ([]jetstream.Msg, error) {
	s := b.streams[i]
	cc := jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverAllPolicy,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute, // in case the delete below is lost
		MemoryStorage:     true,
	}
	if !since.IsZero() {
		cc.DeliverPolicy, cc.OptStartTime = jetstream.DeliverByStartTimePolicy, &since
	}
	cons, err := b.createReader(ctx, i, s, cc)
	if err != nil {
		return nil, fmt.Errorf("nats read %s: %w", filter, err)
	}
	info := cons.CachedInfo()
	defer b.deleteConsumerAsync(info.Stream, info.Name)
	pending := int(info.NumPending)
	out := make([]jetstream.Msg, 0, pending)
	wait := 2 * time.Millisecond
	for len(out) < pending {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		var msgs []jetstream.Msg
		err := b.read(ctx, i, func(ctx context.Context) (err error) {
			msgs, err = b.fetch(ctx, cons, min(pending-len(out), 4096))
			return err
		})
		if err != nil {
			return nil, fmt.Errorf("nats read %s: %w", filter, err)
		}
		stop := false
		for _, m := range msgs {
			if last > 0 {
				if md, err := m.Metadata(); err == nil && md.Sequence.Stream > last {
					stop = true
					continue
				}
			}
			out = append(out, m)
		}
		if stop {
			break // the rest is newer than last
		}
		if len(msgs) == 0 {
			// An empty answer does not mean the rest is gone: a no-wait
			// pull answers with what the consumer has ready, which may
			// be nothing for a moment. The consumer's own count says.
			var ci *jetstream.ConsumerInfo
			err := b.read(ctx, i, func(ctx context.Context) (err error) {
				ci, err = cons.Info(ctx)
				return err
			})
			if err != nil {
				return nil, fmt.Errorf("nats read %s: %w", filter, err)
			}
			if ci.NumPending == 0 && ci.NumAckPending == 0 && ci.Delivered.Stream == ci.AckFloor.Stream {
				break // the rest was removed meanwhile
			}
			if ci.NumPending == 0 {
				break
			}
			if err := b.sleep(ctx, wait); err != nil {
				return nil, fmt.Errorf("nats read %s: %w", filter, err)
			}
			wait = min(2*wait, 50*time.Millisecond)
		}
	}
	return out, nil
}

// createReader creates the ephemeral consumer of a read. The server
// places it on one of the stream's servers at random, and after a
// server's crash it goes on placing some on the dead one (until it counts
// it offline, about half a minute later): those creations are never
// answered. So each attempt waits a quarter of LeaderTimeout, and another
// consumer is tried, until LeaderTimeout has passed; then the read fails
// with broker.ErrUnavailable. A consumer created on a dead server is
// removed by its InactiveThreshold.
func (b *Broker) createReader(ctx context.Context, i int, s jetstream.Stream, cc jetstream.ConsumerConfig) (jetstream.Consumer, error) {
	if !b.clustered() {
		var cons jetstream.Consumer
		err := b.retry(ctx, i, func() (err error) {
			cons, err = s.CreateConsumer(ctx, cc)
			return err
		})
		return cons, err
	}
	lctx, cancel := context.WithTimeout(ctx, b.cfg.LeaderTimeout)
	defer cancel()
	for {
		var cons jetstream.Consumer
		actx, acancel := context.WithTimeout(lctx, b.cfg.LeaderTimeout/4)
		err := b.retry(ctx, i, func() (err error) {
			cons, err = s.CreateConsumer(actx, cc)
			return err
		})
		unanswered := err != nil && lctx.Err() == nil && actx.Err() != nil
		acancel()
		if !unanswered {
			return cons, b.unavailable(ctx, lctx, err)
		}
		b.log.Debug("nats consumer creation unanswered; trying another", "stream", b.streamConfig(i).Name)
	}
}

// fetch pulls up to n messages that cons has now. A pull that finds no
// responder is retried until ctx ends: a consumer's leader answers
// its create request before every server of the cluster has learnt of its
// pull subject (the interest travels on another route connection than the
// answer), and a new leader, after a node is lost, takes a moment too.
func (b *Broker) fetch(ctx context.Context, cons jetstream.Consumer, n int) ([]jetstream.Msg, error) {
	wait := 5 * time.Millisecond
	for {
		batch, err := cons.FetchNoWait(n)
		if err != nil {
			return nil, err
		}
		var msgs []jetstream.Msg
		for m := range batch.Messages() {
			msgs = append(msgs, m)
		}
		err = batch.Error()
		noResponder := errors.Is(err, natsgo.ErrNoResponders)
		if err != nil && !noResponder {
			return nil, err
		}
		if !noResponder || len(msgs) > 0 {
			return msgs, nil
		}
		b.log.Debug("nats pull found no responder; retrying", "wait", wait)
		if serr := b.sleep(ctx, wait); serr != nil {
			return nil, fmt.Errorf("%w (%w)", err, serr)
		}
		wait = min(2*wait, 200*time.Millisecond)
	}
}
