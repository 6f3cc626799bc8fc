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

// deliverLive delivers a live publication. Live messages of a channel
// arrive in offset order; a jump means some were lost (a pub/sub
// connection dropped, or Redis cut a slow subscriber off), and the
// missing ones are read from history and delivered first. A publication
// already delivered by such a catch-up is skipped.
func (b *Broker) deliverLive(st *chState, p *protocol.Publication, epoch string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if p.Offset == 0 {
		b.handler.HandlePublication(st.channel, p, "")
		return
	}
	if st.last.Epoch == epoch && p.Offset <= st.last.Offset {
		return
	}
	ref := st.last
	if ref.Epoch == "" && st.synced {
		ref = st.base
	}
	if ref.Epoch == epoch && p.Offset > ref.Offset+1 {
		b.catchUpLocked(st, ref, p.Offset-1)
	}
	b.emitLocked(st, p, epoch)
}

func (b *Broker) emitLocked(st *chState, p *protocol.Publication, epoch string) {
	st.last = broker.StreamPosition{Epoch: epoch, Offset: p.Offset}
	b.handler.HandlePublication(st.channel, p, epoch)
}

// resync catches a channel up from history after it was subscribed again
// on a new connection: whatever was published while the old one was
// down is delivered now, before newer live messages.
func (b *Broker) resync(name string) {
	b.mu.RLock()
	st := b.chans[name]
	b.mu.RUnlock()
	if st == nil || st.control || b.handler == nil {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if !st.synced {
		return // Subscribe has not returned; the caller reads history after it
	}
	from := st.last
	if from.Epoch == "" {
		from = st.base
	}
	b.catchUpLocked(st, from, 0)
}

// catchUpLocked delivers the publications after from, up to offset upTo
// (0: all). With from.Epoch "" (no stream when the channel was
// subscribed) everything in the current stream is new, and so it is when
// a catch-up after a reconnect finds a new epoch. st.mu must be held.
func (b *Broker) catchUpLocked(st *chState, from broker.StreamPosition, upTo uint64) {
	if b.testCatchUpHook != nil {
		b.testCatchUpHook(st.channel)
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
	pubs, pos, err := b.history(ctx, st.channel, opts, false)
	if err = b.cmdErr(err); err != nil {
		b.log.Warn("redis: catching up from history", "channel", st.channel, "err", err)
		return
	}
	if pos.Epoch == "" {
		return // no stream (any more)
	}
	if from.Epoch != "" && pos.Epoch != from.Epoch {
		if upTo > 0 {
			return // a live gap within an epoch that is gone: nothing to fill
		}
		// The stream was replaced while the connection was down (Redis
		// lost it, or RemoveHistory). Deliver the new stream from its
		// start: the handler sees the epoch change now rather than at the
		// next publication, which may never come.
		if pubs, pos, err = b.history(ctx, st.channel, broker.HistoryOptions{Limit: -1}, false); err != nil {
			b.log.Warn("redis: catching up from history", "channel", st.channel, "err", err)
			return
		}
		if pos.Epoch == "" || pos.Epoch == from.Epoch {
			return
		}
	}
	n := 0
	for _, p := range pubs {
		if upTo > 0 && p.Offset > upTo {
			break
		}
		if st.last.Epoch == pos.Epoch && p.Offset <= st.last.Offset {
			continue
		}
		b.emitLocked(st, p, pos.Epoch)
		n++
	}
	if n > 0 {
		b.log.Info("redis: delivered missed publications from history", "channel", st.channel, "count", n)
	}
}
