package herald_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/gobwas/httphead"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsflate"
	gorilla "github.com/gorilla/websocket"
	"github.com/klauspost/compress/flate"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/protocol"
)

// compressionConfig is devConfig with permessage-deflate on, and
// publications compressed in the default namespace but not in "plain".
func compressionConfig() herald.Config {
	cfg := devConfig()
	cfg.Compression = true
	cfg.Namespaces[0].Compression = true
	cfg.Namespaces[0].JoinLeave = false
	plain := cfg.Namespaces[0]
	plain.Name, plain.Compression = "plain", false
	cfg.Namespaces = append(cfg.Namespaces, plain)
	return cfg
}

// rawHandshake sends an upgrade request to url's host and path with the
// given extension offer and returns the status and the extensions answered.
func rawHandshake(t *testing.T, addr, path, offer string) (int, string) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: herald.json\r\n"
	if offer != "" {
		req += "Sec-WebSocket-Extensions: " + offer + "\r\n"
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
	return resp.StatusCode, resp.Header.Get("Sec-WebSocket-Extensions")
}

// TestCompressionNegotiation checks the server's answers to extension
// offers on both of its upgrade paths: the listener's own (Serve) and
// net/http's (Handler). The full RFC 7692 table runs in
// internal/transport; here, that the server wires it on both paths, and
// declines without failing the handshake.
func TestCompressionNegotiation(t *testing.T) {
	t.Parallel()
	on := startServer(t, compressionConfig())
	off := startServer(t, devConfig())
	srv, err := herald.New(compressionConfig())
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() {
		hs.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	})
	hsAddr := strings.TrimPrefix(hs.URL, "http://")
	cases := []struct {
		offer  string
		accept bool
	}{
		{"permessage-deflate", true},
		{"permessage-deflate; client_max_window_bits", true},
		{"permessage-deflate; server_no_context_takeover; client_no_context_takeover", true},
		{"permessage-deflate; server_max_window_bits=10", false},
		{"permessage-deflate; foo", false},
		{"permessage-deflate; client_no_context_takeover; client_no_context_takeover", false},
		{"permessage-deflate; foo, permessage-deflate", true},
		{"", false},
	}
	for _, c := range cases {
		for _, where := range []struct{ name, addr string }{{"serve", on.addr}, {"handler", hsAddr}} {
			status, ext := rawHandshake(t, where.addr, "/ws", c.offer)
			if status != http.StatusSwitchingProtocols {
				t.Errorf("%s %q: status %d, want 101", where.name, c.offer, status)
				continue
			}
			got := strings.HasPrefix(ext, "permessage-deflate")
			if got != c.accept {
				t.Errorf("%s %q: answered %q, accept want %v", where.name, c.offer, ext, c.accept)
			}
			if got && (!strings.Contains(ext, "server_no_context_takeover") || !strings.Contains(ext, "client_no_context_takeover")) {
				t.Errorf("%s %q: answered %q, want both no_context_takeover", where.name, c.offer, ext)
			}
		}
		if status, ext := rawHandshake(t, off.addr, "/ws", c.offer); status != http.StatusSwitchingProtocols || ext != "" {
			t.Errorf("compression off, %q: status %d, answered %q", c.offer, status, ext)
		}
	}
}

