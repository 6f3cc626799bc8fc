#!/usr/bin/env bash
# idle-ab.sh measures the memory of idle connections on two Herald commits
# side by side: each pair starts a fresh server of each commit
# (herald-bench.yaml) and holds 15,000 idle subscribed connections on both
# at once, from two source addresses (127.0.0.2 for A, 127.0.0.3 for B),
# the second bench 3 s after the first (the first alternates between A and
# B). Both binaries are dropped from the page cache before each pair: the
# RSS counts the binary's mapped pages, and a binary just written by the
# linker maps megabytes more of them at start than one read from disk,
# which moves the baseline (and every figure per connection) by up to 0.3
# KiB. Besides the bench's figures (min and end of the hold, per
# connection, from the RSS over the baseline before connecting), it
# prints the growth of the anonymous and the file-backed RSS at the end of
# the hold, per connection, from /proc/PID/status sampled every second
# (the file-backed part is code run for the first time, not memory per
# connection).
#
#   bench/peers/idle-ab.sh A B [PAIRS] [-- BENCH ARGS...]
#   bench/peers/idle-ab.sh 72850fc HEAD 3
#
# Environment: WORK (build directory, default ${TMPDIR:-/tmp}/herald-ab-build),
# OUT (default $WORK/idle-TIME), PORT (A's port, default 18600; B's is PORT+20).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -lt 2 ]; then
	sed -n '2,22p' "$0" >&2
	exit 2
fi
a=$1 b=$2
shift 2
pairs=3
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
	pairs=$1
	shift
fi
[ $# -gt 0 ] && [ "$1" = "--" ] && shift
args=(--scenario idle --conns 15000 --duration 150s --settle 5s "$@")
port=${PORT:-18600}

build() { # commit -> path of its binary
	(COMMIT=$1 BIN= OUT=${TMPDIR:-/tmp} name=ab here=$here; . "$here/build-herald.sh" >&2; echo "$BIN")
}
binA=$(build "$a")
binB=$(build "$b")
WORK=${WORK:-${TMPDIR:-/tmp}/herald-ab-build}
OUT=${OUT:-$WORK/idle-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
echo "A $a -> $binA" >&2
echo "B $b -> $binB" >&2

run() { # label binary port source-ip index
	local label=$1 bin=$2 p=$3 ip=$4 i=$5
	HERALD_API_KEY=k "$bin" serve --config "$here/herald-bench.yaml" --listen "127.0.0.1:$p" >"$OUT/server-$label-$i.log" 2>&1 &
	local pid=$!
	for _ in $(seq 200); do
		curl -sf "http://127.0.0.1:$p/readyz" >/dev/null 2>&1 && break
		sleep 0.1
	done
	(while kill -0 "$pid" 2>/dev/null; do
		echo "$(date +%s) $(awk '/^(RssAnon|RssFile):/ {printf "%s ", $2}' "/proc/$pid/status")"
		sleep 1
	done) >"$OUT/rss-$label-$i.txt" 2>/dev/null &
	local sampler=$!
	"$binB" bench --url "ws://127.0.0.1:$p/ws" --key k --source-ips "$ip" --server-pid "$pid" --quiet --json "${args[@]}" \
		>"$OUT/$label-$i.json" 2>"$OUT/bench-$label-$i.log" || true
	kill "$sampler" 2>/dev/null || true
	kill -TERM "$pid" 2>/dev/null || true
	wait "$pid" 2>/dev/null || true
	python3 - "$label" "$OUT/$label-$i.json" "$OUT/rss-$label-$i.txt" <<'EOF'
import json, sys
label, path, samples = sys.argv[1:4]
try:
    r = json.load(open(path))
except Exception as e:
    print(f"{label} no report: {e}"); sys.exit()
idle, srv = r.get("idle") or {}, r.get("server") or {}
n = (srv.get("num_clients") or r["params"]["conns"])
rows = [l.split() for l in open(samples) if len(l.split()) == 3]
out = {"label": label, "per_conn_min_kib": idle.get("rss_per_conn_kib"), "per_conn_end_kib": idle.get("rss_per_conn_end_kib"),
       "rss_baseline_kib": srv.get("rss_baseline_kib"), "rss_end_kib": srv.get("rss_kib"),
       "other_cores": (r.get("machine") or {}).get("other_cores")}
# The end of the hold: the last sample within 256 KiB of the bench's last
# one (the bench closes its connections next, and the node's RSS grows).
at = [x for x in rows[1:] if abs(int(x[1]) + int(x[2]) - (srv.get("rss_kib") or 0)) <= 256]
if rows and at:
    base, end = rows[0], at[-1]
    out["anon_per_conn_kib"] = round((int(end[1]) - int(base[1])) / n, 3)
    out["file_per_conn_kib"] = round((int(end[2]) - int(base[2])) / n, 3)
    out["anon_baseline_kib"], out["file_baseline_kib"] = int(base[1]), int(base[2])
print(json.dumps(out))
EOF
}

for i in $(seq "$pairs"); do
	python3 -c '
import os, sys
for f in sys.argv[1:]:
    fd = os.open(f, os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED); os.close(fd)
' "$binA" "$binB"
	if [ $((i % 2)) = 1 ]; then first=A; else first=B; fi
	for label in $first $([ $first = A ] && echo B || echo A); do
		if [ "$label" = A ]; then
			run A "$binA" "$port" 127.0.0.2 "$i" >>"$OUT/runs.jsonl" &
		else
			run B "$binB" "$((port + 20))" 127.0.0.3 "$i" >>"$OUT/runs.jsonl" &
		fi
		sleep 3
	done
	wait
	tail -n 2 "$OUT/runs.jsonl"
done
python3 - "$OUT/runs.jsonl" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")]
keys = ["per_conn_min_kib", "per_conn_end_kib", "anon_per_conn_kib", "file_per_conn_kib"]
for label in ("A", "B"):
    rs = [r for r in runs if r["label"] == label]
    med = {k: statistics.median([r[k] for r in rs if r.get(k) is not None]) for k in keys if any(r.get(k) is not None for r in rs)}
    print(label, "median of", len(rs), json.dumps(med))
EOF
echo "reports in $OUT" >&2
