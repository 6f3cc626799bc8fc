package redis

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/heraldhq/herald/broker"
	goredis "github.com/redis/go-redis/v9"
)

// Routing of pub/sub names to connections. In standalone and classic
// cluster mode there is one connection (classic PUBLISH reaches every
// cluster node, so any node will do). In sharded cluster mode a shard
// channel can only be subscribed on the master that owns its slot, so
// there is one connection per master, and the broker keeps its own copy
// of the slot table (CLUSTER SLOTS) to pick it. When a slot moves, the
// server ends the subscriptions of its shard channels (SUNSUBSCRIBE
// push) or answers MOVED; a node that fails takes its connection down.
// All three make the router re-read the slot table and move the names
// to their new owners, where the subscription's confirmation makes the
// channel catch up from history.

type slotRange struct {
	start, end int
	addr       string
}

// route picks (creating if needed) the subscriber for st and records it.
func (b *Broker) route(ctx context.Context, st *chState) (*subscriber, error) {
	addr := ""
	if b.sharded && b.cluster != nil {
		b.mu.RLock()
		addr = b.ownerLocked(st.name)
		b.mu.RUnlock()
		if addr == "" {
			if err := b.refreshSlots(ctx); err != nil {
				return nil, err
			}
			b.mu.RLock()
			addr = b.ownerLocked(st.name)
			b.mu.RUnlock()
			if addr == "" {
				return nil, fmt.Errorf("no cluster node serves the slot of %q", st.name)
			}
		}
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	if b.chans[st.name] != st {
		return nil, errUnsubscribed
	}
	st.sub = b.subscriberLocked(addr)
	return st.sub, nil
}

// subscriberLocked returns the subscriber for addr, starting it if new.
// b.mu must be held and the broker not closed.
func (b *Broker) subscriberLocked(addr string) *subscriber {
	if s := b.subs[addr]; s != nil {
		return s
	}
	var s *subscriber
	switch {
	case addr != "":
		c := goredis.NewClient(b.cfg.nodeOptions(addr))
		s = newSubscriber(b, addr, c, func() *goredis.PubSub { return c.Subscribe(context.Background()) })
	case b.cluster != nil:
		s = newSubscriber(b, "", nil, func() *goredis.PubSub { return b.cluster.Subscribe(context.Background()) })
	default:
		c := b.client.(*goredis.Client)
		s = newSubscriber(b, "", nil, func() *goredis.PubSub { return c.Subscribe(context.Background()) })
	}
	b.subs[addr] = s
	b.wg.Add(1)
	go s.run()
	return s
}

// refreshSlots reads the cluster's slot table.
func (b *Broker) refreshSlots(ctx context.Context) error {
	res, err := b.cluster.ClusterSlots(ctx).Result()
	if err != nil {
		return fmt.Errorf("cluster slots: %w", err)
	}
	table := make([]slotRange, 0, len(res))
	for _, r := range res {
		if len(r.Nodes) == 0 {
			continue
		}
		table = append(table, slotRange{start: r.Start, end: r.End, addr: r.Nodes[0].Addr})
	}
	sort.Slice(table, func(i, j int) bool { return table[i].start < table[j].start })
	b.mu.Lock()
	b.slots = table
	b.mu.Unlock()
	return nil
}

// hintTTL is how long an owner learnt from a MOVED reply overrides the
// slot table, which a node that has not yet heard of the move may have
// served stale.
const hintTTL = 30 * time.Second

type slotHint struct {
	addr string
	at   time.Time
}

// hint records that addr serves slot, as a MOVED reply said.
func (b *Broker) hint(slot int, addr string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := time.Now()
	for s, h := range b.hints { // few entries: slots seen moving lately
		if now.Sub(h.at) > hintTTL {
			delete(b.hints, s)
		}
	}
	b.hints[slot] = slotHint{addr: addr, at: now}
}

// ownerLocked returns the address of the master serving name's slot, ""
// if unknown. b.mu must be held (read).
func (b *Broker) ownerLocked(name string) string {
	slot := keySlot(name)
	if h, ok := b.hints[slot]; ok && time.Since(h.at) < hintTTL {
		return h.addr
	}
	i := sort.Search(len(b.slots), func(i int) bool { return b.slots[i].end >= slot })
	if i < len(b.slots) && b.slots[i].start <= slot {
		return b.slots[i].addr
	}
	return ""
}

// checkRoutes asks the router to check where names live. lost: the
// server ended their subscription, so subscribe again even if the owner
// is unchanged.
func (b *Broker) checkRoutes(names []string, lost bool) {
	if len(names) == 0 {
		return
	}
	if !b.sharded || b.cluster == nil {
		// One connection serves everything: nothing can move.
		if lost {
			for _, n := range names {
				b.mu.RLock()
				st := b.chans[n]
				var s *subscriber
				if st != nil {
					s = st.sub
				}
				b.mu.RUnlock()
				if s != nil {
					s.adopt(n)
				}
			}
		}
		return
	}
	b.mu.Lock()
	for _, n := range names {
		b.recheck[n] = b.recheck[n] || lost
	}
	b.mu.Unlock()
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// routerPace is the least time between two rounds of the router.
const routerPace = 50 * time.Millisecond

// router moves names between connections as the cluster's slots move.
// It runs in sharded cluster mode only.
func (b *Broker) router() {
	defer b.wg.Done()
	var backoff time.Duration
	for {
		select {
		case <-b.ctx.Done():
			return
		case <-b.kick:
		}
		for {
			b.mu.Lock()
			names := b.recheck
			b.recheck = make(map[string]bool)
			b.mu.Unlock()
			if len(names) == 0 {
				backoff = 0
				break
			}
			err := b.reroute(names)
			if err == nil {
				b.retireIdle()
				// Pace the rounds: bursts coalesce, and a name bounced
				// between nodes that disagree during a move does not spin.
				if !b.wait(routerPace) {
					return
				}
				continue
			}
			b.log.Warn("redis: rerouting pub/sub", "channels", len(names), "err", err)
			backoff = min(max(2*backoff, 100*time.Millisecond), 5*time.Second)
			if !b.wait(backoff) {
				return
			}
		}
	}
}

// reroute moves names to the masters that own their slots now; lost
// names are subscribed again even where they are. What it cannot route
// it queues again and reports.
func (b *Broker) reroute(names map[string]bool) error {
	ctx, cancel := context.WithTimeout(b.ctx, b.cfg.DialTimeout+b.cfg.ReadTimeout)
	defer cancel()
	if err := b.refreshSlots(ctx); err != nil {
		b.mu.Lock()
		for n, lost := range names {
			b.recheck[n] = b.recheck[n] || lost
		}
		b.mu.Unlock()
		return err
	}
	type move struct {
		st       *chState
		from, to *subscriber
	}
	var moves []move
	var missing []string
	b.mu.Lock()
	for name, lost := range names {
		st := b.chans[name]
		if b.closed.Load() || st == nil || st.sub == nil {
			continue
		}
		addr := b.ownerLocked(name)
		if addr == "" {
			missing = append(missing, name)
			b.recheck[name] = b.recheck[name] || lost
			continue
		}
		to := b.subscriberLocked(addr)
		if to != st.sub || lost {
			moves = append(moves, move{st: st, from: st.sub, to: to})
			st.sub = to
		}
	}
	b.mu.Unlock()

	// One write per connection, not per name: a dead node's connection
	// must not stall the router once per channel.
	forget := map[*subscriber][]string{}
	adopt := map[*subscriber][]string{}
	for _, m := range moves {
		if m.from != m.to {
			forget[m.from] = append(forget[m.from], m.st.name)
		}
		adopt[m.to] = append(adopt[m.to], m.st.name)
	}
	for s, ns := range forget {
		s.forget(ns...)
	}
	if len(forget) > 0 {
		// Slots moved: let the command client learn it too.
		b.cluster.ReloadState(ctx)
	}
	for s, ns := range adopt {
		b.log.Info("redis: subscribing channels on their slot's master", "node", s.addr, "channels", len(ns))
		s.adopt(ns...)
	}
	// Unsubscribe may have run meanwhile and missed the adoption.
	gone := map[*subscriber][]string{}
	b.mu.RLock()
	for _, m := range moves {
		if b.chans[m.st.name] != m.st || m.st.sub != m.to {
			gone[m.to] = append(gone[m.to], m.st.name)
		}
	}
	b.mu.RUnlock()
	for s, ns := range gone {
		s.forget(ns...)
	}
	if len(missing) > 0 {
		return errors.New("no node serves the slots of " + strings.Join(missing[:min(len(missing), 3)], ", "))
	}
	return nil
}

// retireIdle closes the connections to nodes that own no slots and serve
// no names any more (a master that failed over or was removed), so that
// their readers stop redialling them.
func (b *Broker) retireIdle() {
	var retired []*subscriber
	b.mu.Lock()
	for addr, s := range b.subs {
		if addr == "" || b.ownsSlotsLocked(addr) || !s.idle() {
			continue
		}
		delete(b.subs, addr)
		retired = append(retired, s)
	}
	b.mu.Unlock()
	for _, s := range retired {
		b.log.Info("redis: closing pub/sub connection to a node without slots", "node", s.addr)
		s.close()
		_ = s.client.Close()
	}
}

// ownsSlotsLocked: addr serves some slot. b.mu must be held.
func (b *Broker) ownsSlotsLocked(addr string) bool {
	for _, r := range b.slots {
		if r.addr == addr {
			return true
		}
	}
	for _, h := range b.hints {
		if h.addr == addr && time.Since(h.at) < hintTTL {
			return true
		}
	}
	return false
}

// wait waits for d or until the broker closes; false means closed.
func (b *Broker) wait(d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-b.ctx.Done():
		return false
	}
}

// keySlot is Redis Cluster's slot of key: CRC16 (XMODEM) of its hash tag
// (the part between the first '{' and the next '}', if not empty) or of
// the whole key, mod 16384.
func keySlot(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}
