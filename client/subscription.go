package client

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/protocol/fossil"
)

// StreamPosition is a position in a channel's history stream.
type StreamPosition = protocol.StreamPosition

// ClientInfo describes a connection in presence, join and leave.
type ClientInfo = protocol.ClientInfo

// Publication is a message received in a channel.
type Publication struct {
	Channel string
	Offset  uint64 // 0 for channels without history
	Data    []byte
	Info    *ClientInfo // the publisher, for client publications
	Tags    map[string]string
	Time    time.Time
	// Gap: the server dropped publications of this channel before this one
	// (slow-client policy "drop") and the channel keeps no history to
	// recover them from. On channels with history the client recovers
	// instead and Gap is never seen.
	Gap bool
	// Redelivered: on a channel with acknowledgements, the server sent
	// this publication again because its acknowledgement was late. The
	// client hands each offset to the application once, so the
	// application sees it only when the first sending was lost.
	Redelivered bool
	// Skipped counts the publications of the same key that this one
	// replaced, on a channel whose slow-client policy is "conflate", while
	// the client was behind: it never received them, by design, and it
	// is not a gap (see SubscribedEvent.Conflated). 0 otherwise.
	Skipped uint32
}

func toPublication(p *protocol.Publication) Publication {
	out := Publication{Channel: p.Channel, Offset: p.Offset, Data: p.Data, Info: p.Info, Tags: p.Tags, Gap: p.Gap, Redelivered: p.Redelivered, Skipped: p.Skipped}
	if p.Time != 0 {
		out.Time = time.UnixMilli(p.Time)
	}
	return out
}

// subscribedEvent is the event of a subscribe result on channel ch.
func subscribedEvent(ch string, r *protocol.SubscribeResult) SubscribedEvent {
	return SubscribedEvent{
		Channel: ch, Recoverable: r.Recoverable, WasRecovering: r.WasRecovering,
		Recovered: r.Recovered, Position: StreamPosition{Epoch: r.Epoch, Offset: r.Offset},
		Filtered: r.Filtered, Delta: r.Delta, Ack: r.Ack, Conflated: r.Conflated,
	}
}

// recoveredPublications returns the publications a subscribe result on
// channel ch recovered (none unless it recovered them all), with their
// channel set.
func recoveredPublications(ch string, r *protocol.SubscribeResult) []*protocol.Publication {
	if !r.WasRecovering || !r.Recovered {
		return nil
	}
	for _, p := range r.Publications {
		if p.Channel == "" {
			p.Channel = ch
		}
	}
	return r.Publications
}

// offsetVerdict classifies a live publication's offset against the last
// one delivered on a channel with positions.
type offsetVerdict int

const (
	offsetNext      offsetVerdict = iota // deliver and advance
	offsetDuplicate                      // delivered already: drop
	offsetGap                            // publications are missing: recover from last
)

func classifyOffset(last, offset uint64) offsetVerdict {
	switch {
	case offset <= last:
		return offsetDuplicate
	case offset == last+1:
		return offsetNext
	}
	return offsetGap
}

// SubscribedEvent reports a (re)subscription.
type SubscribedEvent struct {
	Channel string
	// Recoverable: the channel has history and positions.
	Recoverable bool
	// WasRecovering: the client asked to recover from a position; Recovered:
	// every missed publication was delivered (before this event's live
	// publications). WasRecovering and not Recovered means a gap the
	// application must fill itself.
	WasRecovering bool
	Recovered     bool
	Position      StreamPosition
	// Filtered: the subscription has a filter (SubscribeOptions.Filter),
	// so its publications' offsets skip those filtered out.
	Filtered bool
	// Delta: the server granted SubscribeOptions.Delta (the channel's
	// namespace has deltas on).
	Delta bool
	// Ack: the channel's namespace wants acknowledgements. The client
	// acknowledges each publication after OnPublication returns (or once
	// it is queued on C), unless SubscribeOptions.ManualAck is set.
	Ack bool
	// Conflated: the channel's slow-client policy is "conflate", so its
	// publications' offsets skip those a newer publication of their key
	// replaced (Publication.Skipped counts them); recovery returns the
	// newest publication per key.
	Conflated bool
}

