package mpwire

import (
	"bytes"
	"strings"
	"testing"

	"github.com/vmihailenco/msgpack/v5"
)

// TestHeaders: the headers are the msgpack library's, at every boundary.
func TestHeaders(t *testing.T) {
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536, 70000} {
		want, err := msgpack.Marshal(make([]byte, n))
		if err != nil {
			t.Fatal(err)
		}
		if got := append(AppendBinHeader(nil, n), make([]byte, n)...); !bytes.Equal(got, want) {
			t.Errorf("bin of %d: header % x, want % x", n, got[:min(len(got), 5)], want[:min(len(want), 5)])
		}
		s := strings.Repeat("x", n)
		want, err = msgpack.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := append(AppendStrHeader(nil, n), s...); !bytes.Equal(got, want) {
			t.Errorf("str of %d: header % x, want % x", n, got[:min(len(got), 5)], want[:min(len(want), 5)])
		}
	}
}

// checkReaders fails if a reader accepts b and the library reads it
// otherwise: another value, another length, or an error.
func checkReaders(t *testing.T, b []byte) {
	t.Helper()
	consumed := func(v any) (int, error) {
		r := bytes.NewReader(b)
		err := msgpack.NewDecoder(r).Decode(v)
		return len(b) - r.Len(), err
	}
	if v, rest, ok := ReadInt(b); ok {
		var want int64
		n, err := consumed(&want)
		if err != nil || want != v || n != len(b)-len(rest) {
			t.Fatalf("% x: ReadInt %d (%d bytes), the library %d (%d bytes), %v", b, v, len(b)-len(rest), want, n, err)
		}
	}
	if v, rest, ok := ReadBin(b); ok {
		var want []byte
		n, err := consumed(&want)
		if err != nil || !bytes.Equal(want, v) || n != len(b)-len(rest) || cap(v) != len(v) {
			t.Fatalf("% x: ReadBin % x (%d bytes), the library % x (%d bytes), %v", b, v, len(b)-len(rest), want, n, err)
		}
	}
	if v, rest, ok := ReadStr(b); ok {
		var want string
		n, err := consumed(&want)
		if err != nil || want != string(v) || n != len(b)-len(rest) {
			t.Fatalf("% x: ReadStr %q (%d bytes), the library %q (%d bytes), %v", b, v, len(b)-len(rest), want, n, err)
		}
	}
	if l, rest, ok := ReadMapLen(b); ok {
		n, err := msgpack.NewDecoder(bytes.NewReader(b)).DecodeMapLen()
		if err != nil || n != l || len(b)-len(rest) != map[bool]int{true: 1, false: 0}[b[0]&0xf0 == 0x80]+map[byte]int{0xde: 3, 0xdf: 5}[b[0]] {
			t.Fatalf("% x: ReadMapLen %d, the library %d, %v", b, l, n, err)
		}
	}
	if l, rest, ok := ReadArrayLen(b); ok {
		n, err := msgpack.NewDecoder(bytes.NewReader(b)).DecodeArrayLen()
		if err != nil || n != l || len(b)-len(rest) != map[bool]int{true: 1, false: 0}[b[0]&0xf0 == 0x90]+map[byte]int{0xdc: 3, 0xdd: 5}[b[0]] {
			t.Fatalf("% x: ReadArrayLen %d, the library %d, %v", b, l, n, err)
		}
	}
}

// TestReaders: the readers read what the library writes, at every size
// boundary, as the library reads it.
func TestReaders(t *testing.T) {
	var vals []any
	for _, n := range []int{0, 1, 31, 32, 255, 256, 65535, 65536} {
		vals = append(vals, make([]byte, n), strings.Repeat("s", n), make([]int, min(n, 300)), map[int]int{})
	}
	for _, i := range []int64{0, 1, 127, 128, 255, 256, 65535, 65536, 1<<32 - 1, 1 << 32, 1<<63 - 1, -1, -32, -33, -128, -129, -32768, -32769, -1 << 31, -1<<31 - 1, -1 << 63} {
		vals = append(vals, i, uint64(i), int8(i), int16(i), int32(i), uint8(i), uint16(i), uint32(i))
	}
	for _, v := range vals {
		for _, compact := range []bool{false, true} {
			var buf bytes.Buffer
			enc := msgpack.NewEncoder(&buf)
			enc.UseCompactInts(compact)
			if err := enc.Encode(v); err != nil {
				t.Fatal(err)
			}
			b := buf.Bytes()
			checkReaders(t, b)
			checkReaders(t, b[:len(b)-1])
		}
	}
	if v, _, ok := ReadInt([]byte{0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff}); !ok || v != -1 {
		t.Fatalf("uint 64 of all ones: %d, %v", v, ok)
	}
}

// FuzzReaders compares the readers with the library on any bytes.
func FuzzReaders(f *testing.F) {
	for _, s := range []string{"\x05", "\xff", "\xcc\x80", "\xd3\x80\x00\x00\x00\x00\x00\x00\x00", "\xc4\x02ab", "\xa3abc", "\xd9\x01a", "\x82", "\xde\x00\x10", "\x93", "\xdd\x00\x00\x00\x01"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkReaders(t, b)
	})
}
