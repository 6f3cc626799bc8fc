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
	"github.com/heraldhq/herald/internal/groupcommit"
	"github.com/heraldhq/herald/protocol"
)

const (
	// defaultIdempotencyWindow applies when PublishOptions leaves the
	// window zero, as in the memory broker.
	defaultIdempotencyWindow = 2 * time.Minute
	// claimTimeout bounds how long a pending claim holds back retries of
	// its key: if its publisher died, a retry after it publishes.
	claimTimeout = 10 * time.Second
	// claimCheckAfter: a retry that finds a claim pending for this long
	// looks for the publication in the channel's history, in case its
	// publisher (or the server's answer) died after appending it.
	claimCheckAfter = time.Second
	// clockSlack widens that search for clock differences between the
	// servers that lead the idempotency and history streams.
	clockSlack = 5 * time.Second
)

// errTestDied is returned by a publisher told to die by a test.
var errTestDied = errors.New("test: the publisher died")

// publishOnce publishes under an idempotency key. A key is a subject of the
// idempotency stream holding one record: the first publisher claims it by
// writing a pending record conditionally on the subject being empty (or on
// the expired record it replaces), publishes, then marks the record done
// with the position. Others find the record: done, they return its
// position as a duplicate; pending, they wait for it. The window is
// per call, so records carry it and expire when read, not by a stream
// limit.
//
// Between the append and the record's completion the publisher may die,
// or the server restart: the record stays pending although the
// publication is out. History messages therefore carry the key's token
// (wirePub.Key), and a retry that finds a claim pending for
// claimCheckAfter, or expired, first looks for its publication in the
// channel's history since the claim: found, it completes the record and
// returns the position as a duplicate.
func (b *Broker) publishOnce(ctx context.Context, ch, tok string, p *protocol.Publication, opts broker.PublishOptions) (protocol.StreamPosition, bool, error) {
	w := opts.IdempotencyWindow
	if w <= 0 {
		w = defaultIdempotencyWindow
	}
	if w > b.cfg.MaxIdempotencyWindow {
		return protocol.StreamPosition{}, false, fmt.Errorf("herald: idempotency window %v exceeds the nats broker's MaxIdempotencyWindow %v", w, b.cfg.MaxIdempotencyWindow)
	}
	ktok := keyToken(opts.IdempotencyKey)
	subj := b.names.idem + tok + "." + ktok
	hsubj := "" // without history there is nothing to look in
	if hasHistory(opts) {
		hsubj = b.names.hist + tok
	}
	claim, pos, dup, err := b.claim(ctx, subj, hsubj, ktok, w)
	if err != nil || dup {
		return pos, dup, err
	}
	pos, err = b.publish(ctx, ch, tok, p, opts)
	if err != nil {
		if apiCode(err) != 0 || !hasHistory(opts) || errors.Is(err, groupcommit.ErrNotCommitted) || errors.Is(err, broker.ErrUnavailable) {
			// The server refused the append, or no server took it
			// (unavailable): let a retry publish. Drop our claim, and
			// nothing newer.
			b.purgeAsync(b.names.idemStream, purgeRequest{Filter: subj, Seq: claim + 1})
		}
		// Otherwise (no answer, connection lost) the append may be
		// stored: the claim stays, and a retry looks in the history.
		return pos, false, err
	}
	if b.testDieAfterPublish {
		return pos, false, errTestDied
	}
	done := idemRecord{Done: true, Epoch: pos.Epoch, Offset: pos.Offset, Window: w.Milliseconds()}
	if _, err := b.writeIdem(ctx, subj, done, claim); err != nil {
		// The publication is out; a retry finds it in the history.
		b.log.Warn("nats: idempotency record not completed", "channel", ch, "err", err)
	}
	return pos, false, nil
}

