#!/usr/bin/env bash
# delta.sh measures what delta compression saves and costs on Herald, alone
# and with permessage-deflate: one `herald bench` scenario (default:
# fan-out 1 x 1,000 saturated, --payload doc: a 1,000-byte JSON document
# of which a few fields change at each message) run against four
# configurations in turn, ROUNDS times, the order alternating:
#   herald               bench/peers/herald-bench.yaml, full publications
#   herald+deflate       herald-bench-deflate.yaml, the bench offering
#                        permessage-deflate (--compression)
#   herald+delta         herald-bench-delta.yaml, the bench asking for
#                        deltas (--delta) and applying them
#   herald+delta+deflate herald-bench-delta-deflate.yaml, both
# Each run is on a freshly started server. It prints one line per run
# (deliveries/s, server CPU per delivery, wire bytes per delivery, the
# deliveries received as deltas, p99, lost) and each configuration's
# medians, with wire bytes and CPU relative to full publications.
#
#   bench/peers/delta.sh [ROUNDS] [-- BENCH ARGS...]
#   bench/peers/delta.sh 3
#   bench/peers/delta.sh 3 -- --scenario fanout --conns 1000 --channels 1 --rate 100 --duration 20s --settle 3s --payload doc --size 1000
#
# Environment: COMMIT (Herald's, default HEAD), WORK (build directory,
# default ${TMPDIR:-/tmp}/herald-delta-build), OUT (results), PORT
# (default 18300), SERVERS (default all four).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=delta
rounds=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
	rounds=$1
	shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
if [ $# -eq 0 ]; then
	set -- --scenario fanout --conns 1000 --channels 1 --rate 0 --duration 15s --settle 3s --payload doc --size 1000
fi
. "$here/build-herald.sh"
port=${PORT:-18300}
servers=${SERVERS:-"herald herald+deflate herald+delta herald+delta+deflate"}

run() { # server index bench-args...
	local srv=$1 i=$2 pid extra=() cfg
	shift 2
	case "$srv" in
	herald) cfg=herald-bench.yaml ;;
	herald+deflate) cfg=herald-bench-deflate.yaml extra=(--compression) ;;
	herald+delta) cfg=herald-bench-delta.yaml extra=(--delta) ;;
	herald+delta+deflate) cfg=herald-bench-delta-deflate.yaml extra=(--delta --compression) ;;
	*) echo "unknown server $srv" >&2; return 1 ;;
	esac
	HERALD_API_KEY=k "$BIN" serve --config "$here/$cfg" --listen "127.0.0.1:$port" >"$OUT/server-$srv-$i.log" 2>&1 &
	pid=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$BIN" bench --url "ws://127.0.0.1:$port/ws" --api "http://127.0.0.1:$port" --key k --server-pid "$pid" --quiet --json "${extra[@]}" "$@" \
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
  "bad": d.get("bad_payload", 0), "deltas": d.get("deltas", 0), "received": d.get("received"),
  "cpu_us_per_delivery": d.get("server_cpu_per_delivery_us"),
  "wire_bytes_per_delivery": d.get("wire_bytes_per_delivery"),
  "p99_ms": lat.get("p99_ms"), "other_cores": mach.get("other_cores")}))
PY
}

echo "herald $BIN ($meta_commit); bench args: $*" >&2
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
keys = ["deliveries_per_s", "cpu_us_per_delivery", "wire_bytes_per_delivery", "p99_ms", "lost", "bad"]
med = {}
for label in sys.argv[2].split():
    rs = [r for r in runs if r["label"] == label]
    med[label] = {k: statistics.median([r[k] for r in rs if r.get(k) is not None]) for k in keys if any(r.get(k) is not None for r in rs)}
    share = [r["deltas"] / r["received"] for r in rs if r.get("received")]
    if share:
        med[label]["delta_share"] = round(statistics.median(share), 3)
    print(label, "median of", len(rs), json.dumps(med[label]))
base = med.get("herald", {})
for label in sys.argv[2].split()[1:]:
    m = med.get(label, {})
    if base.get("wire_bytes_per_delivery") and m.get("wire_bytes_per_delivery") and base.get("cpu_us_per_delivery") and m.get("cpu_us_per_delivery"):
        print(f"{label}: wire bytes per delivery {100 * m['wire_bytes_per_delivery'] / base['wire_bytes_per_delivery']:.1f}% of full, "
              f"CPU per delivery x{m['cpu_us_per_delivery'] / base['cpu_us_per_delivery']:.2f}")
PY
echo "reports in $OUT" >&2
