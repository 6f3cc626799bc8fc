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
package bench
