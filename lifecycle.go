package herald

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
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
// says online. (Two arrivals on two nodes within the time of one write to
// the store may both see themselves first: then the user has two online
// events, with different ids, and the offline of the period that ends
// last.) The last connection to go leaves a marker and waits
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

// indexTTL outlives entryTTL by far, so that the other nodes still find a
// dead node's index when its entries have expired, even after an outage of
// the broker (a JetStream election takes seconds); the sweep removes it.
func (e *events) indexTTL() time.Duration {
	return min(max(3*e.s.presenceTTL, 2*time.Minute), 10*time.Minute)
}

// markerTTL bounds a pending offline or vacated whose node died.
func (e *events) markerTTL(grace time.Duration) time.Duration {
	return grace + max(e.s.presenceTTL, time.Minute)
}

// period is what an entry holds.
type period struct {
	P string `json:"p"`           // the period's id
	T int64  `json:"t"`           // unix ms the entry was made (markers: when the last one left)
	M bool   `json:"m,omitempty"` // a marker: the last one left at T
	N string `json:"n,omitempty"` // the node of a connection's entry
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
	return e.readExcept(ctx, key, skip, "")
}

// readExcept is read that also leaves out the entries of node dead.
func (e *events) readExcept(ctx context.Context, key, skip, dead string) (state, bool) {
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
		if k == skip || (dead != "" && (p.N == dead || k == dead)) || e.stale(key, k, p) {
			continue
		}
		st.live++
		if st.oldKey == "" || p.T < st.oldest.T || (p.T == st.oldest.T && k < st.oldKey) {
			st.oldest, st.oldKey = p, k
		}
	}
	return st, true
}

// stale reports whether an entry claims to be this node's but this node
// has no such connection or members: a write of its own that was not
// undone (the store failed), not to be counted.
func (e *events) stale(key, member string, p period) bool {
	node := e.s.nodeID
	switch {
	case strings.HasPrefix(key, "$u:") && p.N == node:
		ss := e.s.sessions.byID(member)
		return ss == nil || ss.state.Load() != stateConnected
	case strings.HasPrefix(key, "$c:") && member == node:
		return !e.localMembers(strings.TrimPrefix(key, "$c:"))
	}
	return false
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
	node := e.s.nodeID
	st, _ := e.read(ctx, key, me)
	switch {
	case st.live > 0:
		e.add(ctx, key, me, period{P: st.oldest.P, T: now, N: node}, e.entryTTL())
		return st.oldest.P, false
	case st.marker != nil:
		// Back within the grace: the period goes on, nothing is said.
		e.add(ctx, key, me, period{P: st.marker.P, T: now, N: node}, e.entryTTL())
		e.remove(ctx, key, markerKey)
		return st.marker.P, false
	}
	// The entry's time is taken just before it is written, so that
	// entries order as they were made (on one clock; across machines,
	// NTP's).
	at := time.Now()
	mine := period{P: me + "@" + at.Format("20060102T150405.000000000"), T: at.UnixMilli(), N: node}
	e.add(ctx, key, me, mine, e.entryTTL())
	// Another arrival may have raced this one: the period of the oldest
	// entry wins (entries that joined this period carry it too).
	st, ok := e.read(ctx, key, "")
	if ok && st.oldKey != "" && st.oldest.P != mine.P {
		e.add(ctx, key, me, period{P: st.oldest.P, T: now, N: node}, e.entryTTL())
		return st.oldest.P, false
	}
	return mine.P, true
}

// depart is the common half of a user's connection or a channel's last
// member on this node leaving: it removes me's entry and, if nobody is
// left, leaves a marker and reports the period to settle after the grace.
func (e *events) depart(ctx context.Context, key, me, known string, grace time.Duration) (string, bool) {
	m, err := e.s.presence.Presence(ctx, key)
	var p period
	if err == nil {
		p = readPeriod(m[me])
	}
	if p.P == "" {
		p.P = known // the store is out of reach: what this node knows
	}
	e.remove(ctx, key, me)
	st, ok := e.read(ctx, key, me)
	if p.P == "" || (ok && st.live > 0) {
		return "", false
	}
	// With the store out of reach, the settle after the grace decides.
	e.add(ctx, key, markerKey, period{P: p.P, T: time.Now().UnixMilli(), M: true}, e.markerTTL(grace))
	return p.P, true
}

