# build-herald.sh is sourced by cluster.sh and compare.sh, which set $here
# (this folder) and $name (theirs: cluster, compare) first. It goes to the
# repository's root and builds Herald from a clean export of a commit: the
# working tree may hold others' unfinished edits. It sets
#   repo         the repository's root
#   sha          the commit: $COMMIT (default HEAD)
#   BIN          the herald binary: $BIN if set, else $WORK/herald-SHA,
#                built when missing
#   meta_commit  the binary's commit for --meta: SHA, or for a given $BIN,
#                $COMMIT_OF_BIN (default "unknown (BIN=...)")
#   OUT          the results directory, created: $OUT (default
#                $WORK/results-COMMIT-TIME)
# and WORK, the build directory: $WORK (default
# ${TMPDIR:-/tmp}/herald-$name-build).
repo=$(cd "$here/../.." && pwd)
cd "$repo"

COMMIT=${COMMIT:-HEAD}
WORK=${WORK:-${TMPDIR:-/tmp}/herald-$name-build}
sha=$(git -C "$repo" rev-parse "$COMMIT")
if [ -z "${BIN:-}" ]; then
	src="$WORK/src-$sha"
	BIN="$WORK/herald-$sha"
	if [ ! -x "$BIN" ]; then
		rm -rf "$src"
		mkdir -p "$src"
		git -C "$repo" archive "$sha" | tar -x -C "$src"
		echo "$name.sh: building herald at $sha" >&2
		(cd "$src" && go build -o "$BIN.tmp" ./cmd/herald) && mv "$BIN.tmp" "$BIN"
		rm -rf "$src"
	fi
	meta_commit=$sha
else
	meta_commit=${COMMIT_OF_BIN:-unknown (BIN=$BIN)}
fi
OUT=${OUT:-$WORK/results-${sha:0:12}-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
