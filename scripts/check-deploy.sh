#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a Kubernetes cluster:
#   - deploy/haproxy.cfg with `haproxy -c` (node names need not resolve: the config starts without them);
#   - deploy/compose.yaml with `docker compose config` (or docker-compose v1), alone and with the Redis Cluster override
#     deploy/compose.redis-cluster.yaml, whose wiring is checked too (six cluster-mode Redis nodes, a service that
#     creates the cluster, and every node's REDIS_URL a cluster URL naming some of them);
#   - deploy/k8s: rendered with `kubectl kustomize` when kubectl is there, every file parsed as YAML (PyYAML), and the
#     Deployment's wiring checked (probes on the named port, referenced ConfigMap/Secret exist, grace period covers
#     the preStop sleep and the server's drain);
#   - deploy/k8s-redis-cluster (the overlay for a Redis Cluster): rendered the same way, its patches aimed at documents
#     of deploy/k8s, and the REDIS_URL it sets a cluster URL;
#   - deploy/Dockerfile's CMD starts the node with the same arguments as `npm start` (docs/scaling.md: the node's
#     flags).
# A tool that is missing fails the check unless CHECK_DEPLOY_ALLOW_MISSING=1 (then it is reported and skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
# REDIS_URL for a Redis Cluster: seed nodes, credentials optional before the first (src/adapters/redis/connect.ts).
export CLUSTER_URL_RE='^rediss?\+cluster://([^@/]*@)?[^,/@:]+:[0-9]+(,[^,/@:]+:[0-9]+)*/?$'
skip() {
  if [ "${CHECK_DEPLOY_ALLOW_MISSING:-0}" = 1 ]; then
    echo "SKIP $*"
  else
    echo "FAIL $* (set CHECK_DEPLOY_ALLOW_MISSING=1 to skip)"
    failed=1
  fi
}

echo "== haproxy"
if command -v haproxy >/dev/null; then
  if ! out=$(haproxy -c -f deploy/haproxy.cfg 2>&1); then
    echo "$out"
    echo "FAIL haproxy -c"
    failed=1
  # Only the compose service names may warn (they resolve inside Docker's network, not here).
  elif echo "$out" | grep WARNING | grep -v "could not resolve address 'palaver[0-9]'"; then
    echo "FAIL unexpected haproxy warnings"
    failed=1
  else
    echo "ok   deploy/haproxy.cfg"
  fi
else
  skip "haproxy not installed (apt-get install haproxy)"
fi

echo "== compose"
compose=()
if docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
elif command -v docker-compose >/dev/null; then
  compose=(docker-compose)
