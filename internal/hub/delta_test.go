package hub_test

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
	"github.com/heraldhq/herald/protocol/fossil"
)

// doc is a JSON document of about 1 KiB whose fields a few publications
// change.
func doc(r *rand.Rand, seq int) protocol.Data {
	var b bytes.Buffer
	fmt.Fprintf(&b, `{"seq":%d,"price":%d.%02d,"qty":%d,"status":"%s","notes":"`, seq, 100+r.IntN(50), r.IntN(100), r.IntN(1000), []string{"open", "closed", "held"}[r.IntN(3)])
	for i := 0; b.Len() < 1000; i++ {
		fmt.Fprintf(&b, "line %d of the notes; ", i)
	}
	b.WriteString(`"}`)
	return b.Bytes()
}

// reader decodes the publication frames one peer receives, applying
// deltas as an SDK does.
type reader struct {
	t     *testing.T
	p     *peer
	codec protocol.Codec
	prev  []byte
}

// next reads the next publication: its data (deltas applied) and whether
// it came as a delta.
func (r *reader) next() (*protocol.Publication, bool) {
	r.t.Helper()
	_ = r.p.far.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(r.p.far)
	if err != nil {
		r.t.Fatal(err)
	}
	var m protocol.ServerMessage
	if err := r.codec.DecodeServerMessage(f.Payload, &m); err != nil || m.Pub == nil {
		r.t.Fatalf("frame %q: %v", f.Payload, err)
	}
	delta := m.Pub.Delta
	if delta {
		data, err := fossil.Apply(r.prev, m.Pub.Data, 0)
		if err != nil {
			r.t.Fatalf("offset %d: %v", m.Pub.Offset, err)
		}
		m.Pub.Data, m.Pub.Delta = data, false
	}
	r.prev = append([]byte(nil), m.Pub.Data...)
	return m.Pub, delta
}

// TestDeltaComputedOncePerChannel: many delta subscribers of two codecs
// cost one delta per publication; each gets the channel's deltas, and
// applying them gives every publication's data; subscribers without
// deltas get every publication full.
func TestDeltaComputedOncePerChannel(t *testing.T) {
	h := hub.New(hub.Options{})
	const nDelta, nPlain, pubs = 40, 4, 12
	peers := newPeers(t, nDelta+nPlain, transport.Options{}, true)
	var readers []*reader
	var subs []*hub.Sub
	for i, p := range peers {
		c := protocol.JSON
		if i%2 == 1 {
			c = protocol.Msgpack
		}
		s := &hub.Sub{Conn: p.c, Channel: "c", Codec: uint8(protocol.CodecIndex(c))}
		if i < nDelta {
			s.SetDelta()
		}
		h.Add(s)
		h.Activate(s, nil, 0)
		subs = append(subs, s)
		readers = append(readers, &reader{t: t, p: p, codec: c})
	}
	r := rand.New(rand.NewPCG(5, 6))
	var sent []protocol.Data
	for o := 1; o <= pubs; o++ {
		d := doc(r, o)
		sent = append(sent, d)
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(o), Data: d}, "e")
	}
	st := h.Stats()
	if st.Deltas != pubs-1 {
		t.Fatalf("%d deltas computed for %d publications to %d delta subscribers, want %d (one per publication after the first)", st.Deltas, pubs, nDelta, pubs-1)
	}
	if st.DeltaFrames != (pubs-1)*nDelta || st.Delivered != pubs*(nDelta+nPlain) {
		t.Fatalf("delta frames %d, delivered %d", st.DeltaFrames, st.Delivered)
	}
	for i, rd := range readers {
		for o := 1; o <= pubs; o++ {
			p, delta := rd.next()
			if want := i < nDelta && o > 1; delta != want {
				t.Fatalf("subscriber %d offset %d: delta %v, want %v", i, o, delta, want)
			}
			if p.Offset != uint64(o) || !bytes.Equal(p.Data, sent[o-1]) {
				t.Fatalf("subscriber %d offset %d: got %d %q", i, o, p.Offset, p.Data)
			}
		}
	}
	for _, s := range subs {
		h.Remove(s)
	}
}

