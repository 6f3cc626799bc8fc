package bench

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/heraldhq/herald/protocol"
)

func TestPayloadRoundTrip(t *testing.T) {
	t.Parallel()
	tests := []struct {
		seq  uint64
		sent int64
		size int
	}{
		{1, 1764100000000000000, 0},
		{42, 1764100000000000000, 64},
		{maxSeq, 1764100000123456789, minPayloadSize},
		{7, 5, 4096},
	}
	for _, tt := range tests {
		p := appendPayload([]byte("junk"), tt.seq, tt.sent, tt.size)[4:]
		if tt.size >= minPayloadSize && len(p) != tt.size {
			t.Errorf("size %d: payload is %d bytes", tt.size, len(p))
		}
		seq, sent, ok := parsePayload(p)
		if !ok || seq != tt.seq || sent != tt.sent {
			t.Errorf("parse(%s) = %d, %d, %v", p, seq, sent, ok)
		}
	}
}

func TestParsePayloadRejects(t *testing.T) {
	t.Parallel()
	for _, in := range []string{``, `null`, `{"s":}`, `{"s":1}`, `{"s":1,"t":}`, `"eyJzIjoxfQ=="`, `{"t":1,"s":2}`} {
		if _, _, ok := parsePayload([]byte(in)); ok {
			t.Errorf("parsePayload(%q) accepted", in)
		}
	}
}

