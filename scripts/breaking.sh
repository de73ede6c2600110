#!/usr/bin/env bash
# buf breaking: proto/ as it is now against proto/ at a git ref (default main). buf could read the ref from .git itself,
# but that tree lacks protovalidate's files (.buf-deps is linked, not committed), so the ref's protos are unpacked
# beside a link to the same dependency.
set -euo pipefail
cd "$(dirname "$0")/.."
ref=${1:-main}
bash scripts/proto-deps.sh
against=$(mktemp -d)
trap 'rm -rf "$against"' EXIT
git archive "$ref" buf.yaml proto | tar -x -C "$against"
ln -s "$PWD/.buf-deps" "$against/.buf-deps"
buf breaking --against "$against"
