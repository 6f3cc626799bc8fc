package bench

import (
	"math"
	"math/bits"
	"sync/atomic"
	"time"
)

// The latency histogram is log-linear, like HdrHistogram: values (in
// nanoseconds) below 2^histSubBits have a bucket each; above, every power of
// two is split into 2^histSubBits equal buckets. With 7 sub-bits a value is
// known to within 1/128 (0.8%) of itself. Values are clamped to histMax.
const (
	histSubBits  = 7
	histSubCount = 1 << histSubBits
	histMaxShift = 33 // 2^(33+8) ns ≈ 36 minutes: nothing we measure is longer
	histBuckets  = histMaxShift*histSubCount + 2*histSubCount
	histMax      = int64(1)<<(histMaxShift+histSubBits+1) - 1
)

// bucketOf returns the bucket index of v (nanoseconds; negative counts as 0).
func bucketOf(v int64) int {
	if v <= 0 {
		return 0
	}
	if v > histMax {
		v = histMax
	}
	u := uint64(v)
	if u < histSubCount {
		return int(u)
	}
	shift := bits.Len64(u) - histSubBits - 1
	return shift*histSubCount + int(u>>uint(shift))
}

// bucketRange returns the smallest and largest value of bucket i.
func bucketRange(i int) (lo, hi int64) {
	if i < histSubCount {
		return int64(i), int64(i)
	}
	shift := i/histSubCount - 1
	m := int64(i - shift*histSubCount) // in [histSubCount, 2*histSubCount)
	lo = m << uint(shift)
	hi = (m+1)<<uint(shift) - 1
	return lo, hi
}

// hist is a latency histogram whose methods are safe for concurrent use:
// Record is a handful of atomic adds, so readers on several goroutines may
// share one (the bench shards them to keep cache lines apart).
type hist struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	sum    atomic.Uint64 // nanoseconds; 2^64 ns is 584 years
	min    atomic.Int64  // valid when n > 0
	max    atomic.Int64
}

func newHist() *hist {
	h := &hist{}
	h.min.Store(math.MaxInt64)
	return h
}

// Record adds one value in nanoseconds. Negative values (clock steps) count
// as 0.
func (h *hist) Record(v int64) {
	if v < 0 {
		v = 0
	}
	h.counts[bucketOf(v)].Add(1)
	h.n.Add(1)
	h.sum.Add(uint64(v))
	for {
		m := h.min.Load()
		if v >= m || h.min.CompareAndSwap(m, v) {
			break
		}
	}
	for {
		m := h.max.Load()
		if v <= m || h.max.CompareAndSwap(m, v) {
			break
		}
	}
}

// Snapshot copies the histogram into its sparse, mergeable form.
func (h *hist) Snapshot() HistSnapshot {
	var s HistSnapshot
	for i := range h.counts {
		if c := h.counts[i].Load(); c > 0 {
			s.Buckets = append(s.Buckets, [2]uint64{uint64(i), c})
			s.Count += c
		}
	}
	if s.Count > 0 {
		s.Sum = h.sum.Load()
		s.Min = h.min.Load()
		s.Max = h.max.Load()
	}
	return s
}

// shardedHist spreads recordings over several histograms so that
// goroutines on different cores rarely write the same cache lines.
type shardedHist struct{ shards []*hist }

func newShardedHist(n int) *shardedHist {
	s := &shardedHist{shards: make([]*hist, n)}
	for i := range s.shards {
		s.shards[i] = newHist()
	}
	return s
}

// shard returns the histogram recorder i (any integer) should use.
func (s *shardedHist) shard(i int) *hist { return s.shards[i%len(s.shards)] }

// Snapshot merges the shards.
func (s *shardedHist) Snapshot() HistSnapshot {
	var out HistSnapshot
	for _, h := range s.shards {
		out.Merge(h.Snapshot())
	}
	return out
}

// HistSnapshot is a histogram in sparse form: (bucket, count) pairs in
// bucket order. It is what workers send to the parent, and what percentiles
// are computed from.
type HistSnapshot struct {
	Buckets [][2]uint64 `json:"b,omitempty"`
	Count   uint64      `json:"n"`
	Sum     uint64      `json:"sum,omitempty"`
	Min     int64       `json:"min,omitempty"`
	Max     int64       `json:"max,omitempty"`
}

// Merge adds o into s.
func (s *HistSnapshot) Merge(o HistSnapshot) {
	if o.Count == 0 {
		return
	}
	if s.Count == 0 {
		s.Min, s.Max = o.Min, o.Max
	} else {
		s.Min = min(s.Min, o.Min)
		s.Max = max(s.Max, o.Max)
	}
	s.Count += o.Count
	s.Sum += o.Sum
	merged := make([][2]uint64, 0, len(s.Buckets)+len(o.Buckets))
	i, j := 0, 0
	for i < len(s.Buckets) || j < len(o.Buckets) {
		switch {
		case j == len(o.Buckets) || (i < len(s.Buckets) && s.Buckets[i][0] < o.Buckets[j][0]):
			merged = append(merged, s.Buckets[i])
			i++
		case i == len(s.Buckets) || o.Buckets[j][0] < s.Buckets[i][0]:
			merged = append(merged, o.Buckets[j])
			j++
		default:
			merged = append(merged, [2]uint64{s.Buckets[i][0], s.Buckets[i][1] + o.Buckets[j][1]})
			i++
			j++
		}
	}
	s.Buckets = merged
}

// Quantile returns the value at quantile q in [0, 1]: the smallest recorded
// value v such that at least q of all values are <= v, to the histogram's
// precision (the middle of v's bucket, clamped to the exact min and max).
// It returns 0 for an empty histogram.
func (s HistSnapshot) Quantile(q float64) int64 {
	if s.Count == 0 {
		return 0
	}
	if q <= 0 {
		return s.Min
	}
	if q >= 1 {
		return s.Max
	}
	rank := uint64(math.Ceil(q * float64(s.Count)))
	if rank == 0 {
		rank = 1
	}
	var cum uint64
	for _, b := range s.Buckets {
		cum += b[1]
		if cum >= rank {
			lo, hi := bucketRange(int(b[0]))
			v := lo + (hi-lo)/2
			return min(max(v, s.Min), s.Max)
		}
	}
	return s.Max
}

// Mean returns the average value, 0 for an empty histogram.
func (s HistSnapshot) Mean() float64 {
	if s.Count == 0 {
		return 0
	}
	return float64(s.Sum) / float64(s.Count)
}

// Latency summarises a histogram in milliseconds for the report.
type Latency struct {
	Count uint64  `json:"count"`
	Min   float64 `json:"min_ms"`
	Mean  float64 `json:"mean_ms"`
	P50   float64 `json:"p50_ms"`
	P90   float64 `json:"p90_ms"`
	P99   float64 `json:"p99_ms"`
	P999  float64 `json:"p999_ms"`
	Max   float64 `json:"max_ms"`
}

func ms(ns int64) float64 { return math.Round(float64(ns)/float64(time.Millisecond)*1000) / 1000 }

// Summary returns the percentiles of s in milliseconds (3 decimals).
func (s HistSnapshot) Summary() Latency {
	if s.Count == 0 {
		return Latency{}
	}
	return Latency{
		Count: s.Count,
		Min:   ms(s.Min),
		Mean:  ms(int64(s.Mean())),
		P50:   ms(s.Quantile(0.50)),
		P90:   ms(s.Quantile(0.90)),
		P99:   ms(s.Quantile(0.99)),
		P999:  ms(s.Quantile(0.999)),
		Max:   ms(s.Max),
	}
}
