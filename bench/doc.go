// Package bench is Herald's load generator, run as `herald bench`.
//
// It opens many lean WebSocket client connections (one reader goroutine
// each, frames parsed in place without per-message allocation), subscribes
// them to channels, publishes through the server API or as a client, and
// checks and times every delivery: each payload carries its channel
// sequence number and send time. Scenarios: fanout, channels, idle and
// connect (see Main's usage text). Server RSS and CPU come from /proc.
//
// Connections can be spread over child processes (--procs) and source
// addresses (--source-ips) to pass the per-process file limit and the
// per-address port range. Everything protocol-specific sits behind the
// target interface (target.go), so that the same scenarios run against a
// peer server: --target centrifugo speaks Centrifugo's JSON client
// protocol and HTTP API (centrifugo.go). `herald bench --compare`
// (compare.go, wrapped by bench/peers/compare.sh) runs the performance
// goals against Herald and Centrifugo alternately and prints the ratio
// table; bench/peers/centrifugo.sh installs and starts Centrifugo.
//
// --url takes several nodes' endpoints: the subscribers of every channel
// are spread over them (urlFor), publishes go to one node's API, and the
// servers' RSS and CPU are summed over --server-pid P1,P2,... with the
// broker's process (--broker-pid) measured apart. `herald bench --cluster`
// (cluster.go, wrapped by bench/peers/cluster.sh) runs the cross-node
// fan-out: one node on the memory broker, and clusters on NATS and Redis,
// alternately, and prints a table per run.
package bench
