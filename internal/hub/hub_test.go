package hub_test

import (
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/gobwas/ws"
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
		p.c = transport.NewConn(near, "", &opts, nopHandler{})
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
		subs[i] = &hub.Sub{Conn: p.c, Codec: protocol.JSON, Channel: "c"}
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
	h2 := hub.New(hub.Options{OnGap: func(any) { gaps.Add(1) }})
	s := &hub.Sub{Conn: peers[1].c, Codec: protocol.JSON, Channel: "g", Owner: 1}
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
	h := hub.New(hub.Options{OnSlow: func(any) { slow.Add(1) }})
	opts := transport.Options{QueueMaxMessages: 4, QueueMaxBytes: 1 << 20}
	peers := newPeers(t, 2, opts, true) // nobody reads: the socket buffers fill, then the queues
	disc := &hub.Sub{Conn: peers[0].c, Codec: protocol.JSON, Channel: "d", Policy: hub.PolicyDisconnect}
	drop := &hub.Sub{Conn: peers[1].c, Codec: protocol.JSON, Channel: "p", Policy: hub.PolicyDrop}
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
	for _, n := range []int{100, 1000} {
		b.Run(itoa(n), func(b *testing.B) {
			h := hub.New(hub.Options{})
			peers := newPeersOn(b, "epoll", n, transport.Options{QueueMaxMessages: 1 << 20, QueueMaxBytes: 1 << 30}, false)
			for _, p := range peers {
				s := &hub.Sub{Conn: p.c, Codec: protocol.JSON, Channel: "c"}
				h.Add(s)
				h.Activate(s, nil, 0)
			}
			pub := &protocol.Publication{Channel: "c", Data: protocol.Data(`{"text":"hello, world"}`)}
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
	s := &hub.Sub{Conn: peers[0].c, Codec: protocol.JSON, Channel: "c"}
	h.Add(s)
	h.Activate(s, nil, 32) // the reply said offset 32
	h.Publish("c", &protocol.Publication{Offset: 32, Data: protocol.Data("1")}, "e")
	h.Publish("c", &protocol.Publication{Offset: 33, Data: protocol.Data("1")}, "e")
	if d := h.Stats().Delivered; d != 1 {
		t.Fatalf("delivered %d, want 1 (offset 33 only)", d)
	}
	h.Remove(s)
}
