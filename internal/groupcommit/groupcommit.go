// Package groupcommit batches concurrent operations on one resource: while
// one group is being committed, the callers that arrive queue, and the next
// commit takes them together. The brokers use it to append a hot channel's
// publications in one round trip each group, rather than one each.
//
// There is no goroutine: the caller whose item heads the queue commits the
// group (it leads), and hands the lead to the head of what queued meanwhile.
// A caller waits at most for the group before its own and its own.
package groupcommit

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"slices"
	"sync"
)

// ErrNotCommitted wraps the context's error when a call ends before its
// item went in a group: the item was not committed, and never will be.
var ErrNotCommitted = errors.New("herald: not committed")

// Group commits items of one resource. The zero value is ready and commits
// one group at a time. It is safe for concurrent use; a Group must not be
// copied after first use.
type Group[T, R any] struct {
	// Concurrent is how many groups may be committed at once; 0 means 1.
	// Set it before first use. More than one suits resources that order
	// concurrent commits themselves (a Redis script), not those where a
	// commit needs the previous one's outcome.
	Concurrent int

	mu      sync.Mutex
	q       []*waiter[T, R] // waiting for a group, oldest first
	leaders int             // callers committing a group (or handed the lead); q is empty unless leaders is Concurrent
}

type waiter[T, R any] struct {
	v       T
	done    chan outcome[R] // one send: the result, or the lead
	leading bool            // guarded by Group.mu: the lead was handed to it
}

type outcome[R any] struct {
	r    R
	err  error
	lead bool
}

// Take says how many of the pending items, oldest first, go in the next
// group: at least 1 (the first always goes), at most len(pending).
type Take[T any] func(pending []T) int

// Commit commits one group and returns one result per item, in order, or
// an error that every item of the group gets.
type Commit[T, R any] func(group []T) ([]R, error)

// Grow takes into the group being committed the items queued since it
// began, as many as Take allows with the group's own items first, and
// returns those it took (none if Take allows no more or none queued).
type Grow[T any] func() []T

// CommitGrowing is a Commit that may call grow, before its last attempt
// at the resource, to commit what queued meanwhile along with the group
// (for a commit that found the resource taken and tries again). It
// returns one result per item of the grown group, in order.
type CommitGrowing[T, R any] func(group []T, grow Grow[T]) ([]R, error)

// maxLook bounds how many pending items Take is shown.
const maxLook = 1024

// Do queues v and returns its result once the group it went in is
// committed. If ctx ends while v is still queued, Do takes it out and
// returns ctx.Err() wrapped in ErrNotCommitted; once v is in a group being committed, Do waits for the
// commit, which the Commit function must bound. take and commit must be the
// same for every call of one Group.
func (g *Group[T, R]) Do(ctx context.Context, v T, take Take[T], commit Commit[T, R]) (R, error) {
	return g.do(ctx, v, take, commit, nil)
}

// DoGrowing is Do with a commit that may grow its group while it commits
// (CommitGrowing). An item taken in that way is in a group being
// committed: its caller waits for the commit, as for any other.
func (g *Group[T, R]) DoGrowing(ctx context.Context, v T, take Take[T], commit CommitGrowing[T, R]) (R, error) {
	return g.do(ctx, v, take, nil, commit)
}

// do is Do with commit, or DoGrowing with growing.
func (g *Group[T, R]) do(ctx context.Context, v T, take Take[T], commit Commit[T, R], growing CommitGrowing[T, R]) (R, error) {
	w := &waiter[T, R]{v: v, done: make(chan outcome[R], 1)}
	g.mu.Lock()
	if g.leaders < max(g.Concurrent, 1) {
		g.leaders++
		w.leading = true
		g.mu.Unlock()
		return g.lead(w, take, commit, growing)
	}
	g.q = append(g.q, w)
	g.mu.Unlock()
	var o outcome[R]
	select {
	case o = <-w.done:
	case <-ctx.Done():
		g.mu.Lock()
		if !w.leading {
			if i := slices.Index(g.q, w); i >= 0 {
				g.q = slices.Delete(g.q, i, i+1)
				g.mu.Unlock()
				var zero R
				return zero, fmt.Errorf("%w: %w", ErrNotCommitted, ctx.Err())
			}
		}
		g.mu.Unlock()
		o = <-w.done // in a group being committed, or given the lead
	}
	if !o.lead {
		return o.r, o.err
	}
	return g.lead(w, take, commit, growing)
}

