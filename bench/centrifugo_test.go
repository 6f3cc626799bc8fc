package bench

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
)

func TestCentrifugoCommands(t *testing.T) {
	tg := centrifugoTarget{}
	cases := []struct {
		got  []byte
		want string
	}{
		{tg.AppendConnect(nil, 1), `{"id":1,"connect":{"name":"herald-bench"}}`},
		{tg.AppendSubscribe(nil, 2, "bench-1"), `{"id":2,"subscribe":{"channel":"bench-1"}}`},
		{tg.AppendPublish(nil, 17, "a:b", []byte(`{"s":1,"t":2,"p":""}`)), `{"id":17,"publish":{"channel":"a:b","data":{"s":1,"t":2,"p":""}}}`},
		{tg.AppendPong(nil), `{}`},
		{tg.AppendPong([]byte("x")), `x{}`},
	}
	for _, c := range cases {
		if string(c.got) != c.want {
			t.Errorf("got %s, want %s", c.got, c.want)
		}
		if c.want != `x{}` && !json.Valid(c.got) {
			t.Errorf("%s is not valid JSON", c.got)
		}
	}
	if tg.Name() != "centrifugo" || tg.Subprotocol() != "centrifuge-json" || tg.Binary() {
		t.Errorf("name %q subprotocol %q binary %v", tg.Name(), tg.Subprotocol(), tg.Binary())
	}
	if got, err := targetFor("centrifugo"); err != nil || got.Name() != "centrifugo" {
		t.Errorf("targetFor: %v %v", got, err)
	}
}

func TestCentrifugoNext(t *testing.T) {
	payload := string(appendPayload(nil, 42, 1764100000000000000, 80))
	type want struct {
		kind   evKind
		id     uint64
		offset uint64
		failed bool
		code   uint32
		data   string
	}
	cases := []struct {
		name  string
		frame string
		want  []want
	}{
		{"ping", `{}`, []want{{kind: evPing}}},
		{"connect reply", `{"id":1,"connect":{"client":"8f3b","version":"6.9.1","ping":25,"pong":true}}`,
			[]want{{kind: evReply, id: 1}}},
		{"subscribe reply, empty result", `{"id":2,"subscribe":{}}`, []want{{kind: evReply, id: 2}}},
		{"error reply", `{"id":3,"error":{"code":103,"message":"permission denied"}}`,
			[]want{{kind: evReply, id: 3, failed: true, data: `{"code":103,"message":"permission denied"}`}}},
		{"publication with offset", `{"push":{"channel":"bench-1","pub":{"data":` + payload + `,"offset":7}}}`,
			[]want{{kind: evPub, offset: 7, data: payload}}},
		{"publication without history", `{"push":{"channel":"c","pub":{"data":` + payload + `}}}`,
			[]want{{kind: evPub, data: payload}}},
		{"client publication: info between data and offset", `{"push":{"channel":"c","pub":{"data":` + payload +
			`,"info":{"user":"","client":"x","conn_info":{"offset":99,"s":"}\"{"}},"offset":12,"tags":{"k":"v"},"time":5}}}`,
			[]want{{kind: evPub, offset: 12, data: payload}}},
		{"field order does not matter", `{"push":{"pub":{"offset":3,"data":[1,{"a":"]"}]},"channel":"c"}}`,
			[]want{{kind: evPub, offset: 3, data: `[1,{"a":"]"}]`}}},
		{"string data with escapes", `{"push":{"channel":"c","pub":{"data":"a\"b\\","offset":1}}}`,
			[]want{{kind: evPub, offset: 1, data: `"a\"b\\"`}}},
		{"several messages per frame", "{}\n{\"id\":4,\"publish\":{}}\n{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":" + payload + ",\"offset\":8}}}",
			[]want{{kind: evPing}, {kind: evReply, id: 4}, {kind: evPub, offset: 8, data: payload}}},
		{"join push", `{"push":{"channel":"c","join":{"info":{"user":"u","client":"c"}}}}`, []want{{kind: evOther}}},
		{"disconnect push", `{"push":{"disconnect":{"code":3001,"reason":"shutdown","reconnect":true}}}`,
			[]want{{kind: evDisconnect, code: 3001}}},
		{"whitespace", " { \"id\" : 5 , \"publish\" : { } } ", []want{{kind: evReply, id: 5}}},
		{"not an object", `[1]`, []want{{kind: evOther}}},
		{"truncated publication: a bad payload", `{"push":{"channel":"c","pub":{"data":{"s":1`, []want{{kind: evPub}}},
		{"truncated reply", `{"id":`, []want{{kind: evOther}}},
	}
	tg := centrifugoTarget{}
	for _, c := range cases {
		var ev event
		rest := []byte(c.frame)
		for i, w := range c.want {
			if len(rest) == 0 {
				t.Errorf("%s: message %d missing", c.name, i)
				break
			}
			rest = tg.Next(rest, &ev)
			got := want{ev.kind, ev.id, ev.offset, ev.failed, ev.code, ""}
			if ev.data != nil {
				got.data = string(ev.data)
			}
			if got != w {
				t.Errorf("%s: message %d: got %+v, want %+v", c.name, i, got, w)
			}
		}
		if len(rest) != 0 {
			t.Errorf("%s: %q left over", c.name, rest)
		}
	}
}

