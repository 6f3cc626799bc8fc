package fossil_test

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/heraldhq/herald/protocol/fossil"
)

func TestChecksum(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want uint32
	}{
		{"", 0},
		{"a", 0x61000000},
		{"abcd", 0x61626364},
		{"abcde", 0x61626364 + 0x65000000},
		{"\xff\xff\xff\xff\xff\xff\xff\xff", 0xfffffffe},
	} {
		if got := fossil.Checksum([]byte(tc.in)); got != tc.want {
			t.Errorf("Checksum(%q) = %#x, want %#x", tc.in, got, tc.want)
		}
	}
}

// TestApplyHandWritten applies deltas written by hand from the format's
// description, so that Apply is checked against the format, not against
// Create.
func TestApplyHandWritten(t *testing.T) {
	t.Parallel()
	src := []byte("hello world, hello herald")
	want := []byte("hello herald, hello world")
	// 25 bytes = "P"; copy "hello " (6@0), insert "herald" (6:), copy
	// ", hello " (8@B: offset 11), copy "world" (5@6).
	delta := fmt.Sprintf("P\n6@0,6:herald8@B,5@6,%s;", enc(fossil.Checksum(want)))
	got, err := fossil.Apply(src, []byte(delta), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

// enc writes v in the format's digits.
func enc(v uint32) string {
	const digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz~"
	if v == 0 {
		return "0"
	}
	var s []byte
	for ; v > 0; v >>= 6 {
		s = append([]byte{digits[v&63]}, s...)
	}
	return string(s)
}

func TestApplyRefusesCorrupt(t *testing.T) {
	t.Parallel()
	src := []byte("0123456789abcdef0123456789abcdef")
	good := fossil.Create(src, []byte("0123456789abcdef--0123456789abcdef"))
	if _, err := fossil.Apply(src, good, 0); err != nil {
		t.Fatalf("good delta: %v", err)
	}
	for name, tc := range map[string]struct {
		src, delta string
		max        int
	}{
		"empty":            {string(src), "", 0},
		"no newline":       {string(src), "5", 0},
		"no checksum":      {string(src), "2\n2:ab", 0},
		"bad checksum":     {string(src), "2\n2:ab0;", 0},
		"short target":     {string(src), "3\n2:ab" + enc(fossil.Checksum([]byte("ab"))) + ";", 0},
		"copy past source": {"abc", "4\n4@0," + enc(fossil.Checksum([]byte("abca"))) + ";", 0},
		"copy past length": {"abcd", "2\n4@0," + enc(fossil.Checksum([]byte("abcd"))) + ";", 0},
		"insert past end":  {"", "9\n9:abc", 0},
		"unknown command":  {"", "1\n1!a0;", 0},
		"copy no comma":    {"abc", "1\n1@0;", 0},
		"trailing data":    {"", "1\n1:a" + enc(fossil.Checksum([]byte("a"))) + ";x", 0},
		"huge integer":     {"", "~~~~~~~~~~~~\n", 0},
		"over max length":  {"", "1\n1:a" + enc(fossil.Checksum([]byte("a"))) + ";", -1},
		"max length":       {"", "z\n", 10},
		"wrong source":     {"ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcde", string(good), 0},
		"no integer":       {"", "\n:", 0},
	} {
		if tc.max < 0 {
			continue // covered by "max length"
		}
		if _, err := fossil.Apply([]byte(tc.src), []byte(tc.delta), tc.max); !errors.Is(err, fossil.ErrCorrupt) {
			t.Errorf("%s: err = %v, want ErrCorrupt", name, err)
		}
	}
}

// TestRoundTrip: Apply(src, Create(src, dst)) is dst for random documents
// that share more or less with their source.
func TestRoundTrip(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for n := 0; n < 2000; n++ {
		src := randBytes(r, r.IntN(3000))
		dst := mutate(r, src)
		d := fossil.Create(src, dst)
		got, err := fossil.Apply(src, d, len(dst))
		if err != nil {
			t.Fatalf("case %d: %v", n, err)
		}
		if !bytes.Equal(got, dst) {
			t.Fatalf("case %d: wrong target", n)
		}
	}
}

// TestCreateSmall: a few changed bytes in a kilobyte cost a few dozen
// bytes of delta.
func TestCreateSmall(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	src := randBytes(r, 1024)
	dst := append([]byte(nil), src...)
	copy(dst[100:], "XYZ")
	copy(dst[500:], "12345")
	copy(dst[900:], "!")
	d := fossil.Create(src, dst)
	if len(d) > 60 {
		t.Fatalf("delta of %d bytes for 9 changed bytes: %q", len(d), d)
	}
	if same := fossil.Create(src, src); len(same) > 20 {
		t.Fatalf("delta of %d bytes for an unchanged source: %q", len(same), same)
	}
}

func randBytes(r *rand.Rand, n int) []byte {
	b := make([]byte, n)
	alphabet := r.IntN(255) + 1 // small alphabets repeat blocks
	for i := range b {
		b[i] = byte(r.IntN(alphabet))
	}
	return b
}

// mutate returns a copy of src with random edits: replaced, inserted,
// deleted and moved runs.
func mutate(r *rand.Rand, src []byte) []byte {
	dst := append([]byte(nil), src...)
	for k := r.IntN(8); k > 0; k-- {
		if len(dst) == 0 {
			dst = randBytes(r, r.IntN(50))
			continue
		}
		at := r.IntN(len(dst))
		n := r.IntN(min(40, len(dst)-at) + 1)
		switch r.IntN(4) {
		case 0:
			copy(dst[at:at+n], randBytes(r, n))
		case 1:
			dst = append(dst[:at], append(randBytes(r, n), dst[at:]...)...)
		case 2:
			dst = append(dst[:at], dst[at+n:]...)
		case 3:
			run := append([]byte(nil), dst[at:at+n]...)
			dst = append(dst[:at], dst[at+n:]...)
			to := r.IntN(len(dst) + 1)
			dst = append(dst[:to], append(run, dst[to:]...)...)
		}
	}
	return dst
}

func FuzzApply(f *testing.F) {
	f.Add([]byte("hello world"), []byte("B\n5@0,6:herald"+enc(fossil.Checksum([]byte("hello herald")))+";"))
	f.Add([]byte(""), []byte("0\n0;"))
	f.Add([]byte("abc"), []byte("3\n3@0,"))
	f.Fuzz(func(t *testing.T, src, delta []byte) {
		got, err := fossil.Apply(src, delta, 1<<20)
		if err != nil {
			if !errors.Is(err, fossil.ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if !bytes.HasSuffix(delta, []byte(";")) {
			t.Fatalf("accepted a delta without an end: %q", delta)
		}
		// What Apply accepts, it can create again: the same target from
		// the same source.
		again, err := fossil.Apply(src, fossil.Create(src, got), len(got))
		if err != nil || !bytes.Equal(again, got) {
			t.Fatalf("round trip of an accepted target: %v", err)
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), []byte("0123456789abcdef--0123456789abcdef"))
	f.Add([]byte(""), []byte("x"))
	f.Fuzz(func(t *testing.T, src, dst []byte) {
		got, err := fossil.Apply(src, fossil.Create(src, dst), len(dst))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, dst) {
			t.Fatalf("wrong target")
		}
	})
}

func BenchmarkCreate1KiBJSON(b *testing.B) {
	src, dst := jsonPair()
	b.SetBytes(int64(len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		fossil.Create(src, dst)
	}
}

func BenchmarkApply1KiBJSON(b *testing.B) {
	src, dst := jsonPair()
	d := fossil.Create(src, dst)
	b.SetBytes(int64(len(dst)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := fossil.Apply(src, d, 0); err != nil {
			b.Fatal(err)
		}
	}
}

// jsonPair is a 1 KiB JSON document and the same with three fields changed.
func jsonPair() ([]byte, []byte) {
	doc := func(price, qty, seq int) []byte {
		var b bytes.Buffer
		fmt.Fprintf(&b, `{"seq":%d,"symbol":"HRLD","price":%d.25,"qty":%d,"desc":"`, seq, price, qty)
		for b.Len() < 1000 {
			b.WriteString("lorem ipsum dolor sit amet ")
		}
		b.WriteString(`"}`)
		return b.Bytes()
	}
	return doc(1000, 7, 1), doc(1003, 9, 2)
}
