#!/usr/bin/env bash
# Builds the pinned protoc plugins for the Go client (gen/go) into the tools cache outside the repo and prints its
# directory; scripts/generate.sh puts it first on PATH for buf. A plugin whose stamp records the pinned version is not
# rebuilt, so generation stays offline once they are built. PALAVER_TOOLS_DIR moves the cache.
#
# Keep these in step with gen/go/go.mod: protoc-gen-go with google.golang.org/protobuf, protoc-gen-connect-go with
# connectrpc.com/connect. connect v1.19 is the newest that asks only for Go 1.24 (v1.20 wants 1.25, v1.21 wants 1.26),
# which is what gen/go's users then need.
set -euo pipefail

declare -A pinned=(
  [protoc-gen-go]=google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12
  [protoc-gen-connect-go]=connectrpc.com/connect/cmd/protoc-gen-connect-go@v1.19.1
)
dir=${PALAVER_TOOLS_DIR:-$HOME/.cache/palaver/bin}

mkdir -p "$dir"
scratch=""
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
for plugin in protoc-gen-go protoc-gen-connect-go; do
  pkg=${pinned[$plugin]}
  stamp="$dir/.$plugin.version"
  if [ -x "$dir/$plugin" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
    continue
  fi
  command -v go >/dev/null || { echo "building $plugin needs Go (https://go.dev/dl/)" >&2; exit 1; }
  echo "building $pkg" >&2
  # Build beside the cache and move in after success: an interrupted build leaves neither a half binary nor a stamp.
  scratch=$(mktemp -d "$dir/.build.XXXXXX")
  GOBIN="$scratch" go install -trimpath "$pkg" >&2
  mv -f "$scratch/$plugin" "$dir/$plugin"
  echo "$pkg" >"$stamp"
  rm -rf "$scratch"
  scratch=""
done
echo "$dir"
