package herald

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Online, offline, occupied and vacated across the cluster, decided from
// the presence store that every engine shares (memory, NATS, Redis):
//
//	$u:USER     one entry per connection of the user, on any node, holding
//	            the user's online period (the client id of the connection
//	            that started it) and when the entry was made; a marker entry
//	            ("~") while an offline is pending
//	$un:NODE    the users with connections on NODE (and their period), so
//	            that the other nodes can settle them if NODE dies
//	$c:CHANNEL  one entry per node with members of the channel, likewise
//	$cn:NODE    the channels with members on NODE
//
// A connection that finds no entry (and no marker) starts a period; when
// two start one at once, the older entry's wins and only its connection
// says online. The last connection to go leaves a marker and waits
// OfflineGrace: if a connection of the user has come back anywhere by then
// nothing is said, else offline. A node that dies leaves its entries to
// expire (presence_ttl); the live node with the lowest id then settles the
// users and channels of $un and $cn of the dead node: offline or vacated
// for those with nobody left. Ids are derived from the user or channel and
// its period, so the same decision taken twice is one event.

const markerKey = "~" // client ids and node ids never start with it

func userKey(u string) string             { return "$u:" + u }
func userNodeKey(n string) string         { return "$un:" + n }
func chanKey(c string) string             { return "$c:" + c }
func chanNodeKey(n string) string         { return "$cn:" + n }
func (e *events) entryTTL() time.Duration { return e.s.presenceTTL }

// indexTTL outlives entryTTL, so that the other nodes still find a dead
// node's index when its entries have expired.
func (e *events) indexTTL() time.Duration { return 3 * e.s.presenceTTL }

// markerTTL bounds a pending offline or vacated whose node died.
func (e *events) markerTTL(grace time.Duration) time.Duration {
	return grace + max(e.s.presenceTTL, time.Minute)
}

// period is what an entry holds.
type period struct {
	P string `json:"p"`           // the period's id
	T int64  `json:"t"`           // unix ms the entry was made (markers: when the last one left)
	M bool   `json:"m,omitempty"` // a marker: the last one left at T
}

func entryInfo(key string, p period) *protocol.ClientInfo {
	b, _ := json.Marshal(p)
	return &protocol.ClientInfo{Client: key, ConnInfo: b}
}

func readPeriod(info *protocol.ClientInfo) period {
	var p period
	if info != nil {
		_ = json.Unmarshal(info.ConnInfo, &p)
	}
	return p
}

// state is a user's or channel's entries: the live ones (connections or
// nodes) other than skip, the oldest of them, and the marker if any.
type state struct {
	live   int
	oldest period
	oldKey string
	marker *period
}

func (e *events) read(ctx context.Context, key, skip string) (state, bool) {
	m, err := e.s.presence.Presence(ctx, key)
	if err != nil {
		e.s.log.Warn("lifecycle read", "key", key, "err", err)
		return state{}, false
	}
	var st state
	for k, info := range m {
		p := readPeriod(info)
		if k == markerKey {
			st.marker = &p
			continue
		}
		if k == skip {
			continue
		}
		st.live++
		if st.oldKey == "" || p.T < st.oldest.T || (p.T == st.oldest.T && k < st.oldKey) {
			st.oldest, st.oldKey = p, k
		}
	}
	return st, true
}

func (e *events) add(ctx context.Context, key, member string, p period, ttl time.Duration) {
	if err := e.s.presence.AddPresence(ctx, key, member, entryInfo(member, p), ttl); err != nil {
		e.s.log.Warn("lifecycle write", "key", key, "err", err)
	}
}

func (e *events) remove(ctx context.Context, key, member string) {
	if err := e.s.presence.RemovePresence(ctx, key, member); err != nil {
		e.s.log.Warn("lifecycle remove", "key", key, "err", err)
	}
}

func (e *events) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), commandTimeout)
}

// arrive is the common half of a user's connection or a channel's first
// member on this node: key is the shared key, me the entry's member (the
// client id, or this node's id), and it returns the period joined and
// whether this arrival started it.
func (e *events) arrive(ctx context.Context, key, me string) (string, bool) {
	now := time.Now().UnixMilli()
	st, _ := e.read(ctx, key, me)
	switch {
	case st.live > 0:
		e.add(ctx, key, me, period{P: st.oldest.P, T: now}, e.entryTTL())
		return st.oldest.P, false
	case st.marker != nil:
		// Back within the grace: the period goes on, nothing is said.
		e.add(ctx, key, me, period{P: st.marker.P, T: now}, e.entryTTL())
		e.remove(ctx, key, markerKey)
		return st.marker.P, false
	}
	mine := period{P: me + "@" + time.Now().Format("20060102T150405.000000000"), T: now}
	e.add(ctx, key, me, mine, e.entryTTL())
	// Another arrival may have raced this one: the older entry wins.
	st, ok := e.read(ctx, key, "")
	if ok && st.oldKey != me && st.oldKey != "" {
		e.add(ctx, key, me, period{P: st.oldest.P, T: now}, e.entryTTL())
		return st.oldest.P, false
	}
	return mine.P, true
}

