#!/usr/bin/env bash
# generate.sh: regenerate every file produced from proto/ (Go, and TypeScript when
# client/typescript has its node_modules). Run from anywhere in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."
buf() { go tool -modfile=tools/buf/go.mod buf "$@"; }
buf format -w
buf lint
buf generate
