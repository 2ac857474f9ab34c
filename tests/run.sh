#!/usr/bin/env bash
# Runs every test of the project on a fresh Debian machine: installs what the tests need
# (Mosquitto, Prometheus, podman and buildah, the ThingsBoard gateway for the differential test,
# etcd and kube-apiserver built from Go modules), builds the container images, then lints and
# tests the workspace. Slow artefacts live in $TBSC_CACHE (default /var/cache/tbsc), outside the clone.
set -euo pipefail
cd "$(dirname "$0")/.."

export TBSC_CACHE="${TBSC_CACHE:-/var/cache/tbsc}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$TBSC_CACHE/target}"
mkdir -p "$TBSC_CACHE"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Mosquitto plays ThingsBoard's MQTT endpoint; Prometheus (and promtool) check the chart's
# monitoring; buildah builds the image and podman (with runc) runs it; musl-tools and the aarch64
# cross gcc build its static binaries, qemu-user runs the arm64 one; containerd, runc and the CNI
# plugins run the single node's pods.
missing=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
[ -x /usr/bin/prometheus ] && [ -x /usr/bin/promtool ] || missing+=(prometheus)
for needed in podman:podman buildah:buildah runc:runc musl-gcc:musl-tools \
  aarch64-linux-gnu-gcc:gcc-aarch64-linux-gnu \
  /usr/aarch64-linux-gnu/include/stdint.h:libc6-dev-arm64-cross \
  qemu-aarch64-static:qemu-user-static containerd:containerd \
  /usr/lib/cni/bridge:containernetworking-plugins ip:iproute2; do
  command -v "${needed%%:*}" >/dev/null 2>&1 || [ -e "${needed%%:*}" ] || missing+=("${needed#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "== installing ${missing[*]}"
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ -x tests/tbgw/install.sh ]; then
  echo "== ThingsBoard gateway for the differential test"
  TBGW_PYTHON="$(tests/tbgw/install.sh | tail -n 1)"
  export TBGW_PYTHON
fi

echo "== Kubernetes test binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, helm) from Go modules"
SC_K8S_BIN="$(tests/k8s/build-binaries.sh | tail -n 1)"
export SC_K8S_BIN

echo "== container images (static musl binaries, buildah, no daemon)"
SC_IMAGE_AMD64="$(tests/image/build.sh amd64 | tail -n 1)"
SC_IMAGE_ARM64="$(tests/image/build.sh arm64 | tail -n 1)"
export SC_IMAGE_AMD64 SC_IMAGE_ARM64

echo "== cargo fmt"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --workspace --locked
echo "== fuzzing (fuzz/, ${FUZZ_SECONDS:-20} s per target; FUZZ_SECONDS=0 skips)"
tests/fuzz/run.sh
