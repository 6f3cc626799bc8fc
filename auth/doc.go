// Package auth verifies Herald's JWTs: connection tokens (who the client
// is, when its credentials expire) and subscription tokens (a client's right
// to one channel). Only an allow-list of algorithms is accepted.
package auth
