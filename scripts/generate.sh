#!/usr/bin/env bash
# Regenerates gen/ from proto/ (offline once the pinned protovalidate module is in the Go module cache).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/node_modules/.bin:$PATH"
bash scripts/proto-deps.sh
rm -rf gen
buf generate