// depart is the common half of a user's connection or a channel's last
// member on this node leaving: it removes me's entry and, if nobody is
// left, leaves a marker and reports the period to settle after the grace.
func (e *events) depart(ctx context.Context, key, me string, grace time.Duration) (string, bool) {
	m, err := e.s.presence.Presence(ctx, key)
	var p period
	if err == nil {
		p = readPeriod(m[me])
	}
	e.remove(ctx, key, me)
	st, ok := e.read(ctx, key, me)
	if !ok || st.live > 0 || p.P == "" {
		return "", false
	}
	e.add(ctx, key, markerKey, period{P: p.P, T: time.Now().UnixMilli(), M: true}, e.markerTTL(grace))
	return p.P, true
}

// settle decides a pending offline or vacated of key's period p: if
// nobody came back, the event is emitted and the marker removed; it
// reports whether it emitted.
func (e *events) settle(ctx context.Context, key, p string, grace time.Duration, ev Event) bool {
	st, ok := e.read(ctx, key, "")
	if !ok {
		return false
	}
	if st.live > 0 {
		return false // back within the grace
	}
	if st.marker != nil {
		if st.marker.P != p {
			return false // another period's marker: not ours to settle
		}
		if wait := time.UnixMilli(st.marker.T).Add(grace).Sub(time.Now()); wait > 0 {
			e.after(wait, key, func() { e.settle(context.Background(), key, p, grace, ev) })
			return false
		}
	}
	ev.ID = eventID(ev.Type, key, p)
	e.emit(ev)
	e.remove(ctx, key, markerKey)
	return true
}

// after runs f on key's worker once d has passed (a grace timer).
func (e *events) after(d time.Duration, key string, f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if old := e.timers[key]; old != nil {
		old.Stop()
	}
	e.timers[key] = time.AfterFunc(d, func() {
		e.mu.Lock()
		delete(e.timers, key)
		e.mu.Unlock()
		e.do(key, f)
	})
}

// stopTimers cancels the pending grace timers (at shutdown: the other
// nodes settle what this node leaves, see sweep).
func (e *events) stopTimers() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for k, t := range e.timers {
		t.Stop()
		delete(e.timers, k)
	}
}

// userArrived runs on the user's worker when one of its connections is
// established on this node.
func (e *events) userArrived(user, client string, firstLocal bool) {
	ctx, cancel := e.ctx()
	defer cancel()
	p, started := e.arrive(ctx, userKey(user), client)
	e.mu.Lock()
	e.userPeriods[user] = p
	e.mu.Unlock()
	if firstLocal {
		e.add(ctx, userNodeKey(e.s.nodeID), user, period{P: p}, e.indexTTL())
	}
	if started {
		e.emit(Event{ID: eventID(EventOnline, userKey(user), p), Type: EventOnline, User: user, Client: client})
	}
}

// userLeft runs on the user's worker when one of its connections on this
// node ended.
func (e *events) userLeft(user, client string, lastLocal bool) {
	ctx, cancel := e.ctx()
	defer cancel()
	key := userKey(user)
	p, pending := e.depart(ctx, key, client, e.cfg.OfflineGrace)
	if lastLocal {
		e.mu.Lock()
		delete(e.userPeriods, user)
		e.mu.Unlock()
	}
	if !pending {
		if lastLocal {
			e.remove(ctx, userNodeKey(e.s.nodeID), user)
		}
		return
	}
	ev := Event{Type: EventOffline, User: user, Client: client}
	e.after(e.cfg.OfflineGrace, key, func() {
		ctx, cancel := e.ctx()
		defer cancel()
		e.settle(ctx, key, p, e.cfg.OfflineGrace, ev)
		if len(e.s.sessions.userSessions(user)) == 0 {
			e.remove(ctx, userNodeKey(e.s.nodeID), user)
		}
	})
}

// channelArrived runs on the channel's worker when this node got its first
// member of ch.
func (e *events) channelArrived(ch string) {
	if !e.localMembers(ch) {
		return // gone again before this ran
	}
	ctx, cancel := e.ctx()
	defer cancel()
	p, started := e.arrive(ctx, chanKey(ch), e.s.nodeID)
	e.mu.Lock()
	e.chanPeriods[ch] = period{P: p, T: time.Now().UnixMilli()}
	e.mu.Unlock()
	e.add(ctx, chanNodeKey(e.s.nodeID), ch, period{P: p}, e.indexTTL())
	if started {
		e.emit(Event{ID: eventID(EventOccupied, chanKey(ch), p), Type: EventOccupied, Channel: ch})
	}
}

