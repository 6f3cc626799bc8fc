package transport_test

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	"github.com/klauspost/compress/flate"

	"github.com/heraldhq/herald/internal/transport"
)

// handshakeExt sends a raw upgrade request with the given
// Sec-WebSocket-Extensions value ("" for none) and returns the response
// status and its Sec-WebSocket-Extensions header.
func handshakeExt(t *testing.T, addr, ext string) (int, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET /ws HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.json\r\n"
	if ext != "" {
		req += "Sec-WebSocket-Extensions: " + ext + "\r\n"
	}
	_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(nc, req+"\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(nc), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode, strings.Join(resp.Header.Values("Sec-WebSocket-Extensions"), ", ")
}

// deflateOffers is the negotiation conformance table (RFC 7692 section 7):
// the offer, and the parameters of the accepted response ("-" for an
// answer without the extension). Declining is answering without the
// extension: the handshake itself always succeeds.
var deflateOffers = []struct {
	name, offer, want string
}{
	{"no offer", "", "-"},
	{"other extension only", "x-webkit-deflate-frame", "-"},
	{"bare offer", "permessage-deflate", "server_no_context_takeover client_no_context_takeover"},
	{"server_no_context_takeover", "permessage-deflate; server_no_context_takeover", "server_no_context_takeover client_no_context_takeover"},
	{"client_no_context_takeover", "permessage-deflate; client_no_context_takeover", "server_no_context_takeover client_no_context_takeover"},
	{"both no_context_takeover", "permessage-deflate; server_no_context_takeover; client_no_context_takeover", "server_no_context_takeover client_no_context_takeover"},
	{"client_max_window_bits without value", "permessage-deflate; client_max_window_bits", "server_no_context_takeover client_no_context_takeover"},
	{"client_max_window_bits=10", "permessage-deflate; client_max_window_bits=10", "server_no_context_takeover client_no_context_takeover"},
	{"client_max_window_bits=16 invalid", "permessage-deflate; client_max_window_bits=16", "-"},
	{"client_max_window_bits=7 invalid", "permessage-deflate; client_max_window_bits=7", "-"},
	{"server_max_window_bits=15", "permessage-deflate; server_max_window_bits=15", "server_no_context_takeover client_no_context_takeover server_max_window_bits=15"},
	{"server_max_window_bits=10 unsupported", "permessage-deflate; server_max_window_bits=10", "-"},
	{"server_max_window_bits=8 unsupported", "permessage-deflate; server_max_window_bits=8", "-"},
	{"server_max_window_bits without value", "permessage-deflate; server_max_window_bits", "-"},
	{"server_max_window_bits=16 invalid", "permessage-deflate; server_max_window_bits=16", "-"},
	{"unknown parameter", "permessage-deflate; foo", "-"},
	{"unknown parameter with value", "permessage-deflate; foo=1", "-"},
	{"no_context_takeover with a value", "permessage-deflate; client_no_context_takeover=1", "-"},
	{"duplicate server_no_context_takeover", "permessage-deflate; server_no_context_takeover; server_no_context_takeover", "-"},
	{"duplicate client_max_window_bits", "permessage-deflate; client_max_window_bits; client_max_window_bits", "-"},
	{"duplicate client_max_window_bits with values", "permessage-deflate; client_max_window_bits=10; client_max_window_bits=11", "-"},
	{"duplicate server_max_window_bits", "permessage-deflate; server_max_window_bits=15; server_max_window_bits=15", "-"},
	{"declined offer then a good one", "permessage-deflate; server_max_window_bits=10, permessage-deflate; client_max_window_bits", "server_no_context_takeover client_no_context_takeover"},
	{"unknown parameter then a good one", "permessage-deflate; foo, permessage-deflate", "server_no_context_takeover client_no_context_takeover"},
	{"two good offers: the first wins", "permessage-deflate; server_max_window_bits=15, permessage-deflate", "server_no_context_takeover client_no_context_takeover server_max_window_bits=15"},
}

// extParams returns the accepted permessage-deflate response's
// parameters as "k k=v ..." in order, "-" for none, or an error for a
// response that is not one permessage-deflate option.
func extParams(h string) (string, error) {
	if h == "" {
		return "-", nil
	}
	opts, ok := httphead.ParseOptions([]byte(h), nil)
	if !ok || len(opts) != 1 || string(opts[0].Name) != wsflate.ExtensionName {
		return "", fmt.Errorf("response extensions %q", h)
	}
	var ps []string
	opts[0].Parameters.ForEach(func(k, v []byte) bool {
		if len(v) > 0 {
			ps = append(ps, string(k)+"="+string(v))
		} else {
			ps = append(ps, string(k))
		}
		return true
	})
	return strings.Join(ps, " "), nil
}

func TestDeflateNegotiation(t *testing.T) {
	t.Parallel()
	on := newServerUp(t, "goroutine", transport.Options{}, &transport.Upgrader{Subprotocols: []string{"herald.json"}, Compression: true})
	off := newServer(t, "goroutine", transport.Options{})
	for _, c := range deflateOffers {
		status, h := handshakeExt(t, on.Listener.Addr().String(), c.offer)
		if status != http.StatusSwitchingProtocols {
			t.Errorf("%s: status %d, want 101", c.name, status)
			continue
		}
		got, err := extParams(h)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if got != c.want {
			t.Errorf("%s: offer %q answered %q, want %q", c.name, c.offer, got, c.want)
		}
		// With compression off every offer is declined.
		if status, h := handshakeExt(t, off.Listener.Addr().String(), c.offer); status != http.StatusSwitchingProtocols || h != "" {
			t.Errorf("%s, compression off: status %d, extensions %q", c.name, status, h)
		}
	}
}

// deflateMsg compresses p as one permessage-deflate message (sync flush,
// the last four octets removed).
func deflateMsg(t testing.TB, p []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	if _, err := w.Write(p); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	z := b.Bytes()
	if !bytes.HasSuffix(z, []byte{0, 0, 0xff, 0xff}) {
		t.Fatalf("no sync marker at the end of %x", z)
	}
	return z[:len(z)-4]
}

// inflateMsg is the client's side of deflateMsg.
func inflateMsg(t testing.TB, z []byte) []byte {
	t.Helper()
	r := flate.NewReader(io.MultiReader(bytes.NewReader(z), bytes.NewReader([]byte{0, 0, 0xff, 0xff, 1, 0, 0, 0xff, 0xff})))
	out, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("inflating %d bytes: %v", len(z), err)
	}
	return out
}

