package transport_test

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"go.uber.org/goleak"

	"github.com/heraldhq/herald/internal/transport"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var engines = []string{"goroutine", "epoll"}

// server is an echo server on a real loopback socket.
type server struct {
	*httptest.Server
	eng      transport.Engine
	handlers sync.WaitGroup
	mu       sync.Mutex
	conns    []*transport.Conn
	closes   []ws.StatusCode
	// The largest outbound queue seen after a message was handled, when
	// the queue can only have grown.
	maxQueueFrames, maxQueueBytes int
}

type recordingEcho struct {
	transport.EchoHandler
	s *server
}

func (h recordingEcho) OnMessage(c *transport.Conn, msg []byte, binary bool) {
	h.EchoHandler.OnMessage(c, msg, binary)
	frames, bytes := c.QueueLen()
	h.s.mu.Lock()
	h.s.maxQueueFrames = max(h.s.maxQueueFrames, frames)
	h.s.maxQueueBytes = max(h.s.maxQueueBytes, bytes)
	h.s.mu.Unlock()
}

func (h recordingEcho) OnClose(c *transport.Conn, code ws.StatusCode, err error) {
	h.s.mu.Lock()
	h.s.closes = append(h.s.closes, code)
	h.s.mu.Unlock()
}

func newServer(t *testing.T, engine string, opts transport.Options) *server {
	t.Helper()
	return newServerUp(t, engine, opts, &transport.Upgrader{Subprotocols: []string{"herald.json"}})
}