// UnsubscribedEvent reports that the server ended a subscription: an
// unsubscribe push, sent for example by the server API's unsubscribe.
// After it no publication of the channel arrives until the channel is
// subscribed again.
type UnsubscribedEvent struct {
	Channel string
	// Code is in 2000-2999 (docs/protocol.md): 2000-2499 end the
	// subscription for good (2000: the application ended it); 2500-2999
	// ask the client to subscribe again, recovering.
	Code   uint32
	Reason string
	// Resubscribe: Code is in 2500-2999. A client subscription then
	// subscribes again by itself, recovering from Position (OnSubscribed
	// says whether it recovered everything). A server-side subscription
	// is not subscribed again by the client: the server decides what it
	// subscribes a connection to (the application may call
	// Client.Subscribe with SubscribeOptions.Since set to Position).
	Resubscribe bool
	// Position is that of the last publication delivered; Recoverable
	// says whether the channel keeps history, which makes it meaningful.
	Position    StreamPosition
	Recoverable bool
}

// unsubscribeResubscribes reports whether an unsubscribe code asks the
// client to subscribe again.
func unsubscribeResubscribes(code uint32) bool { return code >= 2500 && code <= 2999 }

func unsubscribedEvent(u *protocol.UnsubscribeResult, recoverable bool, pos StreamPosition) UnsubscribedEvent {
	return UnsubscribedEvent{
		Channel: u.Channel, Code: u.Code, Reason: u.Reason, Resubscribe: unsubscribeResubscribes(u.Code),
		Position: pos, Recoverable: recoverable,
	}
}

// SubscribeOptions configure a subscription. Without OnPublication,
// publications are delivered on Subscription.C.
type SubscribeOptions struct {
	// Since recovers from this position on the first subscribe (for example
	// one saved by a previous run).
	Since *StreamPosition
	// Token is a subscription token for private channels. Subscription
	// tokens are bound to the connection's client id, which changes on
	// every reconnect: set GetToken so that resubscriptions get a fresh one
	// (Token, if set, is used for the first subscribe only).
	Token         string
	GetToken      func(ctx context.Context, channel, clientID string) (string, error)
	OnPublication func(Publication)
	OnSubscribed  func(SubscribedEvent)
	OnJoin        func(ClientInfo)
	OnLeave       func(ClientInfo)
	// OnPresenceStale is called when the server may lose join and leave
	// events of the channel (its node lost the broker): members kept from
	// OnJoin and OnLeave may be wrong until OnPresenceSync.
	OnPresenceStale func()
	// OnPresenceSync is called with the channel's current members, by
	// client id, once the server's broker is back after OnPresenceStale
	// (or after another node could not announce its joins and leaves):
	// they replace the members kept; OnJoin and OnLeave after it apply to
	// them.
	OnPresenceSync func(members map[string]ClientInfo)
	// OnUnsubscribed is called when the subscription ends for good other
	// than by Unsubscribe: a resubscription was refused (err is the *Error
	// reply), or the server ended it with an unsubscribe code in
	// 2000-2499 (err is an *Error with that Code and the reason as
	// Message). C is closed.
	OnUnsubscribed func(err error)
	// OnServerUnsubscribed is called for every unsubscribe push the server
	// sends for this subscription, before anything else is done about it:
	// with a code in 2000-2499 OnUnsubscribed follows and the subscription
	// is over; with 2500-2999 (ev.Resubscribe) the client subscribes again
	// from the last position, and OnSubscribed follows.
	OnServerUnsubscribed func(UnsubscribedEvent)
	// Buffer is the capacity of C. Default 1024.
	Buffer int
	// Filter, when set, makes the server send only the publications whose
	// tags it matches, live, recovered and after a reconnect, for example
	// `type == "trade" and price > 100` (syntax in docs/protocol.md). A
	// filter the server cannot parse fails Subscribe with an *Error of
	// code 118. The offsets of a filtered subscription skip those of the
	// publications filtered out: they are not treated as a gap.
	Filter string
	// Delta asks the server for delta compression: where the channel's
	// namespace has it on (SubscribedEvent.Delta), publications travel as
	// Fossil deltas against the previous one received, and the client
	// applies them, so Publication.Data is always the full data. A delta
	// that does not apply (its checksum fails) is handled as a gap: the
	// client subscribes again, recovering from the last position
	// delivered. Elsewhere the option is ignored.
	Delta bool
	// ManualAck, on a channel with acknowledgements, leaves them to the
	// application: it calls Subscription.Ack with the offset of the last
	// publication it has processed. By default the client acknowledges a
	// publication once OnPublication returns, or once it is queued on C.
	ManualAck bool
	// FromAcked, on a channel with acknowledgements, resumes from the last
	// offset the connection's user acknowledged on any device or
	// connection (the server keeps it per user and channel, for the
	// namespace's ack_cursor_ttl) when it is further than the
	// subscription's own position: a second device, or a fresh page,
	// receives what no device of the user acknowledged.
	FromAcked bool
}

