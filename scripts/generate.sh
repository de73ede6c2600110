#!/usr/bin/env bash
# Regenerates gen/ from proto/: TypeScript into gen/, the Go client into gen/go/ (its go.mod and go.sum are kept).
# Offline once the pinned protovalidate module is in the Go module cache and the pinned Go plugins are built.
set -euo pipefail
cd "$(dirname "$0")/.."
plugins=$(bash scripts/go-plugins.sh)
export PATH="$plugins:$PWD/node_modules/.bin:$PATH"
bash scripts/proto-deps.sh
# Remove only what buf writes, so files that are gone from proto/ go too.
find gen -mindepth 1 -maxdepth 1 ! -name go -exec rm -rf {} +
rm -rf gen/go/palaver
buf generate