func newServerUp(t *testing.T, engine string, opts transport.Options, up *transport.Upgrader) *server {
	t.Helper()
	eng, err := transport.NewEngine(engine)
	if err != nil {
		t.Fatal(err)
	}
	s := &server{eng: eng}
	s.Server = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.handlers.Add(1)
		defer s.handlers.Done()
		nc, in, _, deflate, err := up.UpgradeDeflate(w, r)
		if err != nil {
			return
		}
		c := transport.NewConn(nc, &opts, recordingEcho{s: s})
		if deflate {
			c.SetDeflate()
		}
		s.mu.Lock()
		s.conns = append(s.conns, c)
		s.mu.Unlock()
		if err := eng.Serve(c, in); err != nil {
			nc.Close()
		}
	}))
	s.Start()
	t.Cleanup(func() {
		s.Server.Close()
		s.handlers.Wait()
		s.mu.Lock()
		conns := s.conns
		s.mu.Unlock()
		for _, c := range conns {
			c.Abort(nil)
		}
		if err := eng.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func dial(t *testing.T, s *server) net.Conn {
	t.Helper()
	url := "ws" + strings.TrimPrefix(s.URL, "http")
	nc, br, _, err := ws.Dial(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if br != nil {
		t.Fatal("unexpected buffered bytes after handshake")
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// rawFrame builds a client frame by hand: masked unless unmasked is set.
func rawFrame(fin bool, rsv byte, op ws.OpCode, payload []byte, unmasked bool) []byte {
	var b []byte
	b0 := rsv<<4 | byte(op)
	if fin {
		b0 |= 0x80
	}
	b = append(b, b0)
	mask := byte(0x80)
	if unmasked {
		mask = 0
	}
	switch n := len(payload); {
	case n < 126:
		b = append(b, mask|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, mask|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, mask|127), uint64(n))
	}
	if unmasked {
		return append(b, payload...)
	}
	key := [4]byte{1, 2, 3, 4}
	b = append(b, key[:]...)
	p := bytes.Clone(payload)
	ws.Cipher(p, key, 0)
	return append(b, p...)
}

// readClose reads frames until a close frame and returns its code; it fails
// if the connection ends without one.
func readClose(t *testing.T, nc net.Conn) ws.StatusCode {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := ws.ReadFrame(nc)
		if err != nil {
			t.Fatalf("reading for close frame: %v", err)
		}
		if f.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(f.Payload)
			return code
		}
	}
}

func TestEcho(t *testing.T) {
	t.Parallel()
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, e, transport.Options{})
			nc := dial(t, s)
			for i, size := range []int{0, 1, 125, 126, 65535, 65536 - 100} {
				msg := bytes.Repeat([]byte{byte('a' + i)}, size)
				if err := wsutil.WriteClientText(nc, msg); err != nil {
					t.Fatal(err)
				}
				got, op, err := wsutil.ReadServerData(nc)
				if err != nil {
					t.Fatal(err)
				}
				if op != ws.OpText || !bytes.Equal(got, msg) {
					t.Fatalf("size %d: echo differs (op %v, %d bytes)", size, op, len(got))
				}
			}
			// Binary, fragmented, with a ping between the fragments.
			var buf bytes.Buffer
			buf.Write(rawFrame(false, 0, ws.OpBinary, []byte{1, 2}, false))
			buf.Write(rawFrame(true, 0, ws.OpPing, []byte("p"), false))
			buf.Write(rawFrame(false, 0, ws.OpContinuation, []byte{3}, false))
			buf.Write(rawFrame(true, 0, ws.OpContinuation, []byte{4, 5}, false))
			// Sent one byte at a time to exercise partial frames.
			for _, b := range buf.Bytes() {
				if _, err := nc.Write([]byte{b}); err != nil {
					t.Fatal(err)
				}
			}
			f, err := ws.ReadFrame(nc)
			if err != nil || f.Header.OpCode != ws.OpPong || string(f.Payload) != "p" {
				t.Fatalf("pong: %+v %v", f.Header, err)
			}
			f, err = ws.ReadFrame(nc)
			if err != nil || f.Header.OpCode != ws.OpBinary || !bytes.Equal(f.Payload, []byte{1, 2, 3, 4, 5}) {
				t.Fatalf("reassembled: %+v %q %v", f.Header, f.Payload, err)
			}
			// Close handshake: the server echoes the code and closes.
			if _, err := nc.Write(rawFrame(true, 0, ws.OpClose, ws.NewCloseFrameBody(ws.StatusNormalClosure, "bye"), false)); err != nil {
				t.Fatal(err)
			}
			if code := readClose(t, nc); code != ws.StatusNormalClosure {
				t.Fatalf("close code %d", code)
			}
			if _, err := nc.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
				t.Fatalf("socket not closed after the handshake: %v", err)
			}
		})
	}
}

