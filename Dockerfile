# One image with the workspace binaries: the connector (`socket-connector`), its load generator
# (`socket-simulate`, for load tests in the cluster) and the operator
# (`socket-connector-operator`). Static musl builds on an empty base with CA certificates and a
# passwd entry for the non-root user 65532: the same files as tests/image/build.sh, which builds
# this image without a Docker daemon (buildah) and is what CI runs.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
      --bin socket-connector --bin socket-simulate --bin socket-connector-operator
RUN mkdir -p /rootfs/usr/local/bin /rootfs/etc/ssl/certs /rootfs/tmp \
      /rootfs/var/lib/socket-connector /rootfs/home/nonroot \
 && chmod 1777 /rootfs/tmp \
 && for bin in socket-connector socket-simulate socket-connector-operator; do \
      install -m 0755 target/x86_64-unknown-linux-musl/release/$bin /rootfs/usr/local/bin/$bin; \
    done \
 && install -m 0644 /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ca-certificates.crt \
 && printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > /rootfs/etc/passwd \
 && printf 'root:x:0:\nnonroot:x:65532:\n' > /rootfs/etc/group \
 && chown -R 65532:65532 /rootfs/var/lib/socket-connector /rootfs/home/nonroot

FROM scratch
COPY --from=build /rootfs /
USER 65532:65532
WORKDIR /home/nonroot
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
# The static binary allocates with mimalloc; committed lazily and returned at once, its memory
# stays at musl's (docs/benchmarks.md#the-images-allocator).
ENV MIMALLOC_ARENA_EAGER_COMMIT=0 MIMALLOC_PURGE_DELAY=0
ENTRYPOINT ["socket-connector"]
