#!/usr/bin/env bash
# ab.sh measures two Herald commits against each other on this machine: the
# A/B of a change on a measured path. Each run starts a fresh server built
# from one commit (herald-bench.yaml), runs one `herald bench` scenario
# against it, and stops it; the commits alternate A B B A A B ..., so that
# drift over the session falls on both alike. The bench client is the same
# binary for every run (B's build).
#
#   bench/peers/ab.sh A B [ROUNDS] -- BENCH ARGS...
#   bench/peers/ab.sh bec6ea1 HEAD 6 -- --scenario fanout --conns 1000 --channels 1 --rate 0 --duration 20s --settle 3s
#   bench/peers/ab.sh bec6ea1 HEAD 6 -- --scenario connect --conns 10000 --source-ips 4
#
# It prints one line per run (deliveries/s, server CPU per delivery,
# connects/s, server CPU per connect, p99, lost, the cores other processes
# used meanwhile) and the median of each commit. Reports are kept in $OUT.
# Environment: WORK (build directory, default ${TMPDIR:-/tmp}/herald-ab-build),
# OUT (default $WORK/results-TIME), PORT (default 18100).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 3 ]; then
	sed -n '2,18p' "$0" >&2
	exit 2
fi
a=$1 b=$2
shift 2
rounds=6
if [ "$1" != "--" ]; then
	rounds=$1
	shift
fi
[ "$1" = "--" ] && shift
name=ab
port=${PORT:-18100}

build() { # commit -> path of its binary
	(COMMIT=$1 BIN= OUT=${TMPDIR:-/tmp} name=ab here=$here; . "$here/build-herald.sh" >&2; echo "$BIN")
}
binA=$(build "$a")
binB=$(build "$b")
WORK=${WORK:-${TMPDIR:-/tmp}/herald-ab-build}
OUT=${OUT:-$WORK/results-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
echo "A $a -> $binA" >&2
echo "B $b -> $binB" >&2

run() { # label binary index
	local label=$1 bin=$2 i=$3
	shift 3
	HERALD_API_KEY=k "$bin" serve --config "$here/herald-bench.yaml" --listen "127.0.0.1:$port" >"$OUT/server-$label-$i.log" 2>&1 &
	local pid=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$binB" bench --url "ws://127.0.0.1:$port/ws" --api "http://127.0.0.1:$port" --key k --server-pid "$pid" --quiet --json "$@" \
		>"$OUT/$label-$i.json" 2>"$OUT/bench-$label-$i.log" || true
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$label" "$OUT/$label-$i.json" <<'EOF'
import json, sys
label, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{label} no report: {e}"); sys.exit()
d = r.get("delivery") or {}
c = r.get("connect") or {}
lat = r.get("latency") or {}
srv = r.get("server") or {}
cpu = (srv.get("cpu") or {})
mach = r.get("machine") or {}
ccpu = c.get("server_cpu") or {}
per_conn = None
if c.get("connected") and ccpu.get("total_s") is not None:
    per_conn = round(ccpu["total_s"] / c["connected"] * 1e6, 2)
print(json.dumps({"label": label, "deliveries_per_s": d.get("per_s"), "lost": d.get("lost"),
  "cpu_us_per_delivery": d.get("server_cpu_per_delivery_us"), "connects_per_s": c.get("rate_per_s"),
  "cpu_us_per_connect": per_conn, "p99_ms": lat.get("p99_ms"),
  "other_cores": mach.get("other_cores")}))
EOF
}

for i in $(seq "$rounds"); do
	if [ $((i % 2)) = 1 ]; then order="A B"; else order="B A"; fi
	for label in $order; do
		if [ "$label" = A ]; then bin=$binA; else bin=$binB; fi
		run "$label" "$bin" "$i" "$@" | tee -a "$OUT/runs.jsonl"
	done
done
python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = ["deliveries_per_s", "cpu_us_per_delivery", "connects_per_s", "cpu_us_per_connect", "p99_ms"]
for label in ("A", "B"):
    rs = [r for r in runs if r["label"] == label]
    med = {k: statistics.median([r[k] for r in rs if r.get(k) is not None]) for k in keys if any(r.get(k) is not None for r in rs)}
    print(label, "median of", len(rs), json.dumps(med))
EOF
echo "reports in $OUT" >&2
