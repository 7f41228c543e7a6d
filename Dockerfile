# syntax=docker/dockerfile:1
# hybridgw container image.
#   docker build -t hybridgw:dev .
#   docker run --rm -p 8080:8080 -v "$PWD/config/hybridgw.yaml:/etc/hybridgw/hybridgw.yaml:ro" hybridgw:dev
# The build stage runs the project's own build (scripts/install-deps, then CMake + Ninja);
# the runtime stage has only the shared libraries the binaries link against.
# Pin the base image by digest in CI (debian:12-slim@sha256:...) for reproducible builds.

ARG DEBIAN_IMAGE=debian:12-slim

# ---- build ---------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS build
WORKDIR /src
# Dependencies first, so editing sources does not re-run apt.
COPY scripts/install-deps scripts/install-deps
RUN scripts/install-deps && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release \
 && cmake --build build \
 && test -x build/hybridgw && test -x build/hybridgw-sim

# ---- runtime -------------------------------------------------------------------------------
FROM ${DEBIAN_IMAGE} AS runtime
ARG HYBRIDGW_UID=10001
# Runtime libraries only (no -dev packages, no compiler); curl is for HEALTHCHECK.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libuv1 libhttp-parser2.9 libcurl4 libjansson4 libyaml-0-2 libpcre2-8-0 libssl3 libsqlite3-0 libpq5 \
      ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid "${HYBRIDGW_UID}" hybridgw \
 && useradd --system --uid "${HYBRIDGW_UID}" --gid hybridgw --home-dir /var/lib/hybridgw \
      --no-create-home --shell /usr/sbin/nologin hybridgw \
 && install -d -o hybridgw -g hybridgw -m 0750 /var/lib/hybridgw \
 && install -d -m 0755 /etc/hybridgw
COPY --from=build /src/build/hybridgw /src/build/hybridgw-sim /usr/local/bin/
COPY config/hybridgw.example.yaml /etc/hybridgw/hybridgw.example.yaml

USER ${HYBRIDGW_UID}:${HYBRIDGW_UID}
WORKDIR /var/lib/hybridgw
# 8080: client traffic; 9090: admin (/metrics).
EXPOSE 8080 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD curl -fsS --max-time 2 http://127.0.0.1:8080/healthz >/dev/null || exit 1
ENTRYPOINT ["hybridgw"]
CMD ["serve", "-c", "/etc/hybridgw/hybridgw.yaml"]
