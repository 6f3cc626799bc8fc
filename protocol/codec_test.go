package protocol_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"

	"github.com/heraldhq/herald/protocol"
)

var codecs = []protocol.Codec{protocol.JSON, protocol.Msgpack}

func TestCommandRoundTrip(t *testing.T) {
	t.Parallel()
	cmds := []*protocol.Command{
		{ID: 1, Connect: &protocol.ConnectRequest{Token: "t", Name: "go", Subs: map[string]*protocol.SubscribeRequest{"a:b": {Recover: true, Epoch: "e", Offset: 5}}}},
		{ID: 2, Subscribe: &protocol.SubscribeRequest{Channel: "room:1", Recover: true, Epoch: "xyz", Offset: 1 << 40}},
		{ID: 3, Publish: &protocol.PublishRequest{Channel: "c", Data: protocol.Data(`{"a":[1,2,3]}`), IdempotencyKey: "k"}},
		{ID: 4, History: &protocol.HistoryRequest{Channel: "c", Since: &protocol.StreamPosition{Epoch: "e", Offset: 9}, Limit: -1, Reverse: true}},
		{ID: 5, Ping: &protocol.Empty{}},
		{Pong: &protocol.Empty{}},
		{ID: 1<<64 - 1, RPC: &protocol.RPCRequest{Method: "m", Data: protocol.Data(`"x"`)}},
	}
	for _, c := range codecs {
		for _, cmd := range cmds {
			b, err := c.AppendCommand(nil, cmd)
			if err != nil {
				t.Fatalf("%s: encode %v: %v", c.Name(), cmd.Method(), err)
			}
			var got protocol.Command
			if err := c.DecodeCommand(b, &got); err != nil {
				t.Fatalf("%s: decode %s: %v", c.Name(), b, err)
			}
			if !reflect.DeepEqual(&got, cmd) {
				t.Errorf("%s: round trip of %s:\n got %+v\nwant %+v", c.Name(), cmd.Method(), got, *cmd)
			}
		}
	}
}

func TestPublicationPush(t *testing.T) {
	t.Parallel()
	pubs := []*protocol.Publication{
		{Channel: "room:1", Offset: 7, Data: protocol.Data(`{"text":"hi <b>"}`), Time: 1700000000000},
		{Channel: "room:1", Offset: 9, Data: protocol.Data(`{"v":2}`), Tags: map[string]string{"key": "a"}, Skipped: 3},
		{Channel: "room:1", Data: protocol.Data("\x00\xffbinary"), Info: &protocol.ClientInfo{Client: "c1", User: "u1", ConnInfo: protocol.Data(`{"n":1}`)}, Tags: map[string]string{"k": "v"}, Gap: true},
		{Channel: "chan\"quote", Offset: 1, Data: protocol.Data(`[1]`)},
		{Channel: "日本", Offset: 1, Data: protocol.Data(`1`)},
		{Channel: "room:1", Offset: 8, Data: protocol.Data("3\n3:abcFqg;"), Delta: true},
		{Channel: "room:1", Offset: 9, Data: protocol.Data("9\n9:{\"a\":\"<é>\"}0;"), Delta: true},
		{Channel: "room:1", Offset: 10, Data: protocol.Data("2\n2:\xff\x00G;"), Delta: true},
	}
	for _, c := range codecs {
		for _, p := range pubs {
			b, err := c.AppendPublicationPush(nil, p)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Binary() && !json.Valid(b) {
				t.Fatalf("invalid JSON push: %s", b)
			}
			var m protocol.ServerMessage
			if err := c.DecodeServerMessage(b, &m); err != nil {
				t.Fatalf("%s: decode %q: %v", c.Name(), b, err)
			}
			if m.Pub == nil || !reflect.DeepEqual(m.Pub, p) {
				t.Errorf("%s: got %+v want %+v", c.Name(), m.Pub, p)
			}
		}
	}
}

func TestDecodeRejects(t *testing.T) {
	t.Parallel()
	bad := []string{
		``, `[]`, `{"id":"x"}`, `{"id":-1}`, `{"id":18446744073709551616}`, `{"id":1,"subscribe":"no"}`,
		`{"id":1} trailing`, `nul`, `{"id":1,"publish":{"data":}}`,
	}
	for _, s := range bad {
		var cmd protocol.Command
		err := protocol.JSON.DecodeCommand([]byte(s), &cmd)
		if !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("JSON decode %q: err %v, want ErrMalformed", s, err)
		}
	}
	for _, b := range [][]byte{{}, {0xc1}, {0x81, 0xa2, 'i', 'd', 0xa1, 'x'}, {0x80, 0x80}} {
		var cmd protocol.Command
		if err := protocol.Msgpack.DecodeCommand(b, &cmd); !errors.Is(err, protocol.ErrMalformed) {
			t.Errorf("msgpack decode %x: err %v, want ErrMalformed", b, err)
		}
	}
}

func TestDataJSON(t *testing.T) {
	t.Parallel()
	b, _ := json.Marshal(struct{ D protocol.Data }{protocol.Data("\xff")})
	if !bytes.Equal(b, []byte(`{"D":"/w=="}`)) {
		t.Errorf("binary data: %s", b)
	}
	b, _ = json.Marshal(struct{ D protocol.Data }{protocol.Data(`{"x":1}`)})
	if !bytes.Equal(b, []byte(`{"D":{"x":1}}`)) {
		t.Errorf("json data: %s", b)
	}
}

func TestDisconnectReconnects(t *testing.T) {
	t.Parallel()
	cases := map[uint32]bool{
		protocol.DisconnectShutdown: true, protocol.DisconnectSlow: true, protocol.DisconnectInvalidToken: false,
		protocol.DisconnectTokenExpired: false, 4000: true, 4500: false, 1001: true, 1006: true, 1009: false, 1002: false,
	}
	for code, want := range cases {
		if got := protocol.DisconnectReconnects(code); got != want {
			t.Errorf("DisconnectReconnects(%d) = %v, want %v", code, got, want)
		}
	}
}
