package protocol_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/protocol"
)

// seedCommands carry every request and field. They are written out here
// (and encoded with the MessagePack library itself, not the codec) so that
// a codec that drops a field cannot drop it from the seeds too: the seed
// corpus alone, run by plain go test, checks each field's round trip.
var seedCommands = []string{
	`{"id":1,"connect":{"token":"t","name":"go","version":"1.0","subs":{"a:b":{"token":"st","recover":true,"epoch":"e","offset":5}}}}`,
	`{"id":2,"subscribe":{"channel":"room:1","token":"st","recover":true,"epoch":"xyz","offset":1099511627776}}`,
	`{"id":3,"unsubscribe":{"channel":"room:1"}}`,
	`{"id":4,"publish":{"channel":"c","data":{"a":[1,2,3]},"idempotency_key":"k"}}`,
	`{"id":5,"presence":{"channel":"c"}}`,
	`{"id":6,"presence_stats":{"channel":"c"}}`,
	`{"id":7,"history":{"channel":"c","since":{"epoch":"e","offset":9},"limit":-1,"reverse":true}}`,
	`{"id":8,"rpc":{"method":"m","data":"x"}}`,
	`{"id":9,"refresh":{"token":"t2"}}`,
	`{"id":10,"ping":{}}`,
	`{"pong":{}}`,
	`{"id":11,"ack":{"offsets":{"room:1":7,"b":18446744073709551615}}}`,
	`{"ack":{"offsets":{"room:1":1}}}`,
	`{"id":12,"subscribe":{"channel":"room:1","acked":true,"recover":true,"epoch":"e","offset":2}}`,
}

func FuzzDecodeCommandJSON(f *testing.F) {
	for _, s := range seedCommands {
		f.Add([]byte(s))
	}
	f.Add([]byte(`{"id":1,"subscribe":{"channel":"a","recover":true,"epoch":"e","offset":3}}`))
	// What the JSON codec normalises: Data's spacing and HTML characters,
	// an empty map.
	f.Add([]byte(`{"id":3,"publish":{"channel":"a","data":{ "x" : "<&>` + "\u2028" + `" }}}`))
	f.Add([]byte(`{"id":4,"connect":{"subs":{}}}`))
	f.Add([]byte(`{"id":5,"subscribe":{"channel":"a","delta":"fossil"}}`))
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCommand(t, protocol.JSON, b) })
}

func FuzzDecodeCommandMsgpack(f *testing.F) {
	var cmds []*protocol.Command
	for _, s := range seedCommands {
		var cmd protocol.Command
		if err := json.Unmarshal([]byte(s), &cmd); err != nil {
			f.Fatalf("seed %s: %v", s, err)
		}
		cmds = append(cmds, &cmd)
	}
	cmds = append(cmds,
		&protocol.Command{ID: 2, Publish: &protocol.PublishRequest{Channel: "a", Data: protocol.Data("\x00\x01")}},
		// What the MessagePack codec normalises: empty Data and maps.
		&protocol.Command{ID: 3, RPC: &protocol.RPCRequest{Method: "m", Data: protocol.Data{}}},
		&protocol.Command{ID: 4, Connect: &protocol.ConnectRequest{Subs: map[string]*protocol.SubscribeRequest{}}},
	)
	for _, cmd := range cmds {
		b, err := msgpack.Marshal(cmd)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) { fuzzCommand(t, protocol.Msgpack, b) })
}

// fuzzCommand checks that decoding never panics and that whatever decodes
// re-encodes and decodes again to an equal command: every field, compared
// with reflect.DeepEqual once both sides are in canonical form.
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
	canonical(reflect.ValueOf(&cmd), c == protocol.JSON)
	canonical(reflect.ValueOf(&again), c == protocol.JSON)
	if !reflect.DeepEqual(&cmd, &again) {
		t.Fatalf("round trip changed the command: %q -> %q\n got %s\nwant %s (canonical form)", b, enc, dump(&again), dump(&cmd))
	}
}

var dataType = reflect.TypeFor[protocol.Data]()

// canonical rewrites the value v points to into the form a round trip
// through the codecs gives it. It undoes only what they legitimately
// normalise:
//   - an empty map or empty Data becomes nil: omitempty leaves it out, and
//     it decodes as absent (the JSON decoder never makes an empty Data);
//   - with JSON (jsonData), Data is a raw JSON value kept as received, and
//     encoding/json compacts the value a MarshalJSON method returns and
//     escapes <, >, &, U+2028 and U+2029 in it: so is Data here.
//
// Strings need nothing: both decoders keep what the encoders write (the JSON
// decoder turned invalid UTF-8 into U+FFFD on the first decode already).
func canonical(v reflect.Value, jsonData bool) {
	switch v.Kind() {
	case reflect.Pointer:
		if !v.IsNil() {
			canonical(v.Elem(), jsonData)
		}
	case reflect.Struct:
		for i := range v.NumField() {
			if v.Type().Field(i).IsExported() {
				canonical(v.Field(i), jsonData)
			}
		}
	case reflect.Map:
		if v.Len() == 0 {
			v.SetZero()
			return
		}
		for it := v.MapRange(); it.Next(); {
			canonical(it.Value(), jsonData) // pointers: their targets are settable
		}
	case reflect.Slice:
		if v.Type() != dataType {
			for i := range v.Len() {
				canonical(v.Index(i), jsonData)
			}
			return
		}
		d := v.Bytes()
		if len(d) == 0 {
			v.SetZero()
			return
		}
		if jsonData {
			var compact, escaped bytes.Buffer
			if json.Compact(&compact, d) == nil {
				json.HTMLEscape(&escaped, compact.Bytes())
				v.SetBytes(escaped.Bytes())
			}
		}
	}
}

// dump shows a command with its pointers followed.
func dump(cmd *protocol.Command) string {
	b, err := json.Marshal(cmd)
	if err != nil {
		return fmt.Sprintf("%+v (%v)", *cmd, err)
	}
	return string(b)
}

func FuzzDecodeServerMessage(f *testing.F) {
	f.Add([]byte(`{"pub":{"channel":"a","offset":1,"data":"AAE=","b64":true}}`))
	f.Add([]byte(`{"pub":{"channel":"a","offset":2,"data":"MwoxOmEzOw==","b64":true,"delta":true}}`))
	f.Add([]byte(`{"id":3,"subscribe":{"recovered":true,"publications":[{"offset":2,"data":1}]}}`))
	f.Add([]byte(`{"pub":{"channel":"a","offset":4,"data":{},"redelivered":true}}`))
	f.Add([]byte(`{"id":4,"subscribe":{"ack":true,"recoverable":true,"epoch":"e","offset":9}}`))
	f.Add([]byte(`{"id":5,"ack":{}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, c := range codecs {
			var m protocol.ServerMessage
			_ = c.DecodeServerMessage(b, &m)
		}
	})
}
