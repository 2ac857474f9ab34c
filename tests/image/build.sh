#!/usr/bin/env bash
# Builds the container image without a Docker daemon: static musl binaries of the workspace,
# CA certificates and a passwd entry for the non-root user 65532 on an empty base (nothing is
# pulled from a registry), assembled by buildah and written as an OCI archive. The Dockerfile
# builds the same image for people with a daemon.
#
#   tests/image/build.sh          # amd64 (x86_64-unknown-linux-musl)
#   tests/image/build.sh arm64    # aarch64-unknown-linux-musl, linked by Debian's cross gcc
#
# The last line of stdout is the path of the OCI archive, e.g.
#   /var/cache/tbsc/image/socket-connector-0.1.0-amd64.oci.tar
# (`podman load -i <archive>`, `skopeo copy oci-archive:<archive> docker://...`). Everything else
# goes to stderr. Needs buildah and musl-tools, for arm64 gcc-aarch64-linux-gnu and
# libc6-dev-arm64-cross (ring's C code needs the headers; tests/run.sh installs them all)
# and the Rust targets (added with rustup when missing).
set -euo pipefail
cd "$(dirname "$0")/../.."

arch="${1:-amd64}"
case "$arch" in
  amd64) triple=x86_64-unknown-linux-musl ;;
  arm64)
    triple=aarch64-unknown-linux-musl
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_LINKER=aarch64-linux-gnu-gcc
    export CC_aarch64_unknown_linux_musl=aarch64-linux-gnu-gcc
    export AR_aarch64_unknown_linux_musl=aarch64-linux-gnu-ar
    ;;
  *)
    echo "build.sh: unknown architecture '$arch' (expected amd64 or arm64)" >&2
    exit 2
    ;;
esac

cache="${TBSC_CACHE:-/var/cache/tbsc}"
# Release builds have a target dir of their own, so they never wait for the test build's lock.
target_dir="$cache/image-target"
out="$cache/image"
mkdir -p "$out"
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n 1)
bins=(socket-connector socket-simulate socket-connector-operator)

{
  if ! rustup target list --installed | grep -qx "$triple"; then
    echo "== adding the Rust target $triple"
    rustup target add "$triple"
  fi
  echo "== building ${bins[*]} for $triple (release)"
  cargo build --release --locked --target "$triple" --target-dir "$target_dir" \
    $(printf -- '--bin %s ' "${bins[@]}")
} >&2

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
mkdir -p "$rootfs/usr/local/bin" "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
for bin in "${bins[@]}"; do
  install -m 0755 "$target_dir/$triple/release/$bin" "$rootfs/usr/local/bin/$bin"
done
# The system roots, for a ThingsBoard with a public certificate and no --tb-ca-cert.
install -m 0644 /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
  > "$rootfs/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' > "$rootfs/etc/group"
# Where the chart mounts the disk queue; owned by the user so a plain volume works too.
mkdir -p "$rootfs/var/lib/socket-connector" "$rootfs/home/nonroot"
chown -R 65532:65532 "$rootfs/var/lib/socket-connector" "$rootfs/home/nonroot"

archive="$out/socket-connector-$version-$arch.oci.tar"
{
  container=$(buildah from --arch "$arch" scratch)
  buildah copy "$container" "$rootfs" / >/dev/null
  buildah config \
    --arch "$arch" --os linux \
    --user 65532:65532 \
    --workingdir /home/nonroot \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    --env MIMALLOC_ARENA_EAGER_COMMIT=0 --env MIMALLOC_PURGE_DELAY=0 \
    --entrypoint '["socket-connector"]' --cmd '[]' \
    --label org.opencontainers.image.title=socket-connector \
    --label org.opencontainers.image.version="$version" \
    --label org.opencontainers.image.source=https://github.com/tbsc/socket-connector \
    "$container"
  rm -f "$archive.partial"
  # --timestamp 0: the same binaries give the same image digest.
  buildah commit --quiet --timestamp 0 --format oci "$container" "oci-archive:$archive.partial" >/dev/null
  buildah rm "$container" >/dev/null
  mv "$archive.partial" "$archive"
  echo "== image: $archive ($(du -h "$archive" | cut -f1))"
} >&2
echo "$archive"
