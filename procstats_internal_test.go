package herald

import (
	"runtime"
	"testing"
)

func TestParseStatmRSS(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want uint64
	}{
		{"5263 1812 1071 2718 0 1210 0\n", 1812},
		{"5263 0 1071", 0},
		{"5263 77", 77},
		{"5263", 0},
		{"", 0},
		{"5263 x 1", 0},
	} {
		if got := parseStatmRSS([]byte(tc.in)); got != tc.want {
			t.Errorf("parseStatmRSS(%q) = %d, want %d", tc.in, got, tc.want)
		}
	}
}

// TestProcessRSSAllocatesNothing: the node samples its RSS every second;
// an idle node should allocate nothing for it.
func TestProcessRSSAllocatesNothing(t *testing.T) {
	rss := processRSS()
	if runtime.GOOS != "linux" {
		return
	}
	if rss == 0 {
		t.Fatal("no RSS read from /proc/self/statm")
	}
	if n := testing.AllocsPerRun(100, func() { processRSS() }); n != 0 {
		t.Errorf("processRSS: %v allocations, want 0", n)
	}
}

// TestRegistryEachAllocatesNothing: the sweep goes over every session
// every second; on an idle node that allocates nothing once the batch
// exists.
func TestRegistryEachAllocatesNothing(t *testing.T) {
	var r registry
	r.init()
	for i := range 1000 {
		r.add(&session{id: string(rune('a'+i%26)) + string(rune(i))})
	}
	seen := 0
	r.each(func(*session) { seen++ })
	if seen != 1000 {
		t.Fatalf("each saw %d sessions, want 1000", seen)
	}
	if n := testing.AllocsPerRun(20, func() { r.each(func(*session) { seen++ }) }); n != 0 {
		t.Errorf("each: %v allocations, want 0", n)
	}
}
