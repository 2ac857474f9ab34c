#!/usr/bin/env bash
# Build the Kubernetes test binaries (etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy, kubectl, helm) from the Go module proxy only, into a version-stamped cache
# directory outside the work tree.
#
#   tests/k8s/build-binaries.sh                      # all of them
#   tests/k8s/build-binaries.sh etcd kube-apiserver  # tier 1 only
#   tests/k8s/build-binaries.sh helm
#
# The last line of stdout is the bin directory, e.g.
#   /var/cache/tbsc/k8s/k8s-v1.34.4_etcd-v3.6.16_helm-v3.22.0_<hash>/bin
# Everything else (progress, go output, timings) goes to stderr.
# A warm run (all requested binaries already built) only checks marker files.
#
# Env: TBSC_CACHE (default /var/cache/tbsc): holds k8s/<key>/bin and the Go
#      caches go/mod (GOMODCACHE) and go/build (GOCACHE).
# Versions live in the wrapper modules gomod/{etcd,kube,helm}/go.mod; the
# constants below must match them (checked on a cold build). See NOTES.md.
set -euo pipefail

K8S_VERSION=v1.34.4   # gomod/kube: k8s.io/kubernetes (staging modules at v0.34.4)
ETCD_VERSION=v3.6.16  # gomod/etcd: go.etcd.io/etcd/server/v3
HELM_VERSION=v3.22.0  # gomod/helm: helm.sh/helm/v3
# Bump when build flags change; go.mod/go.sum edits change the key by themselves.
RECIPE_REV=2

# The node binaries (controller-manager, scheduler, kubelet, kube-proxy) are for the single-node
# test; kubectl is how the tests apply and read objects as users do.
KUBE=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)
ALL=(etcd "${KUBE[@]}" helm)

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
gomod=$here/gomod
cache=${TBSC_CACHE:-/var/cache/tbsc}

if [ $# -eq 0 ]; then
  targets=("${ALL[@]}")
else
  targets=()
  for t in "$@"; do
    case $t in
      etcd | kube-apiserver | kube-controller-manager | kube-scheduler | kubelet | kube-proxy | kubectl | helm) targets+=("$t") ;;
      all) targets+=("${ALL[@]}") ;;
      *)
        echo "build-binaries.sh: unknown binary '$t' (expected: ${ALL[*]} or all)" >&2
        exit 2
        ;;
    esac
  done
fi

hash=$( (echo "$RECIPE_REV"; cat "$gomod"/{etcd,kube,helm}/go.{mod,sum}) | sha256sum | cut -c1-10)
key="k8s-${K8S_VERSION}_etcd-${ETCD_VERSION}_helm-${HELM_VERSION}_${hash}"
out=$cache/k8s/$key
bin=$out/bin

missing() { # prints the requested targets that are not built yet
  local t
  for t in "${targets[@]}"; do
    if [ ! -f "$out/.complete-$t" ] || [ ! -x "$bin/$t" ]; then echo "$t"; fi
  done
}

todo=$(missing)
if [ -z "$todo" ]; then
  echo "$bin"
  exit 0
fi

# ---- cold path ---------------------------------------------------------------
command -v go >/dev/null || { echo "build-binaries.sh: go not found in PATH" >&2; exit 1; }
mkdir -p "$bin" "$cache/go/mod" "$cache/go/build"

# One builder at a time per key (CI and a developer, or parallel test binaries).
exec 9>"$out/.lock"
flock 9
todo=$(missing) # someone else may have finished while we waited

export GOMODCACHE=$cache/go/mod
export GOCACHE=$cache/go/build
export GOFLAGS="-mod=readonly -modcacherw -buildvcs=false"
export GOWORK=off
export CGO_ENABLED=0
export GOTOOLCHAIN=${GOTOOLCHAIN:-local}
unset GOOS GOARCH GOBIN

log() { echo "build-binaries.sh: $*" >&2; }

check_version() { # dir module expected
  local got
  got=$(cd "$gomod/$1" && go list -m -f '{{.Version}}' "$2")
  if [ "$got" != "$3" ]; then
    log "gomod/$1 resolves $2 $got, but the script says $3: update one of them"
    exit 1
  fi
}

gobuild() { # wrapper-dir name pkg ldflags
  local dir=$1 name=$2 pkg=$3 ldflags=$4 t0 t1
  t0=$(date +%s)
  log "building $name ($pkg) ..."
  (cd "$gomod/$dir" && go build -trimpath -ldflags "$ldflags" -o "$bin/.$name.tmp" "$pkg") >&2
  mv -f "$bin/.$name.tmp" "$bin/$name"
  : >"$out/.complete-$name"
  t1=$(date +%s)
  log "built $name in $((t1 - t0))s"
}

build_etcd() {
  check_version etcd go.etcd.io/etcd/server/v3 "$ETCD_VERSION"
  # etcd's ./build sets only GitSHA (the version is a constant); no commit is known here.
  gobuild etcd etcd go.etcd.io/etcd/server/v3 "-s -w"
}

build_kube() { # command name under k8s.io/kubernetes/cmd
  check_version kube k8s.io/kubernetes "$K8S_VERSION"
  local v=${K8S_VERSION#v} date ld="-s -w" p
  # hack/lib/version.sh: the same -X for client-go and component-base. buildDate is the
  # tag's time from the proxy (reproducible); the git commit is not known offline.
  date=$(cd "$gomod/kube" && go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
  for p in k8s.io/client-go/pkg/version k8s.io/component-base/version; do
    ld+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=${v%%.*}"
    ld+=" -X $p.gitMinor=$(echo "$v" | cut -d. -f2) -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
  gobuild kube "$1" "k8s.io/kubernetes/cmd/$1" "$ld"
}

build_helm() {
  check_version helm helm.sh/helm/v3 "$HELM_VERSION"
  # As helm's Makefile: version vars, and the default .Capabilities.KubeVersion taken
  # from the client-go it is built with (v0.37.x -> 1.37), not the source default 1.20.
  local cg major minor ld
  cg=$(cd "$gomod/helm" && go list -m -f '{{.Version}}' k8s.io/client-go)
  cg=${cg#v}
  major=$((${cg%%.*} + 1))
  minor=$(echo "$cg" | cut -d. -f2)
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  ld+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
  for p in helm.sh/helm/v3/pkg/chartutil helm.sh/helm/v3/pkg/lint/rules; do
    ld+=" -X $p.k8sVersionMajor=$major -X $p.k8sVersionMinor=$minor"
  done
  gobuild helm helm helm.sh/helm/v3/cmd/helm "$ld"
}

start=$(date +%s)
for t in $todo; do
  case $t in
    etcd) build_etcd ;;
    kube-* | kubelet | kubectl) build_kube "$t" ;;
    helm) build_helm ;;
  esac
done
all=1
for t in "${ALL[@]}"; do [ -f "$out/.complete-$t" ] || all=0; done
[ "$all" = 1 ] && : >"$out/.complete"
log "done in $(($(date +%s) - start))s: $(echo $todo) -> $bin"
echo "$bin"
