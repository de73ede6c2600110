#!/usr/bin/env bash
# Brings what the test suites drive that `npm ci` does not install; npm runs it before `npm test` and
# `npm run test:cluster` (pretest scripts). Go-built tools go into the tools cache (scripts/tools.sh); Debian packages
# are installed when running as root with apt-get. Anything it cannot bring stops the run at once, naming the command
# that fixes it: a suite is never skipped for want of a tool.
# Usage: bash scripts/test-prereqs.sh [cluster]
set -euo pipefail
cd "$(dirname "$0")/.."

missing() {
  echo "the tests need $1; $2" >&2
  exit 1
}

major=$(node -p 'process.versions.node.split(".")[0]')
[ "$major" -ge 24 ] || missing "Node 24 or later (this is $(node --version))" "run 'npm ci', which installs it into node_modules/.bin"
command -v go >/dev/null || missing "Go 1.26 or later (for the S3 server and the Go client)" "install it from https://go.dev/dl/"

# The Redis contract tests (and the cluster suite) use the machine's Redis.
redis_ok() {
  local hostport=${REDIS_URL:-redis://127.0.0.1:6379}
  hostport=${hostport#*://}
  hostport=${hostport##*@}
  hostport=${hostport%%/*}
  local reply=""
  # (An exec with only redirections keeps them for the whole script: the braces scope the 2>/dev/null to this one.)
  { exec 3<>"/dev/tcp/${hostport%:*}/${hostport##*:}"; } 2>/dev/null || return 1
  printf 'PING\r\n' >&3
  read -r -t 3 reply <&3 || true
  exec 3>&-
  [[ $reply == +PONG* || $reply == -NOAUTH* ]]
}
redis_ok || missing "a Redis at ${REDIS_URL:-redis://127.0.0.1:6379}" \
  "start one with 'redis-server --daemonize yes --save \"\"' (Debian: apt-get install redis-server), or set REDIS_URL"

bash scripts/tools.sh weed >/dev/null

packages=()
[ -n "${CHROMIUM_PATH:-}" ] || [ -x /usr/bin/chromium ] || packages+=(chromium)
if [ "${1:-}" = cluster ]; then
  command -v haproxy >/dev/null || packages+=(haproxy)
  # The Redis Cluster tests (test/cluster/redis-cluster.ts) run six servers of their own and create the cluster with
  # redis-cli; setpriv (util-linux) ties the servers' lives to the test process.
  command -v redis-server >/dev/null || packages+=(redis-server)
  command -v redis-cli >/dev/null || packages+=(redis-tools)
  command -v setpriv >/dev/null || packages+=(util-linux)
fi
if [ ${#packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${packages[*]} from Debian's packages" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${packages[@]}" >/dev/null
  else
    missing "${packages[*]}" "run 'sudo apt-get install -y ${packages[*]}' (or set CHROMIUM_PATH to a Chromium)"
  fi
fi
if [ "${1:-}" = cluster ]; then
  # cluster-port and sharded pub/sub (SSUBSCRIBE, SPUBLISH) came in Redis 7.0.
  redis_major=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
  [ "${redis_major:-0}" -ge 7 ] ||
    missing "redis-server 7.0 or later for the Redis Cluster tests (this is $(redis-server --version))" \
      "install Redis 7 (Debian 12 and later: apt-get install redis-server redis-tools)"
fi
