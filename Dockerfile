# playlog: the gRPC service on its embedded SQLite store in /var/lib/playlog.
# Build: docker build -t playlog .   Run: docker run -p 50051:50051 -v playlog:/var/lib/playlog playlog
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends make && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml Makefile buf.yaml README.md ./
COPY protos ./protos
COPY src ./src
# make install creates .venv with the pinned dependencies and generates the
# protobuf modules into the package; then build a wheel that includes them.
RUN make install && .venv/bin/pip wheel --no-deps -w /wheels .

FROM python:3.11-slim
RUN useradd --system --home /var/lib/playlog playlog && mkdir -p /var/lib/playlog && chown playlog /var/lib/playlog
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER playlog
VOLUME /var/lib/playlog
EXPOSE 50051
# A container listens on all interfaces, which playlog refuses without
# authentication: mount an auth file (see README, "Running playlog for real").
ENV PLAYLOG_DATA_DIR=/var/lib/playlog \
    PLAYLOG_LISTEN=0.0.0.0:50051 \
    PLAYLOG_AUTH_FILE=/etc/playlog/auth.toml
STOPSIGNAL SIGTERM
ENTRYPOINT ["playlog", "serve"]
