#!/usr/bin/env bash
# The whole Herald test suite: formatting and vet, every Go package under the
# race detector (against the Redis and NATS servers named by HERALD_TEST_REDIS
# and HERALD_TEST_NATS), a short run of every fuzz target, and the TypeScript
# SDK's unit, Node end-to-end and headless Chromium tests.
#
# It installs what it needs and is missing: Chromium from Debian's packages
# (when run as root) and the npm packages (npm ci).
set -uo pipefail
cd "$(dirname "$0")/.."

export HERALD_TEST_REDIS="${HERALD_TEST_REDIS:-127.0.0.1:6379}"
export HERALD_TEST_NATS="${HERALD_TEST_NATS:-nats://127.0.0.1:4222}"
FUZZTIME="${FUZZTIME:-10s}"

steps=()
failed_steps=0
step() {
	local name=$1
	shift
	echo
	echo "=== $name"
	local t0=$SECONDS
	if "$@"; then
		steps+=("ok    $name ($((SECONDS - t0))s)")
	else
		steps+=("FAIL  $name ($((SECONDS - t0))s)")
		failed_steps=$((failed_steps + 1))
	fi
}

gofmt_clean() {
	local out
	out=$(gofmt -l $(git ls-files '*.go'))
	[ -z "$out" ] || { echo "gofmt would change:"; echo "$out"; return 1; }
}

go_tests() {
	go test -race -count=1 -timeout 20m -json ./... >.go-test.json 2>.go-test.err
	local rc=$?
	cat .go-test.err
	go run ./scripts/testsummary <.go-test.json | tee .go-test-summary.txt
	local src=${PIPESTATUS[0]}
	rm -f .go-test.json .go-test.err
	[ "$rc" = 0 ] || echo "go test exited with status $rc"
	[ "$rc" = 0 ] && [ "$src" = 0 ]
}

fuzz_smoke() {
	local ok=0 log
	log=$(mktemp)
	while read -r pkg target; do
		echo "fuzz $pkg $target ($FUZZTIME)"
		if ! go test -run=NONE -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg" >"$log" 2>&1; then
			cat "$log"
			# Go 1.26's fuzz coordinator can report "context deadline
			# exceeded" when -fuzztime ends while a worker is mid-input
			# (golang/go#75804, fixed in Go 1.27). That is no finding: a
			# real one writes its input under testdata/fuzz and says so.
			if grep -q 'context deadline exceeded' "$log" && ! grep -q 'Failing input written' "$log"; then
				echo "fuzz $pkg $target: stopped by Go's fuzztime deadline race (golang/go#75804), no failing input; not a failure"
			else
				ok=1
			fi
		fi
	done < <(grep -rl --include='*_test.go' '^func Fuzz' . | grep -v node_modules | while read -r f; do
		dir=$(dirname "$f")
		grep -o '^func Fuzz[A-Za-z0-9_]*' "$f" | sed 's/^func //' | sed "s|^|./${dir#./} |"
	done)
	rm -f "$log"
	return $ok
}

ensure_chromium() {
	command -v chromium >/dev/null 2>&1 && return 0
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
	fi
	command -v chromium >/dev/null 2>&1 || { echo "chromium is not installed (apt-get install -y chromium)"; return 1; }
}

js_tests() {
	[ -f js/package.json ] || { echo "no js/ package"; return 1; }
	(cd js && npm ci --no-audit --no-fund && npm test) 2>&1 | tee .js-test-summary.txt
	return "${PIPESTATUS[0]}"
}

step "gofmt" gofmt_clean
step "go vet" go vet ./...
step "go test -race" go_tests
step "fuzz targets ($FUZZTIME each)" fuzz_smoke
step "chromium" ensure_chromium
step "js: typecheck, unit, node e2e, chromium" js_tests

echo
echo "=== summary"
printf '%s\n' "${steps[@]}"
[ -f .go-test-summary.txt ] && grep '^Go tests:' .go-test-summary.txt
[ -f .js-test-summary.txt ] && grep -E '^# (tests|pass|fail)' .js-test-summary.txt | tr '\n' ' ' | sed 's/^/JS tests: /' && echo
rm -f .go-test-summary.txt .js-test-summary.txt
if [ "$failed_steps" -gt 0 ]; then
	echo "RESULT: FAIL ($failed_steps step(s) failed)"
	exit 1
fi
echo "RESULT: PASS"
