package security_test

import (
	"bufio"
	"bytes"
	"crypto"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/golang-jwt/jwt/v5"

	"github.com/heraldhq/herald"
	"github.com/heraldhq/herald/auth"
	"github.com/heraldhq/herald/protocol"
)

func TestOrigin(t *testing.T) {
	t.Parallel()
	f := newFixture(t, baseConfig())
	cases := []struct {
		origin string
		ok     bool
	}{
		{"", true},
		{"https://app.example.com", true},
		{"https://eu.example.org", true},
		{"https://evil.com", false},
		{"https://app.example.com.evil.com", false},
		{"http://app.example.com", false}, // scheme differs
		{"https://example.org", false},    // the wildcard needs a label
		{"null", false},
	}
	for _, c := range cases {
		h := http.Header{}
		if c.origin != "" {
			h.Set("Origin", c.origin)
		}
		_, err := f.dial(t, h)
		if c.ok && err != nil {
			t.Errorf("origin %q refused: %v", c.origin, err)
		}
		if !c.ok {
			var se ws.StatusError
			if err == nil {
				t.Errorf("origin %q accepted", c.origin)
			} else if !errorsAs(err, &se) || int(se) != http.StatusForbidden {
				t.Errorf("origin %q: %v, want HTTP 403", c.origin, err)
			}
		}
	}
	// Without an allow-list only same-origin requests pass.
	cfg := baseConfig()
	cfg.AllowedOrigins = nil
	g := newFixture(t, cfg)
	if _, err := g.dial(t, http.Header{"Origin": {"http://" + g.addr}}); err != nil {
		t.Errorf("same origin refused: %v", err)
	}
	if _, err := g.dial(t, http.Header{"Origin": {"http://other.example"}}); err == nil {
		t.Error("cross origin accepted without an allow-list")
	}
}

func errorsAs(err error, target *ws.StatusError) bool {
	se, ok := err.(ws.StatusError)
	if ok {
		*target = se
	}
	return ok
}