func TestCentrifugoNextPayload(t *testing.T) {
	payload := appendPayload(nil, 9, 123456789, 100)
	frame := []byte(`{"push":{"channel":"c","pub":{"data":` + string(payload) + `,"offset":9}}}`)
	var ev event
	centrifugoTarget{}.Next(frame, &ev)
	seq, sent, ok := parsePayload(ev.data)
	if ev.kind != evPub || !ok || seq != 9 || sent != 123456789 || ev.offset != 9 {
		t.Fatalf("kind %v ok %v seq %d sent %d offset %d", ev.kind, ok, seq, sent, ev.offset)
	}
}

// Next runs for every delivery: it must not allocate.
func TestCentrifugoNextAllocs(t *testing.T) {
	frame := []byte("{}\n{\"push\":{\"channel\":\"bench-1\",\"pub\":{\"data\":" +
		string(appendPayload(nil, 1, 1, 64)) + ",\"info\":{\"client\":\"x\"},\"offset\":1}}}\n{\"id\":3,\"error\":{\"code\":1}}")
	var ev event
	allocs := testing.AllocsPerRun(1000, func() {
		for rest := frame; len(rest) > 0; {
			rest = centrifugoTarget{}.Next(rest, &ev)
		}
	})
	if allocs != 0 {
		t.Errorf("%v allocations per frame", allocs)
	}
}

func FuzzCentrifugoNext(f *testing.F) {
	f.Add([]byte(`{}`))
	f.Add([]byte(`{"id":1,"connect":{"client":"x"}}`))
	f.Add([]byte("{\"push\":{\"channel\":\"c\",\"pub\":{\"data\":{\"s\":1},\"offset\":2}}}\n{}"))
	f.Add([]byte(`{"push":{"disconnect":{"code":3000}}}`))
	f.Add([]byte(`{"push":{"pub":{"data":"\`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var ev event
		for rest, n := b, 0; len(rest) > 0; n++ {
			next := centrifugoTarget{}.Next(rest, &ev)
			if len(next) >= len(rest) {
				t.Fatalf("no progress on %q", rest)
			}
			if ev.data != nil && !bytes.Contains(b, ev.data) {
				t.Fatalf("data %q not from the frame", ev.data)
			}
			rest = next
		}
	})
}

func TestCentrifugoPublishResult(t *testing.T) {
	if err := centrifugoPublishResult("publish", []byte(`{"result":{"offset":1,"epoch":"x"}}`), 1); err != nil {
		t.Errorf("ok answer: %v", err)
	}
	err := centrifugoPublishResult("publish", []byte(`{"error":{"code":102,"message":"unknown channel"}}`), 1)
	var be *batchError
	if err == nil || errors.As(err, &be) {
		t.Errorf("top-level error: %v", err)
	}
	err = centrifugoPublishResult("broadcast", []byte(`{"result":{"responses":[{"result":{"offset":2}},{"error":{"code":102,"message":"unknown channel"}},{"result":{}},{"error":{"code":100,"message":"internal"}}]}}`), 4)
	if !errors.As(err, &be) || len(be.failed) != 2 || be.failed[0] != 1 || be.failed[1] != 3 {
		t.Errorf("broadcast errors: %v %+v", err, be)
	}
	if err := centrifugoPublishResult("broadcast", []byte(`{"result":{"responses":[{"result":{}},{"result":{}}]}}`), 2); err != nil {
		t.Errorf("broadcast ok: %v", err)
	}
}
