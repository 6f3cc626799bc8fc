// Package cluster holds Herald's multi-node tests. It has no code of its
// own: its tests build the herald binary once and run clusters of three
// `herald serve` processes on loopback, sharing state through
//
//   - the NATS server at $HERALD_TEST_NATS (default nats://127.0.0.1:4222)
//     and the Redis at $HERALD_TEST_REDIS (default 127.0.0.1:6379), each
//     test under a random broker prefix that it deletes afterwards;
//   - private nats-server and redis-server processes on spare ports, for
//     the tests that restart the broker (the shared ones are never
//     restarted: other tests use them concurrently);
//   - the nodes' own embedded NATS servers (`--cluster-listen`).
//
// Clients are Go SDK clients connected through a small TCP load balancer
// that round-robins new connections across live nodes, so that a client
// reconnects to whichever node the balancer picks, as behind a real one.
// Streams are checked by offset and payload sequence number against what
// the publisher was told: every publication in order with no gap and no
// duplicate, or an explicit recovered:false with a new epoch.
//
// Without a reachable NATS or Redis the tests that need it skip, except in
// CI (CI=true), where they fail.
package cluster
