package redis

import (
	"context"
	"fmt"
	"time"

	"github.com/heraldhq/herald/broker"
	"github.com/heraldhq/herald/protocol"
)

// Batches of one publish script call: at most maxBatch publications, and
// bodies of at most maxBatchBytes in all (a single larger publication
// goes alone). They bound the script's run, during which Redis serves no
// one else, and the pub/sub message that carries the batch.
const (
	maxBatch      = 256
	maxBatchBytes = 1 << 20
)

// appendsInFlight is how many publish script calls of one channel a node
// has in flight at once. The script orders concurrent calls itself (each
// runs atomically and takes the next offsets), so more than one could be;
// but each call costs a round trip on the node and in Redis whatever it
// carries, and with one in flight the groups are twice as large: on one
// node (hot-1x10, 3 alternating rounds) one in flight gave 1.08x the
// deliveries/s of two, at 0.93x the node's CPU per delivery and 0.8x
// Redis's, and on three nodes it was ahead too (docs/BENCHMARKS.md).
const appendsInFlight = 1

// pubReq is a publication waiting for its channel's next publish script
// call.
type pubReq struct {
	body   string
	key    string // idempotency key, "" for none
	window int64  // idempotency window, ms
	size   int    // history size (0: no history)
	ttl    int64  // history TTL, ms
}

// pubResult is what the script answered for one publication.
type pubResult struct {
	pos broker.StreamPosition
	dup bool
}

// Publish implements broker.Broker. A channel's publications that need the
// publish script (history or an idempotency key) are appended in groups:
// while this node has appendsInFlight script calls for the channel in
// flight, its next publications of the channel queue and go together in the
// next call, which
// appends each with its own offset and idempotency record and publishes
// them in one pub/sub message.
func (b *Broker) Publish(ctx context.Context, ch string, pub *protocol.Publication, opts broker.PublishOptions) (broker.StreamPosition, bool, error) {
	if b.closed.Load() {
		return broker.StreamPosition{}, false, broker.ErrClosed
	}
	p := *pub
	if p.Time == 0 {
		p.Time = time.Now().UnixMilli()
	}
	body, err := encodeBody(&p)
	if err != nil {
		return broker.StreamPosition{}, false, fmt.Errorf("redis publish %q: encode: %w", ch, err)
	}
	k := keysFor(b.cfg.Prefix, ch)
	history := opts.HistorySize > 0 || opts.HistoryTTL > 0
	if !history && opts.IdempotencyKey == "" {
		// Nothing to keep or check: straight to pub/sub.
		if err := b.cmdErr(b.publishRaw(ctx, k.pubsub(), "p0::"+body)); err != nil {
			return broker.StreamPosition{}, false, fmt.Errorf("redis publish %q: %w", ch, err)
		}
		return broker.StreamPosition{}, false, nil
	}
	r := &pubReq{body: body, key: opts.IdempotencyKey, window: millis(opts.IdempotencyWindow), ttl: millis(opts.HistoryTTL)}
	if r.window <= 0 {
		r.window = millis(defaultIdempotencyWindow)
	}
	if history {
		r.size = opts.HistorySize
		if r.size <= 0 {
			r.size = b.cfg.MaxTTLOnlyHistory
		}
	}
	res, err := b.appends.Do(ctx, ch, r, takeBatch, func(batch []*pubReq) ([]pubResult, error) {
		return b.publishBatch(ch, k, batch)
	})
	if err != nil {
		return broker.StreamPosition{}, false, fmt.Errorf("redis publish %q: %w", ch, err)
	}
	return res.pos, res.dup, nil
}

// takeBatch says how many of the queued publications go in the next
// script call: those with the history options of the first, within
// maxBatch and maxBatchBytes.
func takeBatch(pending []*pubReq) int {
	n, bytes := 1, len(pending[0].body)
	for n < len(pending) && n < maxBatch {
		r := pending[n]
		if r.size != pending[0].size || r.ttl != pending[0].ttl || bytes+len(r.body) > maxBatchBytes {
			break
		}
		bytes += len(r.body)
		n++
	}
	return n
}

// publishBatch runs the publish script for a batch. The batch belongs to
// several callers, so no caller's context bounds it: the client's
// timeouts do, and Close.
func (b *Broker) publishBatch(ch string, k keys, batch []*pubReq) ([]pubResult, error) {
	ks := []string{k.meta(), k.stream()}
	args := make([]any, 0, 7+3*len(batch))
	args = append(args, batch[0].size, batch[0].ttl, millis(b.cfg.MetaTTL), b.pubCmd, k.pubsub(), newEpoch(), len(batch))
	for _, r := range batch {
		ki := 0
		if r.key != "" {
			ks = append(ks, k.idem(r.key))
			ki = len(ks)
		}
		args = append(args, r.body, ki, r.window)
	}
	res, err := publishScript.Run(b.ctx, b.client, ks, args...).Slice()
	if err = b.cmdErr(err); err != nil {
		return nil, err
	}
	if len(res) != 3*len(batch) {
		return nil, fmt.Errorf("%w: %d values for %d publications", errMalformed, len(res), len(batch))
	}
	out := make([]pubResult, len(batch))
	for i := range out {
		dup, _ := res[3*i].(int64)
		epoch, _ := res[3*i+1].(string)
		offset, err := toUint(res[3*i+2])
		if err != nil {
			return nil, err
		}
		out[i] = pubResult{pos: broker.StreamPosition{Epoch: epoch, Offset: offset}, dup: dup == 1}
	}
	return out, nil
}