// channelLeft runs on the channel's worker when this node's last member of
// ch left.
func (e *events) channelLeft(ch string) {
	if e.localMembers(ch) {
		return // back before this ran
	}
	ctx, cancel := e.ctx()
	defer cancel()
	key := chanKey(ch)
	e.mu.Lock()
	delete(e.chanPeriods, ch)
	e.mu.Unlock()
	p, pending := e.depart(ctx, key, e.s.nodeID, e.cfg.VacatedGrace)
	if !pending {
		e.remove(ctx, chanNodeKey(e.s.nodeID), ch)
		return
	}
	ev := Event{Type: EventVacated, Channel: ch}
	e.after(e.cfg.VacatedGrace, key, func() {
		ctx, cancel := e.ctx()
		defer cancel()
		e.settle(ctx, key, p, e.cfg.VacatedGrace, ev)
		if !e.localMembers(ch) {
			e.remove(ctx, chanNodeKey(e.s.nodeID), ch)
		}
	})
}

// refresh re-adds this node's entries before they expire (presence_ttl):
// each connection's user entry, the node's index of users and channels,
// and its channel entries. Called from the presence refresh loop.
func (e *events) refresh(ctx context.Context) {
	if e.entryTTL() == 0 {
		return // an in-process store: nothing expires
	}
	e.mu.Lock()
	users := make(map[string]string, len(e.userPeriods))
	for u, p := range e.userPeriods {
		users[u] = p
	}
	chans := make(map[string]period, len(e.chanPeriods))
	for c, p := range e.chanPeriods {
		chans[c] = p
	}
	e.mu.Unlock()
	node := e.s.nodeID
	for u, p := range users {
		for _, ss := range e.s.sessions.userSessions(u) {
			e.add(ctx, userKey(u), ss.id, period{P: p, T: ss.created / int64(time.Millisecond)}, e.entryTTL())
		}
		e.add(ctx, userNodeKey(node), u, period{P: p}, e.indexTTL())
	}
	for c, p := range chans {
		e.add(ctx, chanKey(c), node, p, e.entryTTL())
		e.add(ctx, chanNodeKey(node), c, period{P: p.P}, e.indexTTL())
	}
}

// checkNodes runs every second: a known node silent for longer than
// presence_ttl is dead, and the live node with the lowest id settles the
// users and channels it had.
func (e *events) checkNodes(now time.Time) {
	if e.entryTTL() == 0 {
		return
	}
	known := e.s.nodes.known(now)
	var dead, live []string
	for id, k := range known {
		if now.Sub(k.lastSeen) > e.entryTTL()+sampleEvery {
			dead = append(dead, id)
		} else {
			live = append(live, id)
		}
	}
	live = append(live, e.s.nodeID)
	if slices.Min(live) != e.s.nodeID {
		return
	}
	for _, n := range dead {
		e.sweepOnce(n, 0)
	}
}

// nodeLeft handles a node's goodbye: once its pending graces are over,
// the lowest live node settles what it left.
func (e *events) nodeLeft(node string) {
	live := []string{e.s.nodeID}
	for id := range e.s.nodes.known(time.Now()) {
		live = append(live, id)
	}
	if slices.Min(live) != e.s.nodeID {
		return
	}
	e.sweepOnce(node, max(e.cfg.OfflineGrace, e.cfg.VacatedGrace)+time.Second)
}

// sweepOnce settles node's users and channels after delay, once.
func (e *events) sweepOnce(node string, delay time.Duration) {
	e.mu.Lock()
	done := e.swept[node]
	e.swept[node] = true
	e.mu.Unlock()
	if done {
		return
	}
	e.s.log.Info("settling lifecycle of a node gone", "node", node)
	e.after(delay, "sweep:"+node, func() { e.sweep(node) })
}

// sweep settles the users and channels a gone node had.
func (e *events) sweep(node string) {
	ctx, cancel := e.ctx()
	defer cancel()
	users, err := e.s.presence.Presence(ctx, userNodeKey(node))
	if err != nil {
		e.s.log.Warn("lifecycle sweep", "node", node, "err", err)
		e.mu.Lock()
		delete(e.swept, node) // try again at the next check
		e.mu.Unlock()
		return
	}
	for u, info := range users {
		p := readPeriod(info).P
		e.do(u, func() {
			ctx, cancel := e.ctx()
			defer cancel()
			e.settle(ctx, userKey(u), p, e.cfg.OfflineGrace, Event{Type: EventOffline, User: u})
			e.remove(ctx, userNodeKey(node), u)
		})
	}
	chans, err := e.s.presence.Presence(ctx, chanNodeKey(node))
	if err != nil {
		e.s.log.Warn("lifecycle sweep", "node", node, "err", err)
		return
	}
	for c, info := range chans {
		p := readPeriod(info).P
		e.do(c, func() {
			ctx, cancel := e.ctx()
			defer cancel()
			// The dead node's entry may outlive it by a little.
			e.remove(ctx, chanKey(c), node)
			e.settle(ctx, chanKey(c), p, e.cfg.VacatedGrace, Event{Type: EventVacated, Channel: c})
			e.remove(ctx, chanNodeKey(node), c)
		})
	}
}