// deflateConn is a raw client that negotiated permessage-deflate.
func dialDeflate(t *testing.T, ts *testServer) *rawConn {
	t.Helper()
	d := ws.Dialer{Protocols: []string{"herald.json"}, Extensions: []httphead.Option{wsflate.DefaultParameters.Option()}}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	nc, _, hs, err := d.Dial(ctx, ts.wsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	if len(hs.Extensions) != 1 {
		t.Fatalf("extensions %v, want permessage-deflate", hs.Extensions)
	}
	return &rawConn{t: t, nc: nc}
}

// compressedFrame is a masked client text frame with msg compressed.
func compressedFrame(t *testing.T, msg []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w, _ := flate.NewWriter(&b, flate.BestCompression)
	_, _ = w.Write(msg)
	_ = w.Flush()
	z := b.Bytes()[:b.Len()-4]
	var out bytes.Buffer
	f := ws.NewFrame(ws.OpText, true, z)
	f.Header.Rsv = ws.Rsv(true, false, false)
	f = ws.MaskFrameInPlace(f)
	if err := ws.WriteFrame(&out, f); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

// readFrame reads the next data frame and returns its payload (inflated)
// and whether it came compressed.
func (r *rawConn) readFrame() ([]byte, bool) {
	r.t.Helper()
	_ = r.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		f, err := ws.ReadFrame(r.nc)
		if err != nil {
			r.t.Fatal(err)
		}
		if f.Header.OpCode.IsControl() {
			continue
		}
		if f.Header.Rsv&4 == 0 {
			return f.Payload, false
		}
		fr := flate.NewReader(io.MultiReader(bytes.NewReader(f.Payload), strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
		out, err := io.ReadAll(fr)
		if err != nil {
			r.t.Fatal(err)
		}
		return out, true
	}
}

// TestCompressionSession: a client that negotiated permessage-deflate
// sends compressed commands; publications of a compressing namespace come
// compressed, the others and the replies plain; a command that inflates
// past max_message_size closes with 1009 and nobody else notices.
func TestCompressionSession(t *testing.T) {
	t.Parallel()
	cfg := compressionConfig()
	cfg.MaxMessageSize = 16 << 10
	ts := startServer(t, cfg)
	c := dialDeflate(t, ts)
	if _, err := c.nc.Write(compressedFrame(t, []byte(`{"id":1,"connect":{}}`))); err != nil {
		t.Fatal(err)
	}
	reply, z := c.readFrame()
	if z || !bytes.Contains(reply, []byte(`"connect"`)) {
		t.Fatalf("connect reply %q compressed %v", reply, z)
	}
	for i, ch := range []string{"news", "plain:news"} {
		if _, err := c.nc.Write(compressedFrame(t, []byte(`{"id":`+string(rune('2'+i))+`,"subscribe":{"channel":"`+ch+`"}}`))); err != nil {
			t.Fatal(err)
		}
		if reply, z := c.readFrame(); z || !bytes.Contains(reply, []byte(`"subscribe"`)) {
			t.Fatalf("subscribe %s: reply %q compressed %v", ch, reply, z)
		}
	}
	data := map[string]string{"text": strings.Repeat("compressible ", 100)}
	for _, ch := range []string{"news", "plain:news"} {
		ts.publish(t, ch, data)
		got, z := c.readFrame()
		var m protocol.ServerMessage
		if err := json.Unmarshal(got, &m); err != nil || m.Pub == nil || m.Pub.Channel != ch {
			t.Fatalf("%s: publication %q: %v", ch, got, err)
		}
		if want := ch == "news"; z != want {
			t.Fatalf("%s: compressed %v, want %v", ch, z, want)
		}
	}
	// A publish command that inflates to 1 MiB, past max_message_size.
	bystander := dialDeflate(t, ts)
	bystander.send(`{"id":1,"connect":{}}`)
	bystander.readFrame()
	bomb := compressedFrame(t, append(append([]byte(`{"id":9,"publish":{"channel":"news","data":"`), bytes.Repeat([]byte("a"), 1<<20)...), `"}}`...))
	if len(bomb) > cfg.MaxMessageSize {
		t.Fatalf("compressed bomb of %d bytes", len(bomb))
	}
	if _, err := c.nc.Write(bomb); err != nil {
		t.Fatal(err)
	}
	if code, _ := c.closeCode(); code != ws.StatusMessageTooBig {
		t.Fatalf("close code %d, want 1009", code)
	}
	bystander.send(`{"id":2,"ping":{}}`)
	if got, _ := bystander.readFrame(); !bytes.Contains(got, []byte(`"id":2`)) {
		t.Fatalf("bystander got %q", got)
	}
}

// TestCompressionThirdPartyClients: coder/websocket and gorilla/websocket
// with compression on negotiate permessage-deflate, send compressed
// commands and read compressed publications.
func TestCompressionThirdPartyClients(t *testing.T) {
	t.Parallel()
	ts := startServer(t, compressionConfig())
	big := strings.Repeat("the same words again and again ", 200)
	before := compressedFrames(t, ts)

	for _, mode := range []websocket.CompressionMode{websocket.CompressionContextTakeover, websocket.CompressionNoContextTakeover} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, ts.wsURL(), &websocket.DialOptions{Subprotocols: []string{"herald.json"}, CompressionMode: mode, CompressionThreshold: 1})
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
			t.Fatalf("coder mode %v: extensions %q", mode, ext)
		}
		c.SetReadLimit(1 << 20)
		read := func() *protocol.ServerMessage {
			for {
				_, b, err := c.Read(ctx)
				if err != nil {
					t.Fatal(err)
				}
				var m protocol.ServerMessage
				if err := json.Unmarshal(b, &m); err != nil {
					t.Fatal(err)
				}
				if m.Join == nil && m.Leave == nil {
					return &m
				}
			}
		}
		for i, cmd := range []string{`{"id":1,"connect":{}}`, `{"id":2,"subscribe":{"channel":"coder"}}`, `{"id":3,"publish":{"channel":"coder","data":{"big":"` + big + `"}}}`} {
			if err := c.Write(ctx, websocket.MessageText, []byte(cmd)); err != nil {
				t.Fatal(err)
			}
			if i < 2 {
				if m := read(); m.Error != nil {
					t.Fatalf("coder: command %d: %+v", i+1, m.Error)
				}
			}
		}
		// The publication and the publish reply, in either order.
		var gotPub, gotReply bool
		for !gotPub || !gotReply {
			m := read()
			switch {
			case m.Pub != nil:
				gotPub = bytes.Contains(m.Pub.Data, []byte(big))
			case m.ID == 3 && m.Error == nil:
				gotReply = true
			default:
				t.Fatalf("coder: unexpected %+v", m)
			}
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
		cancel()
	}

	d := gorilla.Dialer{Subprotocols: []string{"herald.json"}, HandshakeTimeout: 5 * time.Second, EnableCompression: true}
	g, resp, err := d.Dial(ts.wsURL(), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if ext := resp.Header.Get("Sec-WebSocket-Extensions"); !strings.HasPrefix(ext, "permessage-deflate") {
		t.Fatalf("gorilla: extensions %q", ext)
	}
	g.EnableWriteCompression(true)
	_ = g.SetReadDeadline(time.Now().Add(10 * time.Second))
	for _, cmd := range []string{`{"id":1,"connect":{}}`, `{"id":2,"subscribe":{"channel":"gorilla"}}`} {
		if err := g.WriteMessage(gorilla.TextMessage, []byte(cmd)); err != nil {
			t.Fatal(err)
		}
		if _, b, err := g.ReadMessage(); err != nil || bytes.Contains(b, []byte(`"error"`)) {
			t.Fatalf("gorilla %s: %q %v", cmd, b, err)
		}
	}
	ts.publish(t, "gorilla", map[string]string{"big": big})
	for {
		_, b, err := g.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte(big)) {
			break
		}
	}
	if n := compressedFrames(t, ts) - before; n < 3 {
		t.Fatalf("%v publication frames compressed, want at least 3", n)
	}
}

// compressedFrames reads herald_compressed_frames_total from /metrics.
func compressedFrames(t *testing.T, ts *testServer) float64 {
	t.Helper()
	return metric(t, ts, "herald_compressed_frames_total")
}

// metric reads the value of an unlabelled metric from /metrics.
func metric(t *testing.T, ts *testServer, name string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + ts.addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			var f float64
			if err := json.Unmarshal([]byte(v), &f); err != nil {
				t.Fatal(err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

func TestCompressionConfig(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Namespaces[0].Compression = true
	if err := cfg.Validate(); !errors.Is(err, herald.ErrConfig) {
		t.Fatalf("namespace compression without the top-level option: %v, want ErrConfig", err)
	}
	cfg.Compression = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
}
