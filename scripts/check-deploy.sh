#!/usr/bin/env bash
# Checks the deployment files without a Docker engine or a Kubernetes cluster:
#   - deploy/haproxy.cfg with `haproxy -c` (node names need not resolve: the config starts without them);
#   - deploy/compose.yaml with `docker compose config` (or docker-compose v1);
#   - deploy/k8s: rendered with `kubectl kustomize` when kubectl is there, every file parsed as YAML (PyYAML), and the
#     Deployment's wiring checked (probes on the named port, referenced ConfigMap/Secret exist, grace period covers
#     the preStop sleep and the server's drain).
# A tool that is missing fails the check unless CHECK_DEPLOY_ALLOW_MISSING=1 (then it is reported and skipped).
set -euo pipefail
cd "$(dirname "$0")/.."

failed=0
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
  if PALAVER_AUTH_SECRET=check-deploy-secret-0123456789abcdef "${compose[@]}" -f deploy/compose.yaml config -q; then
    echo "ok   deploy/compose.yaml (${compose[*]})"
  else
    echo "FAIL ${compose[*]} config"
    failed=1
  fi
else
  skip "neither the docker compose plugin nor docker-compose is installed (apt-get install docker-compose)"
fi

echo "== kubernetes"
# kubectl is optional: without it the manifests are still parsed and checked below.
if command -v kubectl >/dev/null; then
  if kubectl kustomize deploy/k8s >/dev/null; then
    echo "ok   kubectl kustomize deploy/k8s"
  else
    echo "FAIL kubectl kustomize deploy/k8s"
    failed=1
  fi
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
else
  skip "python3 with PyYAML not available (apt-get install python3-yaml)"
fi

if [ "$failed" != 0 ]; then
  echo "deploy checks failed" >&2
  exit 1
fi
echo "deploy checks passed"
