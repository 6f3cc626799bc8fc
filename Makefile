# Herald: the two commands are `make dev` (a dev server) and `make test`
# (the whole suite, as CI runs it; it fails if any test was skipped, unless
# run as `make test ALLOW_SKIPS=1`).

.PHONY: dev build test test-go fuzz bench clean

dev:
	go run ./cmd/herald serve --dev

build:
	go build -o bin/herald ./cmd/herald

test:
	./scripts/test.sh

test-go:
	go test -race -count=1 ./...

fuzz:
	FUZZTIME=60s ./scripts/test.sh

bench:
	go test -run=NONE -bench=. -benchmem ./protocol/ ./internal/hub/

clean:
	rm -rf bin test-artifacts
