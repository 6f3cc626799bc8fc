#!/usr/bin/env bash
# tracing.sh measures what tracing costs: the same Herald build with
# tracing off, and exporting over OTLP at two sampling rates, run
# alternately on the same machine with the same `herald bench` scenario
# (default: saturated fan-out, 1 channel x 1,000 subscribers). The spans go
# to otlpsink, a receiver that counts and drops them.
#
#   bench/peers/tracing.sh [ROUNDS] [-- BENCH ARGS...]
#
# It prints one line per run and the medians per setting (deliveries/s,
# server CPU per delivery, p99). Environment: COMMIT (default HEAD), WORK,
# OUT, PORT (default 18100), SINK (default 127.0.0.1:14318).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=tracing
. "$here/build-herald.sh"
rounds=${1:-4}
[ $# -gt 0 ] && shift
[ "${1:-}" = "--" ] && shift
args=("$@")
[ ${#args[@]} -eq 0 ] && args=(--scenario fanout --conns 1000 --channels 1 --rate 0 --duration 20s --settle 3s)
port=${PORT:-18100}
sink=${SINK:-127.0.0.1:14318}
go build -o "$WORK/otlpsink" "$repo/bench/peers/otlpsink"
"$WORK/otlpsink" -listen "$sink" >"$OUT/otlpsink.log" 2>&1 &
sinkpid=$!
trap 'kill $sinkpid 2>/dev/null || true' EXIT

run() { # label env...
	local label=$1 i=$2
	shift 2
	env "$@" HERALD_API_KEY=k "$BIN" serve --config "$here/herald-bench.yaml" --listen "127.0.0.1:$port" >"$OUT/server-$label-$i.log" 2>&1 &
	local pid=$!
	for _ in $(seq 100); do
		curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	"$BIN" bench --url "ws://127.0.0.1:$port/ws" --api "http://127.0.0.1:$port" --key k --server-pid "$pid" --quiet --json "${args[@]}" \
		>"$OUT/$label-$i.json" 2>"$OUT/bench-$label-$i.log" || true
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$label" "$OUT/$label-$i.json" <<'PY' | tee -a "$OUT/runs.jsonl"
import json, sys
label, path = sys.argv[1], sys.argv[2]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{label} no report: {e}"); sys.exit()
d, lat, mach = r.get("delivery") or {}, r.get("latency") or {}, r.get("machine") or {}
print(json.dumps({"label": label, "deliveries_per_s": d.get("per_s"), "lost": d.get("lost"),
  "cpu_us_per_delivery": d.get("server_cpu_per_delivery_us"), "p99_ms": lat.get("p99_ms"),
  "other_cores": mach.get("other_cores")}))
PY
}

otlp=(OTEL_EXPORTER_OTLP_ENDPOINT="http://$sink" OTEL_TRACES_SAMPLER=parentbased_traceidratio)
setting() { # n round: run setting n
	case $1 in
	0) run off "$2" OTEL_SDK_DISABLED=true ;;
	1) run sampled-1pct "$2" "${otlp[@]}" OTEL_TRACES_SAMPLER_ARG=0.01 ;;
	2) run sampled-100pct "$2" "${otlp[@]}" OTEL_TRACES_SAMPLER_ARG=1 ;;
	esac
}
for i in $(seq "$rounds"); do
	for k in 0 1 2; do # the order rotates each round, so drift falls on all three
		setting $(((i + k) % 3)) "$i"
	done
done
python3 - "$OUT/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
for label in ("off", "sampled-1pct", "sampled-100pct"):
    rs = [r for r in runs if r["label"] == label]
    med = {k: statistics.median([r[k] for r in rs if r.get(k) is not None]) for k in ("deliveries_per_s", "cpu_us_per_delivery", "p99_ms") if any(r.get(k) is not None for r in rs)}
    print(label, "median of", len(rs), json.dumps(med))
PY
kill -TERM $sinkpid 2>/dev/null || true
wait $sinkpid 2>/dev/null || true
cat "$OUT/otlpsink.log"
echo "reports in $OUT" >&2
