// Package syncx holds small synchronisation helpers shared by Herald's
// packages.
package syncx
