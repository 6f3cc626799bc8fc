package client

import (
	"time"

	"github.com/heraldhq/herald/protocol"
)

// Acknowledgements, for channels whose namespace asks for them (the
// subscribe result's Ack). The client hands each offset to the
// application once, in order: a redelivered publication it handed
// already is dropped, and one beyond the next offset is dropped too,
// since the server sends again, in order, everything not acknowledged.
// Acknowledgements are cumulative per channel and batched: at most one
// ack command per Options.AckDelay for all channels.

// resumeAcks adjusts a subscribe result of a channel with
// acknowledgements: the offset acknowledged from now on, and the
// recovered publications not yet handed to the application (those up to
// prev, the last one handed, of the same epoch, came again because they
// were not acknowledged). s.mu is held.
func (s *Subscription) resumeAcks(prev StreamPosition, had bool, res *protocol.SubscribeResult, recovered []*protocol.Publication) []*protocol.Publication {
	switch {
	case !res.Recovered:
		s.acked = res.Offset
	case len(recovered) > 0:
		// The server resumed after the position sent, or after the
		// user's acknowledged one if that is further.
		s.acked = max(s.acked, recovered[0].Offset-1)
		if prev.Epoch != res.Epoch {
			s.acked = recovered[0].Offset - 1
		}
	default:
		s.acked = res.Offset
	}
	if had && res.Recovered && prev.Epoch == res.Epoch {
		i := 0
		for i < len(recovered) && recovered[i].Offset <= prev.Offset {
			i++
		}
		recovered = recovered[i:]
		if prev.Offset > s.pos.Offset {
			s.pos.Offset = prev.Offset
		}
	}
	return recovered
}

// ackOutOfOrder handles a publication of a channel with acknowledgements
// that is not the next one: a duplicate is dropped (and, if it came again
// for want of an acknowledgement already made, acknowledged again), one
// beyond the next is dropped to wait for the server's redelivery in
// order, unless it is marked Gap (publications were skipped): then the
// client resubscribes from what it acknowledged.
func (s *Subscription) ackOutOfOrder(conn *wsConn, p *protocol.Publication, v offsetVerdict) {
	if v == offsetDuplicate {
		s.mu.Lock()
		acked := s.acked
		s.mu.Unlock()
		if p.Redelivered && acked >= p.Offset {
			s.c.queueAck(s.channel, acked)
		}
		return
	}
	if !p.Gap {
		return
	}
	s.mu.Lock()
	if s.state != subActive || s.conn != conn {
		s.mu.Unlock()
		return
	}
	s.state = subResyncing
	s.mu.Unlock()
	s.c.wg.Add(1)
	go s.resync(conn)
}

// handled runs after the application was handed the publication at
// offset: without ManualAck, it is acknowledged.
func (s *Subscription) handled(offset uint64) {
	if s.opts.ManualAck || offset == 0 {
		return
	}
	s.mu.Lock()
	if !s.ack || offset <= s.acked {
		s.mu.Unlock()
		return
	}
	s.acked = offset
	s.mu.Unlock()
	s.c.queueAck(s.channel, offset)
}

// Ack acknowledges, on a channel with acknowledgements and with
// SubscribeOptions.ManualAck, every publication up to and including
// offset: the server stops sending them again, and a resubscription
// (after a reconnect, on any node) resumes after it. Offsets beyond the
// last publication handed to the application count as that one. It does
// not wait: acknowledgements are batched (Options.AckDelay).
func (s *Subscription) Ack(offset uint64) {
	s.mu.Lock()
	if !s.ack {
		s.mu.Unlock()
		return
	}
	offset = min(offset, s.pos.Offset)
	if offset <= s.acked {
		s.mu.Unlock()
		return
	}
	s.acked = offset
	s.mu.Unlock()
	s.c.queueAck(s.channel, offset)
}

// Acked returns the offset acknowledged on a channel with
// acknowledgements.
func (s *Subscription) Acked() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.acked
}

// ackBatchMax flushes the acknowledgements at once when that many
// publications were acknowledged since the last flush.
const ackBatchMax = 256

// queueAck records that channel is acknowledged up to offset, to be sent
// with the next batch.
func (c *Client) queueAck(channel string, offset uint64) {
	c.ackMu.Lock()
	if c.acks == nil {
		c.acks = make(map[string]uint64)
	}
	if offset > c.acks[channel] {
		c.acks[channel] = offset
	}
	c.ackCount++
	now := c.ackCount >= ackBatchMax
	if !now && c.ackTimer == nil {
		c.ackTimer = time.AfterFunc(c.opts.AckDelay, c.flushAcks)
	}
	c.ackMu.Unlock()
	if now {
		c.flushAcks()
	}
}

// FlushAcks sends the acknowledgements batched so far now, rather than
// after Options.AckDelay. The server handles them before any command sent
// after it on the same connection.
func (c *Client) FlushAcks() { c.flushAcks() }

// flushAcks sends the acknowledgements batched so far, in one ack command
// without reply, on the current connection. Without one they are
// dropped: a resubscription recovers from the offsets acknowledged.
func (c *Client) flushAcks() {
	c.ackMu.Lock()
	acks := c.acks
	c.acks, c.ackCount = nil, 0
	if c.ackTimer != nil {
		c.ackTimer.Stop()
		c.ackTimer = nil
	}
	c.ackMu.Unlock()
	if len(acks) == 0 {
		return
	}
	c.mu.Lock()
	conn := c.conn
	c.mu.Unlock()
	if conn == nil {
		return
	}
	b, err := c.codec.AppendCommand(nil, &protocol.Command{Ack: &protocol.AckRequest{Offsets: acks}})
	if err == nil {
		_ = conn.write(c.op, b)
	}
}

// stopAcks drops the pending acknowledgements when the client closes.
func (c *Client) stopAcks() {
	c.ackMu.Lock()
	if c.ackTimer != nil {
		c.ackTimer.Stop()
		c.ackTimer = nil
	}
	c.acks = nil
	c.ackMu.Unlock()
}
