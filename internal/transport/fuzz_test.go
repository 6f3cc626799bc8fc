package transport

import (
	"bytes"
	"net"
	"runtime"
	"testing"

	"github.com/gobwas/ws"
	"github.com/klauspost/compress/flate"
)

// stubEngine serves nothing: the frame reader runs without sockets.
type stubEngine struct{}

func (stubEngine) scheduleFlush(*Conn)        {}
func (stubEngine) detach(*Conn)               {}
func (stubEngine) expedite(*Conn)             {}
func (stubEngine) writeNow(*Conn, []byte) int { return 0 }

type countHandler struct {
	msgs, max int
	t         *testing.T
}

func (h *countHandler) OnMessage(c *Conn, msg []byte, binary bool) {
	h.msgs++
	if len(msg) > h.max {
		h.t.Fatalf("delivered %d bytes, limit %d", len(msg), h.max)
	}
}
func (h *countHandler) OnClose(*Conn, ws.StatusCode, error) {}

// FuzzFrameReader feeds arbitrary bytes, split at an arbitrary point, to the
// frame reader, with permessage-deflate negotiated on odd splits: it must
// never panic, never deliver more than the limit (inflated messages
// included), and never hold more than one frame's worth of pending input.
func FuzzFrameReader(f *testing.F) {
	mask := func(b []byte) []byte { // a valid masked text frame
		out := []byte{0x81, 0x80 | byte(len(b)), 1, 2, 3, 4}
		p := append([]byte(nil), b...)
		ws.Cipher(p, [4]byte{1, 2, 3, 4}, 0)
		return append(out, p...)
	}
	f.Add(mask([]byte("hello")), 3)
	f.Add(append(mask([]byte("a")), 0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8), 7)
	f.Add([]byte{0x02, 0x85, 1, 2, 3, 4, 'a', 'b', 'c', 'd', 'e', 0x80, 0x81, 0, 0, 0, 0, 'z'}, 5)
	f.Add([]byte{0x82, 0xff, 0x40, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4}, 9)
	// A compressed text frame ("hello" deflated), negotiated (odd split).
	z := []byte{0xc1, 0x87, 0, 0, 0, 0, 0xca, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00}
	f.Add(z, 1)
	f.Add(append(z, z...), 13)
	f.Fuzz(func(t *testing.T, data []byte, split int) {
		const max = 256
		near, far := net.Pipe()
		defer near.Close()
		defer far.Close()
		h := &countHandler{max: max, t: t}
		c := NewConn(near, &Options{MaxMessageSize: max}, h)
		c.eng = stubEngine{}
		c.deflate = split%2 != 0 // odd splits: permessage-deflate negotiated
		if split < 0 {
			split = -split
		}
		if len(data) > 0 {
			split %= len(data) + 1
		} else {
			split = 0
		}
		for _, part := range [][]byte{data[:split], data[split:]} {
			if err := c.feed(append([]byte(nil), part...)); err != nil {
				return
			}
			if c.rd != nil && (len(c.rd.pending) > max+14 || len(c.rd.frag) > max) {
				t.Fatalf("reader holds %d pending and %d fragment bytes", len(c.rd.pending), len(c.rd.frag))
			}
		}
	})
}

// FuzzInflate runs arbitrary bytes through the permessage-deflate
// inflater: it must never panic and never return more than the limit.
func FuzzInflate(f *testing.F) {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestSpeed)
	_, _ = w.Write(bytes.Repeat([]byte("herald "), 100))
	_ = w.Flush()
	f.Add(b.Bytes()[:b.Len()-4], 1024)
	f.Add(b.Bytes(), 100)
	f.Add([]byte{0xff, 0xff}, 10)
	f.Add([]byte{}, 0)
	f.Add([]byte{0x01, 0x00, 0x00, 0xff, 0xff}, 1)
	f.Fuzz(func(t *testing.T, data []byte, limit int) {
		limit = 1 + abs(limit)%(64<<10)
		inf, out, err := inflate(data, limit)
		if err != nil {
			if err != errInflateTooBig && err != errInflateCorrupt {
				t.Fatalf("unexpected error %v", err)
			}
			return
		}
		if len(out) > limit {
			t.Fatalf("inflated %d bytes, limit %d", len(out), limit)
		}
		inf.release()
	})
}

func abs(x int) int {
	if x < 0 {
		return -x
	}
	return x
}

// TestInflateBombBounded: a message that inflates to 64 MiB is refused
// after at most the limit's worth of output, not allocated in full.
func TestInflateBombBounded(t *testing.T) {
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(make([]byte, 64<<20))
	_ = w.Flush()
	bomb := b.Bytes()[:b.Len()-4]
	const limit = 64 << 10
	inflate(bomb[:100], limit) // warm the pool's reader
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, _, err := inflate(bomb, limit)
	runtime.ReadMemStats(&after)
	if err != errInflateTooBig {
		t.Fatalf("bomb of %d bytes: err %v, want errInflateTooBig", len(bomb), err)
	}
	if n := after.TotalAlloc - before.TotalAlloc; n > 4*limit {
		t.Fatalf("refusing the bomb allocated %d bytes, limit %d", n, limit)
	}
}
