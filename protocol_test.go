package herald_test

import (
	"testing"
	"time"

	"github.com/gobwas/ws"

	"github.com/heraldhq/herald/protocol"
)

// TestBadInput checks the answer to each malformed or misplaced message and
// that a bystander is unaffected.
func TestBadInput(t *testing.T) {
	t.Parallel()
	ts := startServer(t, devConfig())
	bystander := dialRaw(t, ts)
	bystander.connect("")
	bystander.send(`{"id":2,"subscribe":{"channel":"calm"}}`)
	if m := bystander.next(); m.Subscribe == nil {
		t.Fatalf("bystander subscribe: %+v", m.Error)
	}
	seq := 0
	checkBystander := func(what string) {
		seq++
		ts.publish(t, "calm", seqData(seq))
		m := bystander.next()
		for m.Join != nil || m.Leave != nil {
			m = bystander.next()
		}
		if m.Pub == nil || seqOf(t, m.Pub.Data) != seq {
			t.Fatalf("bystander after %s: %+v", what, m)
		}
	}

	disconnects := []struct {
		name string
		msg  string
		code ws.StatusCode
	}{
		{"invalid JSON", `{"id":1,`, protocol.DisconnectBadRequest},
		{"not an object", `[1,2,3]`, protocol.DisconnectBadRequest},
		{"wrong type for id", `{"id":"one","connect":{}}`, protocol.DisconnectBadRequest},
		{"huge id", `{"id":123456789012345678901234567890,"connect":{}}`, protocol.DisconnectBadRequest},
		{"negative id", `{"id":-5,"connect":{}}`, protocol.DisconnectBadRequest},
		{"wrong type for field", `{"id":1,"connect":{"token":42}}`, protocol.DisconnectBadRequest},
		{"command without id", `{"connect":{}}`, protocol.DisconnectBadRequest},
		{"bad token", `{"id":1,"connect":{"token":"not.a.jwt"}}`, protocol.DisconnectInvalidToken},
	}
	for _, c := range disconnects {
		r := dialRaw(t, ts)
		r.send(c.msg)
		code, push := r.closeCode()
		if code != c.code || push == nil || push.Code != uint32(c.code) || push.Reconnect {
			t.Errorf("%s: close %d push %+v, want terminal %d", c.name, code, push, c.code)
		}
		checkBystander(c.name)
	}

	errs := []struct {
		name string
		msg  string
		code uint32
	}{
		{"unknown command", `{"id":7,"frobnicate":{}}`, protocol.ErrMethodNotFound},
		{"subscribe before connect", `{"id":7,"subscribe":{"channel":"a"}}`, protocol.ErrNotConnected},
	}
	for _, c := range errs {
		r := dialRaw(t, ts)
		r.send(c.msg)
		m := r.next()
		if m.ID != 7 || m.Error == nil || m.Error.Code != c.code {
			t.Errorf("%s: reply %+v, want error %d", c.name, m, c.code)
		}
		checkBystander(c.name)
	}

	// After connect: per-command errors keep the connection.
	r := dialRaw(t, ts)
	r.connect("")
	cmdErrs := []struct {
		name string
		msg  string
		code uint32
	}{
		{"invalid channel", `{"id":3,"subscribe":{"channel":"bad channel!"}}`, protocol.ErrInvalidChannel},
		{"channel too long", `{"id":3,"subscribe":{"channel":"` + string(make([]byte, 0)) + longName(300) + `"}}`, protocol.ErrInvalidChannel},
		{"empty channel", `{"id":3,"subscribe":{"channel":""}}`, protocol.ErrBadRequest},
		{"publish without data", `{"id":3,"publish":{"channel":"a"}}`, protocol.ErrBadRequest},
		{"second connect", `{"id":3,"connect":{}}`, protocol.ErrBadRequest},
		{"rpc not enabled", `{"id":3,"rpc":{"method":"x"}}`, protocol.ErrMethodNotFound},
	}
	for _, c := range cmdErrs {
		r.send(c.msg)
		m := r.next()
		if m.ID != 3 || m.Error == nil || m.Error.Code != c.code {
			t.Errorf("%s: reply %+v, want error %d", c.name, m, c.code)
		}
	}
	r.send(`{"id":4,"subscribe":{"channel":"x"}}`)
	r.send(`{"id":5,"subscribe":{"channel":"x"}}`)
	if m := r.next(); m.ID != 4 || m.Subscribe == nil {
		t.Fatalf("subscribe: %+v", m)
	}
	m := r.next()
	for m.Join != nil {
		m = r.next()
	}
	if m.ID != 5 || m.Error == nil || m.Error.Code != protocol.ErrAlreadySubscribed {
		t.Fatalf("double subscribe: %+v", m)
	}
	checkBystander("command errors")
}

func longName(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a'
	}
	return string(b)
}

func TestUnknownNamespaceAndPermissions(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.UnknownNamespacesAsDefault = false
	cfg.Namespaces = append(cfg.Namespaces, herald_ns("readonly", false), herald_ns("private", true))
	ts := startServer(t, cfg)
	r := dialRaw(t, ts)
	r.connect("")
	cases := []struct {
		msg  string
		code uint32
	}{
		{`{"id":3,"subscribe":{"channel":"nowhere:1"}}`, protocol.ErrUnknownChannel},
		{`{"id":3,"publish":{"channel":"readonly:1","data":1}}`, protocol.ErrPermissionDenied},
		{`{"id":3,"subscribe":{"channel":"private:1"}}`, protocol.ErrPermissionDenied},
		{`{"id":3,"history":{"channel":"private:1","limit":-1}}`, protocol.ErrPermissionDenied},
		{`{"id":3,"presence":{"channel":"private:1"}}`, protocol.ErrPermissionDenied},
		{`{"id":3,"history":{"channel":"readonly:1","limit":-1}}`, protocol.ErrNotAvailable},
		{`{"id":3,"presence":{"channel":"readonly:1"}}`, protocol.ErrNotAvailable},
	}
	for _, c := range cases {
		r.send(c.msg)
		m := r.next()
		if m.Error == nil || m.Error.Code != c.code {
			t.Errorf("%s: reply %+v, want error %d", c.msg, m, c.code)
		}
	}
}

func TestPingPong(t *testing.T) {
	t.Parallel()
	cfg := devConfig()
	cfg.PingInterval = time.Second
	cfg.PongTimeout = time.Second
	ts := startServer(t, cfg)
	// A client that answers pings stays.
	good := dialRaw(t, ts)
	if res := good.connect(""); res.Ping != 1 {
		t.Fatalf("ping interval %d", res.Ping)
	}
	for i := 0; i < 3; i++ {
		if m := good.next(); m.Ping == nil {
			t.Fatalf("expected ping, got %+v", m)
		}
		good.send(`{"pong":{}}`)
	}
	// One that does not is dropped with 3004.
	bad := dialRaw(t, ts)
	bad.connect("")
	code, push := bad.closeCode()
	if code != protocol.DisconnectNoPong || push == nil || !push.Reconnect {
		t.Fatalf("silent client: close %d push %+v", code, push)
	}
	// One that never connects is dropped as stale.
	cfg2 := devConfig()
	cfg2.StaleTimeout = time.Second
	ts2 := startServer(t, cfg2)
	stale := dialRaw(t, ts2)
	if code, _ := stale.closeCode(); code != protocol.DisconnectStale {
		t.Fatalf("stale client: close %d", code)
	}
}
