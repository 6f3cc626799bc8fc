package redis

import (
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/protocol"
)

// decodeLiveLibrary is decodeLive with every body decoded by the msgpack
// library: the reference the hand-written decoding is compared with.
func decodeLiveLibrary(ch, msg string) (liveMessage, error) {
	if msg == "" {
		return liveMessage{}, errMalformed
	}
	m := liveMessage{kind: msg[0]}
	switch m.kind {
	case kindPub, kindBatch:
		rest := msg[1:]
		i := strings.IndexByte(rest, ':')
		if i < 0 {
			return m, errMalformed
		}
		offset, err := strconv.ParseUint(rest[:i], 10, 64)
		if err != nil {
			return m, errMalformed
		}
		rest = rest[i+1:]
		j := strings.IndexByte(rest, ':')
		if j < 0 {
			return m, errMalformed
		}
		m.epoch = rest[:j]
		if (offset == 0) != (m.epoch == "") {
			return m, errMalformed
		}
		r := strings.NewReader(rest[j+1:])
		d := msgpack.NewDecoder(r)
		for {
			if len(m.pubs) == maxLiveBatch {
				return m, fmt.Errorf("%w: more than %d publications in a batch", errMalformed, maxLiveBatch)
			}
			var w wireBody
			if err := d.Decode(&w); err != nil {
				return m, fmt.Errorf("%w: %v", errMalformed, err)
			}
			off := offset
			if offset != 0 {
				off += uint64(len(m.pubs))
			}
			m.pubs = append(m.pubs, &protocol.Publication{Channel: ch, Offset: off, Data: w.Data, Info: w.Info, Tags: w.Tags, Time: w.Time, Trace: w.Trace})
			if m.kind == kindPub || r.Len() == 0 {
				return m, nil
			}
		}
	case kindJoin, kindLeave:
		m.info = new(protocol.ClientInfo)
		return m, decode(msg[1:], m.info)
	default:
		return m, fmt.Errorf("%w: kind %q", errMalformed, m.kind)
	}
}

// checkDecodeLive fails if decodeLive and the library's decoding disagree
// on msg: both fail, or both give the same message.
func checkDecodeLive(t *testing.T, msg string) {
	t.Helper()
	got, err := decodeLive("ch", msg)
	want, werr := decodeLiveLibrary("ch", msg)
	if (err == nil) != (werr == nil) {
		t.Fatalf("%q: decodeLive error %v, the library's %v", msg, err, werr)
	}
	if err != nil {
		return
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("%q: decodeLive %s, the library %s", msg, dumpLive(got), dumpLive(want))
	}
}

func dumpLive(m liveMessage) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%c epoch %q info %+v:", m.kind, m.epoch, m.info)
	for _, p := range m.pubs {
		fmt.Fprintf(&b, " %+v", *p)
	}
	return b.String()
}

// TestDecodeLiveLibrary: the hand-written decoding of plain bodies, and
// the library's of others, in one message and in batches mixing them.
func TestDecodeLiveLibrary(t *testing.T) {
	t.Parallel()
	var bodies []string
	for _, n := range []int{0, 1, 255, 256, 65536} {
		for _, ms := range []int64{-1, 0, 1, 127, 128, 1<<32 - 1, 1 << 32, 1764690000000} {
			b, err := encodeBody(&protocol.Publication{Data: []byte(strings.Repeat("x", n)), Time: ms})
			if err != nil {
				t.Fatal(err)
			}
			bodies = append(bodies, b)
		}
	}
	tagged, err := encodeBody(&protocol.Publication{Data: protocol.Data(`{"a":1}`), Tags: map[string]string{"k": "v"}, Info: &protocol.ClientInfo{Client: "c"}, Trace: "t"})
	if err != nil {
		t.Fatal(err)
	}
	bodies = append(bodies, tagged)
	// Forms the encoder does not write but the library reads: a map 16,
	// signed and unsigned times, keys in another order, a str key of 8 bits.
	bodies = append(bodies, "\xde\x00\x02\xa4time\xd3\x00\x00\x01\x9a\xdd\x9c\x8a\x00\xa4data\xc4\x01x",
		"\x82\xa4time\xff\xa4data\xc5\x00\x01y", "\x81\xd9\x04data\xc4\x01z", "\x82\xa4data\xc4\x01a\xa4data\xc4\x01b",
		"\x80", "\x81\xa4time\xcf\xff\xff\xff\xff\xff\xff\xff\xff", "\x81\xa4data\xa1s", "\x81\xa4data\xc0")
	for _, b := range bodies {
		checkDecodeLive(t, "p7:E:"+b)
		checkDecodeLive(t, "p0::"+b)
		checkDecodeLive(t, "p7:E:"+b+"\xc1") // trailing bytes after one publication are ignored
		checkDecodeLive(t, "b7:E:"+b+tagged+b)
		checkDecodeLive(t, "b0::"+b+b)
		checkDecodeLive(t, "b7:E:"+b+"\xc1")
		checkDecodeLive(t, "b7:E:"+b[:len(b)-1])
	}
}

// FuzzDecodeLiveLibrary compares decodeLive with the msgpack library's
// decoding of the same message.
func FuzzDecodeLiveLibrary(f *testing.F) {
	plain, _ := encodeBody(&protocol.Publication{Data: protocol.Data(`{"n":1}`), Time: 1764690000000})
	tagged, _ := encodeBody(&protocol.Publication{Data: protocol.Data(`{"n":1}`), Tags: map[string]string{"a": "b"}})
	for _, s := range []string{"p1:E:" + plain, "p0::" + plain, "b5:E:" + plain + tagged + plain, "b0::" + plain + plain, "p1:E:" + tagged, "b1:E:\x81\xa4time\x05"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, msg string) {
		checkDecodeLive(t, msg)
	})
}

func BenchmarkDecodeLive(b *testing.B) {
	body, _ := encodeBody(&protocol.Publication{Data: protocol.Data(`{"seq":1,"pad":"` + strings.Repeat("x", 80) + `"}`), Time: 1764690000000})
	msg := "b7:ABCDEFGH:" + strings.Repeat(body, 5)
	for _, c := range []struct {
		name string
		fn   func(string, string) (liveMessage, error)
	}{{"hand", decodeLive}, {"library", decodeLiveLibrary}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if m, err := c.fn("ch", msg); err != nil || len(m.pubs) != 5 {
					b.Fatal(len(m.pubs), err)
				}
			}
		})
	}
}