// maxDeltaTarget bounds the data a delta may make: a corrupt delta that
// states more fails like one whose checksum does not match.
const maxDeltaTarget = 64 << 20

// subscription states
const (
	subPending = iota // waiting for a (re)subscribe reply
	subActive
	subResyncing // a gap was seen: unsubscribing to resubscribe with recovery
	subGone
)

// Subscription is a client's subscription to one channel; it survives
// reconnects.
type Subscription struct {
	c       *Client
	channel string
	opts    SubscribeOptions
	// C delivers publications when SubscribeOptions.OnPublication is nil.
	// It is closed by Unsubscribe and when the client closes.
	C  <-chan Publication
	ch chan Publication

	mu          sync.Mutex
	state       int
	conn        *wsConn
	recoverable bool
	positioned  bool
	pos         StreamPosition
	// ack: the server wants acknowledgements; acked is the offset (of
	// pos.Epoch) acknowledged, which a resubscription recovers from.
	// pos.Offset is the last offset handed to the application, after
	// which publications are duplicates.
	ack   bool
	acked uint64
	// skips: the server skips offsets on purpose (the subscription is
	// filtered or conflated): a skip is not a gap.
	skips bool
	// subscribedOnce: a subscribe succeeded before (the static Token, bound
	// to the first connection, is spent).
	subscribedOnce bool
	ready          chan struct{} // closed at the first subscribe result
	readyErr       error
	// delta: the last subscribe reply granted deltas; base is the data of
	// the last publication received since, the source of the next delta.
	delta bool
	base  []byte

	dmu     sync.Mutex // held while delivering to C
	gone    chan struct{}
	goneOne sync.Once
}

// Subscribe subscribes to channel and returns once the server accepted it
// (waiting for a connection if there is none). An error reply (permission
// denied, unknown channel...) is returned and the subscription discarded.
func (c *Client) Subscribe(ctx context.Context, channel string, opts SubscribeOptions) (*Subscription, error) {
	s := &Subscription{c: c, channel: channel, opts: opts, ready: make(chan struct{}), gone: make(chan struct{})}
	if opts.Since != nil {
		s.positioned, s.pos = true, *opts.Since
	}
	if opts.OnPublication == nil {
		n := opts.Buffer
		if n <= 0 {
			n = 1024
		}
		s.ch = make(chan Publication, n)
		s.C = s.ch
	}
	c.mu.Lock()
	if c.state == StateClosed {
		c.mu.Unlock()
		return nil, ErrClosed
	}
	if c.subs[channel] != nil {
		c.mu.Unlock()
		return nil, errors.New("herald client: already subscribed to " + channel)
	}
	c.subs[channel] = s
	var conn *wsConn
	if c.state == StateConnected {
		conn = c.conn
	}
	c.mu.Unlock()
	if conn != nil {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			s.subscribeOn(conn)
		}()
	}
	select {
	case <-s.ready:
		if s.readyErr != nil {
			return nil, s.readyErr
		}
		return s, nil
	case <-ctx.Done():
		_ = s.Unsubscribe(context.Background())
		return nil, ctx.Err()
	case <-c.closed:
		return nil, ErrClosed
	}
}

// Channel returns the subscription's channel.
func (s *Subscription) Channel() string { return s.channel }

// Position returns the position of the last publication delivered (or of
// the subscribe), for recovering later with SubscribeOptions.Since.
func (s *Subscription) Position() (StreamPosition, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.pos, s.recoverable || s.positioned
}

