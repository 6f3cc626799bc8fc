# syntax=docker/dockerfile:1
#
# Herald's container image: the static binary on distroless, run as a
# non-root user, with the packaged default config.
#
#   docker build -t herald \
#       --build-arg VERSION=0.1.0 --build-arg COMMIT="$(git rev-parse --short=12 HEAD)" \
#       --build-arg DATE="$(date -u +%Y-%m-%dT%H:%M:%SZ)" .
#   docker run -p 8000:8000 -e HERALD_TOKEN_SECRET=... -e HERALD_API_KEYS=... herald
#
# The build stage runs on the builder's platform and cross-compiles, so
# "docker buildx build --platform linux/amd64,linux/arm64" needs no emulation.
# Mount a config over /etc/herald/herald.yaml, or set HERALD_* variables.

FROM --platform=$BUILDPLATFORM golang:1.26 AS build
ARG TARGETOS
ARG TARGETARCH
ARG VERSION=
ARG COMMIT=
ARG DATE=
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 GOOS=$TARGETOS GOARCH=$TARGETARCH go build -trimpath \
        -ldflags "-s -w -X main.version=$VERSION -X main.commit=$COMMIT -X main.date=$DATE" \
        -o /out/herald ./cmd/herald

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/herald /usr/bin/herald
COPY packaging/herald.yaml /etc/herald/herald.yaml
# distroless's "nonroot", by number so that a runAsNonRoot check can see it.
USER 65532:65532
EXPOSE 8000
# No curl in the image: the binary probes its own /readyz (503 while it
# drains). The config gives it the listen address, as it does serve.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["/usr/bin/herald", "health", "--config", "/etc/herald/herald.yaml"]
# docker stop sends SIGTERM: Herald drains. Give it drain_timeout + 5s
# (docker stop --time 20, or stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/herald"]
CMD ["serve", "--config", "/etc/herald/herald.yaml"]
