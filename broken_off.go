//go:build !herald_broken_recovery

package herald

// brokenRecovery is false in every real build; see broken_on.go.
const brokenRecovery = false
