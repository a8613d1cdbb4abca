# glance-grpc-gateway: `docker build -t glance-grpc-gateway .`, then
#   docker run -p 50051:50051 -e GLANCE_URL=http://glance:9292 glance-grpc-gateway
# Every option is a flag after the image name or its GATEWAY_* variable (`--help` lists them).
# deploy/kubernetes/ runs this image; tests/deploy/test_container.py checks this file against the gateway's
# own option parser.

# Build stage: a virtualenv with the gateway and its pinned dependencies (constraints.txt), nothing else.
FROM python:3.11-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
WORKDIR /src
# Dependencies first, so a change to the gateway's code reuses this layer. Every dependency ships wheels
# for CPython 3.11 on amd64 and arm64, so no compiler is needed even here.
COPY constraints.txt ./
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY generated ./generated
# Not editable: the package lands in the venv's site-packages, so the venv alone is the application (pip
# also compiles its bytecode, so nothing needs writing at run time).
RUN /opt/venv/bin/pip install --constraint constraints.txt .

# Runtime stage: the same base (the venv's python links to its /usr/local/bin/python3.11), the venv, and
# no build tools.
FROM python:3.11-slim-bookworm AS runtime
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0
# A numeric user (in no /etc/passwd): Kubernetes' runAsNonRoot can only verify a numeric one. The gateway
# writes nothing to disk but, with --workers above 1 and --metrics-port, the workers' metric files in
# $TMPDIR: the root filesystem can be read-only with a writable /tmp (deploy/kubernetes mounts one).
USER 10001:10001
# gRPC (--port), plaintext health for probes (--health-port), Prometheus /metrics (--metrics-port). Only the
# gRPC port listens unless the other two are set (deploy/kubernetes/deployment.yaml sets them).
EXPOSE 50051 8081 9090
# Exec form: the gateway is PID 1 and gets SIGTERM itself, which starts its drain (--drain-delay, then
# --shutdown-grace). No HEALTHCHECK: Kubernetes probes grpc.health.v1.Health on --health-port.
ENTRYPOINT ["python", "-m", "gateway"]
