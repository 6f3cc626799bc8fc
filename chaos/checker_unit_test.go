package chaos

import (
	"strings"
	"testing"
)

// The checker's own tests: each builds a small history by hand, with one
// broken promise or none, and asserts what the checker reports.

func sub(t int64, epoch string, off uint64, wasRecovering, recovered bool) streamEvent {
	return streamEvent{T: t, Sub: true, WasRecovering: wasRecovering, Recovered: recovered, Pos: pos{Epoch: epoch, Offset: off}}
}

func pub(t int64, off uint64, id string) streamEvent {
	return streamEvent{T: t, Offset: off, ID: id}
}

// base is a history with one stream and three acknowledged publications,
// delivered in order: no violation.
func base() (*history, *stream) {
	h := newHistory()
	s := &stream{Name: "s", Channel: "c", Start: 1, Live: true}
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), pub(30, 2, "b"), pub(40, 3, "c")}
	h.Streams = []*stream{s}
	for i, id := range []string{"a", "b", "c"} {
		h.Publishes = append(h.Publishes, &publishOp{Channel: "c", ID: id, Call: int64(10 + 10*i), Return: int64(15 + 10*i), Acked: true, Pos: pos{Epoch: "e", Offset: uint64(i + 1)}})
	}
	h.Final["c"] = finalChannel{Pos: pos{Epoch: "e", Offset: 3}, Pubs: map[uint64]string{1: "a", 2: "b", 3: "c"}}
	return h, s
}

func wantKinds(t *testing.T, h *history, kinds ...string) {
	t.Helper()
	_, vs := check(h)
	var got []string
	for _, v := range vs {
		got = append(got, v.Kind)
	}
	for _, k := range kinds {
		found := false
		for _, g := range got {
			found = found || g == k
		}
		if !found {
			t.Errorf("want a %q violation, got %v", k, vs)
		}
	}
	if len(kinds) == 0 && len(vs) > 0 {
		t.Errorf("want no violation, got %v", vs)
	}
}

func TestCheckerClean(t *testing.T) {
	t.Parallel()
	h, _ := base()
	wantKinds(t, h)
	st, _ := check(h)
	if st.Publications != 3 || st.Deliveries != 3 || st.Gaps != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestCheckerRecoveredSeamIsClean(t *testing.T) {
	t.Parallel()
	h, s := base()
	// Disconnected after 1, recovered 2 and 3.
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), sub(35, "e", 3, true, true), pub(36, 2, "b"), pub(40, 3, "c")}
	wantKinds(t, h)
}

func TestCheckerSilentGap(t *testing.T) {
	t.Parallel()
	h, s := base()
	// What a server that skips the history read on recovery produces.
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), sub(35, "e", 2, true, true), pub(40, 3, "c")}
	wantKinds(t, h, "silent-gap", "lost")
}

func TestCheckerSignalledGap(t *testing.T) {
	t.Parallel()
	h, s := base()
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), sub(35, "e", 2, true, false), pub(40, 3, "c")}
	wantKinds(t, h)
	if st, _ := check(h); st.Gaps != 1 {
		t.Fatalf("gaps %d, want 1", st.Gaps)
	}
}

func TestCheckerDuplicate(t *testing.T) {
	t.Parallel()
	h, s := base()
	s.Events = append(s.Events, pub(41, 3, "c"))
	wantKinds(t, h, "order", "duplicate")
}

func TestCheckerIdempotency(t *testing.T) {
	t.Parallel()
	h, s := base()
	// "b" landed twice: its retry took offset 4.
	s.Events = append(s.Events, pub(50, 4, "b"))
	h.Final["c"].Pubs[4] = "b"
	wantKinds(t, h, "duplicate", "idempotency")
}

func TestCheckerLost(t *testing.T) {
	t.Parallel()
	h, s := base()
	s.Events = s.Events[:3] // never got "c", and nothing said so
	wantKinds(t, h, "lost")
	// A stream that left before the end is not owed anything.
	s.Live = false
	wantKinds(t, h)
}

func TestCheckerAckedElsewhere(t *testing.T) {
	t.Parallel()
	h, _ := base()
	h.Publishes[2].Pos.Offset = 2 // the ack says "c" took b's offset
	wantKinds(t, h, "position")
}

func TestCheckerSilentEpochChange(t *testing.T) {
	t.Parallel()
	h, s := base()
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), sub(35, "f", 0, true, true), pub(40, 1, "x")}
	wantKinds(t, h, "silent-epoch")
}

func TestCheckerEpochChangeSignalled(t *testing.T) {
	t.Parallel()
	h, s := base()
	// The broker lost its data after "a": b and c were acked in the old
	// epoch but are gone; the stream was told.
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), sub(45, "f", 0, true, false)}
	h.Final["c"] = finalChannel{Pos: pos{Epoch: "f"}, Pubs: map[uint64]string{}}
	wantKinds(t, h)
}

func TestCheckerNotLinearizable(t *testing.T) {
	t.Parallel()
	h, s := base()
	// "b" was acked before "c" was called, yet "c" got the lower offset.
	h.Publishes[1].Pos.Offset, h.Publishes[2].Pos.Offset = 3, 2
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), pub(30, 2, "c"), pub(40, 3, "b")}
	h.Final["c"].Pubs[2], h.Final["c"].Pubs[3] = "c", "b"
	_, vs := check(h)
	if len(vs) != 1 || vs[0].Kind != "linearizability" || !strings.Contains(vs[0].Msg, "not a linearizable append") {
		t.Fatalf("want one linearizability violation, got %v", vs)
	}
}

func TestCheckerStaleRead(t *testing.T) {
	t.Parallel()
	h, _ := base()
	// A read that started after "c" was acked saw the position before it.
	h.Reads = []readOp{{Channel: "c", Call: 50, Return: 55, Pos: pos{Epoch: "e", Offset: 2}}}
	wantKinds(t, h, "linearizability")
	h.Reads[0].Pos.Offset = 3
	wantKinds(t, h)
}

func TestCheckerGapMarker(t *testing.T) {
	t.Parallel()
	h, s := base()
	s.Events = []streamEvent{sub(2, "e", 0, false, false), pub(20, 1, "a"), {T: 40, Offset: 3, ID: "c", Gap: true}}
	wantKinds(t, h)
}
