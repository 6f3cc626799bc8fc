package hub_test

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type nopHandler struct{}

func (nopHandler) OnMessage(*transport.Conn, []byte, bool)       {}
func (nopHandler) OnClose(*transport.Conn, ws.StatusCode, error) {}

// peer is a served connection whose far end counts the bytes it reads, or
// reads nothing at all when stalled.
type peer struct {
	c     *transport.Conn
	far   net.Conn
	bytes atomic.Int64
}

func newPeers(tb testing.TB, n int, opts transport.Options, stalled bool) []*peer {
	return newPeersOn(tb, "goroutine", n, opts, stalled)
}

// newPeersOn connects n loopback TCP peers served by the named engine.
func newPeersOn(tb testing.TB, engine string, n int, opts transport.Options, stalled bool) []*peer {
	tb.Helper()
	return newPeersWith(tb, engine, n, opts, stalled, false)
}

// newPeersWith is newPeersOn whose connections negotiated
// permessage-deflate when deflate is set.
func newPeersWith(tb testing.TB, engine string, n int, opts transport.Options, stalled, deflate bool) []*peer {
	tb.Helper()
	eng, err := transport.NewEngine(engine)
	if err != nil {
		tb.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer ln.Close()
	var wg sync.WaitGroup
	peers := make([]*peer, n)
	for i := range peers {
		far, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			tb.Fatal(err)
		}
		near, err := ln.Accept()
		if err != nil {
			tb.Fatal(err)
		}
		p := &peer{far: far}
		p.c = transport.NewConn(near, &opts, nopHandler{})
		if deflate {
			p.c.SetDeflate()
		}
		if err := eng.Serve(p.c, nil); err != nil {
			tb.Fatal(err)
		}
		if !stalled {
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 64<<10)
				for {
					k, err := far.Read(buf)
					p.bytes.Add(int64(k))
					if err != nil {
						return
					}
				}
			}()
		}
		peers[i] = p
	}
	tb.Cleanup(func() {
		for _, p := range peers {
			p.c.Abort(io.EOF)
			p.far.Close()
		}
		wg.Wait()
		eng.Close()
	})
	return peers
}

func TestFanOutOrderAndRecoverySeam(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 3, transport.Options{}, false)
	subs := make([]*hub.Sub, len(peers))
	for i, p := range peers {
		subs[i] = &hub.Sub{Conn: p.c, Channel: "c"}
		first := h.Add(subs[i])
		if first != (i == 0) {
			t.Fatalf("Add %d: first=%v", i, first)
		}
	}
	// While recovering, live publications are held; Activate skips those
	// already covered by history (offset <= after).
	for o := uint64(1); o <= 5; o++ {
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: o, Data: protocol.Data("1")}, "e")
	}
	if !h.Activate(subs[0], []byte("reply"), 3) {
		t.Fatal("Activate failed")
	}
	if f, _ := subs[0].Conn.QueueLen(); f > 3 {
		t.Fatalf("queued %d frames, want at most reply + offsets 4, 5", f)
	}
	if st := h.Stats(); st.Delivered != 2 {
		t.Fatalf("delivered %d, want 2 (offsets 4 and 5)", st.Delivered)
	}
	// A redelivered offset is ignored; a gap disconnects everyone.
	var gaps atomic.Int32
	h2 := hub.New(hub.Options{OnGap: func(*hub.Sub) { gaps.Add(1) }})
	s := &hub.Sub{Conn: peers[1].c, Channel: "g"}
	h2.Add(s)
	h2.Activate(s, nil, 0)
	for _, o := range []uint64{1, 2, 2, 3} {
		h2.Publish("g", &protocol.Publication{Offset: o, Data: protocol.Data("1")}, "e")
	}
	if d := h2.Stats().Delivered; d != 3 {
		t.Fatalf("delivered %d, want 3 (duplicate dropped)", d)
	}
	h2.Publish("g", &protocol.Publication{Offset: 5, Data: protocol.Data("1")}, "e")
	if gaps.Load() != 1 || h2.Stats().Delivered != 3 {
		t.Fatalf("gap: callbacks %d delivered %d", gaps.Load(), h2.Stats().Delivered)
	}
	h2.Publish("g", &protocol.Publication{Offset: 1, Data: protocol.Data("1")}, "new-epoch")
	if gaps.Load() != 2 {
		t.Fatal("epoch change not treated as a gap")
	}
	if last := h.Remove(subs[0]); last {
		t.Fatal("Remove reported last with two left")
	}
	h.Remove(subs[1])
	if last := h.Remove(subs[2]); !last || h.NumChannels() != 0 || h.NumSubscriptions() != 0 {
		t.Fatalf("after removing all: last %v, %d channels", last, h.NumChannels())
	}
	h2.Remove(s)
}