// dialDeflate dials s offering permessage-deflate and checks it was
// accepted.
func dialDeflate(t *testing.T, s *server) net.Conn {
	t.Helper()
	url := "ws" + strings.TrimPrefix(s.URL, "http")
	d := ws.Dialer{Extensions: []httphead.Option{wsflate.DefaultParameters.Option()}}
	nc, br, hs, err := d.Dial(t.Context(), url)
	if err != nil {
		t.Fatal(err)
	}
	if br != nil {
		t.Fatal("unexpected buffered bytes after handshake")
	}
	if len(hs.Extensions) != 1 || string(hs.Extensions[0].Name) != wsflate.ExtensionName {
		t.Fatalf("permessage-deflate not accepted: %v", hs.Extensions)
	}
	t.Cleanup(func() { nc.Close() })
	return nc
}

// readMessage reads one data frame and returns its payload, inflated if
// RSV1 is set, and whether it was.
func readMessage(t *testing.T, nc net.Conn) ([]byte, bool) {
	t.Helper()
	_ = nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	f, err := ws.ReadFrame(nc)
	for err == nil && f.Header.OpCode == ws.OpPong {
		f, err = ws.ReadFrame(nc)
	}
	if err != nil {
		t.Fatal(err)
	}
	if !f.Header.Fin || (f.Header.OpCode != ws.OpText && f.Header.OpCode != ws.OpBinary) {
		t.Fatalf("frame %+v, want a final data frame", f.Header)
	}
	if f.Header.Rsv == 4 {
		return inflateMsg(t, f.Payload), true
	}
	if f.Header.Rsv != 0 {
		t.Fatalf("frame with RSV %b", f.Header.Rsv)
	}
	return f.Payload, false
}

