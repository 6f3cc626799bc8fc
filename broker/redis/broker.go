package redis

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/internal/groupcommit"
	"github.com/heraldhq/herald/internal/syncx"
	"github.com/heraldhq/herald/protocol"
	goredis "github.com/redis/go-redis/v9"
)

var (
	_ broker.Broker        = (*Broker)(nil)
	_ broker.PresenceStore = (*Broker)(nil)
)

// defaultIdempotencyWindow applies when PublishOptions.IdempotencyWindow
// is not set, as in the memory broker.
const defaultIdempotencyWindow = 2 * time.Minute

// Broker is the Redis broker and presence store. Create it with New; it is
// safe for concurrent use. Presence methods work without Start. Whoever
// creates a Broker must Close it.
//
// Lock order: Broker.mu, then subscriber.mu. chState.mu (delivery) is
// taken without either held.
type Broker struct {
	cfg     Config
	log     *slog.Logger
	client  goredis.UniversalClient // commands and scripts
	cluster *goredis.ClusterClient  // the same client in cluster mode, else nil
	ctlName string

	// Set by Start before any concurrent use, read-only afterwards.
	handler broker.Handler
	sharded bool   // SSUBSCRIBE/SPUBLISH in use
	pubCmd  string // "PUBLISH" or "SPUBLISH"

	// ctx is cancelled by Close; it bounds background Redis calls.
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // every goroutine the broker starts
	closed atomic.Bool

	mu      sync.RWMutex
	chans   map[string]*chState    // subscribed channels by pub/sub name
	subs    map[string]*subscriber // pub/sub connections by node address ("" for the only one)
	slots   []slotRange            // cluster slot owners, sharded cluster mode
	hints   map[int]slotHint       // owners learnt from MOVED replies, newer than slots
	recheck map[string]bool        // names whose route to check; true: resubscribe even if unchanged
	kick    chan struct{}          // wakes the router

	appends *groupcommit.Keyed[*pubReq, pubResult] // this node's appends in flight, by channel

	// Catch-ups from history, run by up to maxCatchUpWorkers goroutines.
	cuMu      sync.Mutex
	cuQueue   []catchUp
	cuWorkers int

	// testCatchUpHook, set by tests before Start, runs before each
	// catch-up's history read with the channel's name.
	testCatchUpHook func(channel string)
}

// chState is a channel this node is subscribed to.
type chState struct {
	channel string
	name    string // pub/sub name
	control bool   // the control channel, not a Herald channel
	ready   chan struct{}
	err     error // why the subscription failed; set before ready is closed

	sub *subscriber // serving connection; guarded by Broker.mu

	// mu serializes delivery for the channel: HandlePublication is called
	// under it, in offset order.
	mu     sync.Mutex
	synced bool                  // base is set: catch-ups may run
	base   broker.StreamPosition // stream position right after the subscription was confirmed
	last   broker.StreamPosition // last publication with history delivered
	// A catch-up from history is queued or running: live publications
	// with history wait in held (at most maxHeld) and follow it; again
	// asks for another catch-up to the head after it.
	catching bool
	again    bool
	held     []heldPub
	gone     bool // unsubscribed: nothing more is delivered
}

// New returns a broker for cfg. It does not connect: Start does, and
// commands connect on first use.
func New(cfg Config) (*Broker, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.WithDefaults()
	b := &Broker{
		cfg:     cfg,
		log:     cfg.Logger,
		ctlName: controlName(cfg.Prefix),
		chans:   make(map[string]*chState),
		subs:    make(map[string]*subscriber),
		recheck: make(map[string]bool),
		hints:   make(map[int]slotHint),
		kick:    make(chan struct{}, 1),
		pubCmd:  "PUBLISH",
		appends: groupcommit.NewKeyed[*pubReq, pubResult](appendsInFlight),
	}
	if cfg.ShardedPubSub {
		b.sharded, b.pubCmd = true, "SPUBLISH"
	}
	if cfg.Cluster {
		b.cluster = goredis.NewClusterClient(cfg.clusterOptions())
		b.client = b.cluster
	} else {
		b.client = goredis.NewClient(cfg.nodeOptions(cfg.Addrs[0]))
	}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	return b, nil
}

