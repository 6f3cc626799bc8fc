#!/usr/bin/env bash
# cluster.sh measures cross-node fan-out: one Herald node on the memory
# broker, 3-node clusters on the NATS and the Redis of this machine
# (nats://127.0.0.1:4222 with JetStream, redis://127.0.0.1:6379), and 3
# Centrifugo v6.9.1 nodes on its Redis engine (the same Redis; installed
# and run by centrifugo.sh), the same bench runs alternately on each, every
# run on fresh nodes under a broker prefix of its own (deleted afterwards).
# The subscribers are spread over the nodes, publishes go through the first
# node's HTTP API (or every node's: the -spread runs), and the broker
# process's CPU (found with pgrep) is measured beside the nodes'. It builds
# Herald from a clean export of a commit (default HEAD: the working tree may
# hold others' unfinished edits) and runs `herald bench --cluster`, which
# prints one table per run and writes cluster.json (every figure,
# parameter, command, the machine) and cluster.txt to $OUT.
#
#   bench/peers/cluster.sh                          # 1x1000 at 100 msg/s and saturated
#   bench/peers/cluster.sh --repeat 3
#   bench/peers/cluster.sh --runs channels-10k-broadcast
#   bench/peers/cluster.sh --scale 0.05 --max-other 0   # a quick smoke test
#   bench/peers/cluster.sh --runs fanout-1x3000-saturated,fanout-1x3000-rate100,hot-1x10,hot-1x10-spread,connect-10k
#   bench/peers/cluster.sh --setups memory,nats,redis   # without Centrifugo
#
# Arguments go to `herald bench --cluster` (see --help there).
# Environment: COMMIT (default HEAD), WORK (build directory, default
# ${TMPDIR:-/tmp}/herald-cluster-build), OUT (results, default
# $WORK/results-COMMIT-TIME), BIN (use this herald binary instead of
# building; its commit is then unknown unless COMMIT_OF_BIN is set).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=cluster
. "$here/build-herald.sh"

exec "$BIN" bench --cluster \
	--out "$OUT" \
	--herald-bin "$BIN" \
	--herald-config "$here/herald-bench.yaml" \
	--centrifugo "$here/centrifugo.sh" \
	--meta "herald_commit=$meta_commit" \
	--meta "herald_commit_subject=$(git -C "$repo" log -1 --format=%s "$sha")" \
	--meta "herald_commit_time=$(git -C "$repo" log -1 --format=%cI "$sha")" \
	--meta "nats_server=$(nats-server --version 2>/dev/null || echo unknown)" \
	--meta "redis_server=$(redis-server --version 2>/dev/null || echo unknown)" \
	"$@"
