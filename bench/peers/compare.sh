#!/usr/bin/env bash
# compare.sh measures Herald against Centrifugo v6.9.1: every goal row of
# the performance issue, both servers run alternately with the same bench
# parameters, each run on a freshly started server. It builds Herald from a
# clean export of a commit (default HEAD: the working tree may hold others'
# unfinished edits), installs Centrifugo (cached, see centrifugo.sh), and
# runs `herald bench --compare`, which prints the ratio table and writes
# compare.json (every figure, parameter, command, the machine) and
# compare.txt to $OUT.
#
#   bench/peers/compare.sh                         # everything (about 13 minutes per repeat)
#   bench/peers/compare.sh --runs fanout-1x1000-saturated,connect-10k
#   bench/peers/compare.sh --scale 0.05            # a quick smoke test
#   bench/peers/compare.sh --max-other 0.3 --retries 3 --repeat 3
#
# Arguments go to `herald bench --compare` (see --help there).
# Environment: COMMIT (default HEAD), WORK (build directory, default
# ${TMPDIR:-/tmp}/herald-compare-build), OUT (results, default
# $WORK/results-COMMIT-TIME), BIN (use this herald binary instead of
# building; its commit is then unknown unless COMMIT_OF_BIN is set).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
name=compare
. "$here/build-herald.sh"

"$here/centrifugo.sh" install >/dev/null

exec "$BIN" bench --compare \
	--out "$OUT" \
	--herald-bin "$BIN" \
	--herald-config "$here/herald-bench.yaml" \
	--centrifugo "$here/centrifugo.sh" \
	--meta "herald_commit=$meta_commit" \
	--meta "herald_commit_subject=$(git -C "$repo" log -1 --format=%s "$sha")" \
	--meta "herald_commit_time=$(git -C "$repo" log -1 --format=%cI "$sha")" \
	"$@"
