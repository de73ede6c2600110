#!/usr/bin/env bash
# Builds the pinned Go tools into a cache outside the repo and prints its directory:
#   weed (SeaweedFS: S3 for tests and CI), grpcurl (poking the API by hand), go-licenses (the licence check).
# Usage: bash scripts/tools.sh [weed|grpcurl|go-licenses]...   (no argument: all)
# A tool whose stamp records the pinned version is not rebuilt; PALAVER_TOOLS_DIR moves the cache.
#
# Each tool is built inside its own downloaded module, so the module's go.mod applies as its authors test it
# (`go install pkg@version` refuses SeaweedFS, whose go.mod has a replace directive).
set -euo pipefail

# tool -> "module@version package-directory-in-the-module"
declare -A pinned=(
  [weed]="github.com/seaweedfs/seaweedfs@v0.0.0-20261109003541-7506e5f91cd6 weed" # SeaweedFS tags are not semver
  [grpcurl]="github.com/fullstorydev/grpcurl@v1.9.3 cmd/grpcurl"
  [go-licenses]="github.com/google/go-licenses/v2@v2.0.1 ."
)
default=(weed grpcurl go-licenses)
dir=${PALAVER_TOOLS_DIR:-$HOME/.cache/palaver/bin}

tools=("$@")
[ $# -gt 0 ] || tools=("${default[@]}")
for tool in "${tools[@]}"; do
  [ -n "${pinned[$tool]:-}" ] || { echo "unknown tool '$tool' (known: ${!pinned[*]})" >&2; exit 2; }
done

mkdir -p "$dir"
scratch=""
trap '[ -z "$scratch" ] || rm -rf "$scratch"' EXIT
for tool in "${tools[@]}"; do
  read -r module package <<<"${pinned[$tool]}"
  stamp="$dir/.$tool.version"
  if [ -x "$dir/$tool" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$module $package" ]; then
    continue
  fi
  command -v go >/dev/null || { echo "building $tool needs Go 1.26 or later (https://go.dev/dl/)" >&2; exit 1; }
  [ "$tool" != weed ] || echo "building SeaweedFS once into $dir: the largest tool (10-40 min on 2 cores)" >&2
  echo "building $module ($package)" >&2
  source=$(go mod download -json "$module" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$source" ] || { echo "could not download $module" >&2; exit 1; }
  # Build beside the cache and move in after success, so an interrupted build leaves neither a half binary nor a stamp.
  scratch=$(mktemp -d "$dir/.build.XXXXXX")
  (cd "$source" && go build -trimpath -ldflags="-s -w" -o "$scratch/$tool" "./$package") >&2
  mv -f "$scratch/$tool" "$dir/$tool"
  echo "$module $package" >"$stamp"
  rm -rf "$scratch"
  scratch=""
done
echo "$dir"
