package herald

import (
	"hash/maphash"
	"sync"
	"sync/atomic"

	"github.com/heraldhq/herald/internal/transport"
)

const registryShards = 64

// registry tracks the node's sessions, by client id and by user.
type registry struct {
	shards [registryShards]registryShard
	seed   maphash.Seed
	n      atomic.Int64
	added  atomic.Int64               // sessions registered so far
	spare  atomic.Pointer[[]*session] // each's batch between calls

	// emptyCh is closed while no session is registered. Whoever moves
	// the count to or from zero then brings it in line with the count
	// under emptyMu, so the last one to do so leaves it right; moves that
	// do not cross zero take no lock.
	emptyMu sync.Mutex
	emptyCh chan struct{}

	usersMu sync.Mutex
	users   map[string]map[*session]struct{}

	echoMu sync.Mutex
	echoes map[*transport.Conn]struct{}
}

func (r *registry) init() {
	r.seed = maphash.MakeSeed()
	for i := range r.shards {
		r.shards[i].m.seed = r.seed
	}
	r.users = make(map[string]map[*session]struct{})
	r.echoes = make(map[*transport.Conn]struct{})
	r.emptyCh = make(chan struct{})
	close(r.emptyCh)
}

type registryShard struct {
	mu sync.Mutex
	m  sessionTable // by client id
}

func (r *registry) shard(id string) *registryShard {
	return &r.shards[maphash.String(r.seed, id)%registryShards]
}

func (r *registry) add(ss *session) {
	sh := r.shard(ss.id)
	sh.mu.Lock()
	sh.m.put(ss)
	sh.mu.Unlock()
	r.added.Add(1)
	if r.n.Add(1) == 1 {
		r.syncEmpty()
	}
}

func (r *registry) remove(ss *session) {
	sh := r.shard(ss.id)
	sh.mu.Lock()
	ok := sh.m.remove(ss)
	sh.mu.Unlock()
	if !ok {
		return
	}
	if r.n.Add(-1) == 0 {
		r.syncEmpty()
	}
}

// syncEmpty closes emptyCh if the count is zero, or opens a new one if it
// is not and emptyCh is closed.
func (r *registry) syncEmpty() {
	r.emptyMu.Lock()
	defer r.emptyMu.Unlock()
	closed := false
	select {
	case <-r.emptyCh:
		closed = true
	default:
	}
	switch n := r.n.Load(); {
	case n == 0 && !closed:
		close(r.emptyCh)
	case n > 0 && closed:
		r.emptyCh = make(chan struct{})
	}
}

func (r *registry) count() int { return int(r.n.Load()) }

// empty returns a channel that is closed once no session is registered
// (at once if none is now). Sessions added later do not reopen it.
func (r *registry) empty() <-chan struct{} {
	r.emptyMu.Lock()
	defer r.emptyMu.Unlock()
	return r.emptyCh
}

// each calls f for every session, shard by shard, without holding a lock
// during f.
func (r *registry) each(f func(*session)) {
	// The batch is kept for the next call (the sweep's, every second), so
	// that going over idle sessions allocates nothing; a call while
	// another holds it makes its own.
	bp := r.spare.Swap(nil)
	if bp == nil {
		bp = new([]*session)
	}
	batch := *bp
	for i := range r.shards {
		sh := &r.shards[i]
		batch = batch[:0]
		sh.mu.Lock()
		batch = sh.m.appendAll(batch)
		sh.mu.Unlock()
		for _, ss := range batch {
			f(ss)
		}
		clear(batch) // keeps no closed session alive
	}
	*bp = batch[:0]
	r.spare.Store(bp)
}

// byID returns the session with client id, or nil.
func (r *registry) byID(id string) *session {
	sh := r.shard(id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	return sh.m.get(id)
}

func (r *registry) all() []*session {
	var out []*session
	r.each(func(ss *session) { out = append(out, ss) })
	return out
}

// addUser records ss as one of user's sessions and reports whether it is
// the user's first on this node.
func (r *registry) addUser(user string, ss *session) (first bool) {
	r.usersMu.Lock()
	defer r.usersMu.Unlock()
	m := r.users[user]
	if m == nil {
		m = make(map[*session]struct{})
		r.users[user] = m
	}
	m[ss] = struct{}{}
	return len(m) == 1
}

// removeUser forgets ss as one of user's sessions and reports whether the
// user has none left on this node.
func (r *registry) removeUser(user string, ss *session) (last bool) {
	r.usersMu.Lock()
	defer r.usersMu.Unlock()
	m := r.users[user]
	if m == nil {
		return false
	}
	delete(m, ss)
	if len(m) == 0 {
		delete(r.users, user)
		return true
	}
	return false
}

func (r *registry) userSessions(user string) []*session {
	r.usersMu.Lock()
	defer r.usersMu.Unlock()
	out := make([]*session, 0, len(r.users[user]))
	for ss := range r.users[user] {
		out = append(out, ss)
	}
	return out
}

func (r *registry) numUsers() int {
	r.usersMu.Lock()
	defer r.usersMu.Unlock()
	return len(r.users) // anonymous connections are not registered
}

func (r *registry) addEcho(c *transport.Conn) {
	r.echoMu.Lock()
	r.echoes[c] = struct{}{}
	r.echoMu.Unlock()
}

func (r *registry) removeEcho(c *transport.Conn) {
	r.echoMu.Lock()
	delete(r.echoes, c)
	r.echoMu.Unlock()
}

func (r *registry) closeEchoes() {
	r.echoMu.Lock()
	var conns []*transport.Conn
	for c := range r.echoes {
		conns = append(conns, c)
	}
	r.echoMu.Unlock()
	for _, c := range conns {
		c.Abort(nil)
	}
}