func TestDeflateMessages(t *testing.T) {
	t.Parallel()
	text := []byte(strings.Repeat(`{"channel":"news","data":{"price":42.5,"symbol":"HRLD"}}`, 20))
	z := deflateMsg(t, text)
	bomb := deflateMsg(t, make([]byte, 8<<20)) // 8 MiB of zeros in a few KiB
	cases := []struct {
		name   string
		frames []byte
		code   ws.StatusCode // 0: the echo of text comes back
	}{
		{"one compressed frame", rawFrame(true, 4, ws.OpText, z, false), 0},
		{"compressed, fragmented in three", bytes.Join([][]byte{
			rawFrame(false, 4, ws.OpText, z[:10], false),
			rawFrame(false, 0, ws.OpContinuation, z[10:20], false),
			rawFrame(true, 0, ws.OpContinuation, z[20:], false),
		}, nil), 0},
		{"ping between compressed fragments", bytes.Join([][]byte{
			rawFrame(false, 4, ws.OpText, z[:10], false),
			rawFrame(true, 0, ws.OpPing, []byte("p"), false),
			rawFrame(true, 0, ws.OpContinuation, z[10:], false),
		}, nil), 0},
		{"uncompressed message on a deflate connection", rawFrame(true, 0, ws.OpText, text, false), 0},
		{"RSV1 on a continuation", append(rawFrame(false, 4, ws.OpText, z[:10], false), rawFrame(true, 4, ws.OpContinuation, z[10:], false)...), ws.StatusProtocolError},
		{"RSV1 on a ping", rawFrame(true, 4, ws.OpPing, nil, false), ws.StatusProtocolError},
		{"RSV1 on a close", rawFrame(true, 4, ws.OpClose, []byte{0x03, 0xe8}, false), ws.StatusProtocolError},
		{"RSV2", rawFrame(true, 2, ws.OpText, z, false), ws.StatusProtocolError},
		{"RSV1 and RSV2", rawFrame(true, 6, ws.OpText, z, false), ws.StatusProtocolError},
		{"corrupt deflate data", rawFrame(true, 4, ws.OpText, []byte{0xff, 0xff, 0xff, 0xff}, false), ws.StatusInvalidFramePayloadData},
		{"inflates to invalid UTF-8", rawFrame(true, 4, ws.OpText, deflateMsg(t, []byte{0xff, 0xfe, 0xfd}), false), ws.StatusInvalidFramePayloadData},
		{"deflate bomb", rawFrame(true, 4, ws.OpBinary, bomb, false), ws.StatusMessageTooBig},
		{"deflate bomb in fragments", append(rawFrame(false, 4, ws.OpBinary, bomb[:100], false), rawFrame(true, 0, ws.OpContinuation, bomb[100:], false)...), ws.StatusMessageTooBig},
		{"inflates just past the limit", rawFrame(true, 4, ws.OpBinary, deflateMsg(t, make([]byte, 32<<10+1)), false), ws.StatusMessageTooBig},
	}
	if len(bomb) > 32<<10 {
		t.Fatalf("bomb of %d bytes does not fit the frame limit", len(bomb))
	}
	for _, e := range engines {
		t.Run(e, func(t *testing.T) {
			t.Parallel()
			s := newServerUp(t, e, transport.Options{MaxMessageSize: 32 << 10}, &transport.Upgrader{Subprotocols: []string{"herald.json"}, Compression: true})
			bystander := dialDeflate(t, s)
			for _, c := range cases {
				nc := dialDeflate(t, s)
				if _, err := nc.Write(c.frames); err != nil {
					t.Fatal(err)
				}
				if c.code == 0 {
					got, compressed := readMessage(t, nc)
					if !bytes.Equal(got, text) || !compressed {
						t.Errorf("%s: echo of %d bytes (compressed %v), want the %d sent, compressed", c.name, len(got), compressed, len(text))
					}
					continue
				}
				if code := readClose(t, nc); code != c.code {
					t.Errorf("%s: close code %d, want %d", c.name, code, c.code)
				}
				msg := []byte(fmt.Sprintf("still here after %s", c.name))
				if _, err := bystander.Write(rawFrame(true, 0, ws.OpText, msg, false)); err != nil {
					t.Fatal(err)
				}
				if got, _ := readMessage(t, bystander); !bytes.Equal(got, msg) {
					t.Fatalf("bystander after %s: %q", c.name, got)
				}
			}
		})
	}
}

func TestCompressedMessageFrame(t *testing.T) {
	t.Parallel()
	long := bytes.Repeat([]byte(`{"k":"value"},`), 50)
	f, ok := transport.CompressedMessageFrame(false, long)
	if !ok || f[0] != 0x80|0x40|byte(ws.OpText) || len(f) >= len(long) {
		t.Fatalf("compressible payload: compressed %v, first byte %#x, %d bytes for %d", ok, f[0], len(f), len(long))
	}
	h, err := ws.ReadHeader(bytes.NewReader(f))
	if err != nil {
		t.Fatal(err)
	}
	if got := inflateMsg(t, f[len(f)-int(h.Length):]); !bytes.Equal(got, long) {
		t.Fatalf("inflated %q", got)
	}
	// Too short, or incompressible: the plain frame.
	for _, p := range [][]byte{[]byte(`{"a":1}`), randomBytes(300)} {
		f, ok := transport.CompressedMessageFrame(true, p)
		if ok || !bytes.Equal(f, transport.MessageFrame(true, p)) {
			t.Errorf("%d bytes: compressed %v, want the plain frame", len(p), ok)
		}
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	x := uint32(2463534242)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}
