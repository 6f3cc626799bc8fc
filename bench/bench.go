// Package bench is Herald's load generator, run as `herald bench`.
package bench

import "errors"

// Main runs the bench command with its arguments.
func Main(args []string) error { return errors.New("not implemented yet") }
