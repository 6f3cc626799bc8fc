# Herald: the two commands are `make dev` (a dev server) and `make test`
# (the whole suite, as CI runs it; it fails if any test was skipped, unless
# run as `make test ALLOW_SKIPS=1`).

.PHONY: dev build test test-go test-package chaos fuzz bench release deb check-version clean

# Release builds stamp these into the binary (herald version prints them).
# VERSION defaults to herald.Version, the constant in the root package;
# COMMIT to the checkout's commit ("-dirty" with uncommitted changes); DATE
# to now. Set any of them on the command line: make release VERSION=0.2.0
VERSION := $(or $(VERSION),$(shell sed -n 's/^const Version = "\(.*\)"$$/\1/p' *.go | head -n 1))
COMMIT := $(or $(COMMIT),$(shell c=$$(git rev-parse --short=12 HEAD 2>/dev/null) && { git diff --quiet HEAD || c=$$c-dirty; echo $$c; }))
DATE := $(or $(DATE),$(shell date -u +%Y-%m-%dT%H:%M:%SZ))
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)
PLATFORMS := linux/amd64 linux/arm64 darwin/arm64
DEB_ARCHS := amd64 arm64
SHA256 := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo shasum -a 256)

# binaries BUILD: dist/herald-VERSION-OS-ARCH, without cgo, for each OS/ARCH
# in BUILD; debs ARCHS: dist/herald_VERSION_ARCH.deb (packaging/nfpm.yaml)
# from the linux binary of each ARCH.
binaries = for p in $(1); do \
		echo "build dist/herald-$(VERSION)-$${p%/*}-$${p\#*/}"; \
		CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p\#*/} go build -trimpath -ldflags '$(LDFLAGS)' \
			-o dist/herald-$(VERSION)-$${p%/*}-$${p\#*/} ./cmd/herald || exit 1; \
	done
debs = for a in $(1); do \
		go -C packaging/mkdeb run . -version '$(VERSION)' -arch $$a \
			-binary '$(CURDIR)/dist/herald-$(VERSION)-linux-'$$a -out '$(CURDIR)/dist' || exit 1; \
	done

dev:
	go run ./cmd/herald serve --dev

build:
	go build -o bin/herald ./cmd/herald

test:
	./scripts/test.sh

test-go:
	go test -race -count=1 ./...

# The packaging tests alone (make test runs them too): the .deb built and
# read back, the Dockerfile and compose file checked against the binary,
# and, as root with dpkg, the package installed, run as its user and purged.
test-package:
	go test -race -count=1 -v ./packaging/

# Long fault-injection runs (chaos/): per engine, schedules of
# CHAOS_SCHEDULE (default 2m) for CHAOS_DURATION (default 30m), or
# CHAOS_COUNT schedules; CHAOS_ENGINES=nats,redis,rediscluster,embedded
# picks engines, CHAOS_SEED the first seed; CHAOS_PARALLEL engines run at
# once (default 4: all). `make test` runs one short schedule per engine.
# Each engine ends with a "TABLE |" line (the docs/guarantees.md table).
chaos:
	go test -tags chaos_long -count=1 -timeout 0 -parallel $${CHAOS_PARALLEL:-4} -run '^TestChaosLong$$' -v ./chaos/

fuzz:
	FUZZTIME=60s ./scripts/test.sh

bench:
	go test -run=NONE -bench=. -benchmem ./protocol/ ./internal/hub/

# dist/: static binaries for $(PLATFORMS), Debian packages for
# $(DEB_ARCHS), and SHA256SUMS.
release: check-version
	rm -rf dist
	mkdir -p dist
	$(call binaries,$(PLATFORMS))
	$(call debs,$(DEB_ARCHS))
	cd dist && $(SHA256) herald* >SHA256SUMS
	@ls -l dist

# The Debian packages alone.
deb: check-version
	mkdir -p dist
	$(call binaries,$(addprefix linux/,$(DEB_ARCHS)))
	$(call debs,$(DEB_ARCHS))

check-version:
	@test -n '$(VERSION)' || { echo "VERSION is empty: make release VERSION=x.y.z"; exit 1; }

clean:
	rm -rf bin dist test-artifacts
