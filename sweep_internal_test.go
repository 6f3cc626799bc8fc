package herald

import (
	"testing"
	"time"
)

// TestReleaserOncePerBurst: free memory goes back to the OS once a burst
// of connections has been quiet for releaseQuiet, once per burst, never
// while connections keep arriving or after a small one.
func TestReleaserOncePerBurst(t *testing.T) {
	var r releaser
	t0 := time.Unix(1000, 0)
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	step := func(accepted int64, sec int, want bool) {
		t.Helper()
		if got := r.due(accepted, 0, 0, at(sec)); got != want {
			t.Fatalf("due(%d, +%ds) = %v, want %v", accepted, sec, got, want)
		}
	}
	step(0, 0, false)
	// A burst of 5,000 connections over 10 s.
	for i := 1; i <= 10; i++ {
		step(int64(i*500), i, false)
	}
	step(5000, 39, false) // quiet for 29 s
	step(5000, 40, true)  // quiet for 30 s: release
	step(5000, 41, false) // once
	step(5000, 100, false)
	// A trickle below the burst size never releases.
	step(5500, 101, false)
	step(5500, 200, false)
	// Connections that keep arriving hold it back.
	for i := 0; i < 60; i++ {
		step(int64(6000+i*100), 201+i, false)
	}
	step(11900, 289, false)
	step(11900, 290, true)
}

// TestReleaserWhileIdle: an idle node returns free memory once a window
// of releaseQuiet allocated little but the node allocated enough since the
// last release (a 64th of the live heap, at least releaseIdleMin); never
// while it allocates a lot (the runtime collects on its own then), and
// once it is idle again after traffic.
func TestReleaserWhileIdle(t *testing.T) {
	var r releaser
	t0 := time.Unix(1000, 0)
	const kib = 1 << 10
	alloc, live := uint64(20<<20), uint64(8<<20) // 20 MiB allocated at start-up, 8 MiB live
	releases := func(from, to int, rate uint64) []int {
		t.Helper()
		var at []int
		for sec := from; sec <= to; sec++ {
			alloc += rate
			if r.due(0, alloc, live, t0.Add(time.Duration(sec)*time.Second)) {
				at = append(at, sec)
			}
		}
		return at
	}
	check := func(what string, got []int, want ...int) {
		t.Helper()
		if len(got) != len(want) {
			t.Fatalf("%s: releases at %v s, want %v", what, got, want)
		}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("%s: releases at %v s, want %v", what, got, want)
			}
		}
	}
	// 5 KiB/s: the start-up's garbage at the end of the first window, then
	// every second window (150 KiB per window, 256 KiB wanted).
	check("idle", releases(0, 150, 5*kib), 30, 90, 150)
	// Traffic: 1 MiB/s, no release.
	check("busy", releases(151, 300, 1<<20))
	// Idle again: the first quiet window returns what the traffic left.
	check("idle after traffic", releases(301, 360, 5*kib), 330)
	// A live heap of 64 MiB: a release once 1 MiB was allocated since the
	// last, not 256 KiB.
	live = 64 << 20
	check("large heap", releases(361, 600, 5*kib), 540) // 210 s after the last
}
