// Package security holds Herald's hostile-input test suite: each test
// sends one kind of bad or unauthorized traffic, checks the documented
// answer (HTTP status, close code or error code), and checks that a
// well-behaved client connected to the same server kept receiving every
// publication meanwhile. See docs/security.md.
package security
