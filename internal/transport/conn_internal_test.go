package transport

import (
	"bytes"
	"testing"
)

// TestDiscardKeepsFramesInFlight: frames the writer took for a write in
// progress stay queued through Close with discard and through DropQueued,
// so the bytes that write commits are those frames'. Removing them made
// the commit count the disconnect push and the close frame queued
// meanwhile as written: they never went out, and the peer saw the socket
// close without a close frame once the close timeout passed.
func TestDiscardKeepsFramesInFlight(t *testing.T) {
	a, b, push := []byte("frame-a"), []byte("frame-b"), []byte("disconnect push")
	for _, how := range []string{"close", "drop"} {
		c := NewConn(nil, "", &Options{}, &countHandler{})
		c.eng = stubEngine{}
		if err := c.Enqueue(a, "a"); err != nil {
			t.Fatal(err)
		}
		if err := c.Enqueue(b, "b"); err != nil {
			t.Fatal(err)
		}
		if iov := c.takeBatch(nil, iovMax); len(iov) != 2 {
			t.Fatalf("%s: the writer took %d frames, want 2", how, len(iov))
		}
		// While the writer writes a and b, the connection is closed or
		// its queued publications dropped.
		var want [][]byte
		switch how {
		case "close":
			c.Close(4000, "bye", push, true)
			want = [][]byte{push, closeFrame(4000, "bye")}
		case "drop":
			if dropped := c.DropQueued(func(any) bool { return true }); len(dropped) != 0 {
				t.Errorf("drop: dropped %v, which are being written", dropped)
			}
		}
		c.commit(len(a)+len(b), false)
		rest := c.takeBatch(nil, iovMax)
		if len(rest) != len(want) {
			t.Fatalf("%s: after the write %d frames are left, want %d", how, len(rest), len(want))
		}
		for i := range want {
			if !bytes.Equal(rest[i], want[i]) {
				t.Errorf("%s: frame %d left is %q, want %q", how, i, rest[i], want[i])
			}
		}
		c.shutdown(nil)
	}
}
