#!/usr/bin/env bash
# test.sh: run every check and test of sendgate. It installs what the tests
# need when it is missing (redis-server through apt, the TypeScript client's
# npm packages through `npm ci`), starts the Redis servers the Redis tests run
# against on free loopback ports, and stops them afterwards.
#
#   ./test.sh          everything (what CI runs)
#   ./test.sh quick    Go tests without -race, no TypeScript, no simulation
set -euo pipefail
cd "$(dirname "$0")"
mode=${1:-all}
export GOTOOLCHAIN=local
step() { printf '\n== %s\n' "$*"; }

need_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  step "installing redis-server (apt)"
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq redis-server >/dev/null
}

step "format and vet"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './client/typescript/*'))
if [ -n "$unformatted" ]; then echo "gofmt would change:"; echo "$unformatted"; exit 1; fi
go vet ./...

step "the core imports only the standard library"
leaks=$(go list -deps ./limiter/... | grep -v '^github.com/sendgate/sendgate/limiter' | grep '\.' || true)
if [ -n "$leaks" ]; then echo "limiter/ imports more than the standard library:"; echo "$leaks"; exit 1; fi

step "buf lint, format, breaking, generated code is current"
buf() { go tool -modfile=tools/buf/go.mod buf "$@"; }
buf lint
buf format --exit-code >/dev/null || { echo "buf format would change the protos (run ./scripts/generate.sh)"; buf format --diff; exit 1; }
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:proto/sendgate/v1/sendgate.proto 2>/dev/null; then
  buf breaking --against '.git#branch=main'
fi
./scripts/generate.sh
if [ -n "$(git status --porcelain -- proto client/typescript/src/gen)" ]; then
  echo "generated code is stale; run ./scripts/generate.sh and commit:"; git status --porcelain -- proto client/typescript/src/gen; exit 1
fi

if [ "$mode" = quick ]; then
  step "go test (quick)"
  go test ./...
  exit 0
fi

need_redis
step "starting Redis test servers"
redis_dir=$(mktemp -d)
trap './scripts/redis-test-servers.sh stop "$redis_dir" >/dev/null 2>&1 || true; rm -rf "$redis_dir"' EXIT
./scripts/redis-test-servers.sh start "$redis_dir"
set -a; . "$redis_dir/env"; set +a

step "go test -race"
go test -race -timeout 30m ./...

step "TypeScript client against the real server"
bin_dir=$(mktemp -d)
go build -o "$bin_dir/sendgate" ./cmd/sendgate
SENDGATE_BIN="$bin_dir/sendgate" ./client/typescript/test.sh

step "all checks passed"
