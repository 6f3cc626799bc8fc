package nats

import (
	"context"
	"strconv"
	"sync"

	natsgo "github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// liveState is what a channel's live subscription has delivered. The
// stream republishes stored messages in stored (offset) order as a rule,
// but not always: a node that learns of another's append by reading the
// subject's last message (after losing a race) may append the next one
// and see it republished before the first. So a live publication whose
// offset jumps ahead of the last delivered is preceded by the missing
// ones, read from history, and the late ones are skipped when they come.
type liveState struct {
	mu     sync.Mutex
	synced bool                    // base is set
	base   protocol.StreamPosition // the stream's head when the subscription was registered
	last   protocol.StreamPosition // the last publication with history delivered
}

// syncLive sets ls.base to the head of the history subject, read after the
// subscription was registered: the offset a first live publication is
// expected to follow. Without it (the read failed), the first live
// publication is taken as it comes.
func (b *Broker) syncLive(ctx context.Context, subj string, ls *liveState) {
	hd, found, err := b.lastHead(ctx, subj)
	if err != nil {
		b.log.Debug("nats: reading the head of a subscribed channel", "subject", subj, "err", err)
		return
	}
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if found {
		ls.base = protocol.StreamPosition{Epoch: hd.epoch, Offset: hd.offset}
	}
	ls.synced = true
}

// liveHandler handles one channel's live subject. nats.go runs it on the
// subscription's own goroutine, one message at a time, in the order the
// server sent them; with ls it keeps HandlePublication in offset order.
func (b *Broker) liveHandler(ch string, ls *liveState) natsgo.MsgHandler {
	return func(m *natsgo.Msg) {
		switch kind := m.Header.Get(hdrKind); kind {
		case kindPub:
			if b.testDropLive.Load() > 0 && b.testDropLive.Add(-1) >= 0 {
				return
			}
			ws, first, epoch, err := decodeEntries(m.Header, m.Data)
			if err != nil {
				b.log.Warn("nats: dropping a bad publication", "channel", ch, "err", err)
				return
			}
			if epoch == "" {
				b.handle(func(h broker.Handler) {
					for i := range ws {
						h.HandlePublication(ch, ws[i].pub(ch, 0), "")
					}
				})
				return
			}
			b.deliverLive(ch, ls, ws, first, epoch)
		case kindJoin, kindLeave:
			info := new(protocol.ClientInfo)
			if err := msgpack.Unmarshal(m.Data, info); err != nil {
				b.log.Warn("nats: dropping a bad join/leave", "channel", ch, "err", err)
				return
			}
			b.handle(func(h broker.Handler) {
				if kind == kindJoin {
					h.HandleJoin(ch, info)
				} else {
					h.HandleLeave(ch, info)
				}
			})
		case kindMark:
			// An epoch marker written by History: not a publication.
		case kindHead:
			// Another node's live feed missed publications it appended
			// (tail.go): fill what this node missed too from history.
			epoch := m.Header.Get(hdrEpoch)
			off, err := strconv.ParseUint(m.Header.Get(hdrOffset), 10, 64)
			if err != nil || epoch == "" {
				return
			}
			b.deliverLive(ch, ls, nil, off+1, epoch)
		}
	}
}

// deliverLive delivers the publications of one history message (offsets
// first, first+1, ...) in offset order: those already delivered are
// skipped, and a jump ahead is filled from history first.
func (b *Broker) deliverLive(ch string, ls *liveState, ws []wirePub, first uint64, epoch string) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ref := ls.last
	if ref.Epoch == "" && ls.synced {
		ref = ls.base
	}
	var missed []*protocol.Publication
	if ref.Epoch == epoch && first > ref.Offset+1 {
		missed = b.missed(ch, ref, first-1)
	}
	b.handle(func(h broker.Handler) {
		for _, p := range missed {
			if ls.last.Epoch == epoch && p.Offset <= ls.last.Offset {
				continue
			}
			ls.last = protocol.StreamPosition{Epoch: epoch, Offset: p.Offset}
			h.HandlePublication(ch, p, epoch)
		}
		for i := range ws {
			off := first + uint64(i)
			if ls.last.Epoch == epoch && off <= ls.last.Offset {
				continue // delivered already, from history
			}
			ls.last = protocol.StreamPosition{Epoch: epoch, Offset: off}
			h.HandlePublication(ch, ws[i].pub(ch, off), epoch)
		}
	})
}

// missed reads the publications after from up to offset upTo from history.
// What it cannot read (trimmed, or the read failed) stays a gap, which the
// handler sees.
func (b *Broker) missed(ch string, from protocol.StreamPosition, upTo uint64) []*protocol.Publication {
	ctx, cancel := context.WithTimeout(context.Background(), b.cfg.RequestTimeout)
	defer cancel()
	pubs, pos, err := b.History(ctx, ch, broker.HistoryOptions{Since: &from, Limit: int(min(upTo-from.Offset, 1<<20))})
	if err != nil {
		b.log.Warn("nats: reading live publications that came late from history", "channel", ch, "err", err)
		return nil
	}
	if pos.Epoch != from.Epoch {
		return nil
	}
	out := pubs[:0]
	for _, p := range pubs {
		if p.Offset <= upTo {
			out = append(out, p)
		}
	}
	b.log.Info("nats: live publications came out of order: delivered from history", "channel", ch, "after", from.Offset, "count", len(out))
	return out
}
