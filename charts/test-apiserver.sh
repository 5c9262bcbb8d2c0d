#!/usr/bin/env bash
# Against a real kube-apiserver ($KUBECONFIG, e.g. the e2e control plane: e2e/cluster/up):
#   - the generated CRDs are accepted and become Established;
#   - every example in manifests/examples/ is accepted;
#   - invalid objects are refused, each with its own message (CEL rules and OpenAPI checks);
#   - `helm install` and `helm upgrade` of the chart work, and values breaking the schema are
#     refused;
# then removes everything it created. Prints `N passed, N failed`.
#
# Usage: KUBECONFIG=... charts/test-apiserver.sh
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="${SLUICE_CACHE:-$HOME/.cache/sluice}/bin:$PATH"
: "${KUBECONFIG:?set KUBECONFIG to the apiserver to test against}"
NS=sluice-chart-test
RELEASE=sluice

passed=0
failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }
WORK="$(mktemp -d)"

cleanup() {
  helm uninstall "$RELEASE" -n "$NS" >/dev/null 2>&1 || true
  kubectl delete namespace "$NS" --ignore-not-found --wait=false >/dev/null 2>&1 || true
  kubectl delete -f "$ROOT/manifests/crds/" --ignore-not-found >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

# --- CRDs ---------------------------------------------------------------------------------
if kubectl apply --server-side -f "$ROOT/manifests/crds/" >"$WORK/out" 2>&1; then
  ok "CRDs accepted"
else
  fail "CRDs refused:"; sed 's/^/      /' "$WORK/out"
fi
if kubectl wait --for condition=Established --timeout=30s -f "$ROOT/manifests/crds/" >"$WORK/out" 2>&1; then
  ok "CRDs established"
else
  fail "CRDs not established:"; sed 's/^/      /' "$WORK/out"
fi

accepted() { # NAME YAML
  if printf '%s\n' "$2" | kubectl create --dry-run=server -f - >"$WORK/out" 2>&1; then
    ok "accepted: $1"
  else
    fail "refused: $1"; sed 's/^/      /' "$WORK/out"
  fi
}
refused() { # NAME EXPECTED-MESSAGE YAML
  if printf '%s\n' "$3" | kubectl create --dry-run=server -f - >"$WORK/out" 2>&1; then
    fail "accepted (should be refused): $1"
  elif grep -qF -- "$2" "$WORK/out"; then
    ok "refused: $1 ($(grep -oF -- "$2" "$WORK/out" | head -n1))"
  else
    fail "refused without '$2': $1"; sed 's/^/      /' "$WORK/out"
  fi
}

for f in "$ROOT"/manifests/examples/*.yaml; do
  accepted "manifests/examples/$(basename "$f")" "$(cat "$f")"
done

accepted "ProxyConfig with an empty spec" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {}'

# Defaults are filled in by the apiserver.
printf '%s\n' 'apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {mapSizes: {backends: 131072}}' | kubectl create --dry-run=server -o json -f - >"$WORK/defaulted.json" 2>&1 || true
if python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["spec"]
assert s["mapSizes"] == {"services": 65536, "backends": 131072, "conntrack": 262144, "conntrackHandshake": 65536, "conntrackNonTcp": 131072}, s
assert s["xdpAcceleration"] == "disabled" and s["loadBalancingAlgorithm"] == "random", s
assert s["hostNamespaceOnly"] is False and s["mapSizes"]["conntrack"] == 262144, s
assert s["nodeportBindProtection"] is True and "nodePortAddresses" not in s, s
assert "externalIPCIDRs" not in s, s
' "$WORK/defaulted.json" 2>"$WORK/out"; then
  ok "ProxyConfig defaults applied by the apiserver"
else
  fail "ProxyConfig defaults:"; sed 's/^/      /' "$WORK/out" "$WORK/defaulted.json"
fi

refused "ProxyConfig not named default" "there is one ProxyConfig and it must be named 'default'" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: mine}
spec: {}'
# Removed because it did nothing (the agent serves each Service's own nodePort): an old manifest
# is refused by name rather than silently ignored.
refused "nodePortRange (removed)" 'unknown field "spec.nodePortRange"' '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {nodePortRange: {min: 30000, max: 32767}}'
refused "bad externalIPCIDRs entry" "every entry must be a CIDR such as 192.0.2.0/24 or 2001:db8::/64" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {externalIPCIDRs: [192.0.2.0/24, 10.0.0.300/8]}'
refused "bad nodePortAddresses entry" "every entry must be a CIDR such as 192.0.2.0/24, or primary" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {nodePortAddresses: [primary, 192.0.2.1]}'
refused "externalIPCIDRs entry without a prefix length" "every entry must be a CIDR" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {externalIPCIDRs: [192.0.2.1]}'
refused "unknown xdpAcceleration" 'supported values: "disabled", "native", "best-effort"' '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {xdpAcceleration: generic}'
refused "unknown loadBalancingAlgorithm" 'supported values: "random", "maglev"' '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {loadBalancingAlgorithm: round-robin}'
refused "mapSizes below the minimum" "spec.mapSizes.conntrack in body should be greater than or equal to 16384" '
apiVersion: sluice.dev/v1alpha1
kind: ProxyConfig
metadata: {name: default}
spec: {mapSizes: {conntrack: 100}}'
refused "SourceBlocklist with a bad CIDR" "cidr must be a CIDR such as 203.0.113.0/24 or 2001:db8::/48" '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: [{cidr: not-a-cidr}]}'
refused "SourceBlocklist CIDR with host bits" "cidr must have its host bits zero, e.g. 203.0.113.0/24 rather than 203.0.113.7/24" '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: [{cidr: 203.0.113.7/24}]}'
refused "SourceBlocklist with a duplicate CIDR" 'spec.entries[1]: Duplicate value: {"cidr":"203.0.113.0/24"}' '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: [{cidr: 203.0.113.0/24}, {cidr: 203.0.113.0/24, ports: [{port: 22}]}]}'
refused "SourceBlocklist port out of range" "should be less than or equal to 65535" '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: [{cidr: 203.0.113.0/24, ports: [{port: 70000}]}]}'
refused "SourceBlocklist with an unknown protocol" 'supported values: "TCP", "UDP", "SCTP"' '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: [{cidr: 203.0.113.0/24, ports: [{port: 80, protocol: ICMP}]}]}'
refused "SourceBlocklist without entries" "spec.entries: Invalid value: 0: spec.entries in body should have at least 1 items" '
apiVersion: sluice.dev/v1alpha1
kind: SourceBlocklist
metadata: {name: bad}
spec: {entries: []}'

# Status subresource and printer columns, on a real object.
kubectl apply -f "$ROOT/manifests/examples/proxyconfig.yaml" >/dev/null
if kubectl patch proxyconfig default --subresource=status --type=merge \
    -p '{"status":{"observedGeneration":1,"conditions":[{"type":"Applied","status":"True","reason":"Synced","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}' \
    >"$WORK/out" 2>&1 \
  && kubectl get proxyconfig default >"$WORK/get" 2>&1 \
  && grep -q 'APPLIED' "$WORK/get" && grep -q 'best-effort.*maglev.*false.*True' "$WORK/get"; then
  ok "ProxyConfig status subresource and printer columns: $(tail -n1 "$WORK/get" | tr -s ' ')"
else
  fail "ProxyConfig status/printer columns:"; sed 's/^/      /' "$WORK/out" "$WORK/get"
fi
kubectl delete proxyconfig default >/dev/null

# --- Helm ---------------------------------------------------------------------------------
kubectl create namespace "$NS" >/dev/null
# The CRDs are already installed above; helm skips existing CRDs in crds/.
if helm install "$RELEASE" "$ROOT/charts/sluice" -n "$NS" --set k8sServiceHost=192.0.2.10 --wait=false >"$WORK/out" 2>&1; then
  ok "helm install"
else
  fail "helm install:"; sed 's/^/      /' "$WORK/out"
fi
if kubectl -n "$NS" get daemonset "$RELEASE" -o jsonpath='{.spec.template.spec.containers[0].securityContext.capabilities.add}' >"$WORK/out" 2>&1 \
  && grep -q '"BPF"' "$WORK/out"; then
  ok "DaemonSet stored: capabilities $(cat "$WORK/out")"
else
  fail "DaemonSet not stored as expected:"; sed 's/^/      /' "$WORK/out"
fi
if helm upgrade "$RELEASE" "$ROOT/charts/sluice" -n "$NS" --reuse-values --set agent.logLevel=debug --set serviceMonitor.enabled=false >"$WORK/out" 2>&1; then
  ok "helm upgrade"
else
  fail "helm upgrade:"; sed 's/^/      /' "$WORK/out"
fi
if helm upgrade "$RELEASE" "$ROOT/charts/sluice" -n "$NS" --reuse-values --set k8sServicePort=https >"$WORK/out" 2>&1; then
  fail "helm upgrade accepted k8sServicePort=https"
elif grep -q "values don't meet the specifications of the schema" "$WORK/out"; then
  ok "helm upgrade refuses values that break the schema"
else
  fail "helm upgrade refused k8sServicePort=https for another reason:"; sed 's/^/      /' "$WORK/out"
fi
# As the agent's ServiceAccount: what it may and may not do.
sa="system:serviceaccount:$NS:$RELEASE"
can() { kubectl auth can-i --as="$sa" "$@" 2>/dev/null; }
rbac_ok=1
for check in "list services" "watch endpointslices.discovery.k8s.io" "get nodes" "watch proxyconfigs.sluice.dev" \
  "patch sluicenodes.sluice.dev --subresource=status" "create sluicenodes.sluice.dev" "create events.events.k8s.io" \
  "create events" "patch sourceblocklists.sluice.dev --subresource=status" "patch proxyconfigs.sluice.dev --subresource=status"; do
  # shellcheck disable=SC2086
  [[ "$(can $check)" == yes ]] || { fail "agent cannot: $check"; rbac_ok=0; }
done
for check in "list secrets" "list pods" "delete sluicenodes.sluice.dev" "update services" "patch proxyconfigs.sluice.dev" \
  "patch sourceblocklists.sluice.dev" "patch services --subresource=status"; do
  # shellcheck disable=SC2086
  [[ "$(can $check)" == no ]] || { fail "agent can (should not): $check"; rbac_ok=0; }
done
[[ $rbac_ok == 1 ]] && ok "RBAC: the agent reads what it needs and writes only its status and Events"
if helm uninstall "$RELEASE" -n "$NS" >"$WORK/out" 2>&1; then ok "helm uninstall"; else fail "helm uninstall:"; sed 's/^/      /' "$WORK/out"; fi

echo "charts/test-apiserver.sh: $passed passed, $failed failed"
[[ $failed == 0 ]]