func TestSlowPolicies(t *testing.T) {
	var slow atomic.Int32
	h := hub.New(hub.Options{OnSlow: func(*hub.Sub) { slow.Add(1) }})
	opts := transport.Options{QueueMaxMessages: 4, QueueMaxBytes: 1 << 20}
	peers := newPeers(t, 2, opts, true) // nobody reads: the socket buffers fill, then the queues
	disc := &hub.Sub{Conn: peers[0].c, Channel: "d", Policy: hub.PolicyDisconnect}
	drop := &hub.Sub{Conn: peers[1].c, Channel: "p", Policy: hub.PolicyDrop}
	for _, s := range []*hub.Sub{disc, drop} {
		h.Add(s)
		h.Activate(s, nil, 0)
	}
	big := protocol.Data(`"` + string(make([]byte, 0)) + strings.Repeat("x", 64<<10) + `"`)
	for o := uint64(1); o <= 400; o++ {
		h.Publish("d", &protocol.Publication{Offset: o, Data: big}, "e")
		h.Publish("p", &protocol.Publication{Offset: o, Data: big}, "e")
	}
	if slow.Load() == 0 {
		t.Fatal("disconnect policy never reported the slow subscriber")
	}
	st := h.Stats()
	if st.Dropped == 0 {
		t.Fatal("drop policy dropped nothing")
	}
	for _, p := range peers {
		if f, _ := p.c.QueueLen(); f > 4+1 {
			t.Fatalf("queue grew to %d frames past its bound of 4", f)
		}
	}
}

