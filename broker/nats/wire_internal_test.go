package nats

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"

	"github.com/heraldhq/herald/protocol"
)

// checkPlainPub fails if encodePub's hand-written form of a publication of
// data, time and key differs from msgpack.Marshal's.
func checkPlainPub(t *testing.T, data []byte, ms int64, key string) {
	t.Helper()
	p := &protocol.Publication{Data: data, Time: ms}
	got, err := encodePub(p, key)
	if err != nil {
		t.Fatal(err)
	}
	want, err := msgpack.Marshal(&wirePub{Data: p.Data, Time: p.Time, Key: key})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("data of %d bytes, time %d, key of %d bytes: encoded %x, msgpack %x", len(data), ms, len(key), got, want)
	}
}

func TestPlainPub(t *testing.T) {
	t.Parallel()
	for _, n := range []int{0, 1, 255, 256, 65535, 65536} {
		for _, ms := range []int64{-1, 0, 1, 1764690000000} {
			for _, k := range []int{0, 22, 31, 32, 255, 256, 65536} {
				checkPlainPub(t, []byte(strings.Repeat("x", n)), ms, strings.Repeat("k", k))
			}
		}
	}
}

// FuzzPlainPub compares the hand-written encoding of a publication of
// data, time and key with msgpack.Marshal's.
func FuzzPlainPub(f *testing.F) {
	f.Add([]byte(`{"a":1}`), int64(1764690000000), "")
	f.Add([]byte("x"), int64(-5), keyToken("order-1"))
	f.Add([]byte{}, int64(0), "")
	f.Fuzz(func(t *testing.T, data []byte, ms int64, key string) {
		checkPlainPub(t, data, ms, key)
	})
}

func BenchmarkEncodePub(b *testing.B) {
	p := &protocol.Publication{Data: protocol.Data(`{"seq":1,"pad":"` + strings.Repeat("x", 80) + `"}`), Time: 1764690000000}
	b.Run("plain", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := encodePub(p, ""); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("msgpack", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := msgpack.Marshal(&wirePub{Data: p.Data, Time: p.Time}); err != nil {
				b.Fatal(err)
			}
		}
	})
}
