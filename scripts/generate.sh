#!/usr/bin/env bash
# generate.sh: regenerate every file produced from proto/: Go into proto/, and
# TypeScript into client/typescript/src/gen/ (with protoc-gen-es, a devDependency
# of client/typescript, installed here with `npm ci` when node_modules is
# missing). Run from anywhere in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
buf() { go tool -modfile=tools/buf/go.mod buf "$@"; }
if [ ! -x client/typescript/node_modules/.bin/protoc-gen-es ]; then
  (cd client/typescript && npm ci --no-audit --no-fund)
fi
buf format -w
buf lint
buf generate
