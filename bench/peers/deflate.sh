#!/usr/bin/env bash
# deflate.sh measures what permessage-deflate costs and saves, on Herald
# and on Centrifugo v6.9.1 with its WebSocket compression on: one `herald
# bench` scenario (default: fan-out 1 x 1,000 saturated, JSON payloads of
# 1,000 bytes) run against four servers in turn, ROUNDS times, the order
# alternating (herald, herald+deflate, centrifugo, centrifugo+deflate, then
# reversed): Herald with bench/peers/herald-bench.yaml and the bench not
# offering compression; Herald with bench/peers/herald-bench-deflate.yaml
# and the bench offering it (--compression); Centrifugo as centrifugo.sh
# configures it, likewise without and with (COMPRESSION=1). Each run is on
# a freshly started server. It prints one line per run (deliveries/s,
# server CPU per delivery, wire bytes per delivery, p99, lost, the cores
# other processes used) and each server's medians.
#
#   bench/peers/deflate.sh [ROUNDS] [-- BENCH ARGS...]
#   bench/peers/deflate.sh 3
#   bench/peers/deflate.sh 3 -- --scenario fanout --conns 1000 --channels 1 --rate 100 --duration 20s --settle 3s --payload json --size 1000
#
# Environment: COMMIT (Herald's, default HEAD), WORK (build directory,
# default ${TMPDIR:-/tmp}/herald-deflate-build), OUT (results), PORT
# (default 18200), SERVERS (default "herald herald+deflate centrifugo
# centrifugo+deflate").
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=deflate
rounds=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
	rounds=$1
	shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
if [ $# -eq 0 ]; then
	set -- --scenario fanout --conns 1000 --channels 1 --rate 0 --duration 20s --settle 3s --payload json --size 1000
fi
. "$here/build-herald.sh"
cbin=$("$here/centrifugo.sh" install)
port=${PORT:-18200}
servers=${SERVERS:-"herald herald+deflate centrifugo centrifugo+deflate"}

run() { # server index bench-args...
	local srv=$1 i=$2 pid url api extra=()
	shift 2
	case "$srv" in
	herald | herald+deflate)
		local cfg="$here/herald-bench.yaml"
		if [ "$srv" = herald+deflate ]; then cfg="$here/herald-bench-deflate.yaml"; fi
		HERALD_API_KEY=k "$BIN" serve --config "$cfg" --listen "127.0.0.1:$port" >"$OUT/server-$srv-$i.log" 2>&1 &
		pid=$!
		url="ws://127.0.0.1:$port/ws" api="http://127.0.0.1:$port"
		for _ in $(seq 100); do
			curl -sf "$api/readyz" >/dev/null 2>&1 && break
			sleep 0.1
		done
		;;
	centrifugo | centrifugo+deflate)
		local comp=
		if [ "$srv" = centrifugo+deflate ]; then comp=1; fi
		COMPRESSION=$comp KEY=k "$here/centrifugo.sh" exec "$port" >"$OUT/server-$srv-$i.log" 2>&1 &
		pid=$!
		url="ws://127.0.0.1:$port/connection/websocket" api="http://127.0.0.1:$port"
		extra=(--target centrifugo)
		for _ in $(seq 100); do
			curl -sf "$api/health" >/dev/null 2>&1 && break
			sleep 0.1
		done
		;;
	esac
	case "$srv" in *+deflate) extra+=(--compression) ;; esac
	"$BIN" bench --url "$url" --api "$api" --key k --server-pid "$pid" --quiet --json "${extra[@]}" "$@" \
		>"$OUT/$srv-$i.json" 2>"$OUT/bench-$srv-$i.log" || true
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$srv" "$OUT/$srv-$i.json" <<'PY'
import json, sys
label, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{label} no report: {e}"); sys.exit()
d = r.get("delivery") or {}
lat = r.get("latency") or {}
mach = r.get("machine") or {}
print(json.dumps({"label": label, "deliveries_per_s": d.get("per_s"), "lost": d.get("lost"),
  "cpu_us_per_delivery": d.get("server_cpu_per_delivery_us"),
  "wire_bytes_per_delivery": d.get("wire_bytes_per_delivery"),
  "p99_ms": lat.get("p99_ms"), "other_cores": mach.get("other_cores")}))
PY
}

echo "herald $BIN ($meta_commit), centrifugo $cbin; bench args: $*" >&2
for i in $(seq "$rounds"); do
	order=$servers
	if [ $((i % 2)) = 0 ]; then order=$(echo "$servers" | tr ' ' '\n' | tac | tr '\n' ' '); fi
	for srv in $order; do
		run "$srv" "$i" "$@" | tee -a "$OUT/runs.jsonl"
		sleep 2
	done
done
python3 - "$OUT/runs.jsonl" "$servers" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = ["deliveries_per_s", "cpu_us_per_delivery", "wire_bytes_per_delivery", "p99_ms", "lost"]
med = {}
for label in sys.argv[2].split():
    rs = [r for r in runs if r["label"] == label]
    med[label] = {k: statistics.median([r[k] for r in rs if r.get(k) is not None]) for k in keys if any(r.get(k) is not None for r in rs)}
    print(label, "median of", len(rs), json.dumps(med[label]))
for s in ("herald", "centrifugo"):
    a, b = med.get(s, {}), med.get(s + "+deflate", {})
    if a.get("cpu_us_per_delivery") and b.get("cpu_us_per_delivery"):
        print(f"{s}: compression costs x{b['cpu_us_per_delivery'] / a['cpu_us_per_delivery']:.2f} CPU per delivery, "
              f"wire bytes per delivery x{b.get('wire_bytes_per_delivery', 0) / a.get('wire_bytes_per_delivery', 1):.2f}")
PY
echo "reports in $OUT" >&2
