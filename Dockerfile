# rolelb in a container: build rolelb and rolelb-agent, ship them stripped on debian:bookworm-slim.
#   docker build -t rolelb .
#   docker run --network host -v /etc/rolelb:/etc/rolelb:ro rolelb      (reads /etc/rolelb/rolelb.cfg)
#
# The HEALTHCHECK asks rolelb's /healthz on 127.0.0.1:$ROLELB_ADMIN_PORT (8404 unless set): the
# configuration needs `admin bind 127.0.0.1:8404` (or another port, with -e ROLELB_ADMIN_PORT=...).
# `docker stop` sends SIGTERM, rolelb's soft stop: /healthz turns 503, listeners close and open
# sessions may finish; docker kills the container after its stop timeout (10 s unless
# `docker stop -t SECONDS`), so set `hard-stop-after` below that timeout.

FROM rust:1-bookworm AS build
# protoc and its well-known types (libprotobuf-dev): the etcd client crate generates its gRPC code
# at build time and imports google/protobuf/*.proto.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
    && test -r /usr/include/google/protobuf/descriptor.proto \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# Only the two programs; a missing one fails the build.
RUN cargo build --release --locked -p rolelb -p rolelb-agent \
    && mkdir /out \
    && for bin in rolelb rolelb-agent; do \
           test -x "target/release/$bin" || { echo "target/release/$bin was not built" >&2; exit 1; }; \
           strip -o "/out/$bin" "target/release/$bin"; \
       done

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --no-create-home --shell /usr/sbin/nologin rolelb
COPY --from=build /out/ /usr/local/bin/
COPY conf/ /usr/share/rolelb/examples/
USER rolelb
ENV ROLELB_ADMIN_PORT=8404
# The listeners of the examples (writes, reads) and the admin API (/healthz, /metrics).
EXPOSE 5001 5002 8404
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${ROLELB_ADMIN_PORT} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/rolelb"]
CMD ["-f", "/etc/rolelb/rolelb.cfg"]
