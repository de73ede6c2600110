#!/usr/bin/env bash
# Links protovalidate's .proto files (a pinned Go module) into .buf-deps/ for buf lint, generate and breaking.
# `npm ci` runs it with --if-go (the prepare script), so `npx buf lint` works on a fresh clone; without Go it only says
# so there, as running the server needs no Go.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${1:-}" = --if-go ] && ! command -v go >/dev/null; then
  echo "no Go on PATH: protovalidate's protos for buf are linked on the first 'npm run generate' or 'npm run lint:proto'" >&2
  exit 0
fi
version=v1.2.2
dir=$(go mod download -json "github.com/bufbuild/protovalidate@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/proto/protovalidate" ] || { echo "protovalidate $version not found in the Go module cache" >&2; exit 1; }
mkdir -p .buf-deps
ln -sfn "$dir/proto/protovalidate" .buf-deps/protovalidate