// resubscribe runs after a reconnect, on its own goroutine.
func (s *Subscription) resubscribe(conn *wsConn) {
	s.c.wg.Add(1)
	go func() {
		defer s.c.wg.Done()
		s.subscribeOn(conn)
	}()
}

func (s *Subscription) subscribeOn(conn *wsConn) {
	s.subscribeUntilDone(conn, false)
}

// attempt outcomes of subscribeOnce.
const (
	attemptDone       = iota // subscribed, failed for good, or the connection ended
	attemptRetry             // a temporary error: try again
	attemptRetryUnsub        // no answer in time: unsubscribe, then try again
)

// subscribeUntilDone (re)subscribes on conn, first unsubscribing if unsub.
// A resubscription that gets a temporary error (the server's broker
// electing a leader, say), or no answer in time while the connection
// lives on, is tried again after a backoff: the subscription is never
// left behind on a connection that goes on. Each try after a missing
// answer first unsubscribes, since the server, which runs a connection's
// commands in order, may still complete the subscribe it did not answer
// in time.
func (s *Subscription) subscribeUntilDone(conn *wsConn, unsub bool) {
	for attempt := 0; ; attempt++ {
		if attempt > 0 {
			t := time.NewTimer(backoff(attempt, s.c.opts.ReconnectBase, s.c.opts.ReconnectMax))
			select {
			case <-t.C:
			case <-conn.done:
				t.Stop()
				return
			case <-s.gone:
				t.Stop()
				return
			}
		}
		if unsub {
			ctx, cancel := context.WithTimeout(context.Background(), s.c.opts.DialTimeout)
			_, err := s.c.roundTrip(ctx, conn, &protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: s.channel}}, nil)
			cancel()
			var pe *protocol.Error
			if err != nil && !errors.As(err, &pe) {
				if errors.Is(err, context.DeadlineExceeded) {
					continue
				}
				return // the connection ended: the next one resubscribes
			}
			unsub = false
		}
		switch s.subscribeOnce(conn) {
		case attemptDone:
			return
		case attemptRetryUnsub:
			unsub = true
		}
	}
}

// subscribeOnce sends one subscribe on conn.
func (s *Subscription) subscribeOnce(conn *wsConn) int {
	s.mu.Lock()
	if s.state == subGone {
		s.mu.Unlock()
		return attemptDone
	}
	s.state = subPending
	req := &protocol.SubscribeRequest{Channel: s.channel, Filter: s.opts.Filter, Acked: s.opts.FromAcked}
	if s.opts.Delta {
		req.Delta = protocol.DeltaFossil
	}
	if s.positioned {
		req.Recover, req.Epoch, req.Offset = true, s.pos.Epoch, s.pos.Offset
		if s.ack {
			// Resume from what was acknowledged, not from what was
			// received: what was received and not processed comes again
			// (and is not handed to the application twice).
			req.Offset = min(s.acked, s.pos.Offset)
		}
	}
	first := !s.subscribedOnce
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), s.c.opts.DialTimeout)
	defer cancel()
	switch {
	case s.opts.Token != "" && first:
		req.Token = s.opts.Token
	case s.opts.GetToken != nil:
		tok, err := s.opts.GetToken(ctx, s.channel, s.c.ID())
		if err != nil {
			s.fail(err)
			return attemptDone
		}
		req.Token = tok
	}
	applied := false
	_, err := s.c.roundTrip(ctx, conn, &protocol.Command{Subscribe: req}, func(m *protocol.ServerMessage) {
		if m.Error == nil && m.Subscribe != nil {
			applied = s.applySubscribed(conn, m.Subscribe)
		}
	})
	var pe *protocol.Error
	switch {
	case err == nil:
		if !applied {
			// The subscription ended while its subscribe was in flight
			// (Unsubscribe, or the server's unsubscribe): undo it, or the
			// server would go on sending the channel.
			_, _ = s.c.roundTrip(ctx, conn, &protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: s.channel}}, nil)
		}
		return attemptDone
	case errors.As(err, &pe):
		if pe.Temporary && !first {
			return attemptRetry
		}
		// The first subscribe returns its error to Subscribe.
		s.fail(pe)
		return attemptDone
	case errors.Is(err, context.DeadlineExceeded):
		return attemptRetryUnsub
	}
	return attemptDone // the connection ended: the next one resubscribes
}