// Start checks the connection, registers the handler and subscribes to
// control messages. It returns once control messages published by any
// node reach this one.
func (b *Broker) Start(ctx context.Context, h broker.Handler) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := b.client.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis start: %w", err)
	}
	if b.sharded {
		info, err := b.client.Do(ctx, "COMMAND", "INFO", "SPUBLISH").Slice()
		if err != nil {
			return fmt.Errorf("redis start: command info: %w", err)
		}
		if len(info) == 0 || info[0] == nil {
			b.log.Warn("redis: server has no sharded pub/sub (Redis < 7.0): using PUBLISH/SUBSCRIBE")
			b.sharded, b.pubCmd = false, "PUBLISH"
		}
	}
	b.handler = h
	if b.sharded && b.cluster != nil {
		if err := b.refreshSlots(ctx); err != nil {
			return fmt.Errorf("redis start: %w", err)
		}
		b.wg.Add(1)
		go b.router()
	}
	st := &chState{name: b.ctlName, control: true, ready: make(chan struct{})}
	if err := b.subscribe(ctx, st); err != nil {
		return fmt.Errorf("redis start: control subscription: %w", err)
	}
	return nil
}

// Subscribe implements broker.Broker. It returns once Redis has confirmed
// the subscription, so everything published afterwards is delivered.
// Subscribing to a subscribed channel is a no-op; subscriptions do not
// nest (one Unsubscribe ends it).
func (b *Broker) Subscribe(ctx context.Context, ch string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	st := &chState{channel: ch, name: keysFor(b.cfg.Prefix, ch).pubsub(), ready: make(chan struct{})}
	if err := b.subscribe(ctx, st); err != nil {
		return fmt.Errorf("redis subscribe %q: %w", ch, err)
	}
	return nil
}

// subscribe registers st, subscribes its name and waits for the
// confirmation; for a Herald channel it then reads the stream position
// that catch-ups after a reconnect start from.
func (b *Broker) subscribe(ctx context.Context, st *chState) error {
	b.mu.Lock()
	if cur := b.chans[st.name]; cur != nil {
		b.mu.Unlock()
		select {
		case <-cur.ready:
			return cur.err
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	b.chans[st.name] = st
	b.mu.Unlock()

	err := b.subscribeName(ctx, st)
	if err == nil && !st.control {
		var pos broker.StreamPosition
		if pos, err = b.position(ctx, st.channel); err == nil {
			st.mu.Lock()
			st.base, st.synced = pos, true
			st.mu.Unlock()
		}
	}
	if err != nil {
		b.mu.Lock()
		if b.chans[st.name] == st {
			delete(b.chans, st.name)
		}
		sub := st.sub
		st.sub = nil
		b.mu.Unlock()
		if sub != nil {
			sub.forget(st.name)
		}
		st.err = err
	}
	close(st.ready)
	return err
}

// subscribeName subscribes st.name on the connection that serves it,
// following the slot to another node if the cluster moved it.
func (b *Broker) subscribeName(ctx context.Context, st *chState) error {
	for attempt := 0; ; attempt++ {
		sub, err := b.route(ctx, st)
		if err != nil {
			return err
		}
		err = sub.subscribe(ctx, st.name)
		if !errors.Is(err, errReroute) {
			return err
		}
		sub.forget(st.name)
		if attempt >= 8 {
			return err
		}
		// A slot being migrated answers ASK or TRYAGAIN until it settles.
		t := time.NewTimer(time.Duration(attempt) * 20 * time.Millisecond)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
		if b.cluster != nil {
			if err := b.refreshSlots(ctx); err != nil {
				return err
			}
		}
	}
}

// Unsubscribe implements broker.Broker. Nothing of the channel is
// delivered after it returns.
func (b *Broker) Unsubscribe(ctx context.Context, ch string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	name := keysFor(b.cfg.Prefix, ch).pubsub()
	b.mu.Lock()
	st := b.chans[name]
	if st == nil {
		b.mu.Unlock()
		return nil
	}
	delete(b.chans, name) // delivery stops here
	sub := st.sub
	st.sub = nil
	b.mu.Unlock()
	// A catch-up worker delivers under st.mu, and checks gone first.
	st.mu.Lock()
	st.gone = true
	st.mu.Unlock()
	if sub == nil {
		return nil
	}
	if err := sub.unsubscribe(ctx, name); err != nil {
		return fmt.Errorf("redis unsubscribe %q: %w", ch, err)
	}
	return nil
}

// PublishJoin implements broker.Broker.
func (b *Broker) PublishJoin(ctx context.Context, ch string, info *protocol.ClientInfo) error {
	return b.publishEvent(ctx, ch, kindJoin, info)
}

// PublishLeave implements broker.Broker.
func (b *Broker) PublishLeave(ctx context.Context, ch string, info *protocol.ClientInfo) error {
	return b.publishEvent(ctx, ch, kindLeave, info)
}

func (b *Broker) publishEvent(ctx context.Context, ch string, kind byte, info *protocol.ClientInfo) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	msg, err := encode(kind, info)
	if err != nil {
		return fmt.Errorf("redis publish %c %q: encode: %w", kind, ch, err)
	}
	if err := b.cmdErr(b.publishRaw(ctx, keysFor(b.cfg.Prefix, ch).pubsub(), msg)); err != nil {
		return fmt.Errorf("redis publish %c %q: %w", kind, ch, err)
	}
	return nil
}

// PublishControl implements broker.Broker. Every started node receives
// the message, this one included.
func (b *Broker) PublishControl(ctx context.Context, data []byte) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := b.cmdErr(b.publishRaw(ctx, b.ctlName, string(data))); err != nil {
		return fmt.Errorf("redis publish control: %w", err)
	}
	return nil
}

