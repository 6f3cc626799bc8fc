package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Presence is kept per channel in three keys of the channel's slot: a
// hash client -> encoded ClientInfo, a hash client -> user (for counting
// users without decoding) and a sorted set client -> expiry time on the
// Redis clock. Reads drop expired members first, so the members of a node
// that died vanish once their ttl passes, whether or not anyone removes
// them; the keys themselves expire with their longest-lived member.

func (b *Broker) presenceKeys(ch string) []string {
	k := keysFor(b.cfg.Prefix, ch)
	return []string{k.presenceInfo(), k.presenceUsers(), k.presenceExp()}
}

// AddPresence implements broker.PresenceStore.
func (b *Broker) AddPresence(ctx context.Context, ch, clientID string, info *protocol.ClientInfo, ttl time.Duration) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if info == nil {
		info = &protocol.ClientInfo{Client: clientID}
	}
	enc, err := encode(0, info)
	if err != nil {
		return fmt.Errorf("redis add presence %q: encode: %w", ch, err)
	}
	if err := addPresenceScript.Run(ctx, b.client, b.presenceKeys(ch), clientID, enc, info.User, max(millis(ttl), 1)).Err(); b.cmdErr(err) != nil {
		return fmt.Errorf("redis add presence %q: %w", ch, err)
	}
	return nil
}

// RemovePresence implements broker.PresenceStore.
func (b *Broker) RemovePresence(ctx context.Context, ch, clientID string) error {
	if b.closed.Load() {
		return broker.ErrClosed
	}
	if err := b.cmdErr(removePresenceScript.Run(ctx, b.client, b.presenceKeys(ch), clientID).Err()); err != nil {
		return fmt.Errorf("redis remove presence %q: %w", ch, err)
	}
	return nil
}

// Presence implements broker.PresenceStore.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string]*protocol.ClientInfo, error) {
	if b.closed.Load() {
		return nil, broker.ErrClosed
	}
	res, err := presenceScript.Run(ctx, b.client, b.presenceKeys(ch)).Slice()
	if err = b.cmdErr(err); err != nil {
		return nil, fmt.Errorf("redis presence %q: %w", ch, err)
	}
	out := make(map[string]*protocol.ClientInfo, len(res)/2)
	for i := 0; i+1 < len(res); i += 2 {
		id, _ := res[i].(string)
		enc, _ := res[i+1].(string)
		info := new(protocol.ClientInfo)
		if err := decode(enc, info); err != nil {
			return nil, fmt.Errorf("redis presence %q: client %q: %w", ch, id, err)
		}
		out[id] = info
	}
	return out, nil
}

// PresenceStats implements broker.PresenceStore.
func (b *Broker) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	if b.closed.Load() {
		return broker.PresenceStats{}, broker.ErrClosed
	}
	res, err := presenceStatsScript.Run(ctx, b.client, b.presenceKeys(ch)).Int64Slice()
	if err = b.cmdErr(err); err != nil {
		return broker.PresenceStats{}, fmt.Errorf("redis presence stats %q: %w", ch, err)
	}
	if len(res) != 2 {
		return broker.PresenceStats{}, fmt.Errorf("redis presence stats %q: %w", ch, errMalformed)
	}
	return broker.PresenceStats{NumClients: int(res[0]), NumUsers: int(res[1])}, nil
}
