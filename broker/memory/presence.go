package memory

import (
	"context"
	"hash/maphash"
	"sync"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// PresenceStore keeps presence in memory. Create it with NewPresenceStore.
type PresenceStore struct {
	now    func() time.Time
	seed   maphash.Seed
	shards [numShards]presenceShard
}

type presenceShard struct {
	mu       sync.Mutex
	channels map[string]map[string]presenceEntry
}

type presenceEntry struct {
	info    *protocol.ClientInfo
	expires time.Time
}

// NewPresenceStore returns an empty store; now may be nil for time.Now.
func NewPresenceStore(now func() time.Time) *PresenceStore {
	if now == nil {
		now = time.Now
	}
	p := &PresenceStore{now: now, seed: maphash.MakeSeed()}
	for i := range p.shards {
		p.shards[i].channels = make(map[string]map[string]presenceEntry)
	}
	return p
}

func (p *PresenceStore) shard(ch string) *presenceShard {
	return &p.shards[maphash.String(p.seed, ch)%numShards]
}

// AddPresence adds or refreshes a member. A ttl of 0 or less never
// expires (what one node needs: its own members cannot outlive it).
func (p *PresenceStore) AddPresence(_ context.Context, ch, clientID string, info *protocol.ClientInfo, ttl time.Duration) error {
	s := p.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.channels[ch]
	if m == nil {
		m = make(map[string]presenceEntry)
		s.channels[ch] = m
	}
	e := presenceEntry{info: info}
	if ttl > 0 {
		e.expires = p.now().Add(ttl)
	}
	m[clientID] = e
	return nil
}

// RemovePresence removes a member.
func (p *PresenceStore) RemovePresence(_ context.Context, ch, clientID string) error {
	s := p.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	if m := s.channels[ch]; m != nil {
		delete(m, clientID)
		if len(m) == 0 {
			delete(s.channels, ch)
		}
	}
	return nil
}

// live returns the unexpired members, dropping expired ones. The shard lock
// must be held.
func (s *presenceShard) live(ch string, now time.Time) map[string]presenceEntry {
	m := s.channels[ch]
	for id, e := range m {
		if !e.expires.IsZero() && !now.Before(e.expires) {
			delete(m, id)
		}
	}
	if m != nil && len(m) == 0 {
		delete(s.channels, ch)
	}
	return m
}

// Presence returns the channel's members by client id.
func (p *PresenceStore) Presence(_ context.Context, ch string) (map[string]*protocol.ClientInfo, error) {
	s := p.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.live(ch, p.now())
	out := make(map[string]*protocol.ClientInfo, len(m))
	for id, e := range m {
		out[id] = e.info
	}
	return out, nil
}

// PresenceStats counts the channel's clients and distinct users.
func (p *PresenceStore) PresenceStats(_ context.Context, ch string) (broker.PresenceStats, error) {
	s := p.shard(ch)
	s.mu.Lock()
	defer s.mu.Unlock()
	m := s.live(ch, p.now())
	users := make(map[string]struct{}, len(m))
	for _, e := range m {
		users[e.info.User] = struct{}{}
	}
	return broker.PresenceStats{NumClients: len(m), NumUsers: len(users)}, nil
}
