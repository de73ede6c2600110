#!/usr/bin/env bash
# Links protovalidate's .proto files (a pinned Go module) into .buf-deps/ for buf lint, generate and breaking.
set -euo pipefail
cd "$(dirname "$0")/.."
version=v1.2.2
dir=$(go mod download -json "github.com/bufbuild/protovalidate@$version" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -d "$dir/proto/protovalidate" ] || { echo "protovalidate $version not found in the Go module cache" >&2; exit 1; }
mkdir -p .buf-deps
ln -sfn "$dir/proto/protovalidate" .buf-deps/protovalidate
