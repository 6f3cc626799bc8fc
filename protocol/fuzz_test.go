package protocol_test

import (
	"testing"

	"github.com/heraldhq/herald/protocol"
)

func FuzzDecodeCommandJSON(f *testing.F) {
	f.Add([]byte(`{"id":1,"subscribe":{"channel":"a","recover":true,"epoch":"e","offset":3}}`))
	f.Add([]byte(`{"id":2,"publish":{"channel":"a","data":{"x":[1,2]}}}`))
	f.Add([]byte(`{"pong":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCommand(t, protocol.JSON, b) })
}

func FuzzDecodeCommandMsgpack(f *testing.F) {
	for _, cmd := range []*protocol.Command{
		{ID: 1, Subscribe: &protocol.SubscribeRequest{Channel: "a", Recover: true}},
		{ID: 2, Publish: &protocol.PublishRequest{Channel: "a", Data: protocol.Data("\x00\x01")}},
	} {
		b, _ := protocol.Msgpack.AppendCommand(nil, cmd)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCommand(t, protocol.Msgpack, b) })
}

// fuzzCommand checks that decoding never panics and that whatever decodes
// re-encodes and decodes again to an equal command.
func fuzzCommand(t *testing.T, c protocol.Codec, b []byte) {
	var cmd protocol.Command
	if err := c.DecodeCommand(b, &cmd); err != nil {
		return
	}
	enc, err := c.AppendCommand(nil, &cmd)
	if err != nil {
		return // e.g. invalid UTF-8 kept in a string
	}
	var again protocol.Command
	if err := c.DecodeCommand(enc, &again); err != nil {
		t.Fatalf("re-decode of %q: %v", enc, err)
	}
	if again.Method() != cmd.Method() || again.ID != cmd.ID {
		t.Fatalf("round trip changed command: %q -> %q", b, enc)
	}
}

func FuzzDecodeServerMessage(f *testing.F) {
	f.Add([]byte(`{"pub":{"channel":"a","offset":1,"data":"AAE=","b64":true}}`))
	f.Add([]byte(`{"id":3,"subscribe":{"recovered":true,"publications":[{"offset":2,"data":1}]}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range codecs {
			var m protocol.ServerMessage
			_ = c.DecodeServerMessage(b, &m)
		}
	})
}
