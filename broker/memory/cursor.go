package memory

import (
	"context"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
)

// cursors are the users' acknowledged positions, in one map with its own
// lock (they are written at most once per user and channel per flush of
// the server, not per publication). Expired entries are dropped by reads
// and by a sweep every cursorSweepEvery writes.
type cursors struct {
	mu     sync.Mutex
	m      map[cursorKey]cursorEntry
	writes int
}

type cursorKey struct{ user, channel string }

type cursorEntry struct {
	pos     broker.StreamPosition
	expires time.Time
}

const cursorSweepEvery = 1024

// SetCursor implements broker.Broker.
func (b *Broker) SetCursor(_ context.Context, user, ch string, pos broker.StreamPosition, ttl time.Duration) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	c := &b.cursors
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = make(map[cursorKey]cursorEntry)
	}
	k := cursorKey{user, ch}
	if e, ok := c.m[k]; ok && now.Before(e.expires) && e.pos.Epoch == pos.Epoch && e.pos.Offset > pos.Offset {
		pos = e.pos // cursors only move forward
	}
	c.m[k] = cursorEntry{pos: pos, expires: now.Add(ttl)}
	if c.writes++; c.writes >= cursorSweepEvery {
		c.writes = 0
		for k, e := range c.m {
			if !now.Before(e.expires) {
				delete(c.m, k)
			}
		}
	}
	return nil
}

// Cursor implements broker.Broker.
func (b *Broker) Cursor(_ context.Context, user, ch string) (broker.StreamPosition, bool, error) {
	if b.closed.Load() {
		return broker.StreamPosition{}, false, broker.ErrClosed
	}
	c := &b.cursors
	c.mu.Lock()
	defer c.mu.Unlock()
	k := cursorKey{user, ch}
	e, ok := c.m[k]
	if !ok {
		return broker.StreamPosition{}, false, nil
	}
	if !time.Now().Before(e.expires) {
		delete(c.m, k)
		return broker.StreamPosition{}, false, nil
	}
	return e.pos, true, nil
}
