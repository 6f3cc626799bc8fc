// Package protocol defines Herald's wire protocol v1: the message model shared
// by the server and the Go SDK, the numeric error and disconnect codes, and the
// two encodings (JSON in text frames, MessagePack in binary frames).
//
// docs/protocol.md is the normative description; this package is its
// implementation. A client sends Commands; the server answers each command
// that carries an id with a ServerMessage of the same id, and sends pushes
// (ServerMessages with id 0) at any time.
package protocol