func TestProtocolViolations(t *testing.T) {
	t.Parallel()
	big := make([]byte, 2000)
	len62 := []byte{0x82, 0x80 | 127}
	len62 = binary.BigEndian.AppendUint64(len62, 1<<62)
	len62 = append(len62, 1, 2, 3, 4)
	cases := []struct {
		name  string
		frame []byte
		code  ws.StatusCode
	}{
		{"unmasked client frame", rawFrame(true, 0, ws.OpText, []byte("hi"), true), ws.StatusProtocolError},
		{"reserved opcode 3", rawFrame(true, 0, 3, nil, false), ws.StatusProtocolError},
		{"reserved control opcode 11", rawFrame(true, 0, 11, nil, false), ws.StatusProtocolError},
		{"RSV1 without extension", rawFrame(true, 4, ws.OpText, []byte("x"), false), ws.StatusProtocolError},
		{"RSV3", rawFrame(true, 1, ws.OpBinary, []byte("x"), false), ws.StatusProtocolError},
		{"fragmented ping", rawFrame(false, 0, ws.OpPing, []byte("x"), false), ws.StatusProtocolError},
		{"ping payload 126 bytes", rawFrame(true, 0, ws.OpPing, big[:126], false), ws.StatusProtocolError},
		{"continuation without start", rawFrame(true, 0, ws.OpContinuation, []byte("x"), false), ws.StatusProtocolError},
		{"new message inside a fragmented one", append(rawFrame(false, 0, ws.OpText, []byte("a"), false), rawFrame(true, 0, ws.OpText, []byte("b"), false)...), ws.StatusProtocolError},
		{"invalid UTF-8 text", rawFrame(true, 0, ws.OpText, []byte{0xce, 0xba, 0xe1, 0xbd, 0xb9, 0xcf, 0x83, 0xce, 0xbc, 0xce, 0xb5, 0xed, 0xa0, 0x80}, false), ws.StatusInvalidFramePayloadData},
		{"invalid UTF-8 across fragments", append(rawFrame(false, 0, ws.OpText, []byte{0xce}, false), rawFrame(true, 0, ws.OpContinuation, []byte{0x20}, false)...), ws.StatusInvalidFramePayloadData},
		{"length 2^62", len62, ws.StatusMessageTooBig},
		{"message over the limit", rawFrame(true, 0, ws.OpBinary, big[:1025], false), ws.StatusMessageTooBig},
		{"fragments over the limit", append(rawFrame(false, 0, ws.OpBinary, big[:600], false), rawFrame(true, 0, ws.OpContinuation, big[:600], false)...), ws.StatusMessageTooBig},
		{"close payload of 1 byte", rawFrame(true, 0, ws.OpClose, []byte{3}, false), ws.StatusProtocolError},
		{"close code 1005 on the wire", rawFrame(true, 0, ws.OpClose, []byte{0x03, 0xed}, false), ws.StatusProtocolError},
		{"close reason invalid UTF-8", rawFrame(true, 0, ws.OpClose, []byte{0x03, 0xe8, 0xff}, false), ws.StatusProtocolError},
	}
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, e, transport.Options{MaxMessageSize: 1024})
			bystander := dial(t, s)
			for _, c := range cases {
				nc := dial(t, s)
				if _, err := nc.Write(c.frame); err != nil {
					t.Fatal(err)
				}
				if code := readClose(t, nc); code != c.code {
					t.Errorf("%s: close code %d, want %d", c.name, code, c.code)
				}
				// The server closes the socket after a failure.
				_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
				if _, err := io.Copy(io.Discard, nc); err != nil {
					t.Errorf("%s: socket not closed cleanly: %v", c.name, err)
				}
				// Everyone else is unaffected.
				msg := []byte(fmt.Sprintf("still here after %s", c.name))
				if err := wsutil.WriteClientText(bystander, msg); err != nil {
					t.Fatal(err)
				}
				got, err := wsutil.ReadServerText(bystander)
				if err != nil || !bytes.Equal(got, msg) {
					t.Fatalf("bystander after %s: %q %v", c.name, got, err)
				}
			}
		})
	}
}

func TestHandshakeBufferedFrames(t *testing.T) {
	t.Parallel()
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, e, transport.Options{})
			nc, err := net.Dial("tcp", s.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer nc.Close()
			// Handshake and a first frame in one write.
			req := "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
				"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n" +
				"Sec-WebSocket-Protocol: other, herald.json\r\n\r\n"
			if _, err := nc.Write(append([]byte(req), rawFrame(true, 0, ws.OpText, []byte("early"), false)...)); err != nil {
				t.Fatal(err)
			}
			br := bufio.NewReader(nc)
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Protocol") != "herald.json" {
				t.Fatalf("handshake: %d %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Protocol"))
			}
			f, err := ws.ReadFrame(br)
			if err != nil || string(f.Payload) != "early" {
				t.Fatalf("early frame echo: %q %v", f.Payload, err)
			}
		})
	}
}