// applySubscribed runs on the reader goroutine: recovered publications are
// delivered before anything read after the reply. It returns false if the
// subscription had ended meanwhile.
func (s *Subscription) applySubscribed(conn *wsConn, res *protocol.SubscribeResult) bool {
	s.mu.Lock()
	if s.state == subGone {
		s.mu.Unlock()
		return false
	}
	s.state = subActive
	s.subscribedOnce = true
	s.conn = conn
	s.recoverable = res.Recoverable
	// The server sends the first live publication after a subscribe
	// reply full.
	s.delta, s.base = res.Delta, nil
	s.skips = res.Filtered || res.Conflated || s.opts.Filter != ""
	var recovered []*protocol.Publication
	if res.Recoverable {
		prev, had := s.pos, s.positioned
		recovered = recoveredPublications(s.channel, res)
		s.pos = StreamPosition{Epoch: res.Epoch, Offset: res.Offset}
		s.positioned = true
		s.ack = res.Ack
		if res.Ack {
			recovered = s.resumeAcks(prev, had, res, recovered)
		}
	}
	s.mu.Unlock()
	if s.opts.OnSubscribed != nil {
		s.opts.OnSubscribed(subscribedEvent(s.channel, res))
	}
	for _, p := range recovered {
		s.deliver(toPublication(p))
		s.handled(p.Offset)
	}
	select {
	case <-s.ready:
	default:
		close(s.ready)
	}
	return true
}

// onPublication runs on the reader goroutine.
func (s *Subscription) onPublication(conn *wsConn, p *protocol.Publication) {
	s.mu.Lock()
	if s.state != subActive || s.conn != conn {
		s.mu.Unlock()
		return
	}
	// Deltas apply to the previous publication received, delivered or
	// not (a duplicate is still the server's source of the next one).
	if p.Delta {
		var data []byte
		err := errNoDeltaBase
		if s.delta && s.base != nil {
			data, err = fossil.Apply(s.base, p.Data, maxDeltaTarget)
		}
		if err != nil {
			s.resyncLocked(conn)
			return
		}
		p.Data, p.Delta = data, false
	}
	if s.delta {
		s.base = append(s.base[:0], p.Data...)
	}
	if p.Offset != 0 && s.recoverable {
		v := classifyOffset(s.pos.Offset, p.Offset)
		if s.ack && v != offsetNext {
			s.mu.Unlock()
			s.ackOutOfOrder(conn, p, v)
			return
		}
		if v == offsetGap && s.skips {
			// The server skips the offsets its filter leaves out, or
			// that conflation replaced, and announces a real loss (Gap,
			// or a disconnect) on its own.
			v = offsetNext
		}
		switch v {
		case offsetDuplicate:
			s.mu.Unlock()
			return // already delivered
		case offsetGap:
			// A gap: never deliver past it. Resubscribe from the last
			// position delivered; the server replays what is missing.
			s.resyncLocked(conn)
			return
		}
		s.pos.Offset = p.Offset
	}
	s.mu.Unlock()
	s.deliver(toPublication(p))
	s.handled(p.Offset)
}

// errNoDeltaBase: a delta arrived without a publication to apply it to.
var errNoDeltaBase = errors.New("herald client: delta without a previous publication")

// resyncLocked, with s.mu held, unlocks it and resubscribes on conn,
// recovering from the last position delivered.
func (s *Subscription) resyncLocked(conn *wsConn) {
	s.state = subResyncing
	s.base = nil
	s.mu.Unlock()
	s.c.wg.Add(1)
	go s.resync(conn)
}

func (s *Subscription) resync(conn *wsConn) {
	defer s.c.wg.Done()
	s.subscribeUntilDone(conn, true)
}

func (s *Subscription) onPresence(join bool, info ClientInfo) {
	f := s.opts.OnLeave
	if join {
		f = s.opts.OnJoin
	}
	if f != nil {
		f(info)
	}
}

