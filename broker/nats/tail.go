package nats

import (
	"strconv"
	"time"

	natsgo "github.com/nats-io/nats.go"

	"github.com/heraldhq/herald/protocol"
)

// The tail check. Live publications come from the stream's republish, on
// core NATS: one that never comes, or comes late, is noticed when a later
// one shows the gap (deliverLive fills it from history), but a channel's
// last publication has no later one. So a node checks, tailWait after its
// last append to a channel, that its own live feed of the channel (if it
// subscribes) delivered what it appended. If not, it delivers the rest
// from history and publishes a head notice on the channel's live subject,
// so that the other nodes fill their gap the same way. A channel appended
// to without pause is never checked: its later publications show gaps.

const (
	// tailWait is how long after its last append to a channel a node
	// expects its live feed to have delivered it.
	tailWait = 500 * time.Millisecond
	// tailEvery is how often the appends are looked at.
	tailEvery = 250 * time.Millisecond
)

// liveSub is one channel's live subscription on this node.
type liveSub struct {
	sub *natsgo.Subscription
	ls  *liveState
}

// appended records pos, the last position this node appended to the
// channel, for the tail check.
func (cs *chanState) appended(pos protocol.StreamPosition) {
	cs.mu.Lock()
	cs.tail, cs.tailAt = pos, time.Now()
	cs.mu.Unlock()
}

// tailChecks runs checkTails every tailEvery until Close.
func (b *Broker) tailChecks() {
	defer b.repairs.Done()
	t := time.NewTicker(tailEvery)
	defer t.Stop()
	for {
		select {
		case <-b.quit:
			return
		case <-t.C:
		}
		b.checkTails(time.Now())
	}
}

// checkTails checks the channels whose last append by this node is
// tailWait old (see above).
func (b *Broker) checkTails(now time.Time) {
	type due struct {
		ch  string
		pos protocol.StreamPosition
	}
	var dues []due
	for i := range b.shards {
		s := &b.shards[i]
		s.mu.Lock()
		for ch, cs := range s.m {
			cs.mu.Lock()
			if cs.tail.Epoch != "" && now.Sub(cs.tailAt) >= tailWait {
				dues = append(dues, due{ch, cs.tail})
				cs.tail = protocol.StreamPosition{}
			}
			cs.mu.Unlock()
		}
		s.mu.Unlock()
	}
	for _, d := range dues {
		b.smu.Lock()
		ent := b.subs[d.ch]
		b.smu.Unlock()
		if ent == nil {
			continue // not subscribed here: nothing to compare with
		}
		ls := ent.ls
		ls.mu.Lock()
		ref := ls.last
		if ref.Epoch == "" && ls.synced {
			ref = ls.base
		}
		ls.mu.Unlock()
		if ref.Epoch != d.pos.Epoch || ref.Offset >= d.pos.Offset {
			continue // delivered, or a new epoch since
		}
		b.log.Warn("nats: the live feed missed publications this node appended; delivering them from history and telling the other nodes",
			"channel", d.ch, "delivered", ref.Offset, "appended", d.pos.Offset)
		b.deliverLive(d.ch, ls, nil, d.pos.Offset+1, d.pos.Epoch)
		b.sendHead(d.ch, d.pos)
	}
}

// sendHead publishes a head notice for ch on its live subject: the
// channel's history reaches pos.
func (b *Broker) sendHead(ch string, pos protocol.StreamPosition) {
	tok, err := token(ch)
	if err != nil {
		return
	}
	m := natsgo.NewMsg(b.names.live + tok)
	m.Header.Set(hdrKind, kindHead)
	m.Header.Set(hdrEpoch, pos.Epoch)
	m.Header.Set(hdrOffset, strconv.FormatUint(pos.Offset, 10))
	if err := b.nc.PublishMsg(m); err != nil {
		b.log.Warn("nats: sending a head notice", "channel", ch, "err", err)
	}
}