// lead commits a group of w's item and the items queued after it (w is no
// longer queued: a caller leads when fewer than Concurrent do, or is
// handed the lead, taken off the queue, by a leader that finished),
// delivers its results and hands the lead on to the next queued item.
func (g *Group[T, R]) lead(w *waiter[T, R], take Take[T], commit Commit[T, R], growing CommitGrowing[T, R]) (R, error) {
	g.mu.Lock()
	look := min(len(g.q), maxLook-1)
	vs := make([]T, 1+look)
	vs[0] = w.v
	for i := range look {
		vs[i+1] = g.q[i].v
	}
	n := min(max(take(vs), 1), len(vs))
	group := make([]*waiter[T, R], n)
	group[0] = w
	copy(group[1:], g.q[:n-1])
	g.q = slices.Delete(g.q, 0, n-1)
	g.mu.Unlock()

	var rs []R
	var err error
	if growing == nil {
		rs, err = commit(vs[:n])
	} else {
		rs, err = g.commitGrowing(take, growing, vs[:n:n], &group)
	}
	n = len(group)
	if err == nil && len(rs) != n {
		panic("groupcommit: Commit returned a result count that differs from the group's")
	}
	g.mu.Lock()
	for i, x := range group[1:] {
		o := outcome[R]{err: err}
		if err == nil {
			o.r = rs[i+1]
		}
		x.done <- o
	}
	if len(g.q) > 0 {
		next := g.q[0]
		g.q = slices.Delete(g.q, 0, 1)
		next.leading = true
		next.done <- outcome[R]{lead: true}
	} else {
		g.leaders--
	}
	g.mu.Unlock()
	if err != nil {
		var zero R
		return zero, err
	}
	return rs[0], nil
}

// commitGrowing runs commit on vs, the values of *group's items, with a
// Grow that moves queued items into *group.
func (g *Group[T, R]) commitGrowing(take Take[T], commit CommitGrowing[T, R], vs []T, group *[]*waiter[T, R]) ([]R, error) {
	grow := func() []T {
		g.mu.Lock()
		defer g.mu.Unlock()
		look := min(len(g.q), maxLook-len(vs))
		if look <= 0 {
			return nil
		}
		all := make([]T, len(vs)+look)
		copy(all, vs)
		for i := range look {
			all[len(vs)+i] = g.q[i].v
		}
		k := min(max(take(all), len(vs)), len(all)) - len(vs)
		if k == 0 {
			return nil
		}
		*group = append(*group, g.q[:k]...)
		g.q = slices.Delete(g.q, 0, k)
		vs = all[: len(vs)+k : len(vs)+k]
		return vs[len(vs)-k:]
	}
	return commit(vs, grow)
}

// Queued returns how many items wait for a group (not those being
// committed).
func (g *Group[T, R]) Queued() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.q)
}

// Keyed holds a Group per key, for as long as a call on the key is in
// progress. The zero value is not ready: use NewKeyed.
type Keyed[T, R any] struct {
	concurrent int
	seed       maphash.Seed
	shards     [32]keyedShard[T, R]
}

type keyedShard[T, R any] struct {
	mu sync.Mutex
	m  map[string]*keyedGroup[T, R]
}

type keyedGroup[T, R any] struct {
	g    Group[T, R]
	refs int // guarded by the shard's mu
}

// NewKeyed returns an empty Keyed whose groups commit up to concurrent
// groups at once (Group.Concurrent).
func NewKeyed[T, R any](concurrent int) *Keyed[T, R] {
	k := &Keyed[T, R]{concurrent: concurrent, seed: maphash.MakeSeed()}
	for i := range k.shards {
		k.shards[i].m = make(map[string]*keyedGroup[T, R])
	}
	return k
}

// Do runs Group.Do on key's group.
func (k *Keyed[T, R]) Do(ctx context.Context, key string, v T, take Take[T], commit Commit[T, R]) (R, error) {
	s := &k.shards[maphash.String(k.seed, key)%uint64(len(k.shards))]
	s.mu.Lock()
	kg := s.m[key]
	if kg == nil {
		kg = &keyedGroup[T, R]{g: Group[T, R]{Concurrent: k.concurrent}}
		s.m[key] = kg
	}
	kg.refs++
	s.mu.Unlock()
	r, err := kg.g.Do(ctx, v, take, commit)
	s.mu.Lock()
	if kg.refs--; kg.refs == 0 {
		delete(s.m, key)
	}
	s.mu.Unlock()
	return r, err
}

// Queued returns how many items wait for a group of key (not those being
// committed).
func (k *Keyed[T, R]) Queued(key string) int {
	s := &k.shards[maphash.String(k.seed, key)%uint64(len(k.shards))]
	s.mu.Lock()
	kg := s.m[key]
	s.mu.Unlock()
	if kg == nil {
		return 0
	}
	return kg.g.Queued()
}

// Len returns the number of keys with a call in progress.
func (k *Keyed[T, R]) Len() int {
	n := 0
	for i := range k.shards {
		s := &k.shards[i]
		s.mu.Lock()
		n += len(s.m)
		s.mu.Unlock()
	}
	return n
}
