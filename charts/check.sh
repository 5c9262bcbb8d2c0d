#!/usr/bin/env bash
# Checks the Helm chart and the generated manifests:
#   - charts/sluice/crds/ and manifests/crds/ hold the same CRDs (both are generated from
#     controller/crds; `cargo test -p sluice-crds` checks them against the types);
#   - `helm lint --strict` with the default values and with every option switched on;
#   - values.schema.json refuses values that break it;
#   - manifests/install.yaml is exactly the rendered chart (`--update` rewrites it);
#   - the rendered YAML and manifests/examples/ validate against strict JSON schemas
#     (kubeconform), built offline from Kubernetes' OpenAPI spec and from our CRDs.
#
# Usage: charts/check.sh [--update]
# Tools: helm (e2e/tools/build.sh helm) and kubeconform (built here from the Go module proxy)
# in ${SLUICE_CACHE:-~/.cache/sluice}/bin; python3 with python3-yaml.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${SLUICE_CACHE:-$HOME/.cache/sluice}"
BIN="$CACHE/bin"
KUBECONFORM_VERSION=v0.8.0
# shellcheck source=../e2e/versions.env
. "$ROOT/e2e/versions.env"
export PATH="$BIN:$PATH"

RELEASE=sluice
NAMESPACE=kube-system
CHART="$ROOT/charts/sluice"
INSTALL="$ROOT/manifests/install.yaml"

update=0
case "${1:-}" in
  --update) update=1 ;;
  "") ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

passed=0
failed=0
ok() { echo "ok    $*"; passed=$((passed + 1)); }
fail() { echo "FAIL  $*"; failed=$((failed + 1)); }

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# --- tools --------------------------------------------------------------------------------
if ! command -v helm >/dev/null; then
  "$ROOT/e2e/tools/build.sh" helm >&2
fi
# `go install` leaves kubeconform's own -v at "development"; the build info has the version.
if ! go version -m "$BIN/kubeconform" 2>/dev/null | grep -Eq "^\s+mod\s+github.com/yannh/kubeconform\s+$KUBECONFORM_VERSION\s"; then
  echo "building kubeconform $KUBECONFORM_VERSION into $BIN" >&2
  mkdir -p "$BIN"
  GOBIN="$BIN" GOFLAGS=-p=1 go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION" >&2
fi
python3 -c 'import yaml' 2>/dev/null || { echo "python3-yaml is missing (apt-get install python3-yaml)" >&2; exit 1; }

# --- offline schemas ----------------------------------------------------------------------
# Kubernetes' own OpenAPI v3 documents ship in the k8s.io/kubernetes module (already in the module
# cache when e2e/tools/build.sh has built kube-apiserver).
K8S_SCHEMAS="$CACHE/kubeconform-schemas/$KUBERNETES_VERSION"
if [[ ! -f "$K8S_SCHEMAS/.complete" ]]; then
  modcache="$(go env GOMODCACHE)"
  spec="$modcache/k8s.io/kubernetes@$KUBERNETES_VERSION/api/openapi-spec/v3"
  if [[ ! -d "$spec" ]]; then
    echo "downloading k8s.io/kubernetes@$KUBERNETES_VERSION for its OpenAPI spec" >&2
    (cd "$WORK" && GOFLAGS=-mod=mod go mod download "k8s.io/kubernetes@$KUBERNETES_VERSION" >&2)
  fi
  rm -rf "$K8S_SCHEMAS"
  python3 "$ROOT/charts/kubeconform-schemas.py" "$K8S_SCHEMAS" --k8s-openapi "$spec" >&2
  touch "$K8S_SCHEMAS/.complete"
