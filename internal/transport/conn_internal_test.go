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
		c := NewConn(nil, &Options{}, &countHandler{})
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

// TestStreamClose: an HTTP stream's Close keeps the response head even
// when it discards, ends the body with the last chunk, and does not wait
// for the peer; input on a stream closes it.
func TestStreamClose(t *testing.T) {
	head, pub, push := []byte("HTTP/1.1 200 OK\r\n\r\n"), FramingStream.Frame(false, []byte(`{"pub":{}}`)), []byte("bye")
	c := NewStreamConn(nil, FramingStream, &Options{}, &countHandler{})
	c.eng = stubEngine{}
	if err := c.EnqueueHead(head); err != nil {
		t.Fatal(err)
	}
	if err := c.Enqueue(pub, "pub"); err != nil {
		t.Fatal(err)
	}
	c.Close(4000, "bye", push, true)
	got := c.takeBatch(nil, iovMax)
	want := [][]byte{head, push, lastChunk}
	if len(got) != len(want) {
		t.Fatalf("queued %q, want %q", got, want)
	}
	for i := range want {
		if !bytes.Equal(got[i], want[i]) {
			t.Fatalf("frame %d is %q, want %q", i, got[i], want[i])
		}
	}
	n := 0
	for _, b := range got {
		n += len(b)
	}
	if _, shut := c.commit(n, false); !shut {
		t.Error("the stream is not shut once its last chunk is written")
	}
	c.shutdown(nil)

	c = NewStreamConn(nil, FramingSSE, &Options{}, &countHandler{})
	c.eng = stubEngine{}
	if err := c.feed([]byte("GET / HTTP/1.1\r\n")); err == nil || !c.Closed() {
		t.Errorf("input on a stream: err %v, closed %v", err, c.Closed())
	}
}

func TestFrames(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(FramingStream.Frame(false, []byte(`{"a":1}`))), "8\r\n{\"a\":1}\n\r\n"},
		{string(FramingSSE.Frame(false, []byte(`{"a":1}`))), "f\r\ndata: {\"a\":1}\n\n\r\n"},
		{string(SSEEvent(nil, "e:1", []byte(`{}`))), "12\r\nid: e:1\ndata: {}\n\n\r\n"},
		{string(SSEEventRetry(nil, 1500, []byte(`{}`))), "16\r\nretry: 1500\ndata: {}\n\n\r\n"},
	} {
		if tc.got != tc.want {
			t.Errorf("got %q, want %q", tc.got, tc.want)
		}
	}
}
