package redis

import (
	"strings"
	"testing"

	"github.com/heraldhq/herald/protocol"
)

func TestLiveRoundTrip(t *testing.T) {
	t.Parallel()
	pub := &protocol.Publication{
		Channel: "ignored", Offset: 99, Data: protocol.Data(`{"a":1}`),
		Info: &protocol.ClientInfo{Client: "c", User: "u"}, Tags: map[string]string{"k": "v"}, Time: 1700000000000,
	}
	body, err := encodeBody(pub)
	if err != nil {
		t.Fatal(err)
	}
	m, err := decodeLive("ch", "p7:ABCDEFGH:"+body)
	if err != nil {
		t.Fatal(err)
	}
	p := m.pubs[0]
	if m.kind != kindPub || m.epoch != "ABCDEFGH" || p.Channel != "ch" || p.Offset != 7 ||
		string(p.Data) != `{"a":1}` || p.Info.User != "u" || p.Tags["k"] != "v" || p.Time != pub.Time {
		t.Fatalf("decoded %+v epoch %q", p, m.epoch)
	}
	join, err := encode(kindJoin, &protocol.ClientInfo{Client: "c", User: "u", ConnInfo: protocol.Data(`{"x":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	m, err = decodeLive("ch", join)
	if err != nil || m.kind != kindJoin || m.info.Client != "c" || string(m.info.ConnInfo) != `{"x":1}` {
		t.Fatalf("join: %+v, %v", m, err)
	}
	body2, err := encodeBody(&protocol.Publication{Data: protocol.Data(`{"b":2}`)})
	if err != nil {
		t.Fatal(err)
	}
	m, err = decodeLive("ch", "b7:ABCDEFGH:"+body+body2+body)
	if err != nil {
		t.Fatal(err)
	}
	if m.kind != kindBatch || m.epoch != "ABCDEFGH" || len(m.pubs) != 3 {
		t.Fatalf("batch: %+v", m)
	}
	for i, want := range []string{`{"a":1}`, `{"b":2}`, `{"a":1}`} {
		if p := m.pubs[i]; p.Offset != uint64(7+i) || string(p.Data) != want || p.Channel != "ch" {
			t.Fatalf("batch publication %d: %+v", i, p)
		}
	}
	for _, bad := range []string{"", "x", "p", "p1", "p1:E", "px:E:", "p1::" + body, "p0:E:" + body, "j\xc1",
		"b1:E:", "b1:E:" + body + "\xc1", "b1::" + body + body} {
		if _, err := decodeLive("ch", bad); err == nil {
			t.Errorf("decodeLive(%q) succeeded", bad)
		}
	}
}

func FuzzDecodeLive(f *testing.F) {
	body, err := encodeBody(&protocol.Publication{Data: protocol.Data(`{"n":1}`), Tags: map[string]string{"a": "b"}})
	if err != nil {
		f.Fatal(err)
	}
	join, err := encode(kindJoin, &protocol.ClientInfo{Client: "c", User: "u"})
	if err != nil {
		f.Fatal(err)
	}
	for _, s := range []string{"p1:ABCDEFGH:" + body, "p0::" + body, "b5:ABCDEFGH:" + body + body, "b0::" + body + body + body, join, "l" + join[1:], "", "p", "b", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		m, err := decodeLive("ch", msg)
		if err != nil {
			return
		}
		switch m.kind {
		case kindPub, kindBatch:
			if len(m.pubs) == 0 || (m.kind == kindPub && len(m.pubs) != 1) {
				t.Fatalf("%c message with %d publications", m.kind, len(m.pubs))
			}
			for i, p := range m.pubs {
				if p == nil || p.Channel != "ch" || (p.Offset == 0) != (m.epoch == "") {
					t.Fatalf("inconsistent publication %+v epoch %q", p, m.epoch)
				}
				if p.Offset != 0 && p.Offset != m.pubs[0].Offset+uint64(i) {
					t.Fatalf("offsets not consecutive: %d at %d after %d", p.Offset, i, m.pubs[0].Offset)
				}
			}
		case kindJoin, kindLeave:
			if m.info == nil {
				t.Fatal("event without info")
			}
		default:
			t.Fatalf("accepted kind %q", m.kind)
		}
	})
}

func TestKeySlot(t *testing.T) {
	t.Parallel()
	if got := crc16("123456789"); got != 0x31c3 {
		t.Fatalf("crc16 = %#x, want 0x31c3", got)
	}
	cases := []struct {
		key  string
		slot int
	}{
		{"foo", 12182},
		{"{foo}bar", 12182},
		{"x{foo}y{z}", 12182},
		{"{}foo", keySlotWhole("{}foo")},
		{"foo{", keySlotWhole("foo{")},
	}
	for _, c := range cases {
		if got := keySlot(c.key); got != c.slot {
			t.Errorf("keySlot(%q) = %d, want %d", c.key, got, c.slot)
		}
	}
}

func keySlotWhole(key string) int { return int(crc16(key) % 16384) }

// TestKeysOneSlot: every key and the pub/sub name of a channel hash to one
// slot, whatever the channel's name, and names stay distinct.
func TestKeysOneSlot(t *testing.T) {
	t.Parallel()
	names := []string{"", "a", "}", "{", "{}", "a}b", "{x}", "x{y}z", "ünï", strings.Repeat("l", 500), "a:b:c"}
	seen := map[string]string{}
	for _, ch := range names {
		k := keysFor("herald", ch)
		all := []string{k.meta(), k.stream(), k.pubsub(), k.idem("key"), k.presenceInfo(), k.presenceUsers(), k.presenceExp()}
		for _, key := range all {
			if keySlot(key) != keySlot(all[0]) {
				t.Errorf("channel %q: %q and %q in different slots", ch, key, all[0])
			}
		}
		if prev, ok := seen[k.meta()]; ok {
			t.Errorf("channels %q and %q share keys", prev, ch)
		}
		seen[k.meta()] = ch
	}
	if keySlot(keysFor("herald", "a").meta()) == keySlot(keysFor("herald", "b").meta()) {
		t.Error("different channels in the same slot: the hash tag is not the channel")
	}
}

// checkPlainBody fails if encodeBody's hand-written form of a publication
// of data and time differs from the MessagePack encoder's.
func checkPlainBody(t *testing.T, data []byte, ms int64) {
	t.Helper()
	pub := &protocol.Publication{Data: data, Time: ms}
	got, err := encodeBody(pub)
	if err != nil {
		t.Fatal(err)
	}
	want, err := encode(0, &wireBody{Data: pub.Data, Time: pub.Time})
	if err != nil {
		t.Fatal(err)
	}
	if got != want {
		t.Fatalf("data of %d bytes, time %d: encoded %x, the encoder %x", len(data), ms, got, want)
	}
}

func TestPlainBody(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 255, 256, 65535, 65536, 70000} {
		for _, ms := range []int64{-1, 0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1764690000000, 1<<63 - 1} {
			checkPlainBody(t, []byte(strings.Repeat("x", n)), ms)
		}
	}
}

// FuzzPlainBody compares the hand-written encoding of a publication of
// data and time with the MessagePack encoder's.
func FuzzPlainBody(f *testing.F) {
	f.Add([]byte(`{"a":1}`), int64(1764690000000))
	f.Add([]byte{}, int64(0))
	f.Add([]byte("x"), int64(-5))
	f.Fuzz(func(t *testing.T, data []byte, ms int64) {
		checkPlainBody(t, data, ms)
	})
}

func BenchmarkEncodeBody(b *testing.B) {
	pub := &protocol.Publication{Data: protocol.Data(`{"seq":1,"pad":"` + strings.Repeat("x", 80) + `"}`), Time: 1764690000000}
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodeBody(pub); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("encoder", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encode(0, &wireBody{Data: pub.Data, Time: pub.Time}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
