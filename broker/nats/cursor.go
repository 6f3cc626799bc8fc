package nats

import (
	"context"
	"errors"
	"fmt"
	"time"

	natsgo "github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/broker"
)

// Cursors (acknowledged positions) live in their own stream, one subject
// per user and channel keeping one message (the last write). Each record
// carries its TTL: reads ignore a record older than it, and the stream's
// MaxAge (Config.MaxCursorTTL) removes what nobody rewrites. A write that
// must not move a cursor back is conditional on the subject's last
// sequence, and tried again if another node wrote in between.

type cursorRecord struct {
	Epoch  string `msgpack:"e"`
	Offset uint64 `msgpack:"o"`
	TTL    int64  `msgpack:"t"` // milliseconds
}

// cursorAttempts bounds the conditional writes of one SetCursor that
// lose to concurrent writers of the same cursor.
const cursorAttempts = 5

func (b *Broker) cursorSubject(user, ch string) (string, error) {
	ut, err := token(user)
	if err != nil {
		return "", err
	}
	ct, err := token(ch)
	if err != nil {
		return "", err
	}
	return b.names.curs + ut + "." + ct, nil
}

// SetCursor implements broker.Broker. ttl must be positive and at most
// Config.MaxCursorTTL.
func (b *Broker) SetCursor(ctx context.Context, user, ch string, pos broker.StreamPosition, ttl time.Duration) error {
	if err := b.enter(); err != nil {
		return err
	}
	defer b.inflight.Done()
	if ttl <= 0 || ttl > b.cfg.MaxCursorTTL {
		return fmt.Errorf("herald: cursor ttl %v: want more than 0 and at most the nats broker's MaxCursorTTL %v", ttl, b.cfg.MaxCursorTTL)
	}
	subj, err := b.cursorSubject(user, ch)
	if err != nil {
		return err
	}
	body, err := msgpack.Marshal(&cursorRecord{Epoch: pos.Epoch, Offset: pos.Offset, TTL: max(ttl.Milliseconds(), 1)})
	if err != nil {
		return fmt.Errorf("encode cursor: %w", err)
	}
	var inProcessSince time.Time
	for attempt := 0; ; attempt++ {
		cur, seq, found, err := b.readCursor(ctx, subj)
		if err != nil {
			return fmt.Errorf("nats set cursor %q: %w", ch, err)
		}
		if found && cur.Epoch == pos.Epoch && cur.Offset > pos.Offset {
			return nil // cursors only move forward
		}
		err = b.retry(ctx, cursStream, func() error {
			_, err := b.js.PublishMsg(ctx, &natsgo.Msg{Subject: subj, Data: body},
				jetstream.WithExpectStream(b.names.cursStream),
				jetstream.WithExpectLastSequencePerSubject(seq),
				jetstream.WithRetryAttempts(0))
			return err
		})
		if err == nil {
			return nil
		}
		if inProcess(err) && b.waitInProcess(&inProcessSince) {
			// Another write of the cursor is being replicated: reading
			// now would find the old record. Wait; not an attempt lost.
			if err := b.sleep(ctx, inProcessWait); err != nil {
				return fmt.Errorf("nats set cursor %q: %w", ch, err)
			}
			attempt--
			continue
		}
		if !wrongLastSeq(err) || attempt+1 == cursorAttempts {
			return fmt.Errorf("nats set cursor %q: %w", ch, err)
		}
	}
}

// Cursor implements broker.Broker.
func (b *Broker) Cursor(ctx context.Context, user, ch string) (broker.StreamPosition, bool, error) {
	if err := b.enter(); err != nil {
		return broker.StreamPosition{}, false, err
	}
	defer b.inflight.Done()
	subj, err := b.cursorSubject(user, ch)
	if err != nil {
		return broker.StreamPosition{}, false, err
	}
	rec, _, found, err := b.readCursor(ctx, subj)
	if err != nil {
		return broker.StreamPosition{}, false, fmt.Errorf("nats cursor %q: %w", ch, err)
	}
	if !found {
		return broker.StreamPosition{}, false, nil
	}
	return broker.StreamPosition{Epoch: rec.Epoch, Offset: rec.Offset}, true, nil
}

// readCursor returns the live record of subj and the sequence of the
// subject's last message (0 if none: what a conditional write expects).
// An expired record is not found, but its sequence is returned.
func (b *Broker) readCursor(ctx context.Context, subj string) (rec cursorRecord, seq uint64, found bool, err error) {
	var m *jetstream.RawStreamMsg
	err = b.read(ctx, cursStream, func(ctx context.Context) (err error) {
		m, err = b.streams[cursStream].GetLastMsgForSubject(ctx, subj)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return rec, 0, false, nil
	}
	if err != nil {
		return rec, 0, false, err
	}
	if err := msgpack.Unmarshal(m.Data, &rec); err != nil {
		return rec, m.Sequence, false, nil // unreadable: overwritten by the next write
	}
	if time.Since(m.Time) >= time.Duration(rec.TTL)*time.Millisecond {
		return rec, m.Sequence, false, nil
	}
	return rec, m.Sequence, true, nil
}
