package bench

import "testing"

func TestSeqTracker(t *testing.T) {
	t.Parallel()
	type rx struct{ seq, offset uint64 }
	tests := []struct {
		name string
		in   []rx
		want SeqStats // Received is not checked
		upTo uint64
		lost uint64
	}{
		{name: "in order", in: []rx{{1, 0}, {2, 0}, {3, 0}}, want: SeqStats{Distinct: 3}, upTo: 3},
		{name: "gap is lost", in: []rx{{1, 0}, {3, 0}}, want: SeqStats{Distinct: 2}, upTo: 4, lost: 2},
		{name: "duplicate", in: []rx{{1, 0}, {2, 0}, {2, 0}, {1, 0}}, want: SeqStats{Distinct: 2, Duplicates: 2}, upTo: 2},
		{name: "late by sequence", in: []rx{{1, 0}, {3, 0}, {2, 0}, {4, 0}}, want: SeqStats{Distinct: 4, OutOfOrder: 1}, upTo: 4},
		{name: "late duplicate is a duplicate", in: []rx{{2, 0}, {1, 0}, {1, 0}}, want: SeqStats{Distinct: 2, Duplicates: 1, OutOfOrder: 1}, upTo: 2},
		// Concurrent publishes: the server ordered 2 before 1, and the
		// subscriber saw that order. Not out of order.
		{name: "server order by offset", in: []rx{{2, 10}, {1, 11}, {3, 12}}, want: SeqStats{Distinct: 3}, upTo: 3},
		{name: "offset going back", in: []rx{{1, 10}, {2, 12}, {3, 11}}, want: SeqStats{Distinct: 3, OutOfOrder: 1}, upTo: 3},
		{name: "repeated offset", in: []rx{{1, 10}, {2, 10}}, want: SeqStats{Distinct: 2, OutOfOrder: 1}, upTo: 2},
		{name: "bad numbers", in: []rx{{0, 0}, {maxSeq + 1, 0}, {1, 0}}, want: SeqStats{Distinct: 1, Bad: 2}, upTo: 1},
		{name: "large numbers grow the bitmap", in: []rx{{1, 0}, {100000, 0}, {100000, 0}, {64, 0}}, want: SeqStats{Distinct: 3, Duplicates: 1, OutOfOrder: 1}, upTo: 100000, lost: 99997},
		{name: "nothing", want: SeqStats{}, upTo: 5, lost: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var tr seqTracker
			for _, r := range tt.in {
				tr.Observe(r.seq, r.offset)
			}
			if got := tr.stats(); got != tt.want {
				t.Errorf("stats %+v, want %+v", got, tt.want)
			}
			if got := tr.Missing(tt.upTo); got != tt.lost {
				t.Errorf("Missing(%d) = %d, want %d", tt.upTo, got, tt.lost)
			}
		})
	}
}

func TestSeqStatsAdd(t *testing.T) {
	t.Parallel()
	a := SeqStats{Received: 1, Distinct: 2, Duplicates: 3, OutOfOrder: 4, Bad: 5}
	a.Add(SeqStats{Received: 10, Distinct: 20, Duplicates: 30, OutOfOrder: 40, Bad: 50})
	if a != (SeqStats{Received: 11, Distinct: 22, Duplicates: 33, OutOfOrder: 44, Bad: 55}) {
		t.Fatalf("Add: %+v", a)
	}
}

func BenchmarkObserve(b *testing.B) {
	var tr seqTracker
	s := uint64(0)
	for b.Loop() {
		s++
		tr.Observe(s%maxSeq+1, s)
	}
}
