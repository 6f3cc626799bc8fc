#!/usr/bin/env bash
# centrifugo.sh installs, configures and runs Centrifugo v6.9.1, the peer
# that `herald bench --target centrifugo` and `herald bench --compare`
# measure Herald against. Nothing of Centrifugo is committed: the binary is
# built with `go install` into a temporary directory and cached under the
# OS temp dir ($CACHE, default ${TMPDIR:-/tmp}/herald-peers/centrifugo-v6.9.1).
#
#   bench/peers/centrifugo.sh install          # print the binary's path (install if missing)
#   bench/peers/centrifugo.sh config PORT      # print the config file's path (written for PORT)
#   bench/peers/centrifugo.sh start PORT       # start in the background, wait until ready, print its PID
#   bench/peers/centrifugo.sh exec PORT        # run in the foreground (replaces this shell: same PID)
#
# Environment: KEY (HTTP API key, default "k"), HISTORY_SIZE (default 1000)
# and HISTORY_TTL (default 1h) as in bench/peers/herald-bench.yaml,
# LOG_LEVEL (default warn), ADDRESS (default 127.0.0.1), COMPRESSION (1:
# WebSocket permessage-deflate on, at Centrifugo's default level 1 and no
# minimum size; default off), ENGINE (memory, the default, or redis:
# Centrifugo's Redis engine on REDIS_ADDRESS, default
# redis://127.0.0.1:6379, keys under REDIS_PREFIX, default centrifugo-bench;
# `herald bench --cluster` runs several nodes, one per PORT, on one Redis
# with a REDIS_PREFIX of each run's own).
#
# The config is the equivalent of bench/peers/herald-bench.yaml: memory
# engine (or ENGINE=redis, to compare with Herald on its Redis broker:
# HERALD_BROKER=redis://...); channels without a namespace (the bench's channels) keep a
# history of HISTORY_SIZE publications for HISTORY_TTL; anonymous
# connections without a token, anonymous subscribe and client publish
# allowed; presence and join/leave off; ping every 25s, pong timeout 10s
# (Herald's defaults); HTTP API with key $KEY (header X-API-Key); /health
# for readiness; usage stats off. The open-file limit is raised to the hard
# limit before the server starts.
set -euo pipefail

VERSION=v6.9.1
CACHE=${CACHE:-${TMPDIR:-/tmp}/herald-peers/centrifugo-$VERSION}
BIN=$CACHE/centrifugo
KEY=${KEY:-k}
HISTORY_SIZE=${HISTORY_SIZE:-1000}
HISTORY_TTL=${HISTORY_TTL:-1h}
LOG_LEVEL=${LOG_LEVEL:-warn}
ADDRESS=${ADDRESS:-127.0.0.1}
COMPRESSION=${COMPRESSION:-}
ENGINE=${ENGINE:-memory}
REDIS_ADDRESS=${REDIS_ADDRESS:-redis://127.0.0.1:6379}
REDIS_PREFIX=${REDIS_PREFIX:-centrifugo-bench}

die() { echo "centrifugo.sh: $*" >&2; exit 1; }

install() {
	if [ -x "$BIN" ]; then
		echo "$BIN"
		return
	fi
	mkdir -p "$CACHE"
	local tmp
	tmp=$(mktemp -d "${TMPDIR:-/tmp}/centrifugo-install.XXXXXX")
	echo "centrifugo.sh: installing github.com/centrifugal/centrifugo/v6@$VERSION (a few minutes)" >&2
	# Outside any module, so that the current one's go.mod is not involved;
	# linker flags and cgo as in Centrifugo's release builds (.goreleaser.yml).
	if ! (cd "$tmp" && GOBIN="$tmp" GOFLAGS= CGO_ENABLED=0 go install \
		-ldflags "-s -w -X github.com/centrifugal/centrifugo/v6/internal/build.Version=${VERSION#v}" \
		"github.com/centrifugal/centrifugo/v6@$VERSION") >&2; then
		rm -rf "$tmp"
		die "go install failed"
	fi
	mv "$tmp/centrifugo" "$BIN.tmp.$$" && mv "$BIN.tmp.$$" "$BIN"
	rm -rf "$tmp"
	echo "$BIN"
}

config() {
	local port=$1 cfg="$CACHE/config-$1.json" ws="" engine
	if [ "$COMPRESSION" = 1 ]; then
		cfg="$CACHE/config-$1-deflate.json"
		ws='"websocket": {"compression": true},'
	fi
	case "$ENGINE" in
	memory) engine='{"type": "memory"}' ;;
	redis)
		cfg="${cfg%.json}-redis.json"
		engine="{\"type\": \"redis\", \"redis\": {\"address\": [\"$REDIS_ADDRESS\"], \"prefix\": \"$REDIS_PREFIX\"}}"
		;;
	*) die "ENGINE=$ENGINE: want memory or redis" ;;
	esac
	mkdir -p "$CACHE"
	cat >"$cfg.tmp.$$" <<JSON
{
  "log": {"level": "$LOG_LEVEL"},
  "http_server": {"address": "$ADDRESS", "port": $port},
  "engine": $engine,
  "health": {"enabled": true},
  "usage_stats": {"disabled": true},
  "http_api": {"key": "$KEY"},$ws
  "client": {
    "allow_anonymous_connect_without_token": true,
    "ping_interval": "25s",
    "pong_timeout": "10s"
  },
  "channel": {
    "without_namespace": {
      "history_size": $HISTORY_SIZE,
      "history_ttl": "$HISTORY_TTL",
      "presence": false,
      "join_leave": false,
      "allow_subscribe_for_anonymous": true,
      "allow_subscribe_for_client": true,
      "allow_publish_for_anonymous": true,
      "allow_publish_for_client": true
    }
  }
}
JSON
	mv "$cfg.tmp.$$" "$cfg"
	echo "$cfg"
}

raise_nofile() { ulimit -n "$(ulimit -Hn)" 2>/dev/null || true; }

cmd=${1:-}
case "$cmd" in
install)
	install
	;;
config)
	[ $# -eq 2 ] || die "usage: $0 config PORT"
	config "$2"
	;;
exec)
	[ $# -eq 2 ] || die "usage: $0 exec PORT"
	bin=$(install)
	cfg=$(config "$2")
	"$bin" checkconfig --config "$cfg" >&2 || die "bad config $cfg"
	raise_nofile
	exec "$bin" --config "$cfg"
	;;
start)
	[ $# -eq 2 ] || die "usage: $0 start PORT"
	port=$2
	bin=$(install)
	cfg=$(config "$port")
	"$bin" checkconfig --config "$cfg" >&2 || die "bad config $cfg"
	log="$CACHE/centrifugo-$port.log"
	raise_nofile
	nohup "$bin" --config "$cfg" >"$log" 2>&1 </dev/null &
	pid=$!
	for _ in $(seq 100); do
		if curl -fsS "http://$ADDRESS:$port/health" >/dev/null 2>&1; then
			echo "$pid"
			exit 0
		fi
		kill -0 "$pid" 2>/dev/null || die "centrifugo exited; see $log"
		sleep 0.1
	done
	kill "$pid" 2>/dev/null || true
	die "centrifugo not ready after 10s; see $log"
	;;
*)
	die "usage: $0 install | config PORT | start PORT | exec PORT"
	;;
esac
