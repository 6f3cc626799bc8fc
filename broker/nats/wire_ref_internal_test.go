package nats

import (
	"bytes"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"testing"

	natsgo "github.com/nats-io/nats.go"
	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/protocol"
)

// decodeEntriesLibrary is decodeEntries with every body decoded by the
// msgpack library: the reference the hand-written decoding is compared
// with.
func decodeEntriesLibrary(h natsgo.Header, body []byte) (ws []wirePub, first uint64, epoch string, err error) {
	n := 1
	if v := h.Get(hdrCount); v != "" {
		if n, err = strconv.Atoi(v); err != nil || n < 1 || n > maxBatch {
			return nil, 0, "", fmt.Errorf("decode publication: bad %s %q", hdrCount, v)
		}
	}
	if n == 1 {
		ws = make([]wirePub, 1)
		err = msgpack.Unmarshal(body, &ws[0])
	} else {
		dec := msgpack.NewDecoder(bytes.NewReader(body))
		var l int
		if l, err = dec.DecodeArrayLen(); err == nil && l != n {
			err = fmt.Errorf("%d publications, %s says %d", l, hdrCount, n)
		}
		if err == nil {
			ws = make([]wirePub, n)
			for i := range ws {
				if err = dec.Decode(&ws[i]); err != nil {
					break
				}
			}
		}
	}
	if err != nil {
		return nil, 0, "", fmt.Errorf("decode publication: %w", err)
	}
	epoch = h.Get(hdrEpoch)
	if epoch != "" {
		last, err := strconv.ParseUint(h.Get(hdrOffset), 10, 64)
		if err != nil {
			return nil, 0, "", fmt.Errorf("decode publication offset: %w", err)
		}
		if last < uint64(n) {
			return nil, 0, "", fmt.Errorf("decode publication: offset %d with %d publications", last, n)
		}
		first = last - uint64(n) + 1
	}
	return ws, first, epoch, nil
}

// checkDecodeEntries fails if decodeEntries and the library's decoding
// disagree: both fail, or both give the same publications.
func checkDecodeEntries(t *testing.T, h natsgo.Header, body []byte) {
	t.Helper()
	ws, first, epoch, err := decodeEntries(h, body)
	wws, wfirst, wepoch, werr := decodeEntriesLibrary(h, body)
	if (err == nil) != (werr == nil) {
		t.Fatalf("% x: decodeEntries error %v, the library's %v", body, err, werr)
	}
	if err != nil {
		return
	}
	if first != wfirst || epoch != wepoch || !reflect.DeepEqual(ws, wws) {
		t.Fatalf("% x: decodeEntries %+v %d %q, the library %+v %d %q", body, ws, first, epoch, wws, wfirst, wepoch)
	}
}

// TestDecodeEntriesLibrary: the hand-written decoding of plain bodies, and
// the library's of others, alone and in batches mixing them.
func TestDecodeEntriesLibrary(t *testing.T) {
	t.Parallel()
	var bodies [][]byte
	for _, n := range []int{0, 1, 255, 256, 65536} {
		for _, ms := range []int64{-1, 0, 1, 1764690000000} {
			for _, k := range []string{"", keyToken("order-1"), strings.Repeat("k", 40)} {
				b, err := encodePub(&protocol.Publication{Data: []byte(strings.Repeat("x", n)), Time: ms}, k)
				if err != nil {
					t.Fatal(err)
				}
				bodies = append(bodies, b)
			}
		}
	}
	tagged, err := encodePub(&protocol.Publication{Data: protocol.Data(`{"a":1}`), Tags: map[string]string{"k": "v"}, Info: &protocol.ClientInfo{Client: "c"}, Trace: "t"}, "key")
	if err != nil {
		t.Fatal(err)
	}
	bodies = append(bodies, tagged,
		// Forms the encoder does not write but the library reads.
		[]byte("\xde\x00\x02\xa2tm\xcf\x00\x00\x01\x9a\xdd\x9c\x8a\x00\xa1d\xc4\x01x"), []byte("\x82\xa2tm\xff\xa1d\xc5\x00\x01y"),
		[]byte("\x81\xd9\x01d\xc4\x01z"), []byte("\x80"), []byte("\x81\xa1d\xa1s"), []byte("\x81\xa1k\xc4\x01b"), []byte("\x81\xa1d\xc0"))
	one := natsgo.Header{}
	one.Set(hdrEpoch, "E")
	one.Set(hdrOffset, "9")
	three := natsgo.Header{}
	three.Set(hdrEpoch, "E")
	three.Set(hdrOffset, "9")
	three.Set(hdrCount, "3")
	for _, b := range bodies {
		checkDecodeEntries(t, one, b)
		checkDecodeEntries(t, natsgo.Header{}, b)
		checkDecodeEntries(t, one, append(append([]byte{}, b...), 0xc1))
		checkDecodeEntries(t, three, encodeBatch([][]byte{b, tagged, b}))
		checkDecodeEntries(t, three, encodeBatch([][]byte{b, b}))
		checkDecodeEntries(t, three, append([]byte{0xdc, 0, 3}, bytes.Repeat(b, 3)...))
		checkDecodeEntries(t, three, encodeBatch([][]byte{b, b, b[:len(b)-1]}))
	}
}

// FuzzDecodeEntriesLibrary compares decodeEntries with the msgpack
// library's decoding of the same message.
func FuzzDecodeEntriesLibrary(f *testing.F) {
	plain, _ := encodePub(&protocol.Publication{Data: protocol.Data(`{"a":1}`), Time: 1764690000000}, "k")
	tagged, _ := encodePub(&protocol.Publication{Data: protocol.Data(`{"a":1}`), Tags: map[string]string{"a": "b"}}, "")
	f.Add("", "E", "3", plain)
	f.Add("2", "E", "5", encodeBatch([][]byte{plain, tagged}))
	f.Add("3", "", "", encodeBatch([][]byte{plain, plain, plain}))
	f.Fuzz(func(t *testing.T, count, epoch, offset string, body []byte) {
		h := natsgo.Header{}
		if count != "" {
			h.Set(hdrCount, count)
		}
		if epoch != "" {
			h.Set(hdrEpoch, epoch)
		}
		if offset != "" {
			h.Set(hdrOffset, offset)
		}
		checkDecodeEntries(t, h, body)
	})
}

func BenchmarkDecodeEntries(b *testing.B) {
	body, _ := encodePub(&protocol.Publication{Data: protocol.Data(`{"seq":1,"pad":"` + strings.Repeat("x", 80) + `"}`), Time: 1764690000000}, "")
	msg := encodeBatch([][]byte{body, body, body, body, body})
	h := natsgo.Header{}
	h.Set(hdrEpoch, "E")
	h.Set(hdrOffset, "9")
	h.Set(hdrCount, "5")
	for _, c := range []struct {
		name string
		fn   func(natsgo.Header, []byte) ([]wirePub, uint64, string, error)
	}{{"hand", decodeEntries}, {"library", decodeEntriesLibrary}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if ws, _, _, err := c.fn(h, msg); err != nil || len(ws) != 5 {
					b.Fatal(len(ws), err)
				}
			}
		})
	}
}
