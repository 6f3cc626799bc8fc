//go:build !race

package hub_test

// raceDetector: built with -race (see race_on_test.go).
const raceDetector = false
