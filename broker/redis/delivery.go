package redis

import (
	"context"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
	goredis "github.com/redis/go-redis/v9"
)

// dispatch hands a pub/sub message to the handler. It runs on the reader
// goroutine of the connection that received it.
func (b *Broker) dispatch(m *goredis.Message) {
	b.mu.RLock()
	st := b.chans[m.Channel]
	b.mu.RUnlock()
	if st == nil || b.handler == nil {
		return // unsubscribed meanwhile
	}
	if st.control {
		b.handler.HandleControl([]byte(m.Payload))
		return
	}
	lm, err := decodeLive(st.channel, m.Payload)
	if err != nil {
		b.log.Warn("redis: dropping undecodable message", "channel", st.channel, "err", err)
		return
	}
	switch lm.kind {
	case kindPub, kindBatch:
		for _, p := range lm.pubs {
			b.deliverLive(st, p, lm.epoch)
		}
	case kindJoin:
		b.handler.HandleJoin(st.channel, lm.info)
	case kindLeave:
		b.handler.HandleLeave(st.channel, lm.info)
	}
}

// outage tells the handler, if it wants to know (broker.OutageHandler),
// that a pub/sub connection was lost (down) or is back.
func (b *Broker) outage(down bool) {
	oh, ok := b.handler.(broker.OutageHandler)
	if !ok || b.closed.Load() {
		return
	}
	if down {
		oh.HandleBrokerDown()
	} else {
		oh.HandleBrokerUp()
	}
}

// deliverLive delivers a live publication. It runs on the reader
// goroutine. Live messages of a channel arrive in offset order; a jump
// means some were lost (a pub/sub connection dropped, or Redis cut a slow
// subscriber off), and the missing ones are read from history and
// delivered first. That read runs on a catch-up worker, not on the
// reader, so that other channels' live publications do not wait for it;
// the channel's own live publications wait in st.held meanwhile and
// follow the catch-up. A publication already delivered by a catch-up is
// skipped.
func (b *Broker) deliverLive(st *chState, p *protocol.Publication, epoch string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.gone {
		return
	}
	if p.Offset == 0 {
		b.handler.HandlePublication(st.channel, p, "")
		return
	}
	if st.catching {
		if len(st.held) >= maxHeld {
			// History has them: catch up again, to the head, after the
			// current catch-up.
			st.held, st.again = st.held[:0], true
		}
		st.held = append(st.held, heldPub{p, epoch})
		return
	}
	if st.last.Epoch == epoch && p.Offset <= st.last.Offset {
		return
	}
	ref := st.ref()
	if ref.Epoch == epoch && p.Offset > ref.Offset+1 {
		st.held = append(st.held[:0], heldPub{p, epoch})
		b.startCatchUp(st, catchUp{from: ref, upTo: p.Offset - 1, force: p.Offset})
		return
	}
	b.emitLocked(st, p, epoch)
}

func (b *Broker) emitLocked(st *chState, p *protocol.Publication, epoch string) {
	st.last = broker.StreamPosition{Epoch: epoch, Offset: p.Offset}
	b.handler.HandlePublication(st.channel, p, epoch)
}

// ref is the position the next publication follows: the last delivered,
// or the position read when the channel was subscribed. st.mu must be
// held.
func (st *chState) ref() broker.StreamPosition {
	if st.last.Epoch == "" && st.synced {
		return st.base
	}
	return st.last
}

// resync catches a channel up from history after it was subscribed again
// on a new connection: whatever was published while the old one was
// down is delivered, before newer live messages. It runs on the reader
// goroutine and only queues the catch-up.
func (b *Broker) resync(name string) {
	b.mu.RLock()
	st := b.chans[name]
	b.mu.RUnlock()
	if st == nil || st.control || b.handler == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.synced || st.gone {
		return // Subscribe has not returned; the caller reads history after it
	}
	if st.catching {
		st.again = true
		return
	}
	b.startCatchUp(st, catchUp{from: st.ref()})
}

// maxHeld bounds the live publications a channel holds while it catches
// up; beyond it they are dropped and read from history afterwards.
const maxHeld = 4096

// maxCatchUpWorkers bounds the catch-ups that run at once (each reads
// one channel's history): after a reconnect every channel catches up.
const maxCatchUpWorkers = 8

// heldPub is a live publication held while its channel catches up.
type heldPub struct {
	p     *protocol.Publication
	epoch string
}

// catchUp is a queued catch-up of a channel: the publications after from,
// up to offset upTo (0: all). force is the offset of the held publication
// that revealed the gap (0: none): it is delivered after the catch-up
// whatever history held, as it would have been without the gap.
type catchUp struct {
	st    *chState
	from  broker.StreamPosition
	upTo  uint64
	force uint64
}