// TestSlowReaderBounded checks that a peer that never reads cannot grow the
// queue past its bound: Enqueue refuses, and the echo handler closes. The
// queue is sampled after every echo (the only time it grows besides the
// close frame): it must have neared its bound and never passed it by more
// than the close frame.
func TestSlowReaderBounded(t *testing.T) {
	t.Parallel()
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			opts := transport.Options{QueueMaxBytes: 64 << 10, QueueMaxMessages: 64}
			s := newServer(t, e, opts)
			nc := dial(t, s)
			msg := bytes.Repeat([]byte("x"), 16<<10)
			frame := rawFrame(true, 0, ws.OpBinary, msg, false)
			// Write until the server gives up on us; never read.
			done := make(chan error, 1)
			go func() {
				for i := 0; i < 10000; i++ {
					_ = nc.SetWriteDeadline(time.Now().Add(10 * time.Second))
					if _, err := nc.Write(frame); err != nil {
						done <- err
						return
					}
				}
				done <- errors.New("server never closed a reader that does not read")
			}()
			waitFor(t, 20*time.Second, "the server to close the slow reader", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return len(s.closes) > 0
			})
			nc.Close()
			<-done
			s.mu.Lock()
			frames, held := s.maxQueueFrames, s.maxQueueBytes
			s.mu.Unlock()
			echo := len(transport.MessageFrame(true, msg))
			t.Logf("the queue peaked at %d frames, %d bytes", frames, held)
			const closeFrameMax = 2 + 125 // header and the largest control payload
			if held > opts.QueueMaxBytes+closeFrameMax || frames > opts.QueueMaxMessages+1 {
				t.Fatalf("the queue held %d frames, %d bytes; bound %d frames, %d bytes (and a close frame)",
					frames, held, opts.QueueMaxMessages, opts.QueueMaxBytes)
			}
			// It was closed for being full: the frame it refused did not
			// fit, so the queue held more than the bound less one frame
			// (less one more, partly written, that QueueLen leaves out).
			if held <= opts.QueueMaxBytes-2*echo {
				t.Fatalf("the queue held at most %d bytes before the close; bound %d, frames of %d", held, opts.QueueMaxBytes, echo)
			}
		})
	}
}

// A small frame on an idle connection goes out at once (the epoll engine
// writes it without queueing it), and frames enqueued around it keep their
// order on both engines.
func TestEnqueueSmall(t *testing.T) {
	t.Parallel()
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			s := newServer(t, e, transport.Options{})
			nc := dial(t, s)
			// An echo first: the connection is being served by then.
			if err := wsutil.WriteClientText(nc, []byte("hi")); err != nil {
				t.Fatal(err)
			}
			if _, _, err := wsutil.ReadServerData(nc); err != nil {
				t.Fatal(err)
			}
			var c *transport.Conn
			waitFor(t, 5*time.Second, "the server's connection", func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				if len(s.conns) == 1 {
					c = s.conns[0]
				}
				return c != nil
			})
			ping := ws.MustCompileFrame(ws.NewPingFrame(nil))
			if err := c.EnqueueSmall(ping); err != nil {
				t.Fatal(err)
			}
			if frames, _ := c.QueueLen(); e == "epoll" && frames != 0 {
				t.Fatalf("epoll: the idle connection's ping was queued (%d frames)", frames)
			}
			want := []ws.OpCode{ws.OpPing}
			for i := range 20 {
				if err := c.Enqueue(transport.MessageFrame(false, []byte(fmt.Sprint(i))), nil); err != nil {
					t.Fatal(err)
				}
				want = append(want, ws.OpText)
				if i%5 == 0 {
					if err := c.EnqueueSmall(ping); err != nil {
						t.Fatal(err)
					}
					want = append(want, ws.OpPing)
				}
			}
			_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
			text := 0
			for i, op := range want {
				f, err := ws.ReadFrame(nc)
				if err != nil {
					t.Fatalf("frame %d: %v", i, err)
				}
				if f.Header.OpCode != op {
					t.Fatalf("frame %d: opcode %v, want %v", i, f.Header.OpCode, op)
				}
				if op == ws.OpText {
					if got := string(f.Payload); got != fmt.Sprint(text) {
						t.Fatalf("text frame %d carries %q", text, got)
					}
					text++
				}
			}
		})
	}
}
