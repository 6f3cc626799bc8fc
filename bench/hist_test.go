package bench

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

func TestBucketsAreContiguous(t *testing.T) {
	t.Parallel()
	prevHi := int64(-1)
	for i := 0; i < histBuckets; i++ {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 {
			t.Fatalf("bucket %d starts at %d, previous ended at %d", i, lo, prevHi)
		}
		if bucketOf(lo) != i || bucketOf(hi) != i {
			t.Fatalf("bucket %d [%d, %d]: bucketOf gives %d and %d", i, lo, hi, bucketOf(lo), bucketOf(hi))
		}
		// The bucket's width is at most 1/128 of its lower bound.
		if i >= histSubCount && float64(hi-lo+1) > float64(lo)/histSubCount {
			t.Fatalf("bucket %d [%d, %d] too wide", i, lo, hi)
		}
		prevHi = hi
	}
	if prevHi != histMax {
		t.Fatalf("last bucket ends at %d, want histMax %d", prevHi, histMax)
	}
	for _, v := range []int64{-5, 0, histMax, histMax + 1, math.MaxInt64} {
		if b := bucketOf(v); b < 0 || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d out of range", v, b)
		}
	}
}

// exactQuantile is the reference: the smallest value with at least q of
// the values at or below it.
func exactQuantile(sorted []int64, q float64) int64 {
	rank := int(math.Ceil(q * float64(len(sorted))))
	return sorted[max(rank, 1)-1]
}

func TestQuantiles(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(1, 2))
	tests := []struct {
		name string
		gen  func() int64
	}{
		{"constant", func() int64 { return 1500000 }},
		{"uniform 0-10ms", func() int64 { return rng.Int64N(10_000_000) }},
		{"small integers", func() int64 { return rng.Int64N(100) }},
		{"exponential", func() int64 { return int64(rng.ExpFloat64() * 2e6) }},
		{"bimodal", func() int64 {
			if rng.IntN(100) == 0 {
				return 200_000_000 + rng.Int64N(1000)
			}
			return 1_000_000 + rng.Int64N(1000)
		}},
	}
	for _, tt := range tests {
		h := newHist()
		vals := make([]int64, 20000)
		for i := range vals {
			vals[i] = tt.gen()
			h.Record(vals[i])
		}
		slices.Sort(vals)
		s := h.Snapshot()
		if s.Count != uint64(len(vals)) || s.Min != vals[0] || s.Max != vals[len(vals)-1] {
			t.Fatalf("%s: count/min/max %d/%d/%d, want %d/%d/%d", tt.name, s.Count, s.Min, s.Max, len(vals), vals[0], vals[len(vals)-1])
		}
		for _, q := range []float64{0, 0.5, 0.9, 0.99, 0.999, 1} {
			got, want := s.Quantile(q), exactQuantile(vals, max(q, 1e-9))
			if q == 0 {
				want = vals[0]
			}
			// Within the bucket's precision: 1/128 of the value, or 1 ns.
			if diff := math.Abs(float64(got - want)); diff > math.Max(float64(want)/histSubCount, 1) {
				t.Errorf("%s: q%g = %d, want %d", tt.name, q, got, want)
			}
		}
	}
}

func TestQuantileEmptyAndNegative(t *testing.T) {
	t.Parallel()
	var s HistSnapshot
	if s.Quantile(0.5) != 0 || s.Mean() != 0 || s.Summary() != (Latency{}) {
		t.Fatal("empty histogram must report zeros")
	}
	h := newHist()
	h.Record(-100) // a clock step: counts as 0
	if s := h.Snapshot(); s.Count != 1 || s.Max != 0 || s.Quantile(1) != 0 {
		t.Fatalf("negative value: %+v", s)
	}
}

func TestMergeEqualsRecordingTogether(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(3, 4))
	all, a, b := newHist(), newHist(), newHist()
	for i := 0; i < 5000; i++ {
		v := rng.Int64N(1 << uint(rng.IntN(34)))
		all.Record(v)
		if i%3 == 0 {
			a.Record(v)
		} else {
			b.Record(v)
		}
	}
	var merged HistSnapshot
	merged.Merge(a.Snapshot())
	merged.Merge(HistSnapshot{}) // no-op
	merged.Merge(b.Snapshot())
	// Through JSON, as child processes send it.
	raw, err := json.Marshal(merged)
	if err != nil {
		t.Fatal(err)
	}
	var back HistSnapshot
	if err := json.Unmarshal(raw, &back); err != nil {
		t.Fatal(err)
	}
	want := all.Snapshot()
	if !slices.Equal(back.Buckets, want.Buckets) || back.Count != want.Count || back.Sum != want.Sum ||
		back.Min != want.Min || back.Max != want.Max {
		t.Fatalf("merged snapshot differs from the histogram of all values")
	}
}

func TestShardedHist(t *testing.T) {
	t.Parallel()
	s := newShardedHist(4)
	for i := 0; i < 100; i++ {
		s.shard(i).Record(int64(i) * 1000)
	}
	snap := s.Snapshot()
	if snap.Count != 100 || snap.Min != 0 || snap.Max != 99000 {
		t.Fatalf("sharded snapshot: %+v", snap)
	}
	if l := snap.Summary(); l.P50 < 0.049 || l.P50 > 0.0501 {
		t.Fatalf("p50 %v ms, want about 0.05", l.P50)
	}
}

func BenchmarkRecord(b *testing.B) {
	h := newHist()
	for i := 0; b.Loop(); i++ {
		h.Record(int64(i) * 7919)
	}
}
