# syntax=docker/dockerfile:1
# TenantGate: build a wheel, install it with its dependencies into a virtualenv, and copy only that virtualenv
# into a slim runtime image that runs as a non-root user. Neither stage needs a compiler: every dependency
# ships manylinux wheels. tests/deploy/test_deploy.py runs these install steps in a clean virtualenv and
# lints this file with hadolint.
#
#   docker build -t tenantgate:0.1.0 .
#   docker run --rm -p 50051:50051 \
#     -v "$PWD/tenantgate.toml:/etc/tenantgate/tenantgate.toml:ro" -v "$PWD/policies:/etc/tenantgate/policies:ro" \
#     tenantgate:0.1.0

FROM python:3.11.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && python -m venv /opt/venv \
 && /opt/venv/bin/pip install --no-cache-dir /wheels/tenantgate-*.whl

FROM python:3.11.11-slim-bookworm
LABEL org.opencontainers.image.title="TenantGate" \
      org.opencontainers.image.description="Policy decision point for multi-tenant systems (gRPC, Envoy ext_authz)" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 tenantgate \
 && useradd --system --uid 10001 --gid tenantgate --home-dir /var/lib/tenantgate --create-home \
      --shell /usr/sbin/nologin tenantgate
COPY --from=build /opt/venv /opt/venv
# Defaults only: mount your own configuration and policies over these (a ConfigMap in Kubernetes).
COPY policies /etc/tenantgate/policies
COPY deploy/tenantgate.example.toml /etc/tenantgate/tenantgate.toml
# The health-only plaintext port lets the health check (and kubelet gRPC probes) work when the gRPC port
# serves TLS or mTLS. State (audit log, SQLite grants, dev issuer keys) goes to the writable home directory,
# not beside a config mounted read-only. Both are environment settings: they win over the config file.
# GRPC_VERBOSITY=ERROR: gRPC's C core writes only errors (not a plain-text line per failed TLS handshake).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    GRPC_VERBOSITY=ERROR \
    TENANTGATE_SERVER_HEALTH_LISTEN=0.0.0.0:8081 \
    TENANTGATE_SERVER_STATE_DIR=/var/lib/tenantgate
USER 10001:10001
WORKDIR /var/lib/tenantgate
EXPOSE 50051 8081 9464
HEALTHCHECK --interval=10s --timeout=3s --start-period=15s --retries=3 \
  CMD ["tenantgate", "health", "--server", "127.0.0.1:8081", "--timeout", "2"]
ENTRYPOINT ["tenantgate", "serve", "--config", "/etc/tenantgate/tenantgate.toml"]
