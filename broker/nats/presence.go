package nats

import (
	"context"
	"fmt"
	"strings"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Presence lives in its own stream, one subject per channel and client
// keeping one message (the last write). Each entry carries its TTL: reads
// hide an entry older than its TTL (and purge it), the stream's MaxAge
// removes what nobody reads.

func (b *Broker) presSubject(ch, clientID string) (string, error) {
	ct, err := token(ch)
	if err != nil {
		return "", err
	}
	it, err := token(clientID)
	if err != nil {
		return "", err
	}
	return b.names.pres + ct + "." + it, nil
}

// AddPresence implements broker.PresenceStore: it adds or refreshes the
// member, who disappears ttl after the last refresh. ttl must be positive
// and at most Config.MaxPresenceTTL.
func (b *Broker) AddPresence(ctx context.Context, ch, clientID string, info *protocol.ClientInfo, ttl time.Duration) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	if ttl <= 0 || ttl > b.cfg.MaxPresenceTTL {
		return fmt.Errorf("herald: presence ttl %v: want more than 0 and at most the nats broker's MaxPresenceTTL %v", ttl, b.cfg.MaxPresenceTTL)
	}
	subj, err := b.presSubject(ch, clientID)
	if err != nil {
		return err
	}
	body, err := msgpack.Marshal(&presRecord{Client: clientID, Info: info, TTL: max(ttl.Milliseconds(), 1)})
	if err != nil {
		return fmt.Errorf("encode presence: %w", err)
	}
	err = b.retry(ctx, presStream, func() error {
		_, err := b.js.PublishMsg(ctx, &natsgo.Msg{Subject: subj, Data: body},
			jetstream.WithExpectStream(b.names.presStream), jetstream.WithRetryAttempts(0))
		return err
	})
	if err != nil {
		return fmt.Errorf("nats add presence %q: %w", ch, err)
	}
	return nil
}

// RemovePresence implements broker.PresenceStore.
func (b *Broker) RemovePresence(ctx context.Context, ch, clientID string) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	subj, err := b.presSubject(ch, clientID)
	if err != nil {
		return err
	}
	err = b.streams[presStream].Purge(ctx, jetstream.WithPurgeSubject(subj))
	if err != nil && !streamMissing(err) {
		return fmt.Errorf("nats remove presence %q: %w", ch, err)
	}
	return nil
}

// Presence implements broker.PresenceStore.
func (b *Broker) Presence(ctx context.Context, ch string) (map[string]*protocol.ClientInfo, error) {
	if err := b.enter(); err != nil {
		return nil, err
	}
	defer b.inflight.Done()
	return b.presence(ctx, ch)
}

// PresenceStats implements broker.PresenceStore.
func (b *Broker) PresenceStats(ctx context.Context, ch string) (broker.PresenceStats, error) {
	if err := b.enter(); err != nil {
		return broker.PresenceStats{}, err
	}
	defer b.inflight.Done()
	m, err := b.presence(ctx, ch)
	if err != nil {
		return broker.PresenceStats{}, err
	}
	users := make(map[string]struct{}, len(m))
	for _, info := range m {
		users[info.User] = struct{}{}
	}
	return broker.PresenceStats{NumClients: len(m), NumUsers: len(users)}, nil
}

func (b *Broker) presence(ctx context.Context, ch string) (map[string]*protocol.ClientInfo, error) {
	ct, err := token(ch)
	if err != nil {
		return nil, err
	}
	msgs, err := b.readSubject(ctx, presStream, b.names.pres+ct+".*", 0, time.Time{})
	if err != nil {
		return nil, fmt.Errorf("nats presence %q: %w", ch, err)
	}
	now := time.Now()
	out := make(map[string]*protocol.ClientInfo, len(msgs))
	for _, m := range msgs {
		var rec presRecord
		md, err := m.Metadata()
		if err != nil || msgpack.Unmarshal(m.Data(), &rec) != nil || rec.Info == nil {
			continue
		}
		if now.Sub(md.Timestamp) >= time.Duration(rec.TTL)*time.Millisecond {
			// Expired: its node stopped refreshing it. Purge it, but not a
			// refresh that may have landed since.
			b.purgeAsync(b.names.presStream, purgeRequest{Filter: m.Subject(), Seq: md.Sequence.Stream + 1})
			continue
		}
		if rec.Client == "" {
			rec.Client = strings.TrimPrefix(m.Subject(), b.names.pres+ct+".")
		}
		out[rec.Client] = rec.Info
	}
	return out, nil
}
