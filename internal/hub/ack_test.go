package hub_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/heraldhq/herald/internal/hub"
	"github.com/heraldhq/herald/internal/transport"
	"github.com/heraldhq/herald/protocol"
)

// TestAckTracking: an Ack subscription keeps what it was sent until
// acknowledged (cumulatively), redelivers all of it once the oldest is
// overdue, reports each publication past its deadline once, and applies
// its policy past MaxUnacked.
func TestAckTracking(t *testing.T) {
	var slow atomic.Int32
	h := hub.New(hub.Options{OnSlow: func(*hub.Sub) { slow.Add(1) }})
	peers := newPeers(t, 2, transport.Options{}, false)
	s := &hub.Sub{Conn: peers[0].c, Channel: "c", Ack: true}
	h.Add(s)
	if !h.StartAck(s, hub.AckOptions{MaxUnacked: 4}, 10, []*protocol.Publication{{Offset: 9}, {Offset: 11}}, time.Now().UnixNano()) {
		t.Fatal("StartAck of a registered subscription failed")
	}
	h.Activate(s, nil, 11)
	if n, acked := h.Unacked(s); n != 1 || acked != 10 {
		t.Fatalf("after start: %d unacked, acked %d; want 1 (offset 11 only), 10", n, acked)
	}
	for o := uint64(12); o <= 14; o++ {
		h.Publish("c", &protocol.Publication{Offset: o, Data: protocol.Data("1")}, "e")
	}
	if n, _ := h.Unacked(s); n != 4 {
		t.Fatalf("%d unacked, want 4", n)
	}
	// Full: the policy (disconnect) applies.
	h.Publish("c", &protocol.Publication{Offset: 15, Data: protocol.Data("1")}, "e")
	if slow.Load() != 1 || h.Stats().Unacked != 1 {
		t.Fatalf("past MaxUnacked: slow %d, Unacked %d; want 1, 1", slow.Load(), h.Stats().Unacked)
	}
	if acked, ok := h.Ack(s, 12); !ok || acked != 12 {
		t.Fatalf("Ack(12) = %d, %v", acked, ok)
	}
	if acked, _ := h.Ack(s, 100); acked != 14 {
		t.Fatalf("Ack past the last sent = %d, want 14 (the last sent)", acked)
	}
	if acked, _ := h.Ack(s, 3); acked != 14 {
		t.Fatalf("an older Ack moved the position back to %d", acked)
	}
	h.Publish("c", &protocol.Publication{Offset: 16, Data: protocol.Data("1")}, "e")
	h.Publish("c", &protocol.Publication{Offset: 17, Data: protocol.Data("1")}, "e")

	now := time.Now().UnixNano()
	sec := int64(time.Second)
	if late := h.AckCheck(s, now, sec, 10*sec); len(late) != 0 || h.Stats().Redelivered != 0 {
		t.Fatalf("nothing is due yet: late %d, redelivered %d", len(late), h.Stats().Redelivered)
	}
	late := h.AckCheck(s, now+2*sec, sec, 10*sec)
	if len(late) != 0 || h.Stats().Redelivered != 2 {
		t.Fatalf("overdue: late %d, redelivered %d; want 0, 2", len(late), h.Stats().Redelivered)
	}
	late = h.AckCheck(s, now+11*sec, sec, 10*sec)
	if len(late) != 2 || late[0].Offset != 16 || late[1].Offset != 17 {
		t.Fatalf("past the deadline: %v", late)
	}
	h.Publish("c", &protocol.Publication{Offset: 18, Data: protocol.Data("1")}, "e")
	// Offset 18, sent later, is reported on its own.
	late = h.AckCheck(s, time.Now().UnixNano()+11*sec, sec, 10*sec)
	if len(late) != 1 || late[0].Offset != 18 {
		t.Fatalf("past the deadline, after 16 and 17 were reported: %v", late)
	}
	if late = h.AckCheck(s, now+20*sec, sec, 10*sec); len(late) != 0 {
		t.Fatalf("reported again: %v", late)
	}
	h.Ack(s, 18)
	if n, _ := h.Unacked(s); n != 0 {
		t.Fatalf("%d unacked after acknowledging all", n)
	}
	// A subscription without Ack is not tracked.
	plain := &hub.Sub{Conn: peers[1].c, Channel: "c"}
	h.Add(plain)
	h.Activate(plain, nil, 18)
	h.Publish("c", &protocol.Publication{Offset: 19, Data: protocol.Data("1")}, "e")
	if _, ok := h.Ack(plain, 19); ok {
		t.Fatal("Ack of a subscription without Ack")
	}
	h.Remove(s)
	h.Remove(plain)
	if late := h.AckCheck(s, now+40*sec, sec, 10*sec); late != nil {
		t.Fatal("AckCheck of a removed subscription")
	}
}

// BenchmarkAckFanOut is BenchmarkFanOut's 1,000 subscribers with
// acknowledgements: each subscriber acknowledges every 16 publications,
// as a batching client does, and the cost of the Ack calls is included.
func BenchmarkAckFanOut(b *testing.B) {
	for _, ack := range []bool{false, true} {
		name := "plain"
		if ack {
			name = "ack"
		}
		b.Run(name, func(b *testing.B) {
			const n = 1000
			h := hub.New(hub.Options{})
			peers := newPeersWith(b, "epoll", n, transport.Options{QueueMaxMessages: 1 << 20, QueueMaxBytes: 1 << 30}, false, false)
			subs := make([]*hub.Sub, n)
			for i, p := range peers {
				s := &hub.Sub{Conn: p.c, Channel: "c", Ack: ack}
				h.Add(s)
				if ack {
					h.StartAck(s, hub.AckOptions{MaxUnacked: 1000}, 0, nil, 0)
				}
				h.Activate(s, nil, 0)
				subs[i] = s
			}
			pub := &protocol.Publication{Channel: "c", Data: protocol.Data(`{"text":"hello, world"}`)}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				p := *pub
				p.Offset = uint64(i + 1)
				h.Publish("c", &p, "e")
				if ack && p.Offset%16 == 0 {
					for _, s := range subs {
						h.Ack(s, p.Offset)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*n), "ns/delivery")
		})
	}
}
