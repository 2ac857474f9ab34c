# One image with the workspace binaries: the connector (`socket-connector`), its load generator
# (`socket-simulate`, for load tests in the cluster) and the operator
# (`socket-connector-operator`). Static musl builds on a distroless, non-root base.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl \
 && apt-get update && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --target x86_64-unknown-linux-musl \
      --bin socket-connector --bin socket-simulate --bin socket-connector-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/socket-connector /usr/local/bin/socket-connector
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/socket-simulate /usr/local/bin/socket-simulate
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/socket-connector-operator /usr/local/bin/socket-connector-operator
USER 65532:65532
ENTRYPOINT ["socket-connector"]