// publishRaw publishes msg on name. In classic cluster mode it publishes
// from the master of name's slot, like the publish script does: every
// message of a channel then travels the same node-to-node link, which is
// what keeps them in order (PUBLISH to random nodes would not).
func (b *Broker) publishRaw(ctx context.Context, name, msg string) error {
	switch {
	case b.pubCmd == "SPUBLISH":
		return b.client.SPublish(ctx, name, msg).Err()
	case b.cluster != nil:
		return routedPublishScript.Run(ctx, b.client, []string{name}, name, msg).Err()
	default:
		return b.client.Publish(ctx, name, msg).Err()
	}
}

// History implements broker.Broker. The position and the publications are
// read in one script, so they are consistent. A channel without a stream
// gets one (a fresh epoch at offset 0), kept for MetaTTL.
func (b *Broker) History(ctx context.Context, ch string, opts broker.HistoryOptions) ([]*protocol.Publication, broker.StreamPosition, error) {
	if b.closed.Load() {
		return nil, broker.StreamPosition{}, broker.ErrClosed
	}
	pubs, pos, err := b.history(ctx, ch, opts, true)
	if err = b.cmdErr(err); err != nil {
		return nil, broker.StreamPosition{}, fmt.Errorf("redis history %q: %w", ch, err)
	}
	return pubs, pos, nil
}

// history runs the history script; without create, a channel without a
// stream yields epoch "".
func (b *Broker) history(ctx context.Context, ch string, opts broker.HistoryOptions, create bool) ([]*protocol.Publication, broker.StreamPosition, error) {
	k := keysFor(b.cfg.Prefix, ch)
	epoch := ""
	if create {
		epoch = newEpoch()
	}
	sinceSet, sinceEpoch, sinceOffset := "0", "", "0"
	if opts.Since != nil {
		sinceSet, sinceEpoch, sinceOffset = "1", opts.Since.Epoch, strconv.FormatUint(opts.Since.Offset, 10)
	}
	reverse := "0"
	if opts.Reverse {
		reverse = "1"
	}
	res, err := historyScript.Run(ctx, b.client, []string{k.meta(), k.stream()},
		epoch, millis(b.cfg.MetaTTL), sinceSet, sinceEpoch, sinceOffset, opts.Limit, reverse).Slice()
	if err != nil {
		return nil, broker.StreamPosition{}, err
	}
	if len(res) < 2 || len(res)%2 != 0 {
		return nil, broker.StreamPosition{}, fmt.Errorf("%w: history reply of %d values", errMalformed, len(res))
	}
	var pos broker.StreamPosition
	pos.Epoch, _ = res[0].(string)
	if pos.Offset, err = toUint(res[1]); err != nil {
		return nil, broker.StreamPosition{}, err
	}
	var pubs []*protocol.Publication
	if n := (len(res) - 2) / 2; n > 0 {
		pubs = make([]*protocol.Publication, 0, n)
	}
	for i := 2; i < len(res); i += 2 {
		offset, err := toUint(res[i])
		if err != nil {
			return nil, broker.StreamPosition{}, err
		}
		body, _ := res[i+1].(string)
		p, err := decodeBody(ch, offset, body)
		if err != nil {
			return nil, broker.StreamPosition{}, fmt.Errorf("offset %d: %w", offset, err)
		}
		pubs = append(pubs, p)
	}
	return pubs, pos, nil
}

