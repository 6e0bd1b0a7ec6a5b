#!/usr/bin/env bash
# `make k8s-tools`: the local control plane's binaries, built from the Go module proxy into
# .local/k8s/<tool>-<version>/, once per pinned version (a stamp file marks a finished build).
#   kube-apiserver, kube-controller-manager, kube-scheduler, kubectl   (deploy/kube/tools/kubernetes)
#   etcd                                                                (deploy/kube/tools/etcd)
#   kwok (simulated nodes and pods), metrics-server (resource metrics)  (go install …@version)
# Lean on purpose: only these binaries, -trimpath, no cgo, no debug symbols, one `go build` for
# the four Kubernetes commands (they share most packages), downloads and builds side by side.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
OUT=${K8S_TOOLS_DIR:-$ROOT/.local/k8s}
source deploy/kube/tools/versions.env

command -v go >/dev/null || { echo "k8s-tools are built with Go: put a Go toolchain (1.23 or newer) on PATH"; exit 1; }
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -mod=readonly"
LDFLAGS="-s -w"
t0=$SECONDS
step() { printf '==> [%4ss] %s\n' "$((SECONDS - t0))" "$*"; }
done_() { test -f "$OUT/$1/.built"; }
finish() { touch "$OUT/$1/.built"; step "$1 ready: $(du -sh "$OUT/$1" | cut -f1)"; }

build_kubernetes() {
  local dir="kubernetes-$KUBERNETES_VERSION" minor v=""
  done_ "$dir" && return
  step "building kube-apiserver, kube-controller-manager, kube-scheduler, kubectl $KUBERNETES_VERSION (the long step)"
  minor=${KUBERNETES_VERSION#v1.}; minor=${minor%%.*}
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    v+=" -X $pkg.gitVersion=$KUBERNETES_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    v+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  mkdir -p "$OUT/$dir"
  (cd deploy/kube/tools/kubernetes && go build -ldflags "$LDFLAGS$v" -o "$OUT/$dir/" \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl)
  finish "$dir"
}

build_etcd() {
  local dir="etcd-$ETCD_VERSION"
  done_ "$dir" && return
  step "building etcd $ETCD_VERSION"
  mkdir -p "$OUT/$dir"
  (cd deploy/kube/tools/etcd && go build -ldflags "$LDFLAGS" -o "$OUT/$dir/etcd" .)
  finish "$dir"
}

# kwok and metrics-server have no replace directives: plain `go install …@version`.
install_tool() {  # dir module-path version
  done_ "$1" && return
  step "building $1"
  mkdir -p "$OUT/$1"
  GOBIN="$OUT/$1" GOFLAGS="-buildvcs=false -trimpath" go install -ldflags "$LDFLAGS" "$2@$3"
  if [ "$1" = "kwok-$KWOK_VERSION" ]; then
    # kwok's own resource-metrics endpoint (the kubelet's /metrics/resource), from its module.
    local src
    src=$(go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
    install -m 644 "$src/kustomize/metrics/resource/metrics-resource.yaml" "$OUT/$1/"
  fi
  finish "$1"
}

# The four builds side by side: each links alone for a while, so together they keep both cores
# busy; the Go build cache is shared and safe for concurrent use.
pids=()
build_kubernetes & pids+=($!)
build_etcd & pids+=($!)
install_tool "kwok-$KWOK_VERSION" sigs.k8s.io/kwok/cmd/kwok "$KWOK_VERSION" & pids+=($!)
install_tool "metrics-server-$METRICS_SERVER_VERSION" sigs.k8s.io/metrics-server/cmd/metrics-server \
  "$METRICS_SERVER_VERSION" & pids+=($!)
bash deploy/kube/tools/crds.sh & pids+=($!)
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=1; done
[ "$failed" = 0 ] || { echo "k8s-tools: a build failed (see above)"; exit 1; }
step "k8s-tools up to date in ${OUT#$ROOT/}"