func (s *Subscription) onPresenceStale() {
	if f := s.opts.OnPresenceStale; f != nil {
		f()
	}
}

func (s *Subscription) onPresenceSync(members map[string]*protocol.ClientInfo) {
	f := s.opts.OnPresenceSync
	if f == nil {
		return
	}
	out := make(map[string]ClientInfo, len(members))
	for id, info := range members {
		if info != nil {
			out[id] = *info
		}
	}
	f(out)
}

func (s *Subscription) deliver(p Publication) {
	if s.opts.OnPublication != nil {
		s.opts.OnPublication(p)
		return
	}
	s.dmu.Lock()
	defer s.dmu.Unlock()
	select {
	case <-s.gone:
		return
	default:
	}
	select {
	case s.ch <- p:
	case <-s.gone:
	case <-s.c.closed:
	}
}

// disconnected marks the subscription for resubscription.
func (s *Subscription) disconnected() {
	s.mu.Lock()
	if s.state != subGone {
		s.state = subPending
		s.conn = nil
	}
	s.mu.Unlock()
}

func (s *Subscription) fail(err error) {
	// Out of the client's subscriptions before Subscribe returns the
	// error: a Subscribe retried at once, or the server's own subscribe
	// push for the channel, must not meet this one on its way out.
	s.leaveTable()
	s.mu.Lock()
	first := true
	select {
	case <-s.ready:
		first = false
	default:
		s.readyErr = err
		close(s.ready)
	}
	s.mu.Unlock()
	s.end(err, !first)
}

// serverUnsubscribed handles the server's unsubscribe push on the reader
// goroutine: the subscription ends (codes 2000-2499) or subscribes again
// from its position (2500-2999). A push met while a subscribe is in
// flight (resubscribing after a gap) leaves that subscribe to bring the
// channel back, unless the code ends the subscription.
func (s *Subscription) serverUnsubscribed(conn *wsConn, u *protocol.UnsubscribeResult) {
	s.mu.Lock()
	if s.state == subGone {
		s.mu.Unlock()
		return
	}
	ev := unsubscribedEvent(u, s.recoverable || s.positioned, s.pos)
	resubscribe := ev.Resubscribe && s.state == subActive
	if ev.Resubscribe {
		s.state, s.conn = subPending, nil
	}
	s.mu.Unlock()
	if s.opts.OnServerUnsubscribed != nil {
		s.opts.OnServerUnsubscribed(ev)
	}
	if !ev.Resubscribe {
		s.end(&protocol.Error{Code: u.Code, Message: u.Reason}, true)
		return
	}
	if resubscribe {
		s.c.wg.Add(1)
		go func() {
			defer s.c.wg.Done()
			s.subscribeUntilDone(conn, false)
		}()
	}
}

// end removes the subscription from the client for good.
func (s *Subscription) end(err error, notify bool) {
	s.mu.Lock()
	if s.state == subGone {
		s.mu.Unlock()
		return
	}
	s.state = subGone
	s.mu.Unlock()
	s.leaveTable()
	s.goneOne.Do(func() {
		close(s.gone)
		if s.ch != nil {
			s.dmu.Lock()
			close(s.ch)
			s.dmu.Unlock()
		}
	})
	if notify && s.opts.OnUnsubscribed != nil {
		s.opts.OnUnsubscribed(err)
	}
}

// leaveTable takes s out of the client's subscriptions, unless another
// subscription of the channel has taken its place.
func (s *Subscription) leaveTable() {
	s.c.mu.Lock()
	if s.c.subs[s.channel] == s {
		delete(s.c.subs, s.channel)
	}
	s.c.mu.Unlock()
}

// Unsubscribe leaves the channel.
func (s *Subscription) Unsubscribe(ctx context.Context) error {
	s.mu.Lock()
	conn, active := s.conn, s.state == subActive
	s.mu.Unlock()
	s.end(nil, false)
	if active && conn != nil {
		_, err := s.c.roundTrip(ctx, conn, &protocol.Command{Unsubscribe: &protocol.UnsubscribeRequest{Channel: s.channel}}, nil)
		if err != nil && !errors.Is(err, ErrDisconnected) {
			return err
		}
	}
	return nil
}