// position reads the channel's stream position without creating a stream
// (epoch "" if there is none).
func (b *Broker) position(ctx context.Context, ch string) (broker.StreamPosition, error) {
	vals, err := b.client.HMGet(ctx, keysFor(b.cfg.Prefix, ch).meta(), "e", "s").Result()
	if err = b.cmdErr(err); err != nil {
		return broker.StreamPosition{}, err
	}
	var pos broker.StreamPosition
	pos.Epoch, _ = vals[0].(string)
	if pos.Epoch != "" && vals[1] != nil {
		if pos.Offset, err = toUint(vals[1]); err != nil {
			return broker.StreamPosition{}, err
		}
	}
	return pos, nil
}

// RemoveHistory implements broker.Broker: it deletes the stream and its
// position, so the next one starts with a new epoch. Idempotency records
// are kept until their window ends.
func (b *Broker) RemoveHistory(ctx context.Context, ch string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	k := keysFor(b.cfg.Prefix, ch)
	if err := b.cmdErr(b.client.Del(ctx, k.meta(), k.stream()).Err()); err != nil {
		return fmt.Errorf("redis remove history %q: %w", ch, err)
	}
	return nil
}

// Close implements broker.Broker: it stops delivery, closes every
// connection and waits for the broker's goroutines, at most until ctx is
// done. Calls after Close return broker.ErrClosed.
func (b *Broker) Close(ctx context.Context) error {
	if !b.closed.CompareAndSwap(false, true) {
		return nil
	}
	b.cancel()
	b.mu.Lock()
	subs := make([]*subscriber, 0, len(b.subs))
	for _, s := range b.subs {
		subs = append(subs, s)
	}
	b.mu.Unlock()
	for _, s := range subs {
		s.close()
	}
	var err error
	if werr := syncx.Wait(ctx, &b.wg); werr != nil {
		err = fmt.Errorf("redis close: %w", werr)
	}
	for _, s := range subs {
		if s.client != nil {
			_ = s.client.Close()
		}
	}
	if cerr := b.client.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("redis close: %w", cerr)
	}
	return err
}

// cmdErr returns err, first asking the cluster client to reload its slot
// table if the error is a connection failure: go-redis otherwise keeps
// sending a failed-over master's slots to the dead node until its next
// periodic reload (every minute), while MOVED replies only come from live
// nodes.
func (b *Broker) cmdErr(err error) error {
	if err == nil || b.cluster == nil {
		return err
	}
	var rerr goredis.Error
	if !errors.As(err, &rerr) && !errors.Is(err, context.Canceled) && !errors.Is(err, context.DeadlineExceeded) {
		b.cluster.ReloadState(b.ctx)
	}
	return err
}

// millis converts d to whole milliseconds, rounding up so that a positive
// duration never becomes 0.
func millis(d time.Duration) int64 {
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func toUint(v any) (uint64, error) {
	switch v := v.(type) {
	case string:
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("%w: number %q", errMalformed, v)
		}
		return n, nil
	case int64:
		if v < 0 {
			return 0, fmt.Errorf("%w: number %d", errMalformed, v)
		}
		return uint64(v), nil
	default:
		return 0, fmt.Errorf("%w: number of type %T", errMalformed, v)
	}
}