fi
CRD_SCHEMAS="$WORK/crd-schemas"
crd_args=()
for f in "$ROOT"/manifests/crds/*.yaml; do crd_args+=(--crd "$f"); done
python3 "$ROOT/charts/kubeconform-schemas.py" "$CRD_SCHEMAS" "${crd_args[@]}" >&2

kubeconform_check() { # NAME FILE [kubeconform args...]
  local name="$1" file="$2"
  shift 2
  if kubeconform -strict -summary \
      -schema-location "$K8S_SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      -schema-location "$CRD_SCHEMAS/{{ .ResourceKind }}{{ .KindSuffix }}.json" \
      "$@" "$file" >"$WORK/kubeconform.out" 2>&1; then
    ok "$name: $(tail -n1 "$WORK/kubeconform.out")"
  else
    fail "$name:"
    sed 's/^/      /' "$WORK/kubeconform.out"
  fi
}

# --- CRD copies ---------------------------------------------------------------------------
if diff -r "$ROOT/manifests/crds" "$CHART/crds" >"$WORK/crds.diff"; then
  ok "charts/sluice/crds matches manifests/crds"
else
  fail "charts/sluice/crds differs from manifests/crds (regenerate both: UPDATE_CRDS=1 cargo test -p sluice-crds)"
  sed 's/^/      /' "$WORK/crds.diff"
fi

# --- lint ---------------------------------------------------------------------------------
ALL_ON=(--set serviceMonitor.enabled=true --set metricsBindAddress=0.0.0.0 --set k8sServiceHost=192.0.2.10 --set k8sServicePort=6443
        --set 'agent.devices={eth0,eth1}' --set agent.logLevel=debug --set 'agent.extraArgs={--nodeport-acceleration=best-effort}'
        --set image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef
        --set 'imagePullSecrets[0].name=regcred' --set podAnnotations.a=b --set dashboards.namespace=monitoring)
if helm lint --strict "$CHART" >"$WORK/lint.out" 2>&1; then ok "helm lint --strict (defaults)"; else fail "helm lint --strict (defaults)"; sed 's/^/      /' "$WORK/lint.out"; fi
if helm lint --strict "$CHART" "${ALL_ON[@]}" >"$WORK/lint.out" 2>&1; then ok "helm lint --strict (every option on)"; else fail "helm lint --strict (every option on)"; sed 's/^/      /' "$WORK/lint.out"; fi

# --- values.schema.json refuses bad values --------------------------------------------------
refused() { # DESCRIPTION EXPECTED-SUBSTRING helm-args...
  local what="$1" expect="$2"
  shift 2
  if helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "$@" >"$WORK/bad.out" 2>&1; then
    fail "values schema accepted $what"
  elif grep -q -- "$expect" "$WORK/bad.out"; then
    ok "values schema refuses $what"
  else
    fail "values schema refused $what without mentioning '$expect':"
    sed 's/^/      /' "$WORK/bad.out"
  fi
}
refused "an unknown top-level value" "additional properties 'kubeProxyReplacement' not allowed" --set kubeProxyReplacement=true
refused "an unknown agent value" "additional properties 'privileged' not allowed" --set agent.privileged=true
refused "a non-numeric k8sServicePort" "k8sServicePort" --set k8sServicePort=https
refused "a bpfRoot outside the bpffs" "bpfRoot" --set agent.bpfRoot=/var/run/sluice
refused "a wrong pull policy" "pullPolicy" --set image.pullPolicy=Sometimes
refused "a ServiceMonitor with metrics on loopback only" "metricsBindAddress 0.0.0.0" --set serviceMonitor.enabled=true

# --- rendered install YAML ------------------------------------------------------------------
{
  echo "# Generated by charts/check.sh --update: helm template $RELEASE charts/sluice --namespace $NAMESPACE --include-crds"
  echo "# Do not edit; change the chart (or controller/crds for the CRDs) and regenerate."
  helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" --include-crds
} >"$WORK/install.yaml"
if [[ $update == 1 ]]; then
  cp "$WORK/install.yaml" "$INSTALL"
  ok "wrote manifests/install.yaml"
elif diff -u "$INSTALL" "$WORK/install.yaml" >"$WORK/install.diff" 2>&1; then
  ok "manifests/install.yaml matches the chart"
else
  fail "manifests/install.yaml differs from the chart (regenerate: charts/check.sh --update)"
  head -n 60 "$WORK/install.diff" | sed 's/^/      /'
fi

helm template "$RELEASE" "$CHART" --namespace "$NAMESPACE" "${ALL_ON[@]}" >"$WORK/all-on.yaml"
kubeconform_check "kubeconform manifests/install.yaml" "$WORK/install.yaml"
# ServiceMonitor is the Prometheus Operator's CRD, not ours: no schema here.
kubeconform_check "kubeconform chart with every option on" "$WORK/all-on.yaml" -skip ServiceMonitor
kubeconform_check "kubeconform manifests/examples" "$ROOT/manifests/examples"

echo "charts/check.sh: $passed passed, $failed failed"
[[ $failed == 0 ]]
