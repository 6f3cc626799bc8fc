// Package chaos holds Herald's fault-injection suite. It has no code of
// its own: its tests run three `herald serve` processes over each engine
// on loopback (a 3-server NATS cluster with replicated JetStream streams,
// a single Redis, a 3-master Redis Cluster, and the embedded cluster of
// `serve --cluster-listen`), put TCP proxies between clients and nodes and
// between nodes and brokers, and drive a workload of Go SDK subscribers
// and publishers while a schedule, random but reproducible from a seed,
// injects faults: SIGKILL and restart of a node or a broker server,
// SIGSTOP/SIGCONT pauses, and through the proxies added latency, resets,
// blackholes (a node partitioned from its broker while its clients still
// reach it) and slow bandwidth.
//
// Everything the clients see and every publish attempt is recorded, and a
// checker reads the whole history afterwards against docs/guarantees.md:
// offsets within an epoch strictly increase and nothing is handed to the
// application twice; every gap is signalled (recovered:false, an epoch
// change, a gap marker); every acknowledged publication reaches every
// client that stayed subscribed, or its loss is signalled; a publish
// retried with its idempotency key lands once; presence on every node
// converges to the live connections within presence_ttl; and offset
// assignment per channel is a linearizable append (checked with
// porcupine).
//
// `go test ./chaos/` runs one short schedule per engine and the checker's
// own tests, including one against a herald built with the
// herald_broken_recovery tag, which must be caught. `make chaos` runs long
// schedules: CHAOS_DURATION (default 30m) per engine, or CHAOS_COUNT
// schedules; CHAOS_ENGINES picks engines (nats,redis,rediscluster,embedded);
// CHAOS_SEED re-runs one schedule. A failing run prints its seed, the
// fault timeline and the first violation with the events around it.
package chaos
