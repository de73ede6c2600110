#!/usr/bin/env bash
# Builds the pinned Go tools into a cache outside the repo and prints its directory:
#   minio (S3 for tests and CI), k6 (load tests), grpcurl (poking the API by hand).
# Usage: bash scripts/tools.sh [minio|k6|grpcurl]...   (no argument: all of them)
# A tool whose stamp records the pinned version is not rebuilt; PALAVER_TOOLS_DIR moves the cache.
set -euo pipefail

declare -A pinned=(
  [minio]=github.com/minio/minio@v0.0.0-20260212201848-7aac2a2c5b7c # a 2026-02 release; MinIO tags are not semver
  [k6]=go.k6.io/k6@v1.8.1
  [grpcurl]=github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3
)
dir=${PALAVER_TOOLS_DIR:-$HOME/.cache/palaver/bin}

tools=("$@")
[ $# -gt 0 ] || tools=(minio k6 grpcurl)
for tool in "${tools[@]}"; do
  [ -n "${pinned[$tool]:-}" ] || { echo "unknown tool '$tool' (known: ${!pinned[*]})" >&2; exit 2; }
done

mkdir -p "$dir"
scratch=""
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
for tool in "${tools[@]}"; do
  pkg=${pinned[$tool]}
  stamp="$dir/.$tool.version"
  if [ -x "$dir/$tool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
    continue
  fi
  command -v go >/dev/null || { echo "building $tool needs Go (https://go.dev/dl/)" >&2; exit 1; }
  echo "building $pkg" >&2
  # Build beside the cache and move in after success, so an interrupted build leaves neither a half binary nor a stamp.
  scratch=$(mktemp -d "$dir/.build.XXXXXX")
  GOBIN="$scratch" go install "$pkg" >&2
  mv -f "$scratch/$tool" "$dir/$tool"
  echo "$pkg" >"$stamp"
  rm -rf "$scratch"
  scratch=""
done
echo "$dir"
