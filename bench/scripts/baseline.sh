#!/usr/bin/env bash
# baseline.sh runs the figures of docs/BENCHMARKS.md, each against a fresh
# `herald serve --dev` process (a fresh server matters for RSS: Go keeps
# freed memory for a while). Reports go to $OUT as NAME.json (the bench's
# --json report), NAME.txt (the same as a table, `herald bench --show`) and
# NAME.log (its progress lines); a one-line summary of each is printed.
#
#   bench/scripts/baseline.sh            # all runs
#   bench/scripts/baseline.sh fanout-1x1000-rate100   # one run
#
# Environment: BIN (binary, default /tmp/hb/herald), OUT (default
# /tmp/hb/results), PORT (default 18000), NO_BUILD; MAX_OTHER (cores) and
# RETRIES: on a shared machine, run again (after a minute) while other
# processes used more than MAX_OTHER cores during the measurement.
#
# Every run is bounded by the bench's own deadline; the server it started is
# killed when the run ends or the script is interrupted.
set -euo pipefail
cd "$(dirname "$0")/../.."

BIN=${BIN:-/tmp/hb/herald}
OUT=${OUT:-/tmp/hb/results}
PORT=${PORT:-18000}
mkdir -p "$OUT" "$(dirname "$BIN")"
# NO_BUILD=1 uses an existing $BIN (say, built from a clean checkout).
if [ -z "${NO_BUILD:-}" ]; then go build -o "$BIN" ./cmd/herald; fi

declare -A RUNS=(
	[idle-10k]="--scenario idle --conns 10000 --duration 150s --settle 5s"
	[idle-10k-own-channel]="--scenario idle --conns 10000 --channels 10000 --duration 150s --settle 5s"
	[fanout-1x1000-rate100]="--scenario fanout --conns 1000 --channels 1 --rate 100 --duration 30s --settle 5s"
	[fanout-1x1000-saturated]="--scenario fanout --conns 1000 --channels 1 --rate 0 --duration 30s --settle 5s"
	[connect-10k]="--scenario connect --conns 10000"
	[connect-10k-own-channel]="--scenario connect --conns 10000 --channels 10000"
)
ORDER=(idle-10k idle-10k-own-channel fanout-1x1000-rate100 fanout-1x1000-saturated connect-10k connect-10k-own-channel)
if [ $# -gt 0 ]; then ORDER=("$@"); fi

spid=
cleanup() { if [ -n "$spid" ]; then kill "$spid" 2>/dev/null || true; wait "$spid" 2>/dev/null || true; fi; }
trap cleanup EXIT INT TERM

MAX_OTHER=${MAX_OTHER:-}
RETRIES=${RETRIES:-5}

for name in "${ORDER[@]}"; do
	for attempt in $(seq "$RETRIES"); do
		args=${RUNS[$name]:?unknown run $name}
		HERALD_API_KEY=k "$BIN" serve --dev --listen "127.0.0.1:$PORT" >"$OUT/$name.server.log" 2>&1 &
		spid=$!
		for _ in $(seq 100); do
			curl -fsS "http://127.0.0.1:$PORT/readyz" >/dev/null 2>&1 && break
			sleep 0.1
		done
		echo "== $name: herald bench $args"
		# shellcheck disable=SC2086
		if "$BIN" bench --url "ws://127.0.0.1:$PORT/ws" --key k --server-pid "$spid" --json $args \
			>"$OUT/$name.json" 2>"$OUT/$name.log"; then
			"$BIN" bench --show "$OUT/$name.json" >"$OUT/$name.txt"
			if command -v jq >/dev/null; then
				jq -c '{conns: .params.conns, channels: .params.channels, rate: .params.rate,
					connect_per_s: .connect.rate_per_s, rss_per_conn_kib: .idle.rss_per_conn_kib,
					deliveries_per_s: .delivery.per_s, lost: .delivery.lost, dup: .delivery.duplicates,
					ooo: .delivery.out_of_order, p50_ms: .latency.p50_ms, p99_ms: .latency.p99_ms,
					p999_ms: .latency.p999_ms, server_cpu_us_per_delivery: .delivery.server_cpu_per_delivery_us,
					server_cores: .server.cpu.cores, bench_cores: .bench_cpu.cores,
					other_cores: .machine.other_cores, warnings: .warnings}' "$OUT/$name.json"
			fi
		else
			echo "$name failed: see $OUT/$name.log"
		fi
		cleanup
		spid=
		if [ -z "$MAX_OTHER" ] || ! command -v jq >/dev/null ||
			jq -e --argjson m "$MAX_OTHER" '(.machine.other_cores // 0) <= $m' "$OUT/$name.json" >/dev/null 2>&1; then
			break
		fi
		echo "$name: other processes were busy (attempt $attempt/$RETRIES); again in a minute"
		sleep 60
	done
done
