package herald_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/coder/websocket"
	gorilla "github.com/gorilla/websocket"

	"github.com/heraldhq/herald/protocol"
)

// TestThirdPartyClients speaks Herald's protocol with WebSocket clients
// written by others (coder/websocket, gorilla/websocket): handshake with
// subprotocol negotiation, fragmented messages, control frames, and the
// close handshake.
func TestThirdPartyClients(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.Echo = true
	ts := startServer(t, cfg)

	t.Run("coder", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		c, resp, err := websocket.Dial(ctx, ts.wsURL(), &websocket.DialOptions{Subprotocols: []string{"herald.json"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.CloseNow()
		c.SetReadLimit(1 << 20)
		if resp.Header.Get("Sec-WebSocket-Protocol") != "herald.json" {
			t.Fatalf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
		}
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
		// A command written in three fragments.
		w, err := c.Writer(ctx, websocket.MessageText)
		if err != nil {
			t.Fatal(err)
		}
		for _, part := range []string{`{"id":1,`, `"connect":`, `{}}`} {
			if _, err := w.Write([]byte(part)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		if m := read(); m.Connect == nil {
			t.Fatalf("connect: %+v", m.Error)
		}
		if err := c.Write(ctx, websocket.MessageText, []byte(`{"id":2,"subscribe":{"channel":"interop"}}`)); err != nil {
			t.Fatal(err)
		}
		if m := read(); m.Subscribe == nil {
			t.Fatalf("subscribe: %+v", m.Error)
		}
		big := strings.Repeat("y", 40<<10)
		ts.publish(t, "interop", map[string]string{"big": big})
		if m := read(); m.Pub == nil || !bytes.Contains(m.Pub.Data, []byte(big)) {
			t.Fatal("big publication not received")
		}
		if err := c.Close(websocket.StatusNormalClosure, "bye"); err != nil {
			t.Fatalf("close handshake: %v", err)
		}
	})

	t.Run("gorilla", func(t *testing.T) {
		d := gorilla.Dialer{Subprotocols: []string{"herald.msgpack"}, HandshakeTimeout: 5 * time.Second}
		c, resp, err := d.Dial(ts.wsURL(), http.Header{})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if resp.Header.Get("Sec-WebSocket-Protocol") != "herald.msgpack" {
			t.Fatalf("subprotocol %q", resp.Header.Get("Sec-WebSocket-Protocol"))
		}
		send := func(cmd *protocol.Command) {
			b, _ := protocol.Msgpack.AppendCommand(nil, cmd)
			if err := c.WriteMessage(gorilla.BinaryMessage, b); err != nil {
				t.Fatal(err)
			}
		}
		read := func() *protocol.ServerMessage {
			for {
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				op, b, err := c.ReadMessage()
				if err != nil {
					t.Fatal(err)
				}
				if op != gorilla.BinaryMessage {
					t.Fatalf("opcode %d for msgpack", op)
				}
				var m protocol.ServerMessage
				if err := protocol.Msgpack.DecodeServerMessage(b, &m); err != nil {
					t.Fatal(err)
				}
				if m.Join == nil && m.Leave == nil {
					return &m
				}
			}
		}
		var pong = make(chan string, 1)
		c.SetPongHandler(func(p string) error { pong <- p; return nil })
		if err := c.WriteControl(gorilla.PingMessage, []byte("are you there"), time.Now().Add(time.Second)); err != nil {
			t.Fatal(err)
		}
		send(&protocol.Command{ID: 1, Connect: &protocol.ConnectRequest{}})
		if m := read(); m.Connect == nil {
			t.Fatalf("connect: %+v", m.Error)
		}
		if p := <-pong; p != "are you there" {
			t.Fatalf("pong payload %q", p)
		}
		send(&protocol.Command{ID: 2, Subscribe: &protocol.SubscribeRequest{Channel: "interop:bin"}})
		if m := read(); m.Subscribe == nil {
			t.Fatalf("subscribe: %+v", m.Error)
		}
		send(&protocol.Command{ID: 3, Publish: &protocol.PublishRequest{Channel: "interop:bin", Data: protocol.Data{0, 1, 2, 255}}})
		got := map[string]bool{}
		for len(got) < 2 {
			m := read()
			switch {
			case m.Publish != nil:
				got["reply"] = true
			case m.Pub != nil:
				if !bytes.Equal(m.Pub.Data, []byte{0, 1, 2, 255}) {
					t.Fatalf("binary data %v", m.Pub.Data)
				}
				got["pub"] = true
			}
		}
		// The JSON side sees the binary payload as base64 with b64 set.
		var hist struct {
			Publications []json.RawMessage `json:"publications"`
		}
		ts.api(t, "history", map[string]any{"channel": "interop:bin", "limit": -1}, &hist)
		if len(hist.Publications) != 1 || !strings.Contains(string(hist.Publications[0]), `"b64":true`) {
			t.Fatalf("history %s", hist.Publications)
		}
		// Close handshake: the server echoes our code.
		_ = c.WriteControl(gorilla.CloseMessage, gorilla.FormatCloseMessage(4001, "done"), time.Now().Add(time.Second))
		_, _, err = c.ReadMessage()
		if ce, ok := err.(*gorilla.CloseError); !ok || ce.Code != 4001 {
			t.Fatalf("close: %v", err)
		}
	})

	t.Run("echo", func(t *testing.T) {
		c, _, err := gorilla.DefaultDialer.Dial("ws://"+ts.addr+"/ws/echo", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, msg := range []string{"", "short", strings.Repeat("z", 65000)} {
			if err := c.WriteMessage(gorilla.TextMessage, []byte(msg)); err != nil {
				t.Fatal(err)
			}
			_, b, err := c.ReadMessage()
			if err != nil || string(b) != msg {
				t.Fatalf("echo of %d bytes: %v", len(msg), err)
			}
		}
	})
}