// TestDeltaFullWhenNotReceived: a delta subscriber gets a publication
// full whenever it did not receive the previous one (first after
// subscribe, after a filtered-out publication, after publications
// covered by its subscribe reply), every DeltaFullEvery-th publication,
// and when the delta would not be much smaller than the data.
func TestDeltaFullWhenNotReceived(t *testing.T) {
	h := hub.New(hub.Options{DeltaFullEvery: 5})
	peers := newPeers(t, 2, transport.Options{}, true)
	plain := &hub.Sub{Conn: peers[0].c, Channel: "c"}
	filtered := &hub.Sub{Conn: peers[1].c, Channel: "c"}
	plain.SetDelta()
	filtered.SetDelta()
	h.Add(plain)
	h.AddFiltered(filtered, mustFilter(t, `k != "skip"`))
	r := rand.New(rand.NewPCG(7, 8))
	pub := func(o int, tag string, d protocol.Data) {
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(o), Data: d, Tags: map[string]string{"k": tag}}, "e")
	}
	pub(1, "", doc(r, 1))
	pub(2, "", doc(r, 2))
	h.Activate(plain, nil, 0)    // held 1 and 2 go full
	h.Activate(filtered, nil, 2) // its reply covered 1 and 2
	random := make(protocol.Data, 1000)
	for i := range random {
		random[i] = byte(r.IntN(256))
	}
	steps := []struct {
		tag                   string
		data                  protocol.Data
		plainDelta, filtDelta bool
	}{
		{"", doc(r, 3), false, false},     // 3: first live one after subscribe
		{"", doc(r, 4), true, true},       // 4
		{"skip", doc(r, 5), false, false}, // 5: every 5th goes full; filtered out
		{"", doc(r, 6), true, false},      // 6: the filtered one missed 5
		{"", doc(r, 7), true, true},       // 7
		{"", random, false, false},        // 8: the delta is not worth it
		{"", doc(r, 9), false, false},     // 9: neither is this one's
		{"", doc(r, 10), false, false},    // 10: every 5th
		{"", doc(r, 11), true, true},      // 11
	}
	rp := &reader{t: t, p: peers[0], codec: protocol.JSON}
	rf := &reader{t: t, p: peers[1], codec: protocol.JSON}
	for i := 0; i < 2; i++ {
		rp.next() // the held ones
	}
	for i, s := range steps {
		o := i + 3
		pub(o, s.tag, s.data)
		if p, delta := rp.next(); delta != s.plainDelta || !bytes.Equal(p.Data, s.data) {
			t.Fatalf("offset %d: unfiltered delta %v, want %v", o, delta, s.plainDelta)
		}
		if s.tag == "skip" {
			continue
		}
		if p, delta := rf.next(); delta != s.filtDelta || !bytes.Equal(p.Data, s.data) {
			t.Fatalf("offset %d: filtered delta %v, want %v", o, delta, s.filtDelta)
		}
	}
	h.Remove(plain)
	h.Remove(filtered)
}

// TestDeltaAfterDrop: a delta subscriber of the drop policy whose queued
// publications were dropped gets the next one full and marked Gap, then
// deltas again.
func TestDeltaAfterDrop(t *testing.T) {
	// The queue overflows while its frames are being written to the
	// stalled peer. If all of them are (the writer took the whole queue),
	// none can be dropped and the subscriber is closed as slow instead:
	// try again then.
	for attempt := 1; ; attempt++ {
		if deltaAfterDrop(t) {
			return
		}
		if attempt == 5 {
			t.Fatal("5 attempts: the queue was always full of frames being written, nothing dropped")
		}
	}
}

func deltaAfterDrop(t *testing.T) bool {
	h := hub.New(hub.Options{})
	opts := transport.Options{QueueMaxMessages: 4, QueueMaxBytes: 1 << 20}
	peers := newPeers(t, 1, opts, true)
	s := &hub.Sub{Conn: peers[0].c, Channel: "c", Policy: hub.PolicyDrop}
	s.SetDelta()
	h.Add(s)
	h.Activate(s, nil, 0)
	r := rand.New(rand.NewPCG(9, 10))
	var last protocol.Data
	o := 0
	for h.Stats().Dropped == 0 && o < 100000 {
		o++
		last = doc(r, o)
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(o), Data: last}, "e")
	}
	st := h.Stats()
	if st.Dropped == 0 {
		t.Fatal("nothing dropped")
	}
	if st.Slow != 0 {
		h.Remove(s)
		return false
	}
	// Read what is there: the frames sent before the drop, then the one
	// marked Gap, which must be full and the last published.
	rd := &reader{t: t, p: peers[0], codec: protocol.JSON}
	for {
		p, delta := rd.next()
		if p.Gap {
			if delta || uint64(o) != p.Offset || !bytes.Equal(p.Data, last) {
				t.Fatalf("gap publication %d (last published %d): delta %v, data equal %v", p.Offset, o, delta, bytes.Equal(p.Data, last))
			}
			break
		}
		if p.Offset >= uint64(o) {
			t.Fatalf("publication %d not marked Gap after the drop", p.Offset)
		}
	}
	next := doc(r, o+1)
	h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(o + 1), Data: next}, "e")
	if p, delta := rd.next(); !delta || !bytes.Equal(p.Data, next) {
		t.Fatalf("after the gap: delta %v", delta)
	}
	h.Remove(s)
	return true
}

// BenchmarkDeltaFanOut: one 1 KiB JSON publication with a few fields
// changed to 1,000 delta subscribers: one delta per publication, then the
// same frame for all.
func BenchmarkDeltaFanOut(b *testing.B) {
	h := hub.New(hub.Options{})
	const n = 1000
	peers := newPeersWith(b, "epoll", n, transport.Options{QueueMaxMessages: 1 << 20, QueueMaxBytes: 1 << 30}, false, false)
	for _, p := range peers {
		s := &hub.Sub{Conn: p.c, Channel: "c"}
		s.SetDelta()
		h.Add(s)
		h.Activate(s, nil, 0)
	}
	r := rand.New(rand.NewPCG(11, 12))
	docs := make([]protocol.Data, 64)
	for i := range docs {
		docs[i] = doc(r, i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: uint64(i + 1), Data: docs[i%len(docs)]}, "e")
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
	b.ReportMetric(float64(h.Stats().Deltas)/float64(b.N), "deltas/pub")
}
