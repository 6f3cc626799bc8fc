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
		if got := r.due(accepted, at(sec)); got != want {
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
