package bench

// maxSeq bounds the sequence numbers a tracker accepts, and so its memory
// (maxSeq/8 bytes per subscriber at most). A larger number is counted as
// bad: no run publishes 16M messages into one channel.
const maxSeq = 1 << 24

// seqTracker checks the sequence numbers one subscriber receives on one
// channel. The publisher numbers each channel's messages 1, 2, 3, ...;
// the tracker remembers which it saw in a bitmap, so it tells duplicates
// from late arrivals exactly. Messages never seen are the lost ones: the
// publisher's count minus Distinct.
//
// Order is checked by the server's stream offset when publications carry
// one (channels with history): subscribers must see the server's order,
// which for concurrent publishes into one channel need not be the
// publisher's numbering. Without offsets it is checked by sequence number,
// which is exact only when publishes into a channel do not overlap.
//
// A tracker is owned by one goroutine (the connection's reader).
type seqTracker struct {
	seen      []uint64 // bit s set: sequence number s was received
	top       uint64   // highest sequence number received
	topOffset uint64   // highest offset received

	Distinct   uint64 // different sequence numbers received
	Duplicates uint64 // receptions of a number already seen
	OutOfOrder uint64 // first receptions that came after a later message
	Bad        uint64 // numbers outside [1, maxSeq]
}

// Observe records one received sequence number and the publication's
// offset (0 if it has none).
func (t *seqTracker) Observe(s, offset uint64) {
	if s == 0 || s > maxSeq {
		t.Bad++
		return
	}
	w, bit := s>>6, uint64(1)<<(s&63)
	if w >= uint64(len(t.seen)) {
		n := int(w) + 1
		if n < 2*len(t.seen) {
			n = 2 * len(t.seen)
		}
		if n > maxSeq/64+1 {
			n = maxSeq/64 + 1
		}
		grown := make([]uint64, n)
		copy(grown, t.seen)
		t.seen = grown
	}
	if t.seen[w]&bit != 0 {
		t.Duplicates++
		return
	}
	t.seen[w] |= bit
	t.Distinct++
	late := false
	if offset != 0 {
		late = offset <= t.topOffset
		t.topOffset = max(t.topOffset, offset)
	} else {
		late = s < t.top
	}
	t.top = max(t.top, s)
	if late {
		t.OutOfOrder++
	}
}

// Missing returns how many of the numbers 1..upTo were not received.
func (t *seqTracker) Missing(upTo uint64) uint64 {
	var have uint64
	for s := uint64(1); s <= upTo && s <= maxSeq; s++ {
		if w := s >> 6; w < uint64(len(t.seen)) && t.seen[w]&(1<<(s&63)) != 0 {
			have++
		}
	}
	return upTo - have
}

// SeqStats are the summed sequence checks of many subscribers.
type SeqStats struct {
	Received   uint64 `json:"received"` // publication frames with a valid payload
	Distinct   uint64 `json:"distinct"`
	Duplicates uint64 `json:"duplicates"`
	OutOfOrder uint64 `json:"out_of_order"`
	Bad        uint64 `json:"bad_payload"` // payloads that did not parse, or numbers out of range
	// Deltas counts the publications received as deltas (--delta), which
	// applied: those that did not are in Bad.
	Deltas uint64 `json:"deltas,omitempty"`
}

// Add sums o into s.
func (s *SeqStats) Add(o SeqStats) {
	s.Received += o.Received
	s.Distinct += o.Distinct
	s.Duplicates += o.Duplicates
	s.OutOfOrder += o.OutOfOrder
	s.Bad += o.Bad
	s.Deltas += o.Deltas
}

// stats returns the tracker's counts; Received is the caller's to fill.
func (t *seqTracker) stats() SeqStats {
	return SeqStats{Distinct: t.Distinct, Duplicates: t.Duplicates, OutOfOrder: t.OutOfOrder, Bad: t.Bad}
}
