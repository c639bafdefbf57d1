# rolelb in a container: build the workspace, ship the binaries on debian:bookworm-slim.
#   docker build -t rolelb .
#   docker run --network host -v /etc/rolelb:/etc/rolelb:ro rolelb      (reads /etc/rolelb/rolelb.cfg)

FROM rust:1-bookworm AS build
# protoc and its well-known types (libprotobuf-dev): the etcd client crate generates its gRPC code
# at build time and imports google/protobuf/*.proto.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && test -r /usr/include/google/protobuf/descriptor.proto \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --workspace --locked \
    && mkdir /out \
    && for bin in rolelb rolelb-agent; do \
           if [ -x "target/release/$bin" ]; then cp "target/release/$bin" /out/; fi; \
       done

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin rolelb
COPY --from=build /out/ /usr/local/bin/
COPY conf/ /usr/share/rolelb/examples/
USER rolelb
EXPOSE 5001 5002
ENTRYPOINT ["/usr/local/bin/rolelb"]
CMD ["-f", "/etc/rolelb/rolelb.cfg"]