// startCatchUp marks the channel as catching up and queues c; a worker
// runs it. It runs on a reader goroutine (which keeps b.wg above zero
// while it adds a worker). st.mu must be held.
func (b *Broker) startCatchUp(st *chState, c catchUp) {
	st.catching = true
	c.st = st
	b.cuMu.Lock()
	defer b.cuMu.Unlock()
	b.cuQueue = append(b.cuQueue, c)
	if b.cuWorkers < maxCatchUpWorkers && !b.closed.Load() {
		b.cuWorkers++
		b.wg.Add(1)
		go b.catchUpWorker()
	}
}

// catchUpWorker runs queued catch-ups until none is left or the broker
// closes.
func (b *Broker) catchUpWorker() {
	defer b.wg.Done()
	for {
		b.cuMu.Lock()
		if len(b.cuQueue) == 0 || b.ctx.Err() != nil {
			b.cuWorkers--
			b.cuMu.Unlock()
			return
		}
		c := b.cuQueue[0]
		b.cuQueue[0] = catchUp{}
		b.cuQueue = b.cuQueue[1:]
		b.cuMu.Unlock()
		b.runCatchUp(c)
	}
}

// runCatchUp reads the channel's missed publications from history without
// holding st.mu, so that nothing waits for the read but the channel's own
// live publications (held, as st.catching is set); then, under st.mu, it
// delivers them and the held ones, in offset order, skipping what was
// delivered already. A gap among the held ones, or a resync asked for
// meanwhile, starts another round.
func (b *Broker) runCatchUp(c catchUp) {
	st := c.st
	for {
		pubs, epoch := b.readMissed(st.channel, c.from, c.upTo)
		st.mu.Lock()
		if st.gone {
			st.catching, st.held, st.again = false, nil, false
			st.mu.Unlock()
			return
		}
		n := 0
		for _, p := range pubs {
			if st.last.Epoch == epoch && p.Offset <= st.last.Offset {
				continue
			}
			b.emitLocked(st, p, epoch)
			n++
		}
		if n > 0 {
			b.log.Info("redis: delivered missed publications from history", "channel", st.channel, "count", n)
		}
		if st.again {
			st.again = false
			c = catchUp{st: st, from: st.ref()}
			st.mu.Unlock()
			continue
		}
		held := st.held
		st.held = nil
		next := -1
		for i, h := range held {
			if st.last.Epoch == h.epoch && h.p.Offset <= st.last.Offset {
				continue
			}
			ref := st.ref()
			if h.p.Offset != c.force && ref.Epoch == h.epoch && h.p.Offset > ref.Offset+1 {
				next = i
				break
			}
			b.emitLocked(st, h.p, h.epoch)
		}
		if next < 0 {
			st.catching = false
			st.mu.Unlock()
			return
		}
		ref := st.ref()
		st.held = held[next:]
		c = catchUp{st: st, from: ref, upTo: held[next].p.Offset - 1, force: held[next].p.Offset}
		st.mu.Unlock()
	}
}

// readMissed reads the publications after from, up to offset upTo (0:
// all), and the epoch they belong to; nothing on failure (logged). With
// from.Epoch "" (no stream when the channel was subscribed) everything in
// the current stream is new, and so it is when a catch-up after a
// reconnect finds a new epoch.
func (b *Broker) readMissed(ch string, from broker.StreamPosition, upTo uint64) ([]*protocol.Publication, string) {
	if b.testCatchUpHook != nil {
		b.testCatchUpHook(ch)
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout+b.cfg.ReadTimeout)
	defer cancel()
	opts := broker.HistoryOptions{Limit: -1}
	if from.Epoch != "" {
		opts.Since = &from
		if upTo > from.Offset {
			opts.Limit = int(min(upTo-from.Offset, 1<<30))
		}
	}
	pubs, pos, err := b.history(ctx, ch, opts, false)
	if err = b.cmdErr(err); err != nil {
		b.log.Warn("redis: catching up from history", "channel", ch, "err", err)
		return nil, ""
	}
	if pos.Epoch == "" {
		return nil, "" // no stream (any more)
	}
	if from.Epoch != "" && pos.Epoch != from.Epoch {
		if upTo > 0 {
			return nil, "" // a live gap within an epoch that is gone: nothing to fill
		}
		// The stream was replaced while the connection was down (Redis
		// lost it, or RemoveHistory). Deliver the new stream from its
		// start: the handler sees the epoch change now rather than at the
		// next publication, which may never come.
		if pubs, pos, err = b.history(ctx, ch, broker.HistoryOptions{Limit: -1}, false); err != nil {
			b.log.Warn("redis: catching up from history", "channel", ch, "err", err)
			return nil, ""
		}
		if pos.Epoch == "" || pos.Epoch == from.Epoch {
			return nil, ""
		}
	}
	if upTo > 0 {
		for i, p := range pubs {
			if p.Offset > upTo {
				pubs = pubs[:i]
				break
			}
		}
	}
	return pubs, pos.Epoch
}
