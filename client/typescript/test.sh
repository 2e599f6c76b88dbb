#!/usr/bin/env bash
# test.sh: build @sendgate/client and run its tests (node --test). The tests
# start the real server: SENDGATE_BIN, or one built from ./cmd/sendgate.
set -euo pipefail
cd "$(dirname "$0")"
if [ ! -d node_modules ]; then
  npm ci --no-audit --no-fund
fi
npm run build
npm test
