#!/usr/bin/env bash
# scale.sh measures Herald at size on this machine: NODES nodes on one
# broker (the NATS with JetStream or the Redis of this machine, under a
# fresh prefix, deleted afterwards), and for each connection count in CONNS
# three runs, every run on fresh nodes:
#
#   idle       CONNS subscribed connections held, RSS per connection per node
#   broadcast  CONNS subscribers of one channel, publications as fast as the
#              window allows: deliveries/s, end-to-end p50/p99, broker CPU
#   channels   CONNS subscribers over 10,000 channels, random publishes
#   paced      (only if named in SCENARIOS) the broadcast at PACED_RATE
#              publications/s (0.5), below saturation: latency without the
#              broadcast's queue of 4 publications
#
# The clients are spread over PROCS bench processes (the open-file limit is
# per process) and SOURCE_IPS source addresses (127.0.0.x), the subscribers
# over every node; publishes go through the first node's API. Reports (one
# JSON per run, the nodes' logs) and summary.txt go to $OUT.
#
#   bench/peers/scale.sh                            # nats, 6 nodes, 10,000 and 100,000
#   BROKER=redis bench/peers/scale.sh
#   CONNS=3000 NODES=3 DURATION=5s bench/peers/scale.sh   # a quick smoke test
#
# Environment: BROKER (nats or redis), NODES (6), CONNS (comma list,
# 10000,100000), PROCS (default: one per 16,000 connections, at least 2),
# SOURCE_IPS (8), DURATION (20s per publishing run, idle holds 60s),
# CONNECT_CONCURRENCY (connections being opened at once per bench process,
# 64), SCENARIOS (the runs, comma list: idle,broadcast,channels; paced),
# PACED_RATE, PORT (first node's port, 28000), DEBUG_PORT (if set, node i
# serves /debug/pprof on 127.0.0.1:DEBUG_PORT+i), COMMIT, BIN, WORK, OUT as
# in cluster.sh. summary.txt holds scale-summary.py's tables, which it prints again from a
# results directory: bench/peers/scale-summary.py OUT BROKER NODES.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=scale
. "$here/build-herald.sh"

broker=${BROKER:-nats}
nodes=${NODES:-6}
conns_list=${CONNS:-10000,100000}
source_ips=${SOURCE_IPS:-8}
duration=${DURATION:-20s}
port=${PORT:-28000}
concurrency=${CONNECT_CONCURRENCY:-64}
scenarios=${SCENARIOS:-idle,broadcast,channels}
debug_port=${DEBUG_PORT:-}
paced_rate=${PACED_RATE:-0.5}
case $broker in
nats) url=${NATS_URL:-nats://127.0.0.1:4222}; bpid=$(pgrep -x nats-server | head -1) ;;
redis) url=${REDIS_URL:-redis://127.0.0.1:6379}; bpid=$(pgrep -x redis-server | head -1) ;;
*) echo "scale.sh: BROKER must be nats or redis" >&2; exit 2 ;;
esac
ulimit -n 20000 2>/dev/null || true

pids=()
prefix=
stop_nodes() {
	for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
	pids=()
	# What the run left in the broker under its prefix goes.
	[ -z "$prefix" ] || "$BIN" bench --cleanup-broker "$url" "$prefix" || true
	prefix=
}
trap stop_nodes EXIT

start_nodes() { # label
	local urls=() i debug=()
	prefix="scale-$(date +%s)-$RANDOM"
	for i in $(seq 0 $((nodes - 1))); do
		[ -n "$debug_port" ] && debug=(--debug-listen "127.0.0.1:$((debug_port + i))")
		HERALD_API_KEY=k "$BIN" serve --config "$here/herald-bench.yaml" --listen "127.0.0.1:$((port + i))" "${debug[@]}" \
			--broker "$url?prefix=$prefix" >"$OUT/$1.node$i.log" 2>&1 &
		pids+=($!)
		urls+=("ws://127.0.0.1:$((port + i))/ws")
	done
	for i in $(seq 0 $((nodes - 1))); do
		for _ in $(seq 300); do
			curl -sf "http://127.0.0.1:$((port + i))/readyz" >/dev/null 2>&1 && break
			sleep 0.1
		done
	done
	node_urls=$(IFS=,; echo "${urls[*]}")
	node_pids=$(IFS=,; echo "${pids[*]}")
}

run() { # label args...
	local label=$1
	shift
	start_nodes "$label"
	echo "scale.sh: $label: $nodes nodes on $broker, bench $*" >&2
	"$BIN" bench --url "$node_urls" --api "http://127.0.0.1:$port" --key k --server-pid "$node_pids" \
		--broker-pid "$bpid" --quiet --json "$@" >"$OUT/$label.json" 2>"$OUT/$label.bench.log" || true
	stop_nodes
	"$BIN" bench --show "$OUT/$label.json" >"$OUT/$label.txt" 2>&1 || true
}

IFS=, read -r -a counts <<<"$conns_list"
want() { [[ ",$scenarios," == *",$1,"* ]]; }
for c in "${counts[@]}"; do
	procs=${PROCS:-$(( (c + 15999) / 16000 ))}
	[ "$procs" -lt 2 ] && procs=2
	common=(--conns "$c" --procs "$procs" --source-ips "$source_ips" --connect-concurrency "$concurrency" --connect-timeout 60s --setup-timeout 10m)
	want idle && run "idle-$c" --scenario idle "${common[@]}" --duration 60s --settle 10s
	want broadcast && run "broadcast-$c" --scenario fanout --channels 1 --rate 0 --window 4 "${common[@]}" --duration "$duration" --settle 10s
	want paced && run "paced-$c" --scenario fanout --channels 1 --rate "$paced_rate" "${common[@]}" --duration "$duration" --settle 10s
	want channels && run "channels-$c" --scenario channels --channels 10000 --rate 0 --inflight 16 --window 20000 "${common[@]}" --duration "$duration" --settle 10s
done

"$here/scale-summary.py" "$OUT" "$broker" "$nodes" >"$OUT/summary.txt"
cat "$OUT/summary.txt"
echo "reports in $OUT" >&2