// BenchmarkFanOut measures one publication to 1,000 subscribers: the frame
// is encoded once, and the per-subscriber path allocates nothing.
func BenchmarkFanOut(b *testing.B) {
	for _, bc := range []struct {
		name    string
		n       int
		deflate bool
	}{{"100", 100, false}, {"1000", 1000, false}, {"1000/deflate", 1000, true}} {
		n := bc.n
		b.Run(bc.name, func(b *testing.B) {
			h := hub.New(hub.Options{})
			peers := newPeersWith(b, "epoll", n, transport.Options{QueueMaxMessages: 1 << 20, QueueMaxBytes: 1 << 30}, false, bc.deflate)
			for _, p := range peers {
				s := &hub.Sub{Conn: p.c, Channel: "c", Compress: bc.deflate}
				h.Add(s)
				h.Activate(s, nil, 0)
			}
			data := `{"text":"hello, world"}`
			if bc.deflate {
				data = `{"symbol":"HRLD","price":101.25,"bid":101.2,"ask":101.3,"volume":12000,"text":"hello, world","tags":["a","b","c"]}`
			}
			pub := &protocol.Publication{Channel: "c", Data: protocol.Data(data)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				pub.Offset = uint64(i + 1)
				h.Publish("c", pub, "e")
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}

func itoa(n int) string {
	s := ""
	for ; n > 0; n /= 10 {
		s = string(rune('0'+n%10)) + s
	}
	return s
}

// TestLiveAfterHistorySeam covers a broker that delivers a publication to
// the node after a subscriber's history read already saw it: the
// subscriber must not get it twice.
func TestLiveAfterHistorySeam(t *testing.T) {
	h := hub.New(hub.Options{})
	peers := newPeers(t, 1, transport.Options{}, true)
	s := &hub.Sub{Conn: peers[0].c, Channel: "c"}
	h.Add(s)
	h.Activate(s, nil, 32) // the reply said offset 32
	h.Publish("c", &protocol.Publication{Offset: 32, Data: protocol.Data("1")}, "e")
	h.Publish("c", &protocol.Publication{Offset: 33, Data: protocol.Data("1")}, "e")
	if d := h.Stats().Delivered; d != 1 {
		t.Fatalf("delivered %d, want 1 (offset 33 only)", d)
	}
	h.Remove(s)
}

// TestCompressedOnce: a publication to subscribers of mixed variants is
// compressed once per codec that has compressing subscribers, and every
// compressing subscriber of a codec gets the very same frame bytes, which
// inflate to the plain frame's payload. Not parallel: it reads the
// process-wide compression counter.
func TestCompressedOnce(t *testing.T) {
	h := hub.New(hub.Options{})
	const n = 12
	zpeers := newPeersWith(t, "epoll", n, transport.Options{}, true, true)
	plain := newPeersWith(t, "goroutine", 2, transport.Options{}, true, false)
	type want struct {
		p     *peer
		codec protocol.Codec
		z     bool
	}
	var subs []*hub.Sub
	var all []want
	add := func(p *peer, c protocol.Codec, compress bool) {
		s := &hub.Sub{Conn: p.c, Codec: uint8(protocol.CodecIndex(c)), Channel: "c", Compress: compress}
		h.Add(s)
		h.Activate(s, nil, 0)
		subs = append(subs, s)
		// A connection without the extension gets plain frames even where
		// the namespace compresses.
		all = append(all, want{p, c, compress && p.c.Deflate()})
	}
	for i, p := range zpeers {
		switch {
		case i < 8:
			add(p, protocol.JSON, true)
		case i < 10:
			add(p, protocol.Msgpack, true)
		default:
			add(p, protocol.JSON, false) // negotiated, namespace does not compress
		}
	}
	add(plain[0], protocol.JSON, true)
	add(plain[1], protocol.Msgpack, false)

	data := protocol.Data(`{"text":"` + strings.Repeat("compress me once ", 40) + `"}`)
	before := transport.Compressions()
	const pubs = 3
	for o := uint64(1); o <= pubs; o++ {
		h.Publish("c", &protocol.Publication{Channel: "c", Offset: o, Data: data}, "e")
	}
	if got := h.Stats().Compressed; got != pubs*2 {
		t.Fatalf("hub compressed %d frames, want %d (one per publication and codec)", got, pubs*2)
	}
	if got := transport.Compressions() - before; got != pubs*2 {
		t.Fatalf("compressor ran %d times, want %d", got, pubs*2)
	}
	if d := h.Stats().Delivered; d != pubs*uint64(len(all)) {
		t.Fatalf("delivered %d, want %d", d, pubs*len(all))
	}
	// Every subscriber reads its frames; those of one variant are equal
	// byte for byte.
	first := map[string][]byte{}
	for _, w := range all {
		for o := 1; o <= pubs; o++ {
			_ = w.p.far.SetReadDeadline(time.Now().Add(5 * time.Second))
			f, err := ws.ReadFrame(w.p.far)
			if err != nil {
				t.Fatal(err)
			}
			if (f.Header.Rsv == 4) != w.z {
				t.Fatalf("%s compress=%v: frame RSV %b", w.codec.Name(), w.z, f.Header.Rsv)
			}
			raw := append(ws.MustCompileFrame(f), nil...)
			key := fmt.Sprintf("%s/%v/%d", w.codec.Name(), w.z, o)
			if prev, ok := first[key]; ok && !bytes.Equal(prev, raw) {
				t.Fatalf("%s: subscribers got different bytes", key)
			}
			first[key] = raw
			payload := f.Payload
			if w.z {
				r := flate.NewReader(io.MultiReader(bytes.NewReader(payload), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
				if payload, err = io.ReadAll(r); err != nil {
					t.Fatal(err)
				}
			}
			wantPayload, _ := w.codec.AppendPublicationPush(nil, &protocol.Publication{Channel: "c", Offset: uint64(o), Data: data})
			if !bytes.Equal(payload, wantPayload) {
				t.Fatalf("%s: payload %q, want %q", key, payload, wantPayload)
			}
		}
	}
	if z := len(first["herald.json/true/1"]); z == 0 || z >= len(first["herald.json/false/1"]) {
		t.Fatalf("compressed frame of %d bytes, plain %d", z, len(first["herald.json/false/1"]))
	}
	for _, s := range subs {
		h.Remove(s)
	}
}

// TestDropMarksWhoLost: two subscriptions of the drop policy on one
// connection. When one overflows and the other's queued frames are
// dropped to make room, only the other's next publication is marked Gap:
// the one that overflowed lost nothing.
func TestDropMarksWhoLost(t *testing.T) {
	for attempt := 1; ; attempt++ {
		if dropMarksWhoLost(t) {
			return
		}
		if attempt == 5 {
			t.Fatal("5 attempts: the queue was always full of frames being written, nothing dropped")
		}
	}
}

func dropMarksWhoLost(t *testing.T) bool {
	var slow atomic.Int32
	h := hub.New(hub.Options{OnSlow: func(*hub.Sub) { slow.Add(1) }})
	opts := transport.Options{QueueMaxMessages: 4, QueueMaxBytes: 1 << 30}
	peers := newPeers(t, 1, opts, true) // nobody reads yet
	a := &hub.Sub{Conn: peers[0].c, Channel: "a", Policy: hub.PolicyDrop}
	b := &hub.Sub{Conn: peers[0].c, Channel: "b", Policy: hub.PolicyDrop}
	for _, s := range []*hub.Sub{a, b} {
		h.Add(s)
		h.Activate(s, nil, 0)
	}
	big := protocol.Data(`"` + strings.Repeat("x", 64<<10) + `"`)
	o := uint64(0)
	for f, _ := peers[0].c.QueueLen(); f < 4 && o < 10000; f, _ = peers[0].c.QueueLen() {
		o++
		h.Publish("b", &protocol.Publication{Channel: "b", Offset: o, Data: big}, "e")
	}
	if h.Stats().Dropped != 0 {
		return false // b overflowed itself meanwhile
	}
	h.Publish("a", &protocol.Publication{Channel: "a", Offset: 1, Data: protocol.Data(`"a1"`)}, "e")
	if slow.Load() != 0 {
		return false // all of b's frames were being written: none dropped
	}
	if h.Stats().Dropped == 0 {
		t.Fatal("a full queue and nothing dropped")
	}
	h.Publish("b", &protocol.Publication{Channel: "b", Offset: o + 1, Data: protocol.Data(`"b"`)}, "e")
	var gotA, gotB bool
	readPubs(t, peers[0], func(p *protocol.Publication) bool {
		switch {
		case p.Channel == "a":
			if p.Gap {
				t.Fatal("a's publication marked Gap: a lost nothing")
			}
			gotA = true
		case p.Channel == "b" && p.Offset == o+1:
			if !p.Gap {
				t.Fatal("b's publication after its frames were dropped is not marked Gap")
			}
			gotB = true
		}
		return !(gotA && gotB)
	})
	h.Remove(a)
	h.Remove(b)
	return true
}