// The Herald target parses frames without a JSON decoder; these frames
// come from the server's own encoder.
func TestHeraldNext(t *testing.T) {
	t.Parallel()
	data := appendPayload(nil, 9, 123456789, 80)
	enc := func(m *protocol.ServerMessage) []byte {
		b, err := protocol.JSON.AppendServerMessage(nil, m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name  string
		frame []byte
		want  event
	}{
		{"publication with offset", enc(&protocol.ServerMessage{Pub: &protocol.Publication{Channel: "bench-1", Offset: 77, Data: data, Time: 1764100000000}}),
			event{kind: evPub, offset: 77, data: data}},
		{"publication without history", enc(&protocol.ServerMessage{Pub: &protocol.Publication{Channel: "a:b", Data: data, Info: &protocol.ClientInfo{Client: "c"}}}),
			event{kind: evPub, data: data}},
		{"reply", enc(&protocol.ServerMessage{ID: 12, Subscribe: &protocol.SubscribeResult{Recoverable: true, Epoch: "e", Offset: 3}}),
			event{kind: evReply, id: 12}},
		{"error reply", enc(&protocol.ServerMessage{ID: 2, Error: protocol.NewError(protocol.ErrPermissionDenied, "permission denied")}),
			event{kind: evReply, id: 2, failed: true}},
		{"ping", enc(&protocol.ServerMessage{Ping: &protocol.Empty{}}), event{kind: evPing}},
		{"disconnect", enc(&protocol.ServerMessage{Disconnect: &protocol.DisconnectPush{Code: 3002, Reason: "slow", Reconnect: true}}),
			event{kind: evDisconnect, code: 3002}},
		{"join", enc(&protocol.ServerMessage{Join: &protocol.PresenceEvent{Channel: "x", Info: protocol.ClientInfo{Client: "c"}}}),
			event{kind: evOther}},
	}
	for _, tt := range tests {
		var ev event
		if rest := (heraldTarget{}).Next(tt.frame, &ev); len(rest) != 0 {
			t.Errorf("%s: rest %q", tt.name, rest)
		}
		if ev.kind != tt.want.kind || ev.id != tt.want.id || ev.failed != tt.want.failed ||
			ev.code != tt.want.code || ev.offset != tt.want.offset {
			t.Errorf("%s: %s\n got %+v\nwant %+v", tt.name, tt.frame, ev, tt.want)
		}
		if tt.want.data != nil && !strings.HasPrefix(string(ev.data), string(tt.want.data)) {
			t.Errorf("%s: data %q", tt.name, ev.data)
		}
		if ev.kind == evPub {
			if seq, sent, ok := parsePayload(ev.data); !ok || seq != 9 || sent != 123456789 {
				t.Errorf("%s: payload parse %d %d %v", tt.name, seq, sent, ok)
			}
		}
	}
}

// Commands the target writes must decode with the server's decoder.
func TestHeraldCommands(t *testing.T) {
	t.Parallel()
	h := heraldTarget{}
	data := appendPayload(nil, 1, 2, 0)
	for _, b := range [][]byte{
		h.AppendConnect(nil, 1),
		h.AppendSubscribe(nil, 2, "bench-abc-17"),
		h.AppendPublish(nil, 3, "ns:chan", data),
		h.AppendPong(nil),
	} {
		var cmd protocol.Command
		if err := protocol.JSON.DecodeCommand(b, &cmd); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if cmd.Method() == "" {
			t.Fatalf("%s: no method", b)
		}
		if cmd.Publish != nil && string(cmd.Publish.Data) != string(data) {
			t.Fatalf("publish data %s", cmd.Publish.Data)
		}
	}
}

func TestFlags(t *testing.T) {
	t.Parallel()
	o, err := parseFlags([]string{"--scenario", "channels", "--conns", "50", "--source-ips", "3", "--key", "secret", "--size", "1"}, &strings.Builder{})
	if err != nil {
		t.Fatal(err)
	}
	if o.Channels != 50 || len(o.sourceIPs) != 3 || o.sourceIPs[2] != "127.0.0.4" || o.API != "http://127.0.0.1:8000" || o.Size != minPayloadSize {
		t.Fatalf("defaults not applied: %+v", o)
	}
	if cl := o.commandLine(); strings.Contains(cl, "secret") || !strings.Contains(cl, "--key K") {
		t.Fatalf("command line shows the key: %s", cl)
	}
	for _, bad := range [][]string{
		{"--scenario", "nope"},
		{"--url", "http://x/ws"},
		{"--publish", "carrier-pigeon"},
		{"--channel-prefix", "bad\"prefix"},
		{"--source-ips", "127.0.0.1,notanip"},
		{"--conns", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestJSONPayload(t *testing.T) {
	for _, size := range []int{minPayloadSize, 200, 1000, 4096} {
		p := appendPayloadShape(nil, "json", 42, 1764100000000000000, size)
		if len(p) > size+2 && size > minPayloadSize {
			t.Errorf("size %d: %d bytes", size, len(p))
		}
		var v struct {
			S uint64           `json:"s"`
			T int64            `json:"t"`
			P []map[string]any `json:"p"`
		}
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("size %d: %q: %v", size, p, err)
		}
		if seq, sent, ok := parsePayload(p); !ok || seq != 42 || sent != 1764100000000000000 {
			t.Errorf("size %d: parsed %d %d %v", size, seq, sent, ok)
		}
		if size >= 1000 && len(p) < size-120 {
			t.Errorf("size %d: only %d bytes", size, len(p))
		}
	}
	if a, b := appendPayloadShape(nil, "json", 1, 0, 1000), appendPayloadShape(nil, "json", 2, 0, 1000); bytes.Equal(a[10:], b[10:]) {
		t.Error("payloads of two sequence numbers are the same")
	}
}

// TestDocPayload: the doc shape is valid JSON of about the size asked,
// the same for the same seq, and from one seq to the next changes "s",
// "t" and one of its records.
func TestDocPayload(t *testing.T) {
	type doc struct {
		S uint64           `json:"s"`
		T int64            `json:"t"`
		P []map[string]any `json:"p"`
	}
	parse := func(seq uint64) doc {
		p := appendPayloadShape(nil, "doc", seq, 1764100000000000000+int64(seq), 1000)
		if len(p) > 1000 || len(p) < 1000-docRecordLen {
			t.Fatalf("seq %d: %d bytes", seq, len(p))
		}
		var v doc
		if err := json.Unmarshal(p, &v); err != nil {
			t.Fatalf("seq %d: %q: %v", seq, p, err)
		}
		if s, _, ok := parsePayload(p); !ok || s != seq {
			t.Fatalf("seq %d: parsed %d %v", seq, s, ok)
		}
		return v
	}
	prev := parse(1)
	for seq := uint64(2); seq < 200; seq++ {
		cur := parse(seq)
		if len(cur.P) != len(prev.P) {
			t.Fatalf("seq %d: %d records, before %d", seq, len(cur.P), len(prev.P))
		}
		n := 0
		for k := range cur.P {
			if !reflect.DeepEqual(cur.P[k], prev.P[k]) {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("seq %d: %d records changed", seq, n)
		}
		prev = cur
	}
	if !bytes.Equal(appendPayloadShape(nil, "doc", 7, 1, 1000), appendPayloadShape(nil, "doc", 7, 1, 1000)) {
		t.Fatal("same seq, different documents")
	}
}

func TestJSONValueEnd(t *testing.T) {
	for _, c := range []struct {
		in   string
		want int
	}{
		{`{"a":"}"}}`, 9},
		{`[1,{"b":[2]}],"x":1}`, 13},
		{`"s\"t",`, 6},
		{`12,"b64":true}`, 2},
		{`null}`, 4},
		{`{"a":1`, -1},
		{`"open`, -1},
	} {
		if got := jsonValueEnd([]byte(c.in)); got != c.want {
			t.Errorf("jsonValueEnd(%q) = %d, want %d", c.in, got, c.want)
		}
	}
}