// settle decides a pending offline or vacated of key's period p: if
// nobody came back, the event is emitted and the marker removed; it
// reports whether it emitted. dead names a node known gone, whose entries
// do not count (and are removed once settled).
func (e *events) settle(ctx context.Context, key, p string, grace time.Duration, ev Event, dead string) bool {
	st, ok := e.readExcept(ctx, key, "", dead)
	if !ok {
		// The store is out of reach (a broker outage): try again.
		e.after(time.Second, key, func() { e.settle(context.Background(), key, p, grace, ev, dead) })
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
			e.after(wait, key, func() { e.settle(context.Background(), key, p, grace, ev, dead) })
			return false
		}
	}
	ev.ID = eventID(ev.Type, key, p)
	e.emit(ev)
	e.remove(ctx, key, markerKey)
	if dead != "" {
		// The dead node's entries would carry its period into the next.
		if m, err := e.s.presence.Presence(ctx, key); err == nil {
			for k, info := range m {
				if k == dead || readPeriod(info).N == dead {
					e.remove(ctx, key, k)
				}
			}
		}
	}
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
	e.mu.Lock()
	known := e.userPeriods[user]
	if lastLocal {
		delete(e.userPeriods, user)
	}
	e.mu.Unlock()
	p, pending := e.depart(ctx, key, client, known, e.cfg.OfflineGrace)
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
		e.settle(ctx, key, p, e.cfg.OfflineGrace, ev, "")
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
	known := e.chanPeriods[ch].P
	delete(e.chanPeriods, ch)
	e.mu.Unlock()
	p, pending := e.depart(ctx, key, e.s.nodeID, known, e.cfg.VacatedGrace)
	if !pending {
		e.remove(ctx, chanNodeKey(e.s.nodeID), ch)
		return
	}
	ev := Event{Type: EventVacated, Channel: ch}
	e.after(e.cfg.VacatedGrace, key, func() {
		ctx, cancel := e.ctx()
		defer cancel()
		e.settle(ctx, key, p, e.cfg.VacatedGrace, ev, "")
		if !e.localMembers(ch) {
			e.remove(ctx, chanNodeKey(e.s.nodeID), ch)
		}
	})
}

