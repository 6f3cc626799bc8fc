//go:build race

package hub_test

// raceDetector: built with -race, whose sync.Pool drops some of what is
// put back, so pooled objects are allocated again at random.
const raceDetector = true
