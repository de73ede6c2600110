#!/usr/bin/env bash
# Licence gate, run by CI: fails, naming each package and its licence, when an npm package in package-lock.json or a Go
# module used by our Go code or by the Go tools we build is not under a permissive licence, or has none we can read.
# Usage: bash scripts/licenses.sh   (after npm ci; builds its Go checker with scripts/tools.sh when missing)
# Packages whose metadata lacks a readable licence are settled by hand, per exact version, in
# scripts/licenses.clarify.json.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Node 24 and license-checker-rseidelsohn come from the lockfile, not from whatever is installed on the machine.
export PATH="$PWD/node_modules/.bin:$PATH"

# Accepted SPDX ids. CC-BY is meant for data: accepted only for the npm packages clarify.json lists as data.
# FSFAP is the GNU all-permissive licence (go-licenses calls it GNU-All-permissive-Copying-License).
allowed=(MIT Apache-2.0 BSD-2-Clause BSD-3-Clause ISC MPL-2.0 0BSD Unlicense CC0-1.0 BlueOak-1.0.0 Python-2.0 Zlib FSFAP)
data_only=(CC-BY-3.0 CC-BY-4.0)
own_go=github.com/palaver-chat/palaver/ # our Go import paths: Apache-2.0 by the repository's LICENSE
clarify=scripts/licenses.clarify.json
failed=0

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

judge() { ALLOWED="${allowed[*]}" DATA_ONLY="${data_only[*]}" CLARIFY="$clarify" node scripts/licenses-judge.mjs "$@"; }

# --- npm -------------------------------------------------------------------------------------------------------------
# license-checker-rseidelsohn reads the installed tree (package.json and licence files). Its --onlyAllow stops at the
# first hit without writing its output and matches by substring ("MIT AND GPL-3.0" passes), so on failure it runs again
# without it, and licenses-judge.mjs checks every package strictly either way, adding the lockfile's entries for other platforms.
start=$SECONDS
[ -x node_modules/.bin/license-checker-rseidelsohn ] || { echo "npm: node_modules/.bin/license-checker-rseidelsohn missing: run npm ci first" >&2; exit 1; }
only_allow=$(IFS=';'; echo "${allowed[*]};${data_only[*]}")
if ! license-checker-rseidelsohn --excludePrivatePackages --onlyAllow "$only_allow" --json --out "$work/npm.json" 2>"$work/npm.err"; then
  sed 's/^/  license-checker-rseidelsohn: /' "$work/npm.err"
  license-checker-rseidelsohn --excludePrivatePackages --json --out "$work/npm.json"
fi
judge npm "$work/npm.json" package-lock.json package.json $((SECONDS - start)) || failed=1

# --- Go --------------------------------------------------------------------------------------------------------------
command -v go >/dev/null || { echo "go: the Go licence check needs Go on PATH (https://go.dev/dl/)" >&2; exit 1; }
golicenses="$(bash scripts/tools.sh go-licenses)/go-licenses"
# go-licenses is built with -trimpath, so it knows no GOROOT of its own; without one it takes every package for the
# standard library and reports nothing.
GOROOT=$(go env GOROOT)
GOMODCACHE=$(go env GOMODCACHE)
export GOROOT GOMODCACHE GOWORK=off
printf '%s\n' '{{range .}}{{.Name}}	{{.Version}}	{{.LicenseName}}	{{.LicensePath}}' '{{end}}' >"$work/report.tmpl"

# go_check <label> <module dir> <package pattern>...: every library those packages use, run in the module so that its
# own go.mod decides the versions. Our own packages are skipped (go-licenses looks for a licence file only inside the
# module, and ours is at the repository root), but what they import is checked.
go_check() {
  local label=$1 dir=$2 start=$SECONDS
  shift 2
  # report, not check: check names no versions (which clarifications are pinned to) and counts nothing.
  if ! (cd "$dir" && "$golicenses" report --template "$work/report.tmpl" --ignore "$own_go" "$@") >"$work/go.tsv" 2>"$work/go.err"; then
    echo "go $label: go-licenses failed:"
    grep -v 'Error discovering license URL' "$work/go.err" | sed 's/^/  /'
    failed=1
    return
  fi
  judge go "$label" "$work/go.tsv" $((SECONDS - start)) || failed=1
}

# module_dir <module@version>: the module's source in the module cache, downloaded if needed.
module_dir() {
  local json dir
  json=$(go mod download -json "$1") || true # on failure the JSON carries the error
  dir=$(sed -n 's/^\t"Dir": "\(.*\)",$/\1/p' <<<"$json")
  [ -d "$dir" ] || { echo "go: could not download $1: $json" >&2; return 1; }
  echo "$dir"
}

go_check gen/go gen/go ./...
go_check examples/go-client examples/go-client ./...
[ ! -d bench/loadgen ] || go_check bench/loadgen bench/loadgen ./...

# The tools' pins are read from the scripts that build them, so they are written down once.
# scripts/tools.sh: tool -> "module@version package-dir-in-module".
eval "$(sed -n '/^declare -A pinned=(/,/^)/p' scripts/tools.sh | sed '1s/pinned=/tool_pins=/')"
[ "${#tool_pins[@]}" -gt 0 ] || { echo "go: no tool pins found in scripts/tools.sh" >&2; exit 1; }
for tool in $(printf '%s\n' "${!tool_pins[@]}" | sort); do
  read -r module package <<<"${tool_pins[$tool]}"
  dir=$(module_dir "$module")
  go_check "tool $tool ($module)" "$dir" "./$package"
done

# scripts/go-plugins.sh: plugin -> "package@version". go get in a scratch module finds the module that holds the
# package, as go install does.
eval "$(sed -n '/^declare -A pinned=(/,/^)/p' scripts/go-plugins.sh | sed '1s/pinned=/plugin_pins=/')"
[ "${#plugin_pins[@]}" -gt 0 ] || { echo "go: no plugin pins found in scripts/go-plugins.sh" >&2; exit 1; }
for plugin in $(printf '%s\n' "${!plugin_pins[@]}" | sort); do
  pkg=${plugin_pins[$plugin]%@*}
  rm -rf "$work/scratch" && mkdir "$work/scratch"
  module=$(cd "$work/scratch" && go mod init palaver-licenses-scratch 2>/dev/null && go get "${plugin_pins[$plugin]}" 2>"$work/get.err" &&
    go list -f '{{.Module.Path}}@{{.Module.Version}}' "$pkg") || { cat "$work/get.err" >&2; echo "go: could not resolve ${plugin_pins[$plugin]}" >&2; exit 1; }
  rel=${pkg#"${module%@*}"}
  dir=$(module_dir "$module")
  go_check "tool $plugin ($module)" "$dir" ".$rel"
done

if [ "$failed" -ne 0 ]; then
  echo "licence gate FAILED: the packages above are not under an accepted licence (see scripts/licenses.sh and $clarify)"
  exit 1
fi
echo "licence gate ok ($SECONDS s)"