// refresh queues this node's entries to be written again before they
// expire (presence_ttl): each connection's user entry, the node's index
// of users and channels, and its channel entries. Called from the
// presence refresh round.
func (e *events) refresh(add func(entryWrite)) {
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
			add(entryWrite{userKey(u), ss.id, entryInfo(ss.id, period{P: p, T: ss.created / int64(time.Millisecond), N: node}), e.entryTTL()})
		}
		add(entryWrite{userNodeKey(node), u, entryInfo(u, period{P: p}), e.indexTTL()})
	}
	for c, p := range chans {
		add(entryWrite{chanKey(c), node, entryInfo(node, p), e.entryTTL()})
		add(entryWrite{chanNodeKey(node), c, entryInfo(c, period{P: p.P}), e.indexTTL()})
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
	var live []string
	dead := map[string]time.Duration{} // dead node: how long it has been silent
	for id, k := range known {
		// Silent for three samples: gone, or so slow that it will not
		// answer the holders query either (see sweep).
		if silent := now.Sub(k.lastSeen); silent > 3*sampleEvery {
			dead[id] = silent
		} else {
			live = append(live, id)
		}
	}
	live = append(live, e.s.nodeID)
	if slices.Min(live) != e.s.nodeID {
		return
	}
	grace := max(e.cfg.OfflineGrace, e.cfg.VacatedGrace)
	for n, silent := range dead {
		// Its users had the grace, counted from its death, to come back.
		// It was last heard from up to a sample before it died: the
		// grace counts from the latest it may have died, not from then.
		e.sweepOnce(n, max(grace-silent+sampleEvery, 0))
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

// sweep settles the users and channels a gone node had. The live nodes
// are asked first which of them they hold: a user who came back on another
// node has a connection there even if its entry is not written yet.
func (e *events) sweep(node string) {
	ctx, cancel := e.ctx()
	defer cancel()
	users, err := e.s.presence.Presence(ctx, userNodeKey(node))
	if err == nil {
		var chans map[string]*protocol.ClientInfo
		chans, err = e.s.presence.Presence(ctx, chanNodeKey(node))
		if err == nil {
			err = e.sweepHolders(ctx, node, users, chans)
		}
	}
	if err != nil {
		e.s.log.Warn("lifecycle sweep", "node", node, "err", err)
		e.mu.Lock()
		delete(e.swept, node) // try again at the next check
		e.mu.Unlock()
	}
}

// holdersQuery asks nodes which of these users and channels they have
// connections and members of.
type holdersQuery struct {
	Users    []string `json:"users,omitempty"`
	Channels []string `json:"channels,omitempty"`
}

// localHolders answers a holdersQuery on this node.
func (e *events) localHolders(q *holdersQuery) holdersQuery {
	var out holdersQuery
	for _, u := range q.Users {
		for _, ss := range e.s.sessions.userSessions(u) {
			if ss.state.Load() == stateConnected {
				out.Users = append(out.Users, u)
				break
			}
		}
	}
	for _, c := range q.Channels {
		if e.localMembers(c) {
			out.Channels = append(out.Channels, c)
		}
	}
	return out
}

func (e *events) sweepHolders(ctx context.Context, node string, users, chans map[string]*protocol.ClientInfo) error {
	q := holdersQuery{}
	for u := range users {
		q.Users = append(q.Users, u)
	}
	for c := range chans {
		q.Channels = append(q.Channels, c)
	}
	answers, _, err := e.s.queryNodesExcept(ctx, "holders", &q, node)
	if err != nil {
		return err
	}
	held := map[string]bool{}
	for _, body := range answers {
		var a holdersQuery
		if json.Unmarshal(body, &a) != nil {
			continue
		}
		for _, u := range a.Users {
			held["u:"+u] = true
		}
		for _, c := range a.Channels {
			held["c:"+c] = true
		}
	}
	for u, info := range users {
		p := readPeriod(info).P
		if held["u:"+u] {
			e.do(u, func() {
				ctx, cancel := e.ctx()
				defer cancel()
				e.remove(ctx, userNodeKey(node), u)
			})
			continue
		}
		e.do(u, func() {
			ctx, cancel := e.ctx()
			defer cancel()
			// A connection of the user that came to this node after the
			// answers were gathered may not have written its entry yet:
			// the user's worker runs its arrival after this.
			if len(e.localHolders(&holdersQuery{Users: []string{u}}).Users) == 0 {
				e.settle(ctx, userKey(u), p, e.cfg.OfflineGrace, Event{Type: EventOffline, User: u}, node)
			}
			e.remove(ctx, userNodeKey(node), u)
		})
	}
	for c, info := range chans {
		p := readPeriod(info).P
		if held["c:"+c] {
			e.do(c, func() {
				ctx, cancel := e.ctx()
				defer cancel()
				e.remove(ctx, chanKey(c), node)
				e.remove(ctx, chanNodeKey(node), c)
			})
			continue
		}
		e.do(c, func() {
			ctx, cancel := e.ctx()
			defer cancel()
			if !e.localMembers(c) {
				e.settle(ctx, chanKey(c), p, e.cfg.VacatedGrace, Event{Type: EventVacated, Channel: c}, node)
			}
			e.remove(ctx, chanNodeKey(node), c)
		})
	}
	return nil
}