func TestTokens(t *testing.T) {
	t.Parallel()
	f := newFixture(t, baseConfig())
	noneToken := func() string {
		h := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"none","typ":"JWT"}`))
		c, _ := json.Marshal(map[string]any{"sub": "mallory", "aud": audience, "iss": issuer, "exp": time.Now().Add(time.Hour).Unix()})
		return h + "." + base64.RawURLEncoding.EncodeToString(c) + "."
	}
	confused := func() string { // HS256 keyed with the RSA public key
		c := jwt.MapClaims{"sub": "mallory", "aud": audience, "iss": issuer, "exp": time.Now().Add(time.Hour).Unix()}
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(keys.rsaPM))
		return s
	}
	notYet := func() string {
		c := jwt.MapClaims{"sub": "u", "aud": audience, "iss": issuer, "nbf": time.Now().Add(time.Hour).Unix()}
		s, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString([]byte(secret))
		return s
	}
	otherSecret, _ := auth.MintHS256("not-the-secret", auth.MintOptions{User: "u", Audience: audience, Issuer: issuer})
	refused := map[string]string{
		"garbage":                             "not-a-token",
		"alg none":                            noneToken(),
		"HS256 keyed with the RSA public key": confused(),
		"not yet valid":                       notYet(),
		"wrong audience":                      token(t, "u", func(o *auth.MintOptions) { o.Audience = "someone-else" }),
		"missing audience":                    token(t, "u", func(o *auth.MintOptions) { o.Audience = "" }),
		"wrong issuer":                        token(t, "u", func(o *auth.MintOptions) { o.Issuer = "https://evil.example" }),
		"wrong secret":                        otherSecret,
		"oversized":                           strings.Repeat("a", 20<<10),
	}
	for name, tok := range refused {
		r := f.mustDial(t)
		r.send(`{"id":1,"connect":{"token":%q}}`, tok)
		if code := r.closed(); code != protocol.DisconnectInvalidToken {
			t.Errorf("%s: close %d, want %d", name, code, protocol.DisconnectInvalidToken)
		}
	}
	// Missing token, anonymous not allowed: terminal 3505.
	r := f.mustDial(t)
	r.send(`{"id":1,"connect":{}}`)
	if code := r.closed(); code != protocol.DisconnectUnauthorized {
		t.Errorf("no token: close %d", code)
	}
	// Expired: error 109 so the client can fetch a new token.
	r = f.mustDial(t)
	exp, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "aud": audience, "iss": issuer, "exp": time.Now().Add(-time.Minute).Unix()}).SignedString([]byte(secret))
	r.wantError(1, protocol.ErrTokenExpired, `{"id":1,"connect":{"token":%q}}`, exp)
	// Every configured algorithm works.
	for name, key := range map[string]crypto.Signer{"RS256": keys.rsa, "ES256": keys.ec, "EdDSA": keys.ed} {
		tok, err := auth.Mint(key, "", auth.MintOptions{User: "alg-" + name, TTL: time.Hour, Audience: audience, Issuer: issuer})
		if err != nil {
			t.Fatal(err)
		}
		r := f.mustDial(t)
		r.connect(tok)
	}
}

func TestChannelAuthorization(t *testing.T) {
	t.Parallel()
	f := newFixture(t, baseConfig())
	seven := f.mustDial(t)
	c := seven.connect(token(t, "7", nil))
	seven.wantError(2, protocol.ErrPermissionDenied, `{"id":2,"subscribe":{"channel":"user:42"}}`)
	seven.wantError(3, protocol.ErrPermissionDenied, `{"id":3,"subscribe":{"channel":"chat:room#42,43"}}`)
	seven.wantError(4, protocol.ErrPermissionDenied, `{"id":4,"history":{"channel":"user:42","limit":-1}}`)
	seven.wantError(5, protocol.ErrPermissionDenied, `{"id":5,"presence":{"channel":"user:42"}}`)
	seven.wantError(6, protocol.ErrPermissionDenied, `{"id":6,"publish":{"channel":"user:42","data":1}}`)
	seven.wantError(7, protocol.ErrPermissionDenied, `{"id":7,"subscribe":{"channel":"user:42","recover":true,"epoch":"x","offset":1}}`)
	// Own user channel and user-boundary channels work.
	seven.send(`{"id":8,"subscribe":{"channel":"user:7"}}`)
	if m := seven.reply(8); m.Subscribe == nil {
		t.Fatalf("own channel: %+v", m.Error)
	}
	seven.send(`{"id":9,"subscribe":{"channel":"chat:dm#7,8"}}`)
	if m := seven.reply(9); m.Subscribe == nil {
		t.Fatalf("boundary channel: %+v", m.Error)
	}
	// Private channel: refused without a token, with a token for another
	// client or channel or user; accepted with its own.
	seven.wantError(10, protocol.ErrPermissionDenied, `{"id":10,"subscribe":{"channel":"priv:a"}}`)
	seven.wantError(11, protocol.ErrPermissionDenied, `{"id":11,"history":{"channel":"priv:a","limit":-1}}`)
	seven.wantError(12, protocol.ErrPermissionDenied, `{"id":12,"presence_stats":{"channel":"priv:a"}}`)
	other := token(t, "7", func(o *auth.MintOptions) { o.Client = "someone-else"; o.Channel = "priv:a" })
	seven.wantError(13, protocol.ErrPermissionDenied, `{"id":13,"subscribe":{"channel":"priv:a","token":%q}}`, other)
	wrongCh := token(t, "7", func(o *auth.MintOptions) { o.Client = c.Client; o.Channel = "priv:b" })
	seven.wantError(14, protocol.ErrPermissionDenied, `{"id":14,"subscribe":{"channel":"priv:a","token":%q}}`, wrongCh)
	wrongUser := token(t, "8", func(o *auth.MintOptions) { o.Client = c.Client; o.Channel = "priv:a" })
	seven.wantError(15, protocol.ErrPermissionDenied, `{"id":15,"subscribe":{"channel":"priv:a","token":%q}}`, wrongUser)
	good := token(t, "7", func(o *auth.MintOptions) { o.Client = c.Client; o.Channel = "priv:a" })
	seven.send(`{"id":16,"subscribe":{"channel":"priv:a","token":%q}}`, good)
	if m := seven.reply(16); m.Subscribe == nil {
		t.Fatalf("private channel with its token: %+v", m.Error)
	}
	seven.send(`{"id":17,"history":{"channel":"priv:a","limit":-1}}`)
	if m := seven.reply(17); m.History == nil {
		t.Fatalf("history of a channel subscribed with a token: %+v", m.Error)
	}
	// Read-only namespace.
	seven.wantError(18, protocol.ErrPermissionDenied, `{"id":18,"publish":{"channel":"ro:x","data":1}}`)
	// Unknown namespace.
	seven.wantError(19, protocol.ErrUnknownChannel, `{"id":19,"subscribe":{"channel":"nope:x"}}`)
}

// frame builds a masked client frame header for a payload of n bytes.
func frameHeader(op byte, n uint64) []byte {
	b := []byte{0x80 | op}
	switch {
	case n < 126:
		b = append(b, 0x80|byte(n))
	case n <= 0xffff:
		b = binary.BigEndian.AppendUint16(append(b, 0x80|126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 0x80|127), n)
	}
	return append(b, 0, 0, 0, 0) // zero mask
}

func TestOversizeAndFraming(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.MaxMessageSize = 8 << 10
	f := newFixture(t, cfg)
	cases := map[string]struct {
		bytes []byte
		code  ws.StatusCode
	}{
		"message over the limit":  {append(frameHeader(2, 9<<10), make([]byte, 9<<10)...), ws.StatusMessageTooBig},
		"declared 2^62 bytes":     {frameHeader(2, 1<<62), ws.StatusMessageTooBig},
		"declared 2^63 (MSB set)": {append([]byte{0x82, 0xff, 0x80, 0, 0, 0, 0, 0, 0, 0}, 0, 0, 0, 0), ws.StatusProtocolError},
		// Compression is never negotiated, so a compressed (RSV1) frame is
		// a protocol error and a deflate bomb cannot inflate.
		"RSV1 (deflate) frame": {append([]byte{0xc2, 0x84, 0, 0, 0, 0}, 1, 2, 3, 4), ws.StatusProtocolError},
	}
	for name, c := range cases {
		r := f.mustDial(t)
		r.writeRaw(c.bytes)
		if code := r.closed(); code != c.code {
			t.Errorf("%s: close %d, want %d", name, code, c.code)
		}
	}
	// The handshake never agrees to permessage-deflate.
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"+
		"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 || resp.Header.Get("Sec-WebSocket-Extensions") != "" {
		t.Fatalf("handshake: %d extensions %q", resp.StatusCode, resp.Header.Get("Sec-WebSocket-Extensions"))
	}
}

func rawHTTP(t *testing.T, addr, req string) (int, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := conn.Write([]byte(req)); err != nil {
		return 0, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func TestHandshakeLimits(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.HandshakeTimeout = time.Second
	cfg.StaleTimeout = time.Second
	f := newFixture(t, cfg)
	upgrade := "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
	var many strings.Builder
	for i := 0; i < 2000; i++ {
		fmt.Fprintf(&many, "X-H%d: v\r\n", i)
	}
	if code, err := rawHTTP(t, f.addr, upgrade+many.String()+"\r\n"); err != nil || code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("2,000 headers: %d %v, want 431", code, err)
	}
	if code, err := rawHTTP(t, f.addr, upgrade+"Sec-WebSocket-Protocol: "+strings.Repeat("p,", 16<<10)+"\r\n\r\n"); err != nil || code != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("32 KB Sec-WebSocket-Protocol: %d %v, want 431", code, err)
	}
	// Header bytes trickled: the server hangs up at the handshake timeout.
	conn, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	start := time.Now()
	var closedErr error
	// The server either closes or answers with an error status: both end
	// the trickle.
	for i := 0; i < 100 && closedErr == nil; i++ {
		_, closedErr = conn.Write([]byte("G"))
		if closedErr == nil {
			_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
			buf := make([]byte, 64)
			n, err := conn.Read(buf)
			switch {
			case n > 0:
				closedErr = fmt.Errorf("server answered %q", buf[:n])
			case err != nil && !isTimeout(err):
				closedErr = err
			}
		}
	}
	if closedErr == nil {
		t.Errorf("trickled headers: connection still open after %v", time.Since(start))
	}
	t.Logf("trickled headers: ended after %v: %v", time.Since(start).Round(100*time.Millisecond), closedErr)
	// Upgrades and never sends connect: 3006.
	r := f.mustDial(t)
	if code := r.closed(); code != protocol.DisconnectStale {
		t.Errorf("silent socket: close %d, want %d", code, protocol.DisconnectStale)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}

func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.MaxConnectionsPerIP = 6 // the bystander holds one
	cfg.MaxConnectionsPerUser = 2
	f := newFixture(t, cfg)
	// Per user: the third connection of a user is refused with 3009.
	a := f.mustDial(t)
	a.connect(token(t, "dup", nil))
	b := f.mustDial(t)
	b.connect(token(t, "dup", nil))
	c := f.mustDial(t)
	c.send(`{"id":1,"connect":{"token":%q}}`, token(t, "dup", nil))
	if code := c.closed(); code != protocol.DisconnectConnectionLimit {
		t.Errorf("third connection of a user: close %d, want %d", code, protocol.DisconnectConnectionLimit)
	}
	// A slot frees when a connection goes.
	a.nc.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := f.mustDial(t)
		d.send(`{"id":1,"connect":{"token":%q}}`, token(t, "dup", nil))
		_ = d.nc.SetReadDeadline(time.Now().Add(5 * time.Second))
		if fr, err := ws.ReadFrame(d.nc); err == nil && fr.Header.OpCode == ws.OpText && strings.Contains(string(fr.Payload), `"connect"`) {
			break
		}
		d.nc.Close()
		if time.Now().After(deadline) {
			t.Fatal("slot not released after a connection closed")
		}
		time.Sleep(50 * time.Millisecond)
	}
	// Per IP: beyond the limit upgrades get HTTP 429.
	var last error
	for i := 0; i < 8; i++ {
		if _, err := f.dial(t, nil); err != nil {
			last = err
			break
		}
	}
	var se ws.StatusError
	if last == nil || !errorsAs(last, &se) || int(se) != http.StatusTooManyRequests {
		t.Errorf("connections beyond the per-IP limit: %v, want HTTP 429", last)
	}
}

func TestCommandFlood(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.CommandRate = 5
	cfg.CommandBurst = 10
	f := newFixture(t, cfg)
	r := f.mustDial(t)
	r.connect(token(t, "flooder", nil))
	for i := 2; i < 200; i++ {
		r.send(`{"id":%d,"ping":{}}`, i)
	}
	limited := 0
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		fr, err := ws.ReadFrame(r.nc)
		if err != nil {
			t.Fatalf("flood: connection ended without close frame: %v", err)
		}
		if fr.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(fr.Payload)
			if code != protocol.DisconnectTooManyRequests {
				t.Fatalf("flood: close %d, want %d", code, protocol.DisconnectTooManyRequests)
			}
			break
		}
		var m protocol.ServerMessage
		if json.Unmarshal(fr.Payload, &m) == nil && m.Error != nil && m.Error.Code == protocol.ErrTooManyRequests {
			limited++
		}
	}
	if limited == 0 {
		t.Fatal("no command was refused with 111 before the disconnect")
	}
}

// TestCommandRateOff: a negative command_rate turns the limit off; a burst
// far beyond the default limit is answered in full.
func TestCommandRateOff(t *testing.T) {
	t.Parallel()
	cfg := baseConfig()
	cfg.CommandRate = -1
	f := newFixture(t, cfg)
	r := f.mustDial(t)
	r.connect(token(t, "unlimited", nil))
	const n = 1000 // five times the default burst
	for i := 2; i < 2+n; i++ {
		r.send(`{"id":%d,"ping":{}}`, i)
	}
	_ = r.nc.SetReadDeadline(time.Now().Add(10 * time.Second))
	for answered := 0; answered < n; {
		fr, err := ws.ReadFrame(r.nc)
		if err != nil {
			t.Fatalf("after %d answers: %v", answered, err)
		}
		if fr.Header.OpCode == ws.OpClose {
			code, _ := ws.ParseCloseFrameData(fr.Payload)
			t.Fatalf("after %d answers: closed with %d", answered, code)
		}
		for _, line := range bytes.Split(fr.Payload, []byte("\n")) {
			var m protocol.ServerMessage
			if len(line) == 0 || json.Unmarshal(line, &m) != nil || m.ID == 0 {
				continue
			}
			if m.Error != nil {
				t.Fatalf("command %d: error %d %s", m.ID, m.Error.Code, m.Error.Message)
			}
			answered++
		}
	}
}

func TestMalformedMessages(t *testing.T) {
	t.Parallel()
	f := newFixture(t, baseConfig())
	for name, msg := range map[string]string{
		"invalid JSON":    `{"id":1,"connect":`,
		"wrong types":     `{"id":{"a":1},"connect":[]}`,
		"huge id":         `{"id":99999999999999999999999999,"connect":{}}`,
		"binary garbage":  "\x00\x01\x02",
		"deeply nested":   strings.Repeat("[", 30000),
		"command without": `{"subscribe":{"channel":"news:feed"}}`,
	} {
		r := f.mustDial(t)
		r.send("%s", msg)
		if code := r.closed(); code != protocol.DisconnectBadRequest && code != ws.StatusInvalidFramePayloadData {
			t.Errorf("%s: close %d", name, code)
		}
	}
	r := f.mustDial(t)
	r.connect(token(t, "x", nil))
	r.wantError(5, protocol.ErrMethodNotFound, `{"id":5,"launch_missiles":{}}`)
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	f := newFixture(t, baseConfig())
	for name, h := range map[string]string{"none": "", "wrong": "apikey nope", "bearer": "Bearer " + apiKey} {
		req, _ := http.NewRequest("POST", "http://"+f.addr+"/api/publish", strings.NewReader(`{"channel":"news:feed","data":1}`))
		if h != "" {
			req.Header.Set("Authorization", h)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("API key %s: HTTP %d", name, resp.StatusCode)
		}
	}
}

var _ = herald.Version