// claim takes the key for this publisher, or returns the position of the
// publication that holds it. hsubj is the channel's history subject (""
// without history) and ktok the key's token, to find a publication whose
// record was left pending.
func (b *Broker) claim(ctx context.Context, subj, hsubj, ktok string, w time.Duration) (uint64, protocol.StreamPosition, bool, error) {
	pending := idemRecord{Window: w.Milliseconds()}
	var expect uint64 // most keys are new: try before reading
	checked := false
	var inProcessSince time.Time
	for attempt := 0; attempt < maxAppendAttempts; attempt++ {
		seq, err := b.writeIdem(ctx, subj, pending, expect)
		if err == nil {
			return seq, protocol.StreamPosition{}, false, nil
		}
		if !wrongLastSeq(err) {
			return 0, protocol.StreamPosition{}, false, fmt.Errorf("nats idempotency claim: %w", err)
		}
		if inProcess(err) && b.waitInProcess(&inProcessSince) {
			// Another write of the key is being replicated, not stored
			// yet: reading now would find nothing. Wait, then try again.
			if err := b.sleep(ctx, inProcessWait); err != nil {
				return 0, protocol.StreamPosition{}, false, err
			}
			continue
		}
		// A record exists: a live one answers, an expired one is replaced.
		for wait := time.Millisecond; ; wait = min(2*wait, 100*time.Millisecond) {
			rec, seq, at, found, err := b.readIdem(ctx, subj)
			if err != nil {
				return 0, protocol.StreamPosition{}, false, fmt.Errorf("nats idempotency read: %w", err)
			}
			if !found {
				expect = 0
				break
			}
			life := time.Duration(rec.Window) * time.Millisecond
			if !rec.Done {
				window := life
				life = min(life, claimTimeout)
				age := time.Since(at)
				if hsubj == "" && age >= claimTimeout && age < window {
					// Without history there is no trail to look in: the
					// claim's publisher died, or lost its server, and its
					// publication may be out. It counts as published, so
					// that the key publishes at most once; the record is
					// completed so that later retries answer at once.
					done := idemRecord{Done: true, Window: rec.Window}
					if _, err := b.writeIdem(ctx, subj, done, seq); err != nil {
						b.log.Debug("nats: completing an abandoned idempotency claim", "err", err)
					}
					return 0, protocol.StreamPosition{}, true, nil
				}
				if hsubj != "" && (age >= life || (age >= claimCheckAfter && !checked)) {
					checked = true
					pos, found, err := b.findKeyed(ctx, hsubj, ktok, at)
					if err != nil {
						return 0, protocol.StreamPosition{}, false, fmt.Errorf("nats idempotency: %w", err)
					}
					if found {
						done := idemRecord{Done: true, Epoch: pos.Epoch, Offset: pos.Offset, Window: rec.Window}
						if _, err := b.writeIdem(ctx, subj, done, seq); err != nil {
							b.log.Debug("nats: completing a pending idempotency record", "err", err)
						}
						return 0, pos, true, nil
					}
				}
			}
			if time.Since(at) >= life {
				expect = seq
				break
			}
			if rec.Done {
				return 0, protocol.StreamPosition{Epoch: rec.Epoch, Offset: rec.Offset}, true, nil
			}
			if err := b.sleep(ctx, wait); err != nil {
				return 0, protocol.StreamPosition{}, false, err
			}
		}
	}
	return 0, protocol.StreamPosition{}, false, errors.New("nats idempotency claim: too many conflicting writes")
}

// writeIdem writes rec if the key's last record has sequence expect (0:
// none) and returns the new record's sequence.
func (b *Broker) writeIdem(ctx context.Context, subj string, rec idemRecord, expect uint64) (uint64, error) {
	body, err := msgpack.Marshal(&rec)
	if err != nil {
		return 0, err
	}
	var ack *jetstream.PubAck
	err = b.retry(ctx, idemStream, func() (err error) {
		ack, err = b.js.PublishMsg(ctx, &natsgo.Msg{Subject: subj, Data: body},
			jetstream.WithExpectStream(b.names.idemStream),
			jetstream.WithExpectLastSequencePerSubject(expect),
			jetstream.WithRetryAttempts(0))
		return err
	})
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

func (b *Broker) readIdem(ctx context.Context, subj string) (rec idemRecord, seq uint64, at time.Time, found bool, err error) {
	var m *jetstream.RawStreamMsg
	err = b.read(ctx, idemStream, func(ctx context.Context) (err error) {
		m, err = b.streams[idemStream].GetLastMsgForSubject(ctx, subj)
		return err
	})
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return rec, 0, at, false, nil
	}
	if err != nil {
		return rec, 0, at, false, err
	}
	if err := msgpack.Unmarshal(m.Data, &rec); err != nil {
		return rec, 0, at, false, fmt.Errorf("decode idempotency record: %w", err)
	}
	return rec, m.Sequence, m.Time, true, nil
}

// findKeyed looks in a history subject, among the messages stored since
// the claim made at claimed, for the publication of the key whose token is
// ktok.
func (b *Broker) findKeyed(ctx context.Context, hsubj, ktok string, claimed time.Time) (protocol.StreamPosition, bool, error) {
	msgs, err := b.readSubject(ctx, histStream, hsubj, 0, claimed.Add(-clockSlack))
	if err != nil {
		return protocol.StreamPosition{}, false, err
	}
	for _, m := range msgs {
		h := m.Headers()
		if h.Get(hdrKind) != kindPub {
			continue
		}
		ws, first, epoch, err := decodeEntries(h, m.Data())
		if err != nil {
			continue
		}
		for i := range ws {
			if ws[i].Key == ktok {
				return protocol.StreamPosition{Epoch: epoch, Offset: first + uint64(i)}, true, nil
			}
		}
	}
	return protocol.StreamPosition{}, false, nil
}
