# playlog: the gRPC service on its embedded SQLite store in /var/lib/playlog.
# Build: docker build -t playlog .
# Run (see README, "Container"):
#   docker run -d -p 50051:50051 -p 9464:9464 -v playlog-data:/var/lib/playlog \
#     -v /etc/playlog/auth.toml:/etc/playlog/auth.toml:ro playlog

# Build stage: the dev tools (grpcio-tools, mypy-protobuf, ...) generate the
# protobuf modules into the package, and a wheel is built that includes them.
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml Makefile buf.yaml README.md LICENSE NOTICE ./
COPY protos ./protos
COPY src ./src
RUN make gen && .venv/bin/pip wheel --no-deps -w /wheels .

# Runtime stage: only the wheel and its runtime dependencies; no make, no
# compilers, no dev tools.
FROM python:3.11-slim
RUN useradd --system --home /var/lib/playlog playlog && mkdir -p /var/lib/playlog && chown playlog /var/lib/playlog
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER playlog
VOLUME /var/lib/playlog
# A container listens on all interfaces, which playlog refuses without
# authentication: mount an auth file (see README, "Running playlog for real").
# GRPC_VERBOSITY=ERROR keeps gRPC core's plain-text lines out of the JSON log.
ENV PLAYLOG_DATA_DIR=/var/lib/playlog \
    PLAYLOG_LISTEN=0.0.0.0:50051 \
    PLAYLOG_METRICS_LISTEN=0.0.0.0:9464 \
    PLAYLOG_AUTH_FILE=/etc/playlog/auth.toml \
    GRPC_VERBOSITY=ERROR
# gRPC, and Prometheus /metrics (PLAYLOG_METRICS_LISTEN; empty turns it off).
EXPOSE 50051 9464
# The health service needs no token; `playlog health` reaches this container's
# server at PLAYLOG_LISTEN's port: exit 0 SERVING, 1 not serving, 2 unreachable.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["playlog", "health", "--timeout", "4"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["playlog", "serve"]
