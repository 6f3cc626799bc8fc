// Package transport is Herald's WebSocket layer: the HTTP upgrade, RFC 6455
// framing, and per-connection bounded outbound queues written with as few
// syscalls as possible.
//
// A Conn is served by an Engine. The epoll engine (Linux, plain TCP) keeps no
// goroutine and no buffer for an idle connection: readiness comes from epoll,
// a goroutine is borrowed to read and dispatch frames, and shared flusher
// goroutines write each connection's queue with one writev. The goroutine
// engine (every other case, including TLS) runs a reader goroutine per
// connection and a writer goroutine only while the queue is non-empty.
//
// Both engines share the frame reader and the queue, so they behave the same
// on the wire.
package transport
