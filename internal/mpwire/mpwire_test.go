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
