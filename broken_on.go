//go:build herald_broken_recovery

package herald

// brokenRecovery, set only by the build tag herald_broken_recovery, makes
// a recovering subscribe skip its history read and claim it recovered
// everything: a silent gap. It exists so that the chaos suite can prove
// its history checker catches such a server (chaos/selftest_test.go); no
// release is built with it.
const brokenRecovery = true