fi
if [ ${#compose[@]} -gt 0 ]; then
  # The file refuses to start without a secret; any value of the right length does for checking.
  export PALAVER_AUTH_SECRET=check-deploy-secret-0123456789abcdef
  if "${compose[@]}" -f deploy/compose.yaml config -q; then
    echo "ok   deploy/compose.yaml (${compose[*]})"
  else
    echo "FAIL ${compose[*]} config"
    failed=1
  fi
  cluster_files=(-f deploy/compose.yaml -f deploy/compose.redis-cluster.yaml)
  if ! merged=$("${compose[@]}" "${cluster_files[@]}" config); then
    echo "FAIL ${compose[*]} config with deploy/compose.redis-cluster.yaml"
    failed=1
  elif ! python3 -c "import yaml" 2>/dev/null; then
    echo "ok   deploy/compose.redis-cluster.yaml (${compose[*]}; wiring not checked without PyYAML)"
  elif MERGED=$merged python3 - <<'EOF'
import os, re, sys, yaml

services = yaml.safe_load(os.environ["MERGED"])["services"]
owner = {name: name for name in services}
for name, service in services.items():
    for network in (service.get("networks") or {}).values():
        for alias in (network or {}).get("aliases", []):
            owner[alias] = name
problems = []
redis_nodes = {n for n, s in services.items() if "--cluster-enabled" in (s.get("command") or [])}
if len(redis_nodes) != 6:
    problems.append(f"{len(redis_nodes)} cluster-mode Redis services, not 6 (three primaries with a replica each)")
creators = [n for n, s in services.items() if "--cluster create" in " ".join(map(str, s.get("command") or []))]
if not creators:
    problems.append("no service runs redis-cli --cluster create")
for name in sorted(n for n in services if n.startswith("palaver")):
    url = (services[name].get("environment") or {}).get("REDIS_URL", "")
    if not re.match(os.environ["CLUSTER_URL_RE"], url):
        problems.append(f"{name}: REDIS_URL {url!r} is not a redis+cluster:// URL")
        continue
    for seed in url.split("://", 1)[1].split("@")[-1].rstrip("/").split(","):
        if owner.get(seed.rsplit(":", 1)[0]) not in redis_nodes:
            problems.append(f"{name}: REDIS_URL seed {seed} is not one of the cluster-mode Redis services")
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF
  then
    echo "ok   deploy/compose.redis-cluster.yaml (${compose[*]}, wiring)"
  else
    echo "FAIL deploy/compose.redis-cluster.yaml wiring"
    failed=1
  fi
else
  skip "neither the docker compose plugin nor docker-compose is installed (apt-get install docker-compose)"
fi

echo "== kubernetes"
# kubectl is optional: without it the manifests are still parsed and checked below.
if command -v kubectl >/dev/null; then
  for dir in deploy/k8s deploy/k8s-redis-cluster; do
    if kubectl kustomize "$dir" >/dev/null; then
      echo "ok   kubectl kustomize $dir"
    else
      echo "FAIL kubectl kustomize $dir"
      failed=1
    fi
  done
else
  echo "SKIP kubectl kustomize (kubectl not installed)"
fi
if python3 -c "import yaml" 2>/dev/null; then
  if python3 - deploy/k8s/*.yaml <<'EOF'
import sys, yaml

docs = {}
for path in sys.argv[1:]:
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            if not doc:
                continue
            if "kind" not in doc:
                sys.exit(f"{path}: a document without kind")
            if doc["kind"] != "Kustomization" and not doc.get("metadata", {}).get("name"):
                sys.exit(f"{path}: {doc['kind']} without metadata.name")
            docs[(doc["kind"], doc.get("metadata", {}).get("name"))] = doc

problems = []
dep = docs.get(("Deployment", "palaver"))
if dep is None:
    sys.exit("no Deployment named palaver")
spec = dep["spec"]["template"]["spec"]
container = spec["containers"][0]
port_names = {p["name"] for p in container.get("ports", [])}
for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
    get = container.get(probe, {}).get("httpGet")
    if not get:
        problems.append(f"{probe} is missing or not an httpGet")
    elif get["port"] not in port_names:
        problems.append(f"{probe} uses port {get['port']!r}, not one of {port_names}")
if container["readinessProbe"]["httpGet"]["path"] != "/readyz":
    problems.append("readinessProbe should GET /readyz")
if container["livenessProbe"]["httpGet"]["path"] != "/livez":
    problems.append("livenessProbe should GET /livez")
for ref in container.get("envFrom", []):
    kind, name = ("ConfigMap", ref["configMapRef"]["name"]) if "configMapRef" in ref else ("Secret", ref["secretRef"]["name"])
    if (kind, name) not in docs:
        problems.append(f"envFrom names {kind} {name}, which is not in deploy/k8s")
env = {e["name"] for e in container.get("env", [])}
for doc in docs.values():
    if doc["kind"] in ("ConfigMap", "Secret"):
        env |= set(doc.get("data", {})) | set(doc.get("stringData", {}))
for required in ("AUTH_SECRET", "DATABASE_URL", "REDIS_URL", "NODE_ID"):
    if required not in env:
        problems.append(f"{required} is not configured")
sleep = container["lifecycle"]["preStop"]["exec"]["command"]
sleep_s = int(sleep[-1]) if sleep[0] == "sleep" else 0
# preStop sleep + the server's 10 s drain, with a margin.
if spec.get("terminationGracePeriodSeconds", 30) < sleep_s + 10 + 5:
    problems.append("terminationGracePeriodSeconds does not cover the preStop sleep and the 10 s drain")
if dep["spec"].get("replicas", 1) < 2:
    problems.append("fewer than 2 replicas")
svc = docs.get(("Service", "palaver"))
if svc is None:
    problems.append("no Service named palaver")
else:
    labels = dep["spec"]["template"]["metadata"]["labels"]
    if any(labels.get(k) != v for k, v in svc["spec"]["selector"].items()):
        problems.append("the Service selector does not match the pod labels")
    if any(p["targetPort"] not in port_names for p in svc["spec"]["ports"]):
        problems.append("a Service targetPort is not a named container port")
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF
  then
    echo "ok   deploy/k8s wiring"
  else
    echo "FAIL deploy/k8s wiring"
    failed=1
  fi
  if python3 - deploy/k8s deploy/k8s-redis-cluster <<'EOF'
import glob, os, re, sys, yaml

base_dir, overlay_dir = sys.argv[1:]
base = set()
for path in glob.glob(os.path.join(base_dir, "*.yaml")):
    with open(path) as f:
        base |= {(d["kind"], d["metadata"]["name"]) for d in yaml.safe_load_all(f) if d and d["kind"] != "Kustomization"}
with open(os.path.join(overlay_dir, "kustomization.yaml")) as f:
    kustomization = yaml.safe_load(f)
problems = []
if [os.path.realpath(os.path.join(overlay_dir, r)) for r in kustomization.get("resources", [])] != [os.path.realpath(base_dir)]:
    problems.append(f"resources should be the base, {base_dir}, alone")
urls = []
for patch in kustomization.get("patches", []):
    path = os.path.join(overlay_dir, patch["path"])
    with open(path) as f:
        for doc in yaml.safe_load_all(f):
            target = (doc.get("kind"), doc.get("metadata", {}).get("name"))
            if target not in base:
                problems.append(f"{path} patches {target}, which {base_dir} does not have")
            if "REDIS_URL" in doc.get("data", {}):
                urls.append(doc["data"]["REDIS_URL"])
if not urls:
    problems.append("no patch sets REDIS_URL")
problems += [f"REDIS_URL {u!r} is not a redis+cluster:// URL" for u in urls if not re.match(os.environ["CLUSTER_URL_RE"], u)]
for p in problems:
    print("  " + p)
sys.exit(1 if problems else 0)
EOF
  then
    echo "ok   deploy/k8s-redis-cluster wiring"
  else
    echo "FAIL deploy/k8s-redis-cluster wiring"
    failed=1
  fi
else
  skip "python3 with PyYAML not available (apt-get install python3-yaml)"
fi

echo "== how the node starts"
start=$(node -p 'require("./package.json").scripts.start.split("&& ").pop()')
cmd=$(node -p 'JSON.parse(require("fs").readFileSync("deploy/Dockerfile", "utf8").match(/^CMD (.*)$/m)[1]).join(" ")')
if [ "$start" = "$cmd" ]; then
  echo "ok   deploy/Dockerfile CMD is what npm start runs: $cmd"
else
  echo "FAIL deploy/Dockerfile CMD ($cmd) is not what npm start runs ($start)"
  failed=1
fi

if [ "$failed" != 0 ]; then
  echo "deploy checks failed" >&2
  exit 1
fi
echo "deploy checks passed"
